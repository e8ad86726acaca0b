//! Typed errors of the data crate. Every variant that concerns a file names it, together with
//! what was expected and what was found, so that the message can be shown to a user as it is.

use std::path::PathBuf;

/// Everything that can go wrong while reading, validating or batching a data set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data directory that was named does not exist (or is not a directory).
    #[error("{}: data directory does not exist or is not a directory", path.display())]
    NoSuchDirectory { path: PathBuf },

    /// The files a data set needs are not in the directory.
    #[error(
        "{}: no {dataset} files found (looked for {}); get them with `bayesnas fetch {dataset} --dir DIR`",
        dir.display(),
        expected.join(", ")
    )]
    MissingFiles {
        dir: PathBuf,
        dataset: &'static str,
        expected: Vec<String>,
    },

    /// The file starts like gzip but does not decompress.
    #[error("{}: corrupt gzip stream: {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The decompressed file is larger than any data set this tool reads.
    #[error("{}: decompressed size exceeds the limit of {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    /// The file does not start with the magic number of the expected format.
    #[error(
        "{}: bad magic number: expected {expected:#010x} ({what}), found {found:#010x}",
        path.display()
    )]
    BadMagic {
        path: PathBuf,
        what: &'static str,
        expected: u32,
        found: u32,
    },

    /// The file is shorter than its header (or the format) requires.
    #[error(
        "{}: truncated {what}: expected {expected} bytes, found {found}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: &'static str,
        expected: u64,
        found: u64,
    },

    /// The file is longer than its header declares.
    #[error(
        "{}: {what} has trailing data: the header declares {expected} bytes, found {found}",
        path.display()
    )]
    TrailingData {
        path: PathBuf,
        what: &'static str,
        expected: u64,
        found: u64,
    },

    /// The header declares dimensions that do not fit the data set (e.g. not 28x28).
    #[error("{}: unexpected dimensions: expected {expected}, found {found}", path.display())]
    Dimensions {
        path: PathBuf,
        expected: String,
        found: String,
    },

    /// The images file and the labels file disagree on the number of examples.
    #[error(
        "image/label count mismatch: {} holds {images} images but {} holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: u64,
        labels_path: PathBuf,
        labels: u64,
    },

    /// A label is not a valid class index.
    #[error(
        "{}: label {label} of example {index} is out of range: expected 0..={}",
        path.display(),
        classes.saturating_sub(1)
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },

    /// A CIFAR-10 batch whose size is not a whole number of records.
    #[error(
        "{}: size {size} bytes is not a multiple of the {record}-byte record size",
        path.display()
    )]
    BadSize {
        path: PathBuf,
        size: u64,
        record: usize,
    },

    /// A file with a valid header and no examples.
    #[error("{}: contains no examples", path.display())]
    Empty { path: PathBuf },

    /// A bad argument to the pipeline (batch size 0, fractions out of range, index out of
    /// range, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Result type of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// The file the error is about, where there is one (the images file for a count mismatch).
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::Io { path, .. }
            | DataError::NoSuchDirectory { path }
            | DataError::Gzip { path, .. }
            | DataError::TooLarge { path, .. }
            | DataError::BadMagic { path, .. }
            | DataError::Truncated { path, .. }
            | DataError::TrailingData { path, .. }
            | DataError::Dimensions { path, .. }
            | DataError::LabelOutOfRange { path, .. }
            | DataError::BadSize { path, .. }
            | DataError::Empty { path } => Some(path),
            DataError::MissingFiles { dir, .. } => Some(dir),
            DataError::CountMismatch { images_path, .. } => Some(images_path),
            DataError::Invalid(_) => None,
        }
    }
}
