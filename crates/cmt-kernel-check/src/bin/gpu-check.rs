//! `gpu-check`: on a machine with an NVIDIA GPU (no Rust toolchain needed there), runs every
//! kernel from the embedded PTX against the CPU references on random inputs, then times it
//! with CUDA events and prints max error, time and achieved GB/s. Built by
//! scripts/gpu-check.sh. Exit status: 0 all passed, 1 a kernel failed, 2 no usable GPU.
use cmt_kernel_check::{cases, CheckError, Exec};
use cmt_runtime::cuda::gpu::DeviceBuffer;
use cmt_runtime::cuda::{CudaError, DType, Gpu, Launch};

/// The GPU as a case executor: each launch is waited for, so a fault is reported by the
/// kernel that caused it.
struct OnGpu(Gpu);

impl Exec for OnGpu {
    type Buf = DeviceBuffer;
    fn alloc(&self, bytes: usize) -> Result<DeviceBuffer, CudaError> {
        self.0.alloc(bytes)
    }
    fn upload(&self, bytes: &[u8]) -> Result<DeviceBuffer, CudaError> {
        Exec::upload(&self.0, bytes)
    }
    fn download(&self, buf: &DeviceBuffer) -> Result<Vec<u8>, CudaError> {
        Exec::download(&self.0, buf)
    }
    fn bytes(&self, buf: &DeviceBuffer) -> usize {
        self.0.bytes(buf)
    }
    fn read(&self, buf: &DeviceBuffer, offset: usize, out: &mut [u8]) -> Result<(), CudaError> {
        self.0.read(buf, offset, out)
    }
    fn write(&self, buf: &mut DeviceBuffer, offset: usize, data: &[u8]) -> Result<(), CudaError> {
        self.0.write(buf, offset, data)
    }
    fn ptr(&self, buf: &DeviceBuffer) -> u64 {
        Exec::ptr(&self.0, buf)
    }
    unsafe fn launch(&self, l: &Launch) -> Result<(), CudaError> {
        // SAFETY: forwarded contract: pointers come from `ptr` of live buffers of this GPU.
        unsafe { Exec::launch(&self.0, l)? };
        self.0.synchronize()
    }
    unsafe fn time(&self, launches: &[Launch]) -> Result<Option<f64>, CudaError> {
        // SAFETY: forwarded contract (buffers of this case are still alive).
        unsafe { self.0.time(launches) }
    }
}

/// SmolLM2-135M-like shapes (d=576, 9 heads × 64, ffn 1536, V=49152) at 4096 tokens, or a
/// quick smaller set with `--quick`.
fn all_cases(g: &OnGpu, dt: DType, quick: bool) -> Result<Vec<cases::Outcome>, CheckError> {
    let (tok, vocab, xent_rows) = if quick {
        (257, 4099, 33)
    } else {
        (4096, 49_152, 1024)
    };
    let (d, heads, hd, ffn) = (576, 9, 64, 1536);
    let mut v = vec![cases::embedding(g, dt, tok, d, vocab, 1)?];
    v.extend(cases::rmsnorm(g, dt, tok, d, 2)?);
    v.push(cases::rope(g, dt, tok, heads, hd, false, 3)?);
    v.push(cases::rope(g, dt, tok, heads, hd, true, 4)?);
    v.extend(cases::swiglu(g, dt, tok * ffn, 5)?);
    v.push(cases::residual(g, dt, tok * d, 6)?);
    v.push(cases::cross_entropy(g, dt, xent_rows, vocab, 7)?);
    Ok(v)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let gpu = match Gpu::open(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu-check: {e}");
            std::process::exit(2);
        }
    };
    println!("gpu-check on {}", gpu.describe());
    let g = OnGpu(gpu);
    println!(
        "{:<30} {:<22} {:>9} {:>10} {:>8}  status",
        "kernel", "shape", "max err", "time µs", "GB/s"
    );
    let mut failed = 0;
    for dt in DType::ALL {
        let outs = match all_cases(&g, dt, quick) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("gpu-check: {} kernels: {e}", dt.suffix());
                std::process::exit(1);
            }
        };
        for o in outs {
            let (us, gbs) = match o.time_ms {
                Some(ms) => (
                    format!("{:.1}", ms * 1e3),
                    format!("{:.0}", o.bytes as f64 / (ms * 1e-3) / 1e9),
                ),
                None => ("-".into(), "-".into()),
            };
            failed += usize::from(!o.passed());
            let status = o.status();
            println!(
                "{:<30} {:<22} {:>9.2e} {:>10} {:>8}  {status}",
                o.kernel, o.shape, o.max_err, us, gbs
            );
        }
    }
    // The compressor's H pass: its own table (GFLOP/s and fractions of peak).
    match cmt_kernel_check::cases_compress::gpu_suite(&g, quick) {
        Ok(outs) => failed += cmt_kernel_check::cases_compress::print_report(&outs),
        Err(e) => {
            eprintln!("gpu-check: compress_attention: {e}");
            std::process::exit(1);
        }
    }
    // The memory bank's fused top-k over a 1M-entry bank: its own table (GB/s, % of HBM).
    match cmt_kernel_check::cases::topk::gpu_suite(&g, quick) {
        Ok(outs) => failed += cmt_kernel_check::cases::topk::print_report(&outs),
        Err(e) => {
            eprintln!("gpu-check: topk_aggregate: {e}");
            std::process::exit(1);
        }
    }
    println!("GB/s counts the minimum bytes each kernel must move; compare with the GPU's peak (H100 SXM ≈ 3350 GB/s).");
    std::process::exit(i32::from(failed > 0));
}
