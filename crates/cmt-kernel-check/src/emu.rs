//! The CPU emulator of kernels/*.cu (see emu/cmt_emu.h for what it models and what not).
use cmt_runtime::cuda::exec::check_range;
use cmt_runtime::cuda::Launch;
use cmt_runtime::cuda::{CudaError, Exec};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::Mutex;

/// The emulator maps `__shared__` to a function-local static (emu/cmt_emu.h), so two launches
/// of one kernel from two threads at once (the test harness runs tests in parallel) would
/// share a block's shared memory: every launch in the process holds this lock.
static LAUNCH: Mutex<()> = Mutex::new(());

extern "C" {
    fn cmt_emu_launch(
        name: *const c_char,
        grid: *const c_uint,
        block: *const c_uint,
        args: *mut *mut c_void,
    ) -> c_int;
    fn cmt_emu_kernel_count() -> c_int;
    fn cmt_emu_kernel_name(i: c_int) -> *const c_char;
}

/// Whether the build found the real cuda_bf16.h (else the shim header).
pub const REAL_HEADERS: bool = cfg!(cmt_emu_real_headers);

/// Entry points the emulator knows, sorted.
pub fn kernel_names() -> Vec<String> {
    // SAFETY: the registry is filled by static constructors before main and never changes;
    // names are NUL-terminated strings owned by it for the life of the process.
    unsafe {
        (0..cmt_emu_kernel_count())
            .map(|i| {
                CStr::from_ptr(cmt_emu_kernel_name(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

/// A host allocation written by emulated kernels through raw pointers (never through a
/// Rust reference while a launch runs). 16-byte aligned, as the kernels' vector loads need
/// (device allocations are 256-byte aligned).
pub struct HostBuf {
    ptr: NonNull<u128>,
    words: usize,
    bytes: usize,
}

// SAFETY: plain owned memory; every access goes through the executor, whose launches run to
// completion before they return, and writes need `&mut HostBuf` or a launch (serialized by
// `LAUNCH`), so shared references never observe a concurrent write.
unsafe impl Send for HostBuf {}
// SAFETY: as for Send.
unsafe impl Sync for HostBuf {}

impl Drop for HostBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`words` come from the boxed slice leaked in `alloc`.
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.words,
            ))
        });
    }
}

fn emu_err(msg: impl Into<String>) -> CudaError {
    CudaError::Executor(format!("emulator: {}", msg.into()))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Emu;

impl Exec for Emu {
    type Buf = HostBuf;
    fn alloc(&self, bytes: usize) -> Result<HostBuf, CudaError> {
        let words = bytes.div_ceil(16).max(1);
        let raw = Box::into_raw(vec![0u128; words].into_boxed_slice()) as *mut u128;
        let ptr = NonNull::new(raw).ok_or_else(|| emu_err("null allocation"))?;
        Ok(HostBuf { ptr, words, bytes })
    }
    fn upload(&self, bytes: &[u8]) -> Result<HostBuf, CudaError> {
        let mut b = self.alloc(bytes.len())?;
        self.write(&mut b, 0, bytes)?;
        Ok(b)
    }
    fn download(&self, buf: &HostBuf) -> Result<Vec<u8>, CudaError> {
        let mut out = vec![0u8; buf.bytes];
        self.read(buf, 0, &mut out)?;
        Ok(out)
    }
    fn bytes(&self, buf: &HostBuf) -> usize {
        buf.bytes
    }
    fn read(&self, buf: &HostBuf, offset: usize, out: &mut [u8]) -> Result<(), CudaError> {
        check_range("read", buf.bytes, offset, out.len())?;
        // SAFETY: the range lies inside the `bytes` owned bytes (checked); no launch is running
        // (launches are synchronous).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (buf.ptr.as_ptr() as *const u8).add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }
    fn write(&self, buf: &mut HostBuf, offset: usize, data: &[u8]) -> Result<(), CudaError> {
        check_range("write", buf.bytes, offset, data.len())?;
        // SAFETY: the range lies inside the owned bytes (checked) and `buf` is borrowed mutably.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (buf.ptr.as_ptr() as *mut u8).add(offset),
                data.len(),
            )
        };
        Ok(())
    }
    fn ptr(&self, buf: &HostBuf) -> u64 {
        buf.ptr.as_ptr() as u64
    }
    unsafe fn launch(&self, l: &Launch) -> Result<(), CudaError> {
        if l.is_empty() {
            return Ok(());
        }
        let name = CString::new(l.entry.as_str()).map_err(|_| emu_err("NUL in kernel name"))?;
        let _serial = LAUNCH.lock().unwrap_or_else(|p| p.into_inner());
        let mut slots = l.arg_slots();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        // SAFETY: `params` has one pointer per kernel parameter to an 8-byte slot holding the
        // value in its low bytes, as the trampoline reads them; slots outlive the call, which
        // returns after every emulated thread has joined. Pointer arguments are the caller's
        // contract (buffers of this executor, large enough).
        let rc = unsafe {
            cmt_emu_launch(
                name.as_ptr(),
                l.grid.as_ptr(),
                l.block.as_ptr(),
                params.as_mut_ptr(),
            )
        };
        match rc {
            0 => Ok(()),
            1 => Err(emu_err(format!(
                "no emulated kernel `{}` (is it wrapped in CMT_EMU_EXPORT?)",
                l.entry
            ))),
            _ => Err(emu_err(format!(
                "{}: block {:?} is not 1..=1024 threads",
                l.entry, l.block
            ))),
        }
    }
}
