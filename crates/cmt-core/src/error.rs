//! Errors of the orchestrator; each names what was wrong and where.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("config: {0}")]
    Config(String),
    /// A buffer does not have the shape an operation needs (a bug in the caller).
    #[error("{0}")]
    Shape(String),
    /// A request that cannot be served (bad argument, empty input, …).
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is damaged, foreign, or made for another base model.
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// A bank that does not belong to this model and checkpoint.
    #[error("{path}: {msg}")]
    BankMismatch { path: PathBuf, msg: String },
    #[error(transparent)]
    Runtime(#[from] cmt_runtime::Error),
    #[error(transparent)]
    Compress(#[from] cmt_compress::Error),
    #[error(transparent)]
    Memory(#[from] cmt_memory::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
