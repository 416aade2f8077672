//! The library's error type. Every fallible public function returns [`Result`]; nothing in the
//! library panics on bad input, and OpenMM's C++ exceptions arrive here as [`Error::OpenMm`].

use std::path::PathBuf;

/// Everything that can go wrong in cgflow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// OpenMM reported an error (a C++ exception caught in the shim, or a failed set-up step).
    #[error("OpenMM: {0}")]
    OpenMm(String),
    /// The caller passed something unusable: wrong shapes, non-finite numbers, unknown names.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A file could not be read or written. The OS error is part of the message and deliberately
    /// not a `source()`, so that a printed error chain names it once.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file was read but its contents are malformed.
    #[error("{path}: {message}")]
    Parse {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong, with a line number where there is one.
        message: String,
    },
    /// The tensor engine (candle) failed: a shape mismatch inside a model, an unsupported device.
    #[error("tensor engine: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A long run stopped at a checkpoint because a stop was requested ([`crate::run_control`]); the
    /// message says what was saved and how to continue.
    #[error("stopped: {0}")]
    Stopped(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Shorthand for [`Error::Parse`].
    pub fn parse(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Parse { path: path.into(), message: message.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }
}
