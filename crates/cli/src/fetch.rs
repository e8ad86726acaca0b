//! Downloading the full data sets: resumable, verified, atomic.
//!
//! Each file is downloaded to `<name>.part` in the target directory. A `.part` left by an
//! interrupted run is continued with an HTTP `Range` request. When the download is complete
//! its checksum is verified, and only then is it renamed to `<name>` (an atomic rename in
//! the same directory), so a file under its final name is always complete and verified. A
//! file that fails verification is deleted and reported; nothing is left under its final
//! name.
//!
//! # Checksums
//!
//! A file is accepted when one of its [`Digest`]s matches:
//!
//! * the MD5 of the file as published by the data set's authors (CIFAR-10's
//!   `cifar-10-binary.tar.gz`; the MNIST and Fashion-MNIST `.gz` files, with the values
//!   torchvision and the Fashion-MNIST README publish);
//! * for the MNIST and Fashion-MNIST `.gz` files, the SHA-256 of the *decompressed* IDX
//!   content. Mirrors and distributions (Debian's `dataset-fashion-mnist`, the project's
//!   shared copy) recompress the files, which changes the bytes of the `.gz` but not its
//!   content; the content hash accepts those and still rejects any change to the data.
//!   The values were computed from the shared copies, whose content matches the published
//!   uncompressed MNIST MD5s.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bayesnas_data::{cifar, DataError, DataSource, DatasetKind};
use md5::Md5;
use sha2::{Digest as _, Sha256};

use crate::progress::Progress;

/// Canonical MNIST source (the PyTorch project's S3 mirror of Yann LeCun's files).
pub const MNIST_BASE: &str = "https://ossci-datasets.s3.amazonaws.com/mnist";
/// Canonical Fashion-MNIST source (Zalando's S3 bucket).
pub const FASHION_MNIST_BASE: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com";
/// Canonical CIFAR-10 source (Alex Krizhevsky's page).
pub const CIFAR10_BASE: &str = "https://www.cs.toronto.edu/~kriz";
/// CIFAR-10 binary archive name.
pub const CIFAR10_ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// Published MD5 of the CIFAR-10 binary archive.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// IDX files: (name, published MD5 of the .gz, SHA-256 of the decompressed content).
const MNIST_FILES: [(&str, &str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "d53e105ee54ea40749a09fcbcd1e9432",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "9fb629c4189551a2d022fa330f9573f3",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ec29112dd5afa0611ce80d1b7f02629c",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

const FASHION_MNIST_FILES: [(&str, &str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// Hash algorithm of a [`Digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

/// What a [`Digest`] is computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The bytes of the downloaded file.
    File,
    /// The decompressed content of a gzip file (the file itself if it is not gzip).
    GunzipContent,
}

/// An accepted checksum of a downloaded file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    pub algorithm: Algorithm,
    pub target: Target,
    /// Lower-case hex.
    pub hex: String,
}

impl Digest {
    pub fn md5_of_file(hex: &str) -> Self {
        Digest {
            algorithm: Algorithm::Md5,
            target: Target::File,
            hex: hex.to_ascii_lowercase(),
        }
    }
    pub fn sha256_of_file(hex: &str) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            target: Target::File,
            hex: hex.to_ascii_lowercase(),
        }
    }
    pub fn sha256_of_content(hex: &str) -> Self {
        Digest {
            algorithm: Algorithm::Sha256,
            target: Target::GunzipContent,
            hex: hex.to_ascii_lowercase(),
        }
    }
    fn label(algorithm: Algorithm, target: Target) -> &'static str {
        match (algorithm, target) {
            (Algorithm::Md5, Target::File) => "md5",
            (Algorithm::Sha256, Target::File) => "sha256",
            (Algorithm::Md5, Target::GunzipContent) => "md5 of the gunzipped content",
            (Algorithm::Sha256, Target::GunzipContent) => "sha256 of the gunzipped content",
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            Digest::label(self.algorithm, self.target),
            self.hex
        )
    }
}

/// A file to download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name in the target directory (a plain name, no separators).
    pub name: String,
    pub url: String,
    /// The file is accepted when any of these matches.
    pub accept: Vec<Digest>,
}

/// Everything that can go wrong while fetching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: the server answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error(
        "{}: checksum mismatch: expected {expected}; found {found}. The download was deleted",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{}: {message}", path.display())]
    Archive { path: PathBuf, message: String },
    #[error("invalid --mirror URL {0:?}: expected http://HOST[:PORT][/PATH] or https://...")]
    BadMirror(String),
    #[error("downloaded files do not form a valid data set: {0}")]
    Data(#[from] DataError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a data set is downloaded from by default.
pub fn canonical_base(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Mnist => MNIST_BASE,
        DatasetKind::FashionMnist => FASHION_MNIST_BASE,
        DatasetKind::Cifar10 => CIFAR10_BASE,
    }
}

fn check_base(base: &str) -> Result<String, FetchError> {
    let ok = (base.starts_with("http://") || base.starts_with("https://"))
        && base
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(base.trim_end_matches('/').to_string())
    } else {
        Err(FetchError::BadMirror(base.to_string()))
    }
}

/// The files of a data set, from `mirror` (a base URL the file names are appended to) or
/// from the canonical source.
pub fn manifest(kind: DatasetKind, mirror: Option<&str>) -> Result<Vec<RemoteFile>, FetchError> {
    let base = check_base(mirror.unwrap_or(canonical_base(kind)))?;
    let idx = |files: &[(&str, &str, &str)]| {
        files
            .iter()
            .map(|(name, md5, content)| RemoteFile {
                name: name.to_string(),
                url: format!("{base}/{name}"),
                accept: vec![Digest::md5_of_file(md5), Digest::sha256_of_content(content)],
            })
            .collect()
    };
    Ok(match kind {
        DatasetKind::Mnist => idx(&MNIST_FILES),
        DatasetKind::FashionMnist => idx(&FASHION_MNIST_FILES),
        DatasetKind::Cifar10 => vec![RemoteFile {
            name: CIFAR10_ARCHIVE.to_string(),
            url: format!("{base}/{CIFAR10_ARCHIVE}"),
            accept: vec![Digest::md5_of_file(CIFAR10_MD5)],
        }],
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `reader` through the hashers that `want` asks for; returns (md5, sha256) hex.
fn hash_stream(
    mut reader: impl Read,
    want: (bool, bool),
) -> io::Result<(Option<String>, Option<String>)> {
    let mut md5 = want.0.then(Md5::new);
    let mut sha = want.1.then(Sha256::new);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(h) = md5.as_mut() {
            h.update(&buf[..n]);
        }
        if let Some(h) = sha.as_mut() {
            h.update(&buf[..n]);
        }
    }
    Ok((
        md5.map(|h| hex(&h.finalize())),
        sha.map(|h| hex(&h.finalize())),
    ))
}

/// Checks `path` against the accepted digests. A mismatch is a [`FetchError::Checksum`]
/// (the file is left in place: callers decide what to delete).
pub fn verify(path: &Path, accept: &[Digest]) -> Result<(), FetchError> {
    let mut found = Vec::new();
    for target in [Target::File, Target::GunzipContent] {
        let of_target: Vec<&Digest> = accept.iter().filter(|d| d.target == target).collect();
        if of_target.is_empty() {
            continue;
        }
        let want = (
            of_target.iter().any(|d| d.algorithm == Algorithm::Md5),
            of_target.iter().any(|d| d.algorithm == Algorithm::Sha256),
        );
        let file = File::open(path).map_err(io_err(path))?;
        let mut reader = BufReader::new(file);
        let result = match target {
            Target::File => hash_stream(reader, want).map_err(io_err(path))?,
            Target::GunzipContent => {
                let mut magic = [0u8; 2];
                let gz = reader.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
                let reader = File::open(path).map_err(io_err(path))?;
                let hashed = if gz {
                    hash_stream(
                        flate2::read::MultiGzDecoder::new(BufReader::new(reader)),
                        want,
                    )
                } else {
                    hash_stream(BufReader::new(reader), want)
                };
                match hashed {
                    Ok(h) => h,
                    Err(e) => {
                        found.push(format!("not a valid gzip file ({e})"));
                        continue;
                    }
                }
            }
        };
        for d in of_target {
            let got = match d.algorithm {
                Algorithm::Md5 => result.0.as_deref(),
                Algorithm::Sha256 => result.1.as_deref(),
            };
            if got == Some(d.hex.as_str()) {
                return Ok(());
            }
        }
        for (alg, got) in [(Algorithm::Md5, &result.0), (Algorithm::Sha256, &result.1)] {
            if let Some(g) = got {
                found.push(format!("{} {g}", Digest::label(alg, target)));
            }
        }
    }
    Err(FetchError::Checksum {
        path: path.to_path_buf(),
        expected: accept
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" or "),
        found: found.join(", "),
    })
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file was already there and verified; nothing was downloaded.
    AlreadyPresent,
    /// Downloaded (`bytes` in this run, continuing a partial file of `resumed_from` bytes).
    Downloaded { bytes: u64, resumed_from: u64 },
}

struct Transfer {
    bytes: u64,
    resumed_from: u64,
}

/// Downloads files over HTTP(S).
pub struct Fetcher {
    agent: ureq::Agent,
    quiet: bool,
}

impl Fetcher {
    /// A fetcher; `quiet` hides progress bars and notes.
    pub fn new(quiet: bool) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("bayesnas/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build();
        Fetcher {
            agent: config.into(),
            quiet,
        }
    }

    fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// Downloads `file` into `dir` (created if needed) unless it is already there and
    /// verified. See the module documentation.
    pub fn fetch_file(&self, file: &RemoteFile, dir: &Path) -> Result<Outcome, FetchError> {
        let name_ok = !file.name.is_empty()
            && Path::new(&file.name)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            && Path::new(&file.name).components().count() == 1;
        if !name_ok {
            return Err(FetchError::Archive {
                path: PathBuf::from(&file.name),
                message: "not a plain file name".into(),
            });
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let final_path = dir.join(&file.name);
        let part = dir.join(format!("{}.part", file.name));
        if final_path.exists() {
            match verify(&final_path, &file.accept) {
                Ok(()) => return Ok(Outcome::AlreadyPresent),
                Err(FetchError::Checksum { .. }) => {
                    self.note(&format!(
                        "{}: does not match its checksum; downloading it again",
                        final_path.display()
                    ));
                    std::fs::remove_file(&final_path).map_err(io_err(&final_path))?;
                }
                Err(e) => return Err(e),
            }
        }
        let mut restarted = false;
        loop {
            let offset = match std::fs::metadata(&part) {
                Ok(m) => m.len(),
                Err(_) => 0,
            };
            let t = self.download(&file.url, &file.name, &part, offset)?;
            match verify(&part, &file.accept) {
                Ok(()) => {
                    std::fs::rename(&part, &final_path).map_err(io_err(&final_path))?;
                    if let Ok(d) = File::open(dir) {
                        let _ = d.sync_all(); // make the rename durable (best effort)
                    }
                    return Ok(Outcome::Downloaded {
                        bytes: t.bytes,
                        resumed_from: t.resumed_from,
                    });
                }
                Err(e @ FetchError::Checksum { .. }) => {
                    std::fs::remove_file(&part).map_err(io_err(&part))?;
                    if t.resumed_from > 0 && !restarted {
                        // The partial file may have been the bad part: one fresh attempt.
                        self.note(&format!(
                            "{}: the resumed download does not verify; starting over",
                            file.name
                        ));
                        restarted = true;
                        continue;
                    }
                    return Err(match e {
                        FetchError::Checksum {
                            expected, found, ..
                        } => FetchError::Checksum {
                            path: final_path,
                            expected,
                            found,
                        },
                        other => other,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// GETs `url` into `part`, continuing from `offset` when the server honours Range.
    fn download(
        &self,
        url: &str,
        name: &str,
        part: &Path,
        offset: u64,
    ) -> Result<Transfer, FetchError> {
        let net = |e: ureq::Error| FetchError::Network {
            url: url.to_string(),
            message: e.to_string(),
        };
        let mut request = self.agent.get(url);
        if offset > 0 {
            request = request.header("Range", format!("bytes={offset}-"));
        }
        let response = request.call().map_err(net)?;
        let status = response.status().as_u16();
        let header = |h: &str| {
            response
                .headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let (mut out, start) = match status {
            206 if offset > 0 => {
                let range = header("content-range").unwrap_or_default();
                if !range.starts_with(&format!("bytes {offset}-")) {
                    return Err(FetchError::Network {
                        url: url.to_string(),
                        message: format!(
                            "asked for bytes {offset}- but the server sent Content-Range {range:?}"
                        ),
                    });
                }
                let f = OpenOptions::new()
                    .append(true)
                    .open(part)
                    .map_err(io_err(part))?;
                (f, offset)
            }
            200 => {
                if offset > 0 {
                    self.note(&format!(
                        "{name}: the server does not resume downloads; starting over"
                    ));
                }
                (File::create(part).map_err(io_err(part))?, 0)
            }
            // Nothing left to send: the partial file is complete (or too long); verification
            // decides.
            416 if offset > 0 => {
                return Ok(Transfer {
                    bytes: 0,
                    resumed_from: offset,
                })
            }
            _ => {
                return Err(FetchError::Http {
                    url: url.to_string(),
                    status,
                })
            }
        };
        if start > 0 {
            self.note(&format!("{name}: resuming at byte {start}"));
        }
        let bar = Progress::bytes(content_length.map(|l| l + start), name, self.quiet);
        bar.set_position(start);
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = out.sync_all();
                    bar.clear();
                    return Err(FetchError::Network {
                        url: url.to_string(),
                        message: format!(
                            "download interrupted after {} bytes ({e}); the partial file {} \
                             is kept: run the same command again to resume",
                            start + written,
                            part.display()
                        ),
                    });
                }
            };
            out.write_all(&buf[..n]).map_err(io_err(part))?;
            written += n as u64;
            bar.inc(n as u64);
        }
        out.sync_all().map_err(io_err(part))?;
        bar.clear();
        Ok(Transfer {
            bytes: written,
            resumed_from: start,
        })
    }
}

/// Names of the files unpacked from the CIFAR-10 archive.
pub fn cifar_members() -> Vec<&'static str> {
    let mut names: Vec<&str> = cifar::TRAIN_FILES.to_vec();
    names.extend([cifar::TEST_FILE, "batches.meta.txt", "readme.html"]);
    names
}

/// Unpacks the CIFAR-10 batch files from `archive` into `dir/cifar-10-batches-bin/` (each
/// written to a `.part` file, then renamed). Only the known member names are extracted;
/// anything else in the archive is ignored. Returns the paths written.
pub fn unpack_cifar(archive: &Path, dir: &Path) -> Result<Vec<PathBuf>, FetchError> {
    let bad = |message: String| FetchError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let out_dir = dir.join(cifar::ARCHIVE_DIR);
    std::fs::create_dir_all(&out_dir).map_err(io_err(&out_dir))?;
    let file = File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let members = cifar_members();
    let mut written = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad member name: {e}")))?
            .into_owned();
        let parts: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s),
                _ => None,
            })
            .collect();
        let plain = path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        let name = match parts.as_slice() {
            [d, n] if plain && *d == cifar::ARCHIVE_DIR => n.to_str().unwrap_or(""),
            _ => continue,
        };
        let Some(name) = members.iter().find(|m| **m == name) else {
            continue;
        };
        let target = out_dir.join(name);
        let tmp = out_dir.join(format!("{name}.part"));
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        io::copy(&mut entry, &mut f).map_err(|e| bad(format!("corrupt member {name}: {e}")))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
        written.push(target);
    }
    let missing: Vec<&str> = cifar::TRAIN_FILES
        .iter()
        .chain(std::iter::once(&cifar::TEST_FILE))
        .filter(|n| !written.iter().any(|w| w.ends_with(n)))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "the archive lacks {}/{}",
            cifar::ARCHIVE_DIR,
            missing.join(", ")
        )));
    }
    Ok(written)
}

/// Options of [`fetch_dataset`].
#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// Base URL replacing the canonical source.
    pub mirror: Option<String>,
    /// No progress bars or notes.
    pub quiet: bool,
    /// Keep CIFAR-10's archive after unpacking it.
    pub keep_archive: bool,
}

/// The result of [`fetch_dataset`].
#[derive(Debug)]
pub struct FetchReport {
    /// Each downloaded (or already present) file and what happened to it.
    pub files: Vec<(String, Outcome)>,
    /// The data set, read back and validated.
    pub source: DataSource,
}

/// Downloads a data set into `dir` and reads it back to validate it.
pub fn fetch_dataset(
    kind: DatasetKind,
    dir: &Path,
    options: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let files = manifest(kind, options.mirror.as_deref())?;
    fetch_files(kind, &files, dir, options)
}

/// [`fetch_dataset`] with an explicit file list (tests use it with fixture checksums).
pub fn fetch_files(
    kind: DatasetKind,
    files: &[RemoteFile],
    dir: &Path,
    options: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let fetcher = Fetcher::new(options.quiet);
    let mut outcomes = Vec::new();
    match kind {
        DatasetKind::Cifar10 => {
            let archive = files.first().ok_or_else(|| FetchError::Archive {
                path: dir.to_path_buf(),
                message: "no archive to download".into(),
            })?;
            // Already unpacked and valid: nothing to do.
            if let Ok(src) = DataSource::open(kind, dir) {
                if !src.development_only && src.test.is_some() {
                    outcomes.push((cifar::ARCHIVE_DIR.to_string(), Outcome::AlreadyPresent));
                    return Ok(FetchReport {
                        files: outcomes,
                        source: src,
                    });
                }
            }
            let outcome = fetcher.fetch_file(archive, dir)?;
            let archive_path = dir.join(&archive.name);
            unpack_cifar(&archive_path, dir)?;
            if !options.keep_archive {
                std::fs::remove_file(&archive_path).map_err(io_err(&archive_path))?;
            }
            outcomes.push((archive.name.clone(), outcome));
        }
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            for f in files {
                outcomes.push((f.name.clone(), fetcher.fetch_file(f, dir)?));
            }
        }
    }
    let source = DataSource::open(kind, dir)?;
    Ok(FetchReport {
        files: outcomes,
        source,
    })
}
