//! What a case needs from whoever runs kernels: byte buffers with stable addresses and a
//! launch. Implemented by the emulator (`emu::Emu`) and by a GPU (`gpu-check`).
use cmt_runtime::cuda::{CudaError, Launch};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("emulator: {0}")]
    Emu(String),
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("CPU reference: {0}")]
    Reference(#[from] cmt_runtime::Error),
}

pub trait Exec {
    type Buf;
    fn upload(&self, bytes: &[u8]) -> Result<Self::Buf, CheckError>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<u8>, CheckError>;
    /// Address to pass as a kernel pointer argument.
    fn ptr(&self, buf: &Self::Buf) -> u64;
    /// Runs `l` to completion.
    ///
    /// # Safety
    /// Every pointer in `l` must come from `ptr` of a live buffer of this executor, large
    /// enough for the shapes in `l`.
    unsafe fn launch(&self, l: &Launch) -> Result<(), CheckError>;
    /// Mean milliseconds per run of `launches`, re-run on the same buffers, or None when
    /// this executor does not time (the emulator).
    ///
    /// # Safety
    /// As for `launch`.
    unsafe fn time(&self, _launches: &[Launch]) -> Result<Option<f64>, CheckError> {
        Ok(None)
    }
}
