//! Which device runs the model: `--device cpu|cuda[:N]|auto`.
use crate::cuda::{CudaError, Gpu};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    /// CUDA device 0 when it can run the model, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "auto" => Ok(DeviceChoice::Auto),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(format!(
                    "`{s}` is not a device: use cpu, cuda, cuda:N or auto"
                )),
            },
        }
    }
}

/// Whether the transformer forward pass runs on CUDA yet. The kernels and the device layer
/// exist; the CUDA `Backend` implementation does not, so the model always runs on the CPU.
pub const CUDA_MODEL_PATH: bool = false;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device cuda:{ordinal}: {err}")]
    Cuda { ordinal: usize, err: CudaError },
    #[error("--device cuda:{0}: found {1}, but running the model on CUDA is not implemented yet (only its kernels are); use --device cpu or auto")]
    ModelPathMissing(usize, String),
}

/// The device the model runs on, plus a one-line note for stderr when `auto` fell back to
/// the CPU. An explicit `cuda` never falls back: it is an error if it cannot be honoured.
pub fn resolve_for_model(choice: DeviceChoice) -> Result<(Device, Option<String>), DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, None)),
        DeviceChoice::Cuda(ordinal) => {
            let gpu = Gpu::open(ordinal).map_err(|err| DeviceError::Cuda { ordinal, err })?;
            if CUDA_MODEL_PATH {
                Ok((Device::Cuda(ordinal), None))
            } else {
                Err(DeviceError::ModelPathMissing(ordinal, gpu.describe()))
            }
        }
        DeviceChoice::Auto => match Gpu::open(0) {
            Err(CudaError::NoDriver) => Ok((
                Device::Cpu,
                Some("cmt: no CUDA driver found, using the CPU".into()),
            )),
            Err(e) => Ok((
                Device::Cpu,
                Some(format!("cmt: CUDA unavailable ({e}), using the CPU")),
            )),
            Ok(_) if CUDA_MODEL_PATH => Ok((Device::Cuda(0), None)),
            Ok(gpu) => Ok((
                Device::Cpu,
                Some(format!(
                    "cmt: {} found, but the CUDA model path is not implemented yet; using the CPU",
                    gpu.describe()
                )),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!("cpu".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_never_fails_and_cpu_needs_nothing() {
        assert_eq!(
            resolve_for_model(DeviceChoice::Cpu).ok(),
            Some((Device::Cpu, None))
        );
        let (dev, note) = resolve_for_model(DeviceChoice::Auto).expect("auto always resolves");
        if !CUDA_MODEL_PATH {
            assert_eq!(dev, Device::Cpu);
            assert!(note.is_some());
        }
    }
}
