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

/// Whether a command's model can run on CUDA: `Err(why not)` for the commands that still run
/// only on the CPU.
pub type CudaSupport = Result<(), &'static str>;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device cuda:{ordinal}: {err}")]
    Cuda { ordinal: usize, err: CudaError },
    #[error("--device cuda:{ordinal}: found {gpu}, but {why}; use --device cpu or auto")]
    CpuOnly {
        ordinal: usize,
        gpu: String,
        why: &'static str,
    },
}

/// Where the model runs.
pub enum Target {
    Cpu,
    Cuda(Gpu),
}

impl Target {
    pub fn device(&self) -> Device {
        match self {
            Target::Cpu => Device::Cpu,
            Target::Cuda(g) => Device::Cuda(g.ordinal()),
        }
    }
}

/// The device the model runs on, plus a one-line note for stderr when `auto` fell back to
/// the CPU. An explicit `cuda` never falls back: it is an error if it cannot be honoured.
pub fn resolve_for_model(
    choice: DeviceChoice,
    support: CudaSupport,
) -> Result<(Target, Option<String>), DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok((Target::Cpu, None)),
        DeviceChoice::Cuda(ordinal) => {
            let gpu = Gpu::open(ordinal).map_err(|err| DeviceError::Cuda { ordinal, err })?;
            match support {
                Ok(()) => Ok((Target::Cuda(gpu), None)),
                Err(why) => Err(DeviceError::CpuOnly {
                    ordinal,
                    gpu: gpu.describe(),
                    why,
                }),
            }
        }
        DeviceChoice::Auto => match Gpu::open(0) {
            Err(CudaError::NoDriver) => Ok((
                Target::Cpu,
                Some("cmt: no CUDA driver found, using the CPU".into()),
            )),
            Err(e) => Ok((
                Target::Cpu,
                Some(format!("cmt: CUDA unavailable ({e}), using the CPU")),
            )),
            Ok(gpu) => match support {
                Ok(()) => Ok((Target::Cuda(gpu), None)),
                Err(why) => Ok((
                    Target::Cpu,
                    Some(format!(
                        "cmt: {} found, but {why}; using the CPU",
                        gpu.describe()
                    )),
                )),
            },
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
        for support in [Ok(()), Err("not here")] {
            let (t, note) = resolve_for_model(DeviceChoice::Cpu, support).expect("cpu resolves");
            assert_eq!((t.device(), note), (Device::Cpu, None));
            let (t, note) = resolve_for_model(DeviceChoice::Auto, support).expect("auto resolves");
            // Without a usable GPU, or for a CPU-only command, auto says why in one line.
            if t.device() == Device::Cpu {
                assert!(note.is_some_and(|n| n.starts_with("cmt: ")));
            }
        }
    }

    /// An explicit `cuda` on a machine without a driver is an error naming the device.
    #[test]
    fn explicit_cuda_without_a_driver_is_an_error() {
        if crate::cuda::gpu::driver_present() {
            return;
        }
        let err = resolve_for_model(DeviceChoice::Cuda(0), Ok(()))
            .err()
            .expect("no driver: an error");
        assert_eq!(
            err.to_string(),
            "--device cuda:0: no CUDA driver found (libcuda.so is not loadable)"
        );
    }
}
