//! In-memory data sets, what each kind of data set is, and where to find its files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::augment::Augment;
use crate::cifar;
use crate::embedded;
use crate::error::{DataError, Result};
use crate::idx;

/// The data sets this tool knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Fashion-MNIST: 28x28 grey images of clothing, 10 classes.
    FashionMnist,
    /// MNIST: 28x28 grey images of handwritten digits, 10 classes.
    Mnist,
    /// CIFAR-10: 32x32 RGB images, 10 classes.
    Cifar10,
}

/// Per-channel normalisation: `x = (pixel / 255 - mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl DatasetKind {
    /// Every kind, in the order the CLI lists them.
    pub const ALL: [DatasetKind; 3] = [
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
    ];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// The name people write.
    pub fn display_name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "Fashion-MNIST",
            DatasetKind::Mnist => "MNIST",
            DatasetKind::Cifar10 => "CIFAR-10",
        }
    }

    /// Image shape `[channels, height, width]`.
    pub fn image_shape(self) -> [usize; 3] {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Mnist => [1, 28, 28],
            DatasetKind::Cifar10 => [3, 32, 32],
        }
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        10
    }

    /// Class names, indexed by label.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::Cifar10 => [
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ],
        }
    }

    /// The usual mean/std of the training set.
    pub fn normalization(self) -> Normalization {
        match self {
            DatasetKind::FashionMnist => Normalization {
                mean: vec![0.2860],
                std: vec![0.3530],
            },
            DatasetKind::Mnist => Normalization {
                mean: vec![0.1307],
                std: vec![0.3081],
            },
            DatasetKind::Cifar10 => Normalization {
                mean: vec![0.4914, 0.4822, 0.4465],
                std: vec![0.2470, 0.2435, 0.2616],
            },
        }
    }

    /// Default training augmentation: random crop with padding 2 for the 28x28 sets (no flip:
    /// mirrored digits are different symbols, and Fashion-MNIST is conventionally unflipped),
    /// padding 4 plus horizontal flip for CIFAR-10. Cutout is off by default.
    pub fn default_augment(self) -> Augment {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Mnist => Augment {
                crop_padding: 2,
                hflip: false,
                cutout: 0,
            },
            DatasetKind::Cifar10 => Augment {
                crop_padding: 4,
                hflip: true,
                cutout: 0,
            },
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetKind::FashionMnist),
            "mnist" => Ok(DatasetKind::Mnist),
            "cifar10" | "cifar-10" => Ok(DatasetKind::Cifar10),
            _ => Err(DataError::Invalid(format!(
                "unknown data set {s:?}: expected fashion-mnist, mnist or cifar10"
            ))),
        }
    }
}

/// Which part of a data set's official split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Train,
    Test,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Test => "test",
        }
    }
}

/// A labelled image data set held in memory as bytes: images are `n x c x h x w` u8 (NCHW),
/// labels are `n` class indices below `num_classes`. The constructors validate both.
#[derive(Clone, Debug)]
pub struct Dataset {
    name: String,
    kind: DatasetKind,
    images: Vec<u8>,
    labels: Vec<u8>,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    num_classes: usize,
}

impl Dataset {
    /// A data set of `kind` from raw NCHW bytes and labels; checks sizes and label range.
    pub fn new(
        name: impl Into<String>,
        kind: DatasetKind,
        images: Vec<u8>,
        labels: Vec<u8>,
    ) -> Result<Self> {
        let name = name.into();
        let [c, h, w] = kind.image_shape();
        let per = c * h * w;
        if images.len() != labels.len() * per {
            return Err(DataError::Invalid(format!(
                "{name}: {} image bytes for {} labels: expected {} ({} per image)",
                images.len(),
                labels.len(),
                labels.len() * per,
                per
            )));
        }
        let num_classes = kind.num_classes();
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= num_classes)
        {
            return Err(DataError::LabelOutOfRange {
                path: PathBuf::from(&name),
                index,
                label,
                classes: num_classes,
            });
        }
        Ok(Dataset {
            n: labels.len(),
            name,
            kind,
            images,
            labels,
            c,
            h,
            w,
            num_classes,
        })
    }

    /// A data set from the (uncompressed) bytes of an IDX images file and an IDX labels
    /// file. The paths are only used in error messages.
    pub fn from_idx_bytes(
        kind: DatasetKind,
        name: impl Into<String>,
        images: &[u8],
        images_path: &Path,
        labels: &[u8],
        labels_path: &Path,
    ) -> Result<Self> {
        let img = idx::parse_images(images, images_path)?;
        let lab = idx::parse_labels(labels, labels_path)?;
        let [c, h, w] = kind.image_shape();
        if c != 1 {
            return Err(DataError::Invalid(format!(
                "{} is not stored as IDX files",
                kind.display_name()
            )));
        }
        if (img.rows, img.cols) != (h, w) {
            return Err(DataError::Dimensions {
                path: images_path.to_path_buf(),
                expected: format!("{h}x{w} images ({})", kind.display_name()),
                found: format!("{}x{}", img.rows, img.cols),
            });
        }
        if img.count != lab.len() {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                images: img.count as u64,
                labels_path: labels_path.to_path_buf(),
                labels: lab.len() as u64,
            });
        }
        if img.count == 0 {
            return Err(DataError::Empty {
                path: images_path.to_path_buf(),
            });
        }
        if let Some((index, &label)) = lab
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= kind.num_classes())
        {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label,
                classes: kind.num_classes(),
            });
        }
        Dataset::new(name, kind, img.pixels.to_vec(), lab.to_vec())
    }

    /// Reads an IDX images file and an IDX labels file (each gzip-compressed or raw).
    pub fn load_idx(kind: DatasetKind, images_path: &Path, labels_path: &Path) -> Result<Self> {
        let images = idx::read_maybe_gz(images_path)?;
        let labels = idx::read_maybe_gz(labels_path)?;
        let name = format!("{}:{}", kind.name(), images_path.display());
        Dataset::from_idx_bytes(kind, name, &images, images_path, &labels, labels_path)
    }

    /// A CIFAR-10 data set from the bytes of one or more batch files (concatenated in order).
    pub fn from_cifar_batches(name: impl Into<String>, batches: &[(&[u8], &Path)]) -> Result<Self> {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for (bytes, path) in batches {
            cifar::parse_batch_into(bytes, path, &mut images, &mut labels)?;
        }
        if labels.is_empty() {
            return Err(DataError::Invalid("no CIFAR-10 batch files given".into()));
        }
        Dataset::new(name, DatasetKind::Cifar10, images, labels)
    }

    /// Reads CIFAR-10 batch files (concatenated in the order given).
    pub fn load_cifar(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(|p| {
                std::fs::read(p).map_err(|source| DataError::Io {
                    path: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let batches: Vec<(&[u8], &Path)> = files
            .iter()
            .zip(paths)
            .map(|(b, p)| (b.as_slice(), p.as_path()))
            .collect();
        let name = match paths.first() {
            Some(p) => format!("cifar10:{}", p.parent().unwrap_or(p).display()),
            None => "cifar10".into(),
        };
        Dataset::from_cifar_batches(name, &batches)
    }

    /// The Fashion-MNIST test set (10,000 images, 1,000 per class) compiled into the binary.
    /// See `data/fashion-mnist-test/README.md`.
    pub fn embedded_fashion_mnist_test() -> Result<Self> {
        let images_path = Path::new(embedded::IMAGES_NAME);
        let labels_path = Path::new(embedded::LABELS_NAME);
        let images = idx::gunzip(
            embedded::IMAGES_GZ,
            images_path,
            idx::MAX_DECOMPRESSED_BYTES,
        )?;
        let labels = idx::gunzip(
            embedded::LABELS_GZ,
            labels_path,
            idx::MAX_DECOMPRESSED_BYTES,
        )?;
        Dataset::from_idx_bytes(
            DatasetKind::FashionMnist,
            "fashion-mnist:test (embedded)",
            &images,
            images_path,
            &labels,
            labels_path,
        )
    }

    /// A descriptive name (data set and origin).
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// `[channels, height, width]` of each image.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.c, self.h, self.w]
    }
    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
    /// All images, NCHW bytes.
    pub fn images(&self) -> &[u8] {
        &self.images
    }
    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
    /// Image `i` (CHW bytes). Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.image_len();
        &self.images[i * per..(i + 1) * per]
    }
    /// Label of example `i`. Panics if `i >= len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }
    /// Number of examples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }
}

/// Where a [`DataSource`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The Fashion-MNIST test set compiled into the binary.
    Embedded,
    /// Files in a directory.
    Directory(PathBuf),
}

/// The data a run works on: the set its splits are drawn from (`train`) and, when there is
/// one, the held-out test set used only for final reports.
///
/// When only a test set is available (the embedded default, or a directory with only the
/// test files), `train` *is* that test set used as a development set, `test` is `None` and
/// `development_only` is true: accuracies measured that way are not comparable to published
/// results.
#[derive(Clone, Debug)]
pub struct DataSource {
    pub kind: DatasetKind,
    pub origin: Origin,
    pub train: Arc<Dataset>,
    pub test: Option<Arc<Dataset>>,
    pub development_only: bool,
}

/// IDX file base names (without `.gz`) of a part: (images, labels).
pub fn idx_file_names(part: Part) -> (&'static str, &'static str) {
    match part {
        Part::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Part::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// `DIR/base.gz` if it exists, else `DIR/base` if it exists.
fn find_idx(dir: &Path, base: &str) -> Option<PathBuf> {
    [format!("{base}.gz"), base.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

enum Found<T> {
    All(T),
    None,
    Partial(Vec<String>),
}

fn find_idx_part(dir: &Path, part: Part) -> Found<(PathBuf, PathBuf)> {
    let (img, lab) = idx_file_names(part);
    match (find_idx(dir, img), find_idx(dir, lab)) {
        (Some(i), Some(l)) => Found::All((i, l)),
        (None, None) => Found::None,
        (None, Some(_)) => Found::Partial(vec![format!("{img}[.gz]")]),
        (Some(_), None) => Found::Partial(vec![format!("{lab}[.gz]")]),
    }
}

/// The directory holding CIFAR-10's batch files: `dir` itself or `dir/cifar-10-batches-bin`.
pub fn cifar_dir(dir: &Path) -> PathBuf {
    let has_batches =
        |d: &Path| d.join(cifar::TEST_FILE).is_file() || d.join(cifar::TRAIN_FILES[0]).is_file();
    let nested = dir.join(cifar::ARCHIVE_DIR);
    if !has_batches(dir) && has_batches(&nested) {
        nested
    } else {
        dir.to_path_buf()
    }
}

fn find_cifar_part(dir: &Path, part: Part) -> Found<Vec<PathBuf>> {
    let names: Vec<&str> = match part {
        Part::Train => cifar::TRAIN_FILES.to_vec(),
        Part::Test => vec![cifar::TEST_FILE],
    };
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !dir.join(n).is_file())
        .map(|n| n.to_string())
        .collect();
    if missing.is_empty() {
        Found::All(names.iter().map(|n| dir.join(n)).collect())
    } else if missing.len() == names.len() {
        Found::None
    } else {
        Found::Partial(missing)
    }
}

impl DataSource {
    /// The embedded Fashion-MNIST test set, used as a development set.
    pub fn embedded() -> Result<Self> {
        Ok(DataSource {
            kind: DatasetKind::FashionMnist,
            origin: Origin::Embedded,
            train: Arc::new(Dataset::embedded_fashion_mnist_test()?),
            test: None,
            development_only: true,
        })
    }

    /// The data set `kind` from the files in `dir`: MNIST/Fashion-MNIST as
    /// `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
    /// `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`; CIFAR-10 as
    /// `data_batch_1.bin` ... `data_batch_5.bin` and `test_batch.bin` in `dir` or
    /// `dir/cifar-10-batches-bin`. The test files are optional when the training files are
    /// present; with only the test files, the test set becomes a development set.
    pub fn open(kind: DatasetKind, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(DataError::NoSuchDirectory {
                path: dir.to_path_buf(),
            });
        }
        let (train, test, base) = match kind {
            DatasetKind::Cifar10 => {
                let base = cifar_dir(dir);
                let load = |f: Found<Vec<PathBuf>>| -> Result<Option<Dataset>> {
                    match f {
                        Found::All(paths) => Ok(Some(Dataset::load_cifar(&paths)?)),
                        Found::None => Ok(None),
                        Found::Partial(missing) => Err(DataError::MissingFiles {
                            dir: base.clone(),
                            dataset: kind.name(),
                            expected: missing,
                        }),
                    }
                };
                let train = load(find_cifar_part(&base, Part::Train))?;
                let test = load(find_cifar_part(&base, Part::Test))?;
                (train, test, base)
            }
            DatasetKind::FashionMnist | DatasetKind::Mnist => {
                let load = |f: Found<(PathBuf, PathBuf)>| -> Result<Option<Dataset>> {
                    match f {
                        Found::All((i, l)) => Ok(Some(Dataset::load_idx(kind, &i, &l)?)),
                        Found::None => Ok(None),
                        Found::Partial(missing) => Err(DataError::MissingFiles {
                            dir: dir.to_path_buf(),
                            dataset: kind.name(),
                            expected: missing,
                        }),
                    }
                };
                let train = load(find_idx_part(dir, Part::Train))?;
                let test = load(find_idx_part(dir, Part::Test))?;
                (train, test, dir.to_path_buf())
            }
        };
        let origin = Origin::Directory(base.clone());
        match (train, test) {
            (Some(train), test) => Ok(DataSource {
                kind,
                origin,
                train: Arc::new(train),
                test: test.map(Arc::new),
                development_only: false,
            }),
            (None, Some(test)) => Ok(DataSource {
                kind,
                origin,
                train: Arc::new(test),
                test: None,
                development_only: true,
            }),
            (None, None) => Err(DataError::MissingFiles {
                dir: base,
                dataset: kind.name(),
                expected: expected_files(kind),
            }),
        }
    }

    /// One line describing the source, e.g. for `bayesnas info`.
    pub fn describe(&self) -> String {
        let origin = match &self.origin {
            Origin::Embedded => "embedded Fashion-MNIST test set".to_string(),
            Origin::Directory(d) => d.display().to_string(),
        };
        let test = match &self.test {
            Some(t) => format!("{} test images", t.len()),
            None => "no test set".to_string(),
        };
        let dev = if self.development_only {
            " [development set: the test images are split for search; accuracies are not comparable to published results]"
        } else {
            ""
        };
        format!(
            "{} from {origin}: {} training images, {test}{dev}",
            self.kind.display_name(),
            self.train.len()
        )
    }
}

/// The file names a data set directory is searched for.
pub fn expected_files(kind: DatasetKind) -> Vec<String> {
    match kind {
        DatasetKind::Cifar10 => cifar::TRAIN_FILES
            .iter()
            .chain(std::iter::once(&cifar::TEST_FILE))
            .map(|s| s.to_string())
            .collect(),
        _ => [Part::Train, Part::Test]
            .into_iter()
            .flat_map(|p| {
                let (i, l) = idx_file_names(p);
                [format!("{i}[.gz]"), format!("{l}[.gz]")]
            })
            .collect(),
    }
}
