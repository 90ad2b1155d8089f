//! `--device`: picks the backend a command's model runs on.
use anyhow::Result;
use cmt_runtime::backend::DeviceBackend;
use cmt_runtime::cuda::Gpu;
use cmt_runtime::device::{resolve_for_model, DeviceChoice, Target};
use cmt_runtime::CpuBackend;
use std::sync::Arc;

/// Why `cmt train` stays on the CPU: the backward through θ is CPU code.
const TRAIN_CPU_ONLY: &str = "cmt train runs on the CPU only so far (the backward through the \
                              model has no CUDA path yet)";

/// The backend of θ for a command that runs it forward only (generate, score, bench, and the
/// CMT inference commands ingest, ask, eval, demo, whose compressor, bank search and prefix
/// generator stay on the CPU).
pub enum ModelBackend {
    Cpu(CpuBackend),
    Cuda(Box<DeviceBackend<Arc<Gpu>>>),
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
            ModelBackend::Cuda(Box::new(DeviceBackend::new(Arc::new(gpu), name)))
        }
    })
}

/// For `cmt train`: the CPU (`auto` says so when it found a GPU); an explicit `cuda` is an
/// error saying why.
pub fn train_backend(choice: DeviceChoice) -> Result<CpuBackend> {
    let (target, n) = resolve_for_model(choice, Err(TRAIN_CPU_ONLY))?;
    note(n);
    match target {
        Target::Cpu => Ok(CpuBackend),
        Target::Cuda(g) => anyhow::bail!("{}: {TRAIN_CPU_ONLY}", g.describe()),
    }
}
