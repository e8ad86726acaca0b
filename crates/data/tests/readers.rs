//! Readers on files the tests generate: valid files load exactly; each kind of bad file gives
//! its typed error, and the message names the file.

mod common;

use std::path::{Path, PathBuf};

use bayesnas_data::{cifar, idx, DataError, DataSource, Dataset, DatasetKind};
use common::{cifar_batch, gzip, idx_pair, Scratch};

/// The error's message must name `path` (as displayed).
fn assert_names(err: &DataError, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message {msg:?} does not name {}",
        path.display()
    );
}

/// Writes `images` and `labels` to the files `images` and `labels` of `dir` and loads them
/// as `kind`, which must fail: the error and the two paths.
fn idx_error(
    dir: &Scratch,
    kind: DatasetKind,
    images: &[u8],
    labels: &[u8],
) -> (DataError, PathBuf, PathBuf) {
    let i = dir.write("images", images);
    let l = dir.write("labels", labels);
    let err = Dataset::load_idx(kind, &i, &l).unwrap_err();
    (err, i, l)
}

#[test]
fn idx_valid_raw_and_gzip_load_identically() {
    let dir = Scratch::new("idx-valid");
    let (img, lab, pixels, labels) = idx_pair(25, 1);
    let ri = dir.write("raw-images", &img);
    let rl = dir.write("raw-labels", &lab);
    let gi = dir.write("images.gz", &gzip(&img));
    let gl = dir.write("labels.gz", &gzip(&lab));
    for (i, l) in [(&ri, &rl), (&gi, &gl), (&gi, &rl)] {
        let ds = Dataset::load_idx(DatasetKind::Mnist, i, l).unwrap();
        assert_eq!(ds.len(), 25);
        assert_eq!(ds.image_shape(), [1, 28, 28]);
        assert_eq!(ds.images(), &pixels[..]);
        assert_eq!(ds.labels(), &labels[..]);
        assert_eq!(ds.image(3), &pixels[3 * 784..4 * 784]);
        assert_eq!(ds.class_counts().iter().sum::<usize>(), 25);
    }
}

#[test]
fn idx_truncated_images() {
    let dir = Scratch::new("idx-trunc");
    let (img, lab, ..) = idx_pair(10, 2);
    let (err, i, _) = idx_error(&dir, DatasetKind::Mnist, &img[..img.len() - 1], &lab);
    match &err {
        DataError::Truncated {
            expected, found, ..
        } => {
            assert_eq!(*expected, img.len() as u64);
            assert_eq!(*found, img.len() as u64 - 1);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_names(&err, &i);
}

#[test]
fn idx_truncated_header_and_gzip() {
    let dir = Scratch::new("idx-trunc-header");
    let (img, lab, ..) = idx_pair(3, 3);
    let l = dir.write("labels", &lab);
    for cut in [0, 2, 4, 9, 15] {
        let i = dir.write("images", &img[..cut]);
        let err = Dataset::load_idx(DatasetKind::Mnist, &i, &l).unwrap_err();
        assert!(
            matches!(err, DataError::Truncated { .. }),
            "cut {cut}: {err:?}"
        );
        assert_names(&err, &i);
    }
    // A gzip stream cut in half is a corrupt gzip file, named as such.
    let gz = gzip(&img);
    let i = dir.write("images.gz", &gz[..gz.len() / 2]);
    let err = Dataset::load_idx(DatasetKind::Mnist, &i, &l).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    assert_names(&err, &i);
}

#[test]
fn idx_trailing_data() {
    let dir = Scratch::new("idx-trailing");
    let (img, mut lab, ..) = idx_pair(4, 4);
    lab.push(0);
    let (err, _, l) = idx_error(&dir, DatasetKind::Mnist, &img, &lab);
    assert!(matches!(err, DataError::TrailingData { .. }), "{err:?}");
    assert_names(&err, &l);
}

#[test]
fn idx_wrong_magic() {
    let dir = Scratch::new("idx-magic");
    let (img, lab, ..) = idx_pair(5, 5);
    // Files swapped: the labels file where images are expected and vice versa.
    let (err, i, l) = idx_error(&dir, DatasetKind::FashionMnist, &lab, &img);
    match &err {
        DataError::BadMagic {
            expected, found, ..
        } => {
            assert_eq!(*expected, idx::IMAGES_MAGIC);
            assert_eq!(*found, idx::LABELS_MAGIC);
        }
        other => panic!("expected BadMagic, got {other:?}"),
    }
    assert_names(&err, &i);
    let i = dir.write("images2", &img);
    let err = Dataset::load_idx(DatasetKind::FashionMnist, &i, &l).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                found: idx::IMAGES_MAGIC,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, &l);
    // Random garbage.
    let g = dir.write("garbage", b"this is not an IDX file at all");
    let err = Dataset::load_idx(DatasetKind::FashionMnist, &g, &l).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
    assert_names(&err, &g);
}

#[test]
fn idx_count_mismatch() {
    let dir = Scratch::new("idx-count");
    let (img, ..) = idx_pair(6, 6);
    let (_, lab, ..) = idx_pair(7, 6);
    let (err, i, l) = idx_error(&dir, DatasetKind::Mnist, &img, &lab);
    match &err {
        DataError::CountMismatch { images, labels, .. } => assert_eq!((*images, *labels), (6, 7)),
        other => panic!("expected CountMismatch, got {other:?}"),
    }
    assert_names(&err, &i);
    assert_names(&err, &l);
}

#[test]
fn idx_label_out_of_range() {
    let dir = Scratch::new("idx-label");
    let (img, mut lab, ..) = idx_pair(12, 7);
    lab[8 + 11] = 10;
    let (err, _, l) = idx_error(&dir, DatasetKind::Mnist, &img, &lab);
    match &err {
        DataError::LabelOutOfRange {
            index,
            label,
            classes,
            ..
        } => assert_eq!((*index, *label, *classes), (11, 10, 10)),
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
    assert_names(&err, &l);
}

#[test]
fn idx_wrong_image_size_and_empty() {
    let dir = Scratch::new("idx-dims");
    let (err, i, _) = idx_error(
        &dir,
        DatasetKind::FashionMnist,
        &idx::encode_images(2, 32, 32, &[0; 2 * 32 * 32]),
        &idx::encode_labels(&[1, 2]),
    );
    assert!(matches!(err, DataError::Dimensions { .. }), "{err:?}");
    assert_names(&err, &i);

    let i = dir.write("empty-images", &idx::encode_images(0, 28, 28, &[]));
    let l = dir.write("empty-labels", &idx::encode_labels(&[]));
    let err = Dataset::load_idx(DatasetKind::FashionMnist, &i, &l).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
    assert_names(&err, &i);
}

#[test]
fn missing_file_is_io_error_naming_it() {
    let dir = Scratch::new("idx-missing");
    let (img, ..) = idx_pair(1, 8);
    let i = dir.write("images", &img);
    let l = dir.path().join("does-not-exist");
    let err = Dataset::load_idx(DatasetKind::Mnist, &i, &l).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert_names(&err, &l);
}

#[test]
fn cifar_valid_batches_concatenate() {
    let dir = Scratch::new("cifar-valid");
    let (b1, im1, l1) = cifar_batch(3, 0, 10);
    let (b2, im2, l2) = cifar_batch(4, 5, 11);
    let p1 = dir.write("data_batch_1.bin", &b1);
    let p2 = dir.write("data_batch_2.bin", &b2);
    let ds = Dataset::load_cifar(&[p1, p2]).unwrap();
    assert_eq!(ds.len(), 7);
    assert_eq!(ds.image_shape(), [3, 32, 32]);
    assert_eq!(ds.images(), &[im1, im2].concat()[..]);
    assert_eq!(ds.labels(), &[l1, l2].concat()[..]);
}

#[test]
fn cifar_size_not_a_multiple_of_the_record() {
    let dir = Scratch::new("cifar-size");
    let (b, ..) = cifar_batch(2, 0, 12);
    for len in [1, cifar::RECORD_BYTES - 1, b.len() - 1, b.len() + 1] {
        let bytes: Vec<u8> = b.iter().copied().cycle().take(len).collect();
        let p = dir.write("data_batch_1.bin", &bytes);
        let err = Dataset::load_cifar(std::slice::from_ref(&p)).unwrap_err();
        match &err {
            DataError::BadSize { size, record, .. } => {
                assert_eq!((*size, *record), (len as u64, 3073))
            }
            other => panic!("len {len}: expected BadSize, got {other:?}"),
        }
        assert_names(&err, &p);
    }
}

#[test]
fn cifar_label_out_of_range_and_empty() {
    let dir = Scratch::new("cifar-label");
    let (mut b, ..) = cifar_batch(3, 0, 13);
    b[2 * cifar::RECORD_BYTES] = 200;
    let good = dir.write("data_batch_1.bin", &cifar_batch(2, 0, 1).0);
    let p = dir.write("data_batch_2.bin", &b);
    let err = Dataset::load_cifar(&[good, p.clone()]).unwrap_err();
    match &err {
        DataError::LabelOutOfRange { index, label, .. } => assert_eq!((*index, *label), (2, 200)),
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
    assert_names(&err, &p);

    let e = dir.write("empty.bin", &[]);
    let err = Dataset::load_cifar(std::slice::from_ref(&e)).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err:?}");
    assert_names(&err, &e);
}

#[test]
fn open_directory_layouts() {
    // Full IDX set: train and test.
    let dir = Scratch::new("open-idx");
    let (img, lab, ..) = idx_pair(20, 20);
    let (timg, tlab, ..) = idx_pair(10, 21);
    dir.write("train-images-idx3-ubyte.gz", &gzip(&img));
    dir.write("train-labels-idx1-ubyte", &lab);
    dir.write("t10k-images-idx3-ubyte", &timg);
    dir.write("t10k-labels-idx1-ubyte.gz", &gzip(&tlab));
    let src = DataSource::open(DatasetKind::Mnist, dir.path()).unwrap();
    assert!(!src.development_only);
    assert_eq!(src.train.len(), 20);
    assert_eq!(src.test.as_ref().unwrap().len(), 10);

    // Only the test files: a development set.
    let dir = Scratch::new("open-test-only");
    dir.write("t10k-images-idx3-ubyte", &timg);
    dir.write("t10k-labels-idx1-ubyte", &tlab);
    let src = DataSource::open(DatasetKind::FashionMnist, dir.path()).unwrap();
    assert!(src.development_only);
    assert!(src.test.is_none());
    assert_eq!(src.train.len(), 10);
    assert!(
        src.describe().contains("not comparable"),
        "{}",
        src.describe()
    );

    // Images without labels: the missing file is named.
    let dir = Scratch::new("open-partial");
    dir.write("train-images-idx3-ubyte", &img);
    let err = DataSource::open(DatasetKind::Mnist, dir.path()).unwrap_err();
    assert!(matches!(err, DataError::MissingFiles { .. }), "{err:?}");
    assert!(err.to_string().contains("train-labels-idx1-ubyte"), "{err}");

    // Empty directory, and no directory at all.
    let dir = Scratch::new("open-empty");
    let err = DataSource::open(DatasetKind::Cifar10, dir.path()).unwrap_err();
    assert!(matches!(err, DataError::MissingFiles { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
    assert!(err.to_string().contains("bayesnas fetch cifar10"), "{err}");
    let missing = dir.path().join("nope");
    let err = DataSource::open(DatasetKind::Mnist, &missing).unwrap_err();
    assert!(matches!(err, DataError::NoSuchDirectory { .. }), "{err:?}");
    assert_names(&err, &missing);
}

#[test]
fn open_cifar_nested_and_partial() {
    let dir = Scratch::new("open-cifar");
    for (i, name) in cifar::TRAIN_FILES.iter().enumerate() {
        dir.write(
            &format!("cifar-10-batches-bin/{name}"),
            &cifar_batch(2, i, i as u64).0,
        );
    }
    dir.write(
        "cifar-10-batches-bin/test_batch.bin",
        &cifar_batch(3, 0, 9).0,
    );
    let src = DataSource::open(DatasetKind::Cifar10, dir.path()).unwrap();
    assert_eq!(src.train.len(), 10);
    assert_eq!(src.test.as_ref().unwrap().len(), 3);
    assert!(!src.development_only);

    std::fs::remove_file(dir.path().join("cifar-10-batches-bin/data_batch_4.bin")).unwrap();
    let err = DataSource::open(DatasetKind::Cifar10, dir.path()).unwrap_err();
    match &err {
        DataError::MissingFiles { expected, .. } => assert_eq!(expected, &["data_batch_4.bin"]),
        other => panic!("expected MissingFiles, got {other:?}"),
    }
}
