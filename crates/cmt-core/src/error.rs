//! Errors of the orchestrator; each names what was wrong and where.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
/// Errors of cmt-core.
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
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// What the OS said.
        source: std::io::Error,
    },
    /// A checkpoint is damaged, foreign, or made for another base model.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A bank that does not belong to this model and checkpoint.
    #[error("{path}: {msg}")]
    BankMismatch {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// From the runtime (θ, tokenizer, model files).
    #[error(transparent)]
    Runtime(#[from] cmt_runtime::Error),
    /// From the compressor.
    #[error(transparent)]
    Compress(#[from] cmt_compress::Error),
    /// From the dataset and document readers (names file, line and field).
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// From the memory bank (damage names file and offset).
    #[error(transparent)]
    Memory(#[from] cmt_memory::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// An [`Error::Checkpoint`] for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// cmt-core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
