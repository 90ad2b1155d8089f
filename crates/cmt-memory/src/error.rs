//! Errors of the memory bank. Every variant that comes from a file names the file and, where
//! it applies, the byte offset, so a damaged or foreign bank can be diagnosed without a
//! debugger.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An I/O error at a known place in a file (a failed write or read).
    #[error("{path}: at byte offset {offset}: {source}")]
    IoAt {
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not what it should be: bad magic, bad checksum, truncated, bad values.
    #[error("{path}: at byte offset {offset}: {msg}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        msg: String,
    },
    /// A well-formed bank that was written for another model or with other dimensions.
    #[error(
        "{path}: at byte offset {offset}: bank was written with {field} = {found}, \
         but {expected} was expected"
    )]
    Mismatch {
        path: PathBuf,
        offset: u64,
        field: &'static str,
        expected: String,
        found: String,
    },
    /// Another process (or another handle in this one) holds the bank's writer lock.
    #[error(
        "{path}: the bank is locked by another writer (readers can still open it; \
         only one writer at a time)"
    )]
    Locked { path: PathBuf },
    /// A write operation on a bank opened read-only.
    #[error("{path}: the bank was opened read-only")]
    ReadOnly { path: PathBuf },
    /// A writer that hit an error after which the on-disk state is not known (a failed
    /// fsync): it refuses further writes; reopening the bank recovers.
    #[error("{path}: an earlier write failed and left the writer unusable; reopen the bank")]
    Poisoned { path: PathBuf },
    /// A search over a bank (or shard) without any live entry.
    #[error("memory bank {bank}: no live entries to search")]
    Empty { bank: String },
    /// Bad arguments from a caller (lengths, dimensions, k, τ, non-finite values).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn io_at(path: &Path, offset: u64, source: std::io::Error) -> Self {
        Error::IoAt {
            path: path.to_path_buf(),
            offset,
            source,
        }
    }
    pub(crate) fn corrupt(path: &Path, offset: u64, msg: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            msg: msg.into(),
        }
    }
    /// Whether a reader should re-read the bank: a file vanished or changed under it while a
    /// writer compacted or committed (see `store::open`).
    pub(crate) fn is_transient_for_reader(&self) -> bool {
        match self {
            Error::Io { source, .. } | Error::IoAt { source, .. } => {
                source.kind() == std::io::ErrorKind::NotFound
            }
            Error::Corrupt { .. } => true,
            _ => false,
        }
    }
}
