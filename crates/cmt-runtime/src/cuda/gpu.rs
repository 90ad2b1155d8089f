//! A CUDA device through cudarc's driver API: context + one stream, byte buffers, PTX
//! modules loaded lazily on first launch, checked launches, event timing.
use super::launch::Launch;
use super::{ptx, CudaError};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

pub struct Gpu {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// CMT_CUDA_SYNC=1: synchronize after every launch so an asynchronous fault is reported
    /// by the launch that caused it (debugging; slow).
    sync_each: bool,
}

/// Whether libcuda can be loaded at all. Must be checked before any other cudarc driver
/// call: cudarc panics when the library is missing.
pub fn driver_present() -> bool {
    // SAFETY: only tries dlopen on the candidate library names; calls nothing in them.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl Gpu {
    /// Opens device `ordinal`, or explains why not (no driver, no such device, old driver).
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        // cudarc resolves driver symbols lazily and panics on a missing one (a driver older
        // than the pinned CUDA 12.4 API): turn that into an error the caller can fall back on.
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic in the driver wrapper".into());
                CudaError::Unusable(msg)
            })?
            .map_err(|source| CudaError::Driver {
                ordinal,
                what: "creating a context".into(),
                source,
            })?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ordinal,
            ctx,
            stream,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            sync_each: std::env::var_os("CMT_CUDA_SYNC").is_some_and(|v| v == "1"),
        })
    }

    fn err(
        &self,
        what: impl Into<String>,
    ) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
        let (ordinal, what) = (self.ordinal, what.into());
        move |source| CudaError::Driver {
            ordinal,
            what,
            source,
        }
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn describe(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        match self.ctx.compute_capability() {
            Ok((ma, mi)) => format!("cuda:{} ({name}, sm_{ma}{mi})", self.ordinal),
            Err(_) => format!("cuda:{} ({name})", self.ordinal),
        }
    }

    pub fn alloc_zeros(&self, bytes: usize) -> Result<CudaSlice<u8>, CudaError> {
        self.stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(self.err(format!("allocating {bytes} bytes")))
    }
    pub fn upload(&self, bytes: &[u8]) -> Result<CudaSlice<u8>, CudaError> {
        self.stream
            .clone_htod(bytes)
            .map_err(self.err(format!("uploading {} bytes", bytes.len())))
    }
    pub fn download(&self, buf: &CudaSlice<u8>) -> Result<Vec<u8>, CudaError> {
        self.stream
            .clone_dtoh(buf)
            .map_err(self.err("downloading a buffer"))
    }
    /// Copies a device range to the host and waits for it (and everything before it).
    pub fn read_view(&self, src: &CudaView<'_, u8>, out: &mut [u8]) -> Result<(), CudaError> {
        self.stream
            .memcpy_dtoh(src, out)
            .map_err(self.err(format!("reading {} bytes", out.len())))?;
        self.synchronize()
    }
    /// Copies host bytes into a device range, ordered after earlier launches on the stream.
    pub fn write_view(&self, dst: &mut CudaViewMut<'_, u8>, data: &[u8]) -> Result<(), CudaError> {
        self.stream
            .memcpy_htod(data, dst)
            .map_err(self.err(format!("writing {} bytes", data.len())))
    }
    /// The raw device address of `buf`, for a `Launch` argument.
    pub fn ptr(&self, buf: &CudaSlice<u8>) -> u64 {
        // One stream only, so the event guard cudarc returns has nothing to order.
        let (p, _guard) = buf.device_ptr(&self.stream);
        p
    }

    fn function(&self, l: &Launch) -> Result<CudaFunction, CudaError> {
        let mut funcs = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = funcs.get(&l.entry) {
            return Ok(f.clone());
        }
        let module = {
            let mut mods = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match mods.get(l.module) {
                Some(m) => m.clone(),
                None => {
                    let src = ptx::source(l.module)
                        .ok_or_else(|| CudaError::NoModule(l.module.to_string()))?;
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_src(src))
                        .map_err(self.err(format!("loading PTX module `{}` (a driver older than CUDA 12.4 cannot JIT PTX 8.4)", l.module)))?;
                    mods.insert(l.module, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(&l.entry)
            .map_err(self.err(format!("no kernel `{}` in module `{}`", l.entry, l.module)))?;
        funcs.insert(l.entry.clone(), f.clone());
        Ok(f)
    }

    /// Launches `l` on the stream and checks the launch (and, with CMT_CUDA_SYNC=1, its
    /// completion).
    ///
    /// # Safety
    /// Every pointer argument of `l` must be a live allocation of this context, large enough
    /// for the shapes in `l` as the kernel's comment in kernels/*.cu describes, with no other
    /// stream writing it concurrently.
    pub unsafe fn launch(&self, l: &Launch) -> Result<(), CudaError> {
        if l.is_empty() {
            return Ok(());
        }
        let f = self.function(l)?;
        let mut slots = l.arg_slots();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        let what = || {
            format!(
                "launching {} grid {:?} block {:?}",
                l.entry, l.grid, l.block
            )
        };
        self.ctx.bind_to_thread().map_err(self.err(what()))?;
        // SAFETY: `params` holds one pointer per kernel parameter, each to an 8-byte slot
        // whose low bytes are the value (little-endian, checked in launch.rs); the slots
        // outlive the call, which copies them. Pointer validity is the caller's contract.
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                (l.grid[0], l.grid[1], l.grid[2]),
                (l.block[0], l.block[1], l.block[2]),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(self.err(what()))?;
        if self.sync_each {
            self.synchronize().map_err(|e| match e {
                CudaError::Driver {
                    ordinal, source, ..
                } => CudaError::Driver {
                    ordinal,
                    what: format!("running {}", l.entry),
                    source,
                },
                e => e,
            })?;
        }
        Ok(())
    }

    /// Waits for the stream; reports any asynchronous kernel fault.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(self.err("synchronizing"))
    }

    /// Mean milliseconds per call of `f` over `iters` calls, timed with CUDA events after
    /// one warm-up call.
    pub fn time_ms(
        &self,
        iters: u32,
        mut f: impl FnMut() -> Result<(), CudaError>,
    ) -> Result<f32, CudaError> {
        f()?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self
            .ctx
            .new_event(timing)
            .map_err(self.err("creating an event"))?;
        let end = self
            .ctx
            .new_event(timing)
            .map_err(self.err("creating an event"))?;
        start
            .record(&self.stream)
            .map_err(self.err("recording an event"))?;
        for _ in 0..iters.max(1) {
            f()?;
        }
        end.record(&self.stream)
            .map_err(self.err("recording an event"))?;
        end.synchronize()
            .map_err(self.err("waiting for the timed kernels"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(self.err("reading event time"))?;
        Ok(ms / iters.max(1) as f32)
    }
}

/// A device allocation of bytes.
pub type DeviceBuffer = CudaSlice<u8>;
