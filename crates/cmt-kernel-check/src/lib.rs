//! Kernel verification. `emu` runs the unchanged CUDA sources on the CPU (compiled as host
//! C++ by build.rs); `cases` builds random inputs for every kernel, runs them on an
//! executor (the emulator, or a GPU in the `gpu-check` binary) through the same
//! `cmt_runtime::cuda::launch` geometry the runtime uses, and compares with the CPU
//! references.
pub mod cases;
pub mod cases_compress;
pub mod emu;
pub mod exec;
pub mod model_check;

pub use exec::{CheckError, Exec};
