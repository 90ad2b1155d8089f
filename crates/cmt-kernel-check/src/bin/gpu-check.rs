//! `gpu-check`: on a machine with an NVIDIA GPU (no Rust toolchain needed there), runs every
//! kernel from the embedded PTX against the CPU references on random inputs, then times it
//! with CUDA events and prints max error, time and achieved GB/s. Built by
//! scripts/gpu-check.sh. Exit status: 0 all passed, 1 a kernel failed, 2 no usable GPU.
use cmt_kernel_check::cases::transformer::{self, Batch};
use cmt_kernel_check::{cases, model_check, CheckError, Exec};
use cmt_runtime::bench::BenchOptions;
use cmt_runtime::cuda::gpu::DeviceBuffer;
use cmt_runtime::cuda::launch::transformer::{attention_splits, MatmulKernel, WeightType};
use cmt_runtime::cuda::{CudaError, DType, Gpu, Launch};
use cmt_runtime::WeightFormat;
use std::path::PathBuf;

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
/// A case that could not run (a launch refused, a reference failed) as a failed outcome, so
/// that one broken kernel does not hide the others' results (GPU time is scarce). After a
/// fault that poisons the context every later case fails too, and says so.
fn outcome_of(r: Result<cases::Outcome, CheckError>) -> cases::Outcome {
    r.unwrap_or_else(|e| cases::Outcome {
        kernel: "(case did not run)".into(),
        shape: String::new(),
        max_err: f64::NAN,
        failures: vec![e.to_string()],
        bytes: 0,
        time_ms: None,
    })
}

fn outcomes_of(r: Result<Vec<cases::Outcome>, CheckError>) -> Vec<cases::Outcome> {
    r.unwrap_or_else(|e| vec![outcome_of(Err(e))])
}

fn all_cases(g: &OnGpu, dt: DType, quick: bool) -> Vec<cases::Outcome> {
    let (tok, vocab, xent_rows) = if quick {
        (257, 4099, 33)
    } else {
        (4096, 49_152, 1024)
    };
    let (d, heads, hd, ffn) = (576, 9, 64, 1536);
    let mut v = vec![outcome_of(cases::embedding(g, dt, tok, d, vocab, 1))];
    v.extend(outcomes_of(cases::rmsnorm(g, dt, tok, d, 2)));
    v.push(outcome_of(cases::rope(g, dt, tok, heads, hd, false, 3)));
    v.push(outcome_of(cases::rope(g, dt, tok, heads, hd, true, 4)));
    v.extend(outcomes_of(cases::swiglu(g, dt, tok * ffn, 5)));
    v.push(outcome_of(cases::residual(g, dt, tok * d, 6)));
    v.push(outcome_of(cases::cross_entropy(g, dt, xent_rows, vocab, 7)));
    // The transformer's matmuls at prefill (tiled) and decode (GEMV) shapes: q/o, gate/up,
    // down, and the LM head for a few rows (its f64 reference is the slow part).
    let m = if quick { 65 } else { 512 };
    let wt = transformer::dense(dt);
    let mm = |wt, kernel, m, n, k, seed| transformer::matmul(g, wt, kernel, m, n, k, false, seed);
    for (n, k) in [(d, d), (ffn, d), (d, ffn)] {
        v.push(outcome_of(mm(wt, MatmulKernel::Tiled, m, n, k, 8)));
        v.push(outcome_of(mm(wt, MatmulKernel::Gemv, 1, n, k, 9)));
    }
    v.push(outcome_of(mm(wt, MatmulKernel::Gemv, 1, vocab, d, 10)));
    v.push(outcome_of(mm(wt, MatmulKernel::Gemv, 4, vocab, d, 11)));
    if dt == DType::Bf16 {
        v.push(outcome_of(mm(wt, MatmulKernel::TensorCore, m, ffn, d, 15)));
        v.push(outcome_of(mm(wt, MatmulKernel::TensorCore, m, d, ffn, 16)));
    } else {
        // The default model's own block types, read in place (--weights native).
        for bt in [WeightType::Q4_1, WeightType::Q8_0, WeightType::Q4_0] {
            v.push(outcome_of(mm(bt, MatmulKernel::Gemv, 1, ffn, d, 17)));
            v.push(outcome_of(mm(bt, MatmulKernel::Tiled, m, ffn, d, 18)));
            v.push(outcome_of(transformer::embedding_blocks(
                g, bt, m, d, vocab, 19,
            )));
        }
    }
    // Attention: a prefill of m rows in one sequence, and decode of 4 sequences over long
    // caches with the backend's split choice (flash-decoding).
    let cap = if quick { 600 } else { 4096 };
    let pre = Batch::new(heads, 3, hd, m, 1, &[(0, 0, m)]);
    v.push(outcome_of(transformer::kv_write(g, dt, &pre, 12)));
    v.push(outcome_of(transformer::attention(g, dt, &pre, 1, 13)));
    // Its backward (the prefix path's gradient) on a training-sized sequence.
    let train = Batch::new(heads, 3, hd, 256, 1, &[(0, 16, 240)]);
    v.push(outcome_of(transformer::attention_backward(
        g, dt, &train, 20,
    )));
    let dec = Batch::new(
        heads,
        3,
        hd,
        cap,
        4,
        &[
            (0, cap - 1, 1),
            (1, cap / 2, 1),
            (2, 17, 1),
            (3, cap - 200, 1),
        ],
    );
    let splits = attention_splits(4, heads, cap);
    v.push(outcome_of(transformer::attention(g, dt, &dec, splits, 14)));
    v
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
        let outs = all_cases(&g, dt, quick);
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
            eprintln!("gpu-check: compress_attention: FAIL {e}");
            failed += 1;
        }
    }
    // The memory bank's fused top-k over a 1M-entry bank: its own table (GB/s, % of HBM).
    match cmt_kernel_check::cases::topk::gpu_suite(&g, quick) {
        Ok(outs) => failed += cmt_kernel_check::cases::topk::print_report(&outs),
        Err(e) => {
            eprintln!("gpu-check: topk_aggregate: FAIL {e}");
            failed += 1;
        }
    }
    println!("GB/s counts the minimum bytes each kernel must move; compare with the GPU's peak (H100 SXM ≈ 3350 GB/s, H200 ≈ 4800 GB/s).");
    failed += model_checks(&g, quick);
    std::process::exit(i32::from(failed > 0));
}

fn arg_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The whole model on the device backend: the golden fixtures (when the model and the
/// fixtures are there: `--model`, `--fixtures`, or staged beside this binary), then speed of
/// random-weight models. Returns the number of failed checks.
fn model_checks(g: &OnGpu, quick: bool) -> usize {
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let (staged_model, staged_fx) = model_check::staged(&bin_dir);
    let model = arg_value("--model").map_or(staged_model, PathBuf::from);
    let fixtures = arg_value("--fixtures").map_or(staged_fx, PathBuf::from);
    let mut failed = 0;
    match (model.is_file(), model_check::Fixtures::load(&fixtures)) {
        (true, Ok(fx)) => {
            println!(
                "\ngolden fixtures on the device backend ({})",
                model.display()
            );
            for wf in [WeightFormat::F32, WeightFormat::Native, WeightFormat::Bf16] {
                let be = cmt_runtime::backend::DeviceBackend::new(&g.0, "cuda");
                let lines = cmt_runtime::load_model_as(&model, be, wf)
                    .map_err(|e| e.to_string())
                    .and_then(|(m, _)| model_check::golden(&m, &fx, wf));
                match lines {
                    Ok(lines) => {
                        for l in lines {
                            failed += usize::from(!l.passed);
                            let st = if l.passed { "ok" } else { "FAIL" };
                            println!(
                                "{:<64} {:>10.3e}  bound {:>8.1e}  {st}",
                                l.what, l.value, l.bound
                            );
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        println!("golden {wf}: FAIL {e}");
                    }
                }
            }
        }
        (m, fx) => println!(
            "\ngolden fixtures: SKIPPED (model {} {}, fixtures {}: {})",
            model.display(),
            if m { "found" } else { "missing" },
            fixtures.display(),
            fx.err().unwrap_or_default()
        ),
    }
    let opts = BenchOptions {
        prompt_tokens: if quick { 128 } else { 512 },
        new_tokens: if quick { 16 } else { 64 },
        warmup: 1,
        runs: if quick { 2 } else { 3 },
    };
    println!(
        "\nspeed, random weights, {} prompt + {} new tokens, medians of {} runs",
        opts.prompt_tokens, opts.new_tokens, opts.runs
    );
    let mut rows = vec![
        ("smollm2-135m", WeightFormat::F32),
        ("smollm2-135m", WeightFormat::Bf16),
        ("smollm2-135m", WeightFormat::Native),
    ];
    if !quick {
        rows.push(("llama-7b", WeightFormat::Bf16));
        rows.push(("llama-7b", WeightFormat::Native));
    }
    for (shape, wf) in rows {
        match model_check::speed(&g.0, "cuda", shape, wf, &opts) {
            Ok(r) => println!(
                "SPEED {{\"shape\": \"{shape}\", \"weights\": \"{wf}\", \"prefill_tok_s\": {:.1}, \"decode_tok_s\": {:.1}, \"decode_weight_gb_s\": {:.0}, \"matrix_mb\": {:.0}}}",
                r.report.prefill_tok_s,
                r.report.decode_tok_s,
                r.decode_gb_s(),
                r.matrix_bytes as f64 / 1e6
            ),
            Err(e) => {
                failed += 1;
                println!("speed {shape} {wf}: FAIL {e}");
            }
        }
    }
    failed
}
