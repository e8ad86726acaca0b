//! Errors of the command line. Every error is printed as `error: <message>` and ends the
//! process with a non-zero status: 2 for a usage problem (like clap's own errors), 1 for
//! anything else.

use std::path::{Path, PathBuf};

use bayesnas_data::DataError;

use crate::fetch::FetchError;

/// Everything a subcommand can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Options that cannot work together or cannot be satisfied.
    #[error("{0}")]
    Usage(String),
    /// The requested device is not available in this build or on this machine.
    #[error("{0}")]
    Device(String),
    /// Reading or validating data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Downloading data.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The engine (shapes, non-finite loss, checkpoints).
    #[error(transparent)]
    Engine(#[from] bayesnas_engine::Error),
    /// Search logic (genotypes, priors, derivation).
    #[error(transparent)]
    Search(#[from] bayesnas_search::Error),
    /// Writing outputs.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// An I/O error on `path`, for `map_err`: `std::fs::create_dir_all(&out).map_err(CliError::io(&out))?`.
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> CliError {
        let path = path.as_ref().to_path_buf();
        move |source| CliError::Io { path, source }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Result type of the subcommands.
pub type CliResult<T> = Result<T, CliError>;
