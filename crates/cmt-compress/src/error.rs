use std::path::PathBuf;

/// Errors of the compressor crate; each names what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A buffer or a batch does not have the shape the operation needs.
    #[error("{0}")]
    Shape(String),
    /// A configuration value is out of range.
    #[error("compressor config: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or cache file is damaged or foreign.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// Another writer holds the lock of a cache directory.
    #[error("{path}: locked by another writer")]
    Locked { path: PathBuf },
    #[error(transparent)]
    Runtime(#[from] cmt_runtime::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
