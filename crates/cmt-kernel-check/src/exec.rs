//! What a case needs from whoever runs kernels: the runtime's [`Exec`] (byte buffers with
//! stable addresses and launches), implemented by the emulator (`emu::Emu`) and by a GPU.
use cmt_runtime::cuda::CudaError;
pub use cmt_runtime::cuda::Exec;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("emulator: {0}")]
    Emu(String),
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("CPU reference: {0}")]
    Reference(#[from] cmt_runtime::Error),
}
