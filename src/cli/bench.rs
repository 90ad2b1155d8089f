//! `cmt bench`: prefill and decode tokens/s of this build on this machine.
use super::device::{on_backend, ModelBackend};
use super::model_arg::{self, WeightsArg};
use anyhow::{Context, Result};
use clap::Args;
use cmt_runtime::bench::{measure, BenchOptions};
use cmt_runtime::device::DeviceChoice;
use cmt_runtime::Backend;

#[derive(Args)]
pub struct BenchArgs {
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    #[command(flatten)]
    weights: WeightsArg,
    /// Prompt tokens prefilled in one step (a fixed id sequence, tokenizer-independent).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens decoded one step at a time after the prompt (greedy, EOS ignored).
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed runs; the figures are their medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
}

pub fn run(a: BenchArgs, device: DeviceChoice) -> Result<()> {
    let mb = super::device::model_backend(device)?;
    let device = match &mb {
        ModelBackend::Cpu(_) => "cpu".to_string(),
        ModelBackend::Cuda(b) => b.name(),
    };
    on_backend!(mb, |b| run_on(a, b, device))
}

fn run_on<B: Backend>(a: BenchArgs, backend: B, device: String) -> Result<()> {
    let path = model_arg::resolve(a.model)?;
    let (model, _tok) = cmt_runtime::load_model_as(&path, backend, a.weights.format)
        .with_context(|| format!("loading {}", path.display()))?;
    let opts = BenchOptions {
        prompt_tokens: a.prompt_tokens,
        new_tokens: a.new_tokens,
        warmup: a.warmup,
        runs: a.runs,
    };
    if !a.json {
        eprintln!(
            "benchmarking {}: {} warm-up + {} timed runs of {} prompt + {} new tokens",
            path.display(),
            opts.warmup,
            opts.runs,
            opts.prompt_tokens,
            opts.new_tokens
        );
    }
    let r = measure(&model, &opts)?;
    let weights = a.weights.format.to_string();
    let threads = rayon::current_num_threads();
    // What the format gave on this file (native falls back to f32 for types it does not
    // keep): the bytes a decode step reads, against the all-f32 figure.
    let matrix_mb = model.weights.matrix_bytes() as f64 / 1e6;
    let f32_mb = model.weights.matrix_bytes_f32() as f64 / 1e6;
    if a.json {
        let v = serde_json::json!({
            "model": path.display().to_string(),
            "weights": weights,
            "threads": threads,
            "device": device,
            "prompt_tokens": opts.prompt_tokens,
            "new_tokens": opts.new_tokens,
            "runs": opts.runs,
            "matrix_mb": matrix_mb,
            "matrix_mb_f32": f32_mb,
            "prefill_tok_s": r.prefill_tok_s,
            "decode_tok_s": r.decode_tok_s,
            "prefill_s": r.prefill_s,
            "decode_s": r.decode_s,
            "runs_s": r.runs_s,
        });
        println!("{v}");
    } else {
        println!(
            "prefill {:.1} tok/s ({} tokens in {:.3} s)   decode {:.1} tok/s ({} tokens in {:.3} s)   weights {weights} ({matrix_mb:.0} MB of matrices, f32 {f32_mb:.0} MB), {device}, {threads} threads (medians of {} runs)",
            r.prefill_tok_s,
            opts.prompt_tokens,
            r.prefill_s,
            r.decode_tok_s,
            opts.new_tokens,
            r.decode_s,
            opts.runs
        );
    }
    Ok(())
}
