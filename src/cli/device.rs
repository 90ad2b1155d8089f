//! `--device`: picks the backend a command's model runs on.
use anyhow::Result;
use cmt_runtime::backend::DeviceBackend;
use cmt_runtime::cuda::Gpu;
use cmt_runtime::device::{resolve_for_model, DeviceChoice, Target};
use cmt_runtime::CpuBackend;

/// Why the CMT commands (ingest, ask, eval, train, demo) stay on the CPU: their compressor and
/// memory bank run CPU code, and the training backward is CPU-only.
const CMT_CPU_ONLY: &str = "the CMT commands (ingest, ask, eval, train, demo) run on the CPU \
                            only so far (the compressor, the bank search and the training \
                            backward have no CUDA path yet)";

/// The backend of a command that runs only the transformer (generate, score, bench).
pub enum ModelBackend {
    Cpu(CpuBackend),
    Cuda(Box<DeviceBackend<Gpu>>),
}

/// Runs `$body` with `$b` bound to the chosen backend, whichever type it has.
macro_rules! on_backend {
    ($mb:expr, |$b:ident| $body:expr) => {
        match $mb {
            $crate::cli::device::ModelBackend::Cpu($b) => $body,
            $crate::cli::device::ModelBackend::Cuda($b) => {
                let $b = *$b;
                $body
            }
        }
    };
}
pub(crate) use on_backend;

fn note(n: Option<String>) {
    if let Some(n) = n {
        eprintln!("{n}");
    }
}

/// The backend for a transformer-only command: the CPU, or the device backend on a GPU.
pub fn model_backend(choice: DeviceChoice) -> Result<ModelBackend> {
    let (target, n) = resolve_for_model(choice, Ok(()))?;
    note(n);
    Ok(match target {
        Target::Cpu => ModelBackend::Cpu(CpuBackend),
        Target::Cuda(gpu) => {
            let name = gpu.describe();
            ModelBackend::Cuda(Box::new(DeviceBackend::new(gpu, name)))
        }
    })
}

/// For the CMT commands: the CPU (`auto` says so when it found a GPU); an explicit `cuda` is
/// an error saying why.
pub fn cmt_backend(choice: DeviceChoice) -> Result<CpuBackend> {
    let (target, n) = resolve_for_model(choice, Err(CMT_CPU_ONLY))?;
    note(n);
    match target {
        Target::Cpu => Ok(CpuBackend),
        Target::Cuda(g) => anyhow::bail!("{}: {CMT_CPU_ONLY}", g.describe()),
    }
}
