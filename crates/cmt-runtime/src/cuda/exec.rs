//! Who runs kernels: byte buffers with stable addresses, copies at an offset, and launches of
//! [`Launch`] values. Implemented by a GPU ([`Gpu`], here) and by the CPU emulator of
//! kernels/*.cu (`cmt-kernel-check`), so the device backend and the kernel checks run the same
//! code on either.
use super::gpu::{DeviceBuffer, Gpu};
use super::{CudaError, Launch};

pub trait Exec: Send + Sync {
    type Buf: Send + Sync;
    /// `bytes` zeroed bytes.
    fn alloc(&self, bytes: usize) -> Result<Self::Buf, CudaError>;
    fn upload(&self, bytes: &[u8]) -> Result<Self::Buf, CudaError>;
    /// The whole buffer, after every launch before it has finished.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<u8>, CudaError>;
    /// Size of `buf` in bytes.
    fn bytes(&self, buf: &Self::Buf) -> usize;
    /// `out.len()` bytes from byte `offset` of `buf`, after every earlier launch finished.
    fn read(&self, buf: &Self::Buf, offset: usize, out: &mut [u8]) -> Result<(), CudaError>;
    /// Copies `data` to byte `offset` of `buf`, ordered after every earlier launch.
    fn write(&self, buf: &mut Self::Buf, offset: usize, data: &[u8]) -> Result<(), CudaError>;
    /// Address to pass as a kernel pointer argument.
    fn ptr(&self, buf: &Self::Buf) -> u64;
    /// Runs `l` (a GPU may return before it finishes; later reads are ordered after it).
    ///
    /// # Safety
    /// Every pointer in `l` must come from `ptr` of a live buffer of this executor (plus an
    /// offset inside it), large enough for the shapes in `l`.
    unsafe fn launch(&self, l: &Launch) -> Result<(), CudaError>;
    /// Mean milliseconds per run of `launches`, re-run on the same buffers, or None when
    /// this executor does not time (the emulator).
    ///
    /// # Safety
    /// As for `launch`.
    unsafe fn time(&self, _launches: &[Launch]) -> Result<Option<f64>, CudaError> {
        Ok(None)
    }
}

/// `offset..offset + len` must lie inside a buffer of `have` bytes.
pub fn check_range(what: &str, have: usize, offset: usize, len: usize) -> Result<(), CudaError> {
    match offset.checked_add(len) {
        Some(end) if end <= have => Ok(()),
        _ => Err(CudaError::Shape(format!(
            "{what}: bytes {offset}..{} of a {have}-byte buffer",
            offset.saturating_add(len)
        ))),
    }
}

impl Exec for Gpu {
    type Buf = DeviceBuffer;
    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer, CudaError> {
        self.alloc_zeros(bytes)
    }
    fn upload(&self, bytes: &[u8]) -> Result<DeviceBuffer, CudaError> {
        Gpu::upload(self, bytes)
    }
    fn download(&self, buf: &DeviceBuffer) -> Result<Vec<u8>, CudaError> {
        Gpu::download(self, buf)
    }
    fn bytes(&self, buf: &DeviceBuffer) -> usize {
        buf.len()
    }
    fn read(&self, buf: &DeviceBuffer, offset: usize, out: &mut [u8]) -> Result<(), CudaError> {
        check_range("read", buf.len(), offset, out.len())?;
        if out.is_empty() {
            return Ok(());
        }
        let view = buf.slice(offset..offset + out.len());
        self.read_view(&view, out)
    }
    fn write(&self, buf: &mut DeviceBuffer, offset: usize, data: &[u8]) -> Result<(), CudaError> {
        check_range("write", buf.len(), offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        let mut view = buf.slice_mut(offset..offset + data.len());
        self.write_view(&mut view, data)
    }
    fn ptr(&self, buf: &DeviceBuffer) -> u64 {
        Gpu::ptr(self, buf)
    }
    unsafe fn launch(&self, l: &Launch) -> Result<(), CudaError> {
        // SAFETY: forwarded contract.
        unsafe { Gpu::launch(self, l) }
    }
    unsafe fn time(&self, launches: &[Launch]) -> Result<Option<f64>, CudaError> {
        let ms = self.time_ms(20, || {
            for l in launches {
                // SAFETY: forwarded contract (the caller's buffers are alive).
                unsafe { Gpu::launch(self, l)? };
            }
            Ok(())
        })?;
        Ok(Some(f64::from(ms)))
    }
}

/// An executor behind a pointer is one too: a borrowed one (a backend over a GPU the caller
/// keeps using) or a shared one (one GPU behind θ's backend and the bank search).
macro_rules! forward_exec {
    ($($ptr:ty),*) => {$(
        impl<E: Exec> Exec for $ptr {
            type Buf = E::Buf;
            fn alloc(&self, bytes: usize) -> Result<E::Buf, CudaError> {
                E::alloc(self, bytes)
            }
            fn upload(&self, bytes: &[u8]) -> Result<E::Buf, CudaError> {
                E::upload(self, bytes)
            }
            fn download(&self, buf: &E::Buf) -> Result<Vec<u8>, CudaError> {
                E::download(self, buf)
            }
            fn bytes(&self, buf: &E::Buf) -> usize {
                E::bytes(self, buf)
            }
            fn read(&self, buf: &E::Buf, offset: usize, out: &mut [u8]) -> Result<(), CudaError> {
                E::read(self, buf, offset, out)
            }
            fn write(&self, buf: &mut E::Buf, offset: usize, data: &[u8]) -> Result<(), CudaError> {
                E::write(self, buf, offset, data)
            }
            fn ptr(&self, buf: &E::Buf) -> u64 {
                E::ptr(self, buf)
            }
            unsafe fn launch(&self, l: &Launch) -> Result<(), CudaError> {
                // SAFETY: forwarded contract.
                unsafe { E::launch(self, l) }
            }
            unsafe fn time(&self, launches: &[Launch]) -> Result<Option<f64>, CudaError> {
                // SAFETY: forwarded contract.
                unsafe { E::time(self, launches) }
            }
        }
    )*};
}
forward_exec!(&E, std::sync::Arc<E>);
