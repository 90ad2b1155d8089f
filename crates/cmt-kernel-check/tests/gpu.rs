//! GPU-only checks, listed (ignored) in every test report: what the emulator cannot run — the
//! real mma.sync instruction and the whole model on real device memory. They run where a
//! driver and cargo are both present:
//!
//!     cargo test -p cmt-kernel-check --test gpu -- --ignored
//!
//! A GPU machine without Rust runs the same checks through scripts/gpu-check.sh.
use cmt_kernel_check::cases::transformer;
use cmt_runtime::cuda::launch::transformer::{MatmulKernel, WeightType};
use cmt_runtime::cuda::Gpu;

fn gpu() -> Gpu {
    Gpu::open(0).unwrap_or_else(|e| panic!("this GPU-only test needs a CUDA device: {e}"))
}

#[test]
#[ignore = "GPU only: the tensor cores' mma.sync (the emulator runs a model of it)"]
fn tensor_core_matmul_on_the_gpu_matches_the_f64_reference() {
    let g = gpu();
    for (m, n, k) in [(65, 72, 48), (512, 1536, 576), (130, 49, 33)] {
        let o = transformer::matmul(
            &g,
            WeightType::Bf16,
            MatmulKernel::TensorCore,
            m,
            n,
            k,
            true,
            1,
        )
        .expect("runs");
        assert!(o.passed(), "{} {}: {:?}", o.kernel, o.shape, o.failures);
    }
}

#[test]
#[ignore = "GPU only: the device backend's self-test on a real GPU"]
fn device_backend_trusts_its_tensor_cores_on_the_gpu() {
    let be = cmt_runtime::backend::DeviceBackend::new(gpu(), "cuda:0");
    assert!(
        be.tensor_cores(),
        "the tensor-core self-test failed on this GPU"
    );
}
