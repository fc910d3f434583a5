//! The library's error type. Every variant names the file or value at fault and what was expected.

use std::path::PathBuf;

/// Errors from loading weights, reading images and datasets, and running the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights file could not be used; `reason` says what is wrong and what was expected.
    #[error("{}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },

    /// An image could not be read or decoded.
    #[error("{}: cannot read image: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    /// A dataset (folder or FER2013 CSV) is malformed.
    #[error("{}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },

    /// An output file cannot be written where asked (it is an input, a device, or exists).
    #[error("{}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },

    /// A value given by the user is out of range or malformed.
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: String, reason: String },

    /// The face detector model could not be loaded.
    #[error("face detector model: {0}")]
    Detector(String),

    /// The camera could not be opened or stopped delivering frames.
    #[error("camera: {0}")]
    Camera(String),

    /// The window could not be opened or drawn.
    #[error("window: {0}")]
    Gui(String),

    // The causes below are part of the message and deliberately not `source()`s: `{:#}` at the
    // binary's edge prints a chain of sources, which would repeat them.
    /// Reading or writing a file failed.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A tensor operation failed inside candle.
    #[error("model: {0}")]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn weights(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Weights {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}
