//! Errors of the runtime. Every variant that comes from a file names the file, and where it
//! applies the tensor or the byte offset, so a user can tell what is wrong without a debugger.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not what it claims to be (bad magic, truncated header, bad offsets).
    #[error("{path}: at byte offset {offset}: {msg}")]
    Format {
        path: PathBuf,
        offset: u64,
        msg: String,
    },
    /// A tensor that is missing, of the wrong shape, or of an unsupported type.
    #[error("{path}: tensor `{tensor}`: {msg}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    /// A model configuration (config.json or GGUF metadata) the runtime cannot run.
    #[error("{path}: config field `{field}`: {msg}")]
    Config {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad arguments from a caller (shapes, lengths, token ids out of range).
    #[error("{0}")]
    Invalid(String),
    #[error("model fetch: {0}")]
    Fetch(String),
    /// A CUDA device or kernel executor failed (the device backend).
    #[error(transparent)]
    Cuda(#[from] crate::cuda::CudaError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn tensor(path: impl Into<PathBuf>, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn config(path: impl Into<PathBuf>, field: &str, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            field: field.to_string(),
            msg: msg.into(),
        }
    }
}
