//! Whether bf16 prefill matmuls run on the tensor cores: allowed unless switched off, and only
//! after the kernel has matched the portable one on this device.
use super::DeviceBackend;
use crate::backend::{Backend, Bf16Matrix};
use crate::cuda::launch::transformer::{self, MatmulKernel, WeightType};
use crate::cuda::Exec;
use crate::error::Error;

impl<E: Exec> DeviceBackend<E> {
    /// Keeps every bf16 matmul on the portable kernels (f32 activations throughout).
    pub fn without_tensor_cores(mut self) -> Self {
        self.allow_tensor_cores = false;
        self
    }

    /// Whether bf16 matmuls of more than GEMV rows run on the tensor cores: allowed, and the
    /// kernel agrees with the portable one on a ragged test product on this device (an old
    /// GPU without mma.sync bf16 fails the launch; a wrong result fails the comparison).
    /// Decided once, on first use; a failure is said on stderr.
    pub fn tensor_cores(&self) -> bool {
        *self.tensor_cores.get_or_init(|| {
            if !self.allow_tensor_cores {
                return false;
            }
            match self.tensor_core_self_test() {
                Ok(None) => true,
                Ok(Some(why)) | Err(why) => {
                    eprintln!("cmt: {}: tensor-core matmul disabled ({why})", self.name);
                    false
                }
            }
        })
    }

    /// `Ok(None)`: the tensor-core product matches the tiled kernel's on bf16-valued inputs
    /// (same products in f32, summed in another order).
    fn tensor_core_self_test(&self) -> std::result::Result<Option<String>, String> {
        let (m, n, k) = (70, 72, 48);
        let val = |i: usize| half::bf16::from_f32(((i * 37 % 101) as f32 - 50.0) / 64.0);
        let x: Vec<f32> = (0..m * k).map(|i| val(i).to_f32()).collect();
        let wv: Vec<half::bf16> = (0..n * k).map(|i| val(i * 7 + 3)).collect();
        let e = |e: Error| e.to_string();
        let xb = self.upload(x).map_err(e)?;
        let w = self
            .upload_bf16(&Bf16Matrix::from_f32(
                n,
                k,
                &wv.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
            ))
            .map_err(e)?;
        let mut outs = Vec::new();
        for kernel in [MatmulKernel::Tiled, MatmulKernel::TensorCore] {
            let out = self.zeros(m * n).map_err(e)?;
            let l = transformer::matmul_nt(
                WeightType::Bf16,
                kernel,
                self.ptr(&out),
                self.ptr(&xb),
                self.ptr(&w),
                0,
                m,
                n,
                k,
            )
            .map_err(|e| e.to_string())?;
            self.run(&[l]).map_err(e)?;
            let mut host = vec![0.0; m * n];
            self.download(&out, 0, &mut host).map_err(e)?;
            outs.push(host);
        }
        let scale = outs[0].iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let diff = outs[0]
            .iter()
            .zip(&outs[1])
            .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
        // NaN fails too.
        let agrees = diff <= 1e-5 + 1e-5 * scale;
        Ok((!agrees)
            .then(|| format!("self-test max |diff| {diff:.3e} against a scale of {scale:.3e}")))
    }
}
