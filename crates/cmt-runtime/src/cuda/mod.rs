//! The CUDA side of the runtime: embedded PTX (`ptx`), launch geometry shared with the CPU
//! emulator (`launch`), the driver wrapper (`gpu`) and plain CPU references for every kernel
//! (`reference`). The driver library is loaded at run time (cudarc `dynamic-loading`), so
//! building and running on a machine without CUDA works; `gpu::Gpu::open` probes first.
pub mod exec;
pub mod gpu;
pub mod launch;
pub mod ptx;
pub mod reference;

pub use exec::Exec;
pub use gpu::Gpu;
pub use launch::{Arg, DType, Launch};

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda.so could not be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver found (libcuda.so is not loadable)")]
    NoDriver,
    #[error("CUDA device {ordinal}: {what}: {source}")]
    Driver {
        ordinal: usize,
        what: String,
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// The driver library misbehaved in a way cudarc reports by panicking (a missing symbol in
    /// an old driver, for instance); caught at the probe so the caller can fall back.
    #[error("CUDA driver unusable: {0}")]
    Unusable(String),
    #[error("kernel shape: {0}")]
    Shape(String),
    /// A kernel executor other than the driver (the CPU emulator) failed.
    #[error("kernel executor: {0}")]
    Executor(String),
    #[error("no PTX module `{0}` is embedded (run cargo xtask build-kernels)")]
    NoModule(String),
}
