//! `--device`: picks the backend a command's model runs on.
use anyhow::Result;
use cmt_runtime::device::{resolve_for_model, Device, DeviceChoice};
use cmt_runtime::CpuBackend;

/// The backend for the model. Only the CPU can run a model today: `auto` says so in one
/// stderr line and falls back; an explicit `cuda` is an error explaining why.
pub fn model_backend(choice: DeviceChoice) -> Result<CpuBackend> {
    let (device, note) = resolve_for_model(choice)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    match device {
        Device::Cpu => Ok(CpuBackend),
        Device::Cuda(n) => {
            anyhow::bail!("--device cuda:{n}: the CUDA model path is not implemented")
        }
    }
}
