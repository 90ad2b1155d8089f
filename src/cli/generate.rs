//! `cmt generate` and `cmt score`.
use super::device::on_backend;
use super::model_arg::{self, WeightsArg};
use anyhow::{Context, Result};
use clap::Args;
use cmt_runtime::device::DeviceChoice;
use cmt_runtime::tokenizer::StreamDecoder;
use cmt_runtime::{Backend, GenerateOptions};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    weights: WeightsArg,
    /// The prompt, used verbatim (no chat template, no BOS unless the tokenizer adds one).
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy (the default).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
}

#[derive(Args)]
pub struct ScoreArgs {
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    weights: WeightsArg,
    /// The text to score, tokenised without special tokens.
    #[arg(long)]
    text: String,
}

pub fn generate(a: GenerateArgs, device: DeviceChoice) -> Result<()> {
    on_backend!(super::device::model_backend(device)?, |b| generate_on(a, b))
}

fn generate_on<B: Backend>(a: GenerateArgs, backend: B) -> Result<()> {
    let path = model_arg::resolve(a.model)?;
    let (model, tok) = cmt_runtime::load_model_as(&path, backend, a.weights.format)
        .with_context(|| format!("loading {}", path.display()))?;
    let prompt = tok.encode(&a.prompt, true)?;
    if prompt.is_empty() {
        anyhow::bail!("--prompt is empty: nothing to continue");
    }
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        stop_tokens: if a.ignore_eos {
            vec![]
        } else {
            model.cfg.eos_tokens.clone()
        },
    };
    let capacity = (prompt.len() + a.max_new_tokens).min(model.cfg.max_positions);
    if prompt.len() >= capacity {
        anyhow::bail!(
            "the prompt has {} tokens; the model's context is {}",
            prompt.len(),
            model.cfg.max_positions
        );
    }
    let mut sess = model.session(1, capacity)?;
    let mut stream = StreamDecoder::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    cmt_runtime::generate(&model, &mut sess, &[prompt], None, &opts, |_, id| {
        let piece = stream.push(&tok, id)?;
        out.write_all(piece.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| cmt_runtime::Error::Invalid(format!("writing to stdout: {e}")))?;
        Ok(true)
    })?;
    let rest = stream.finish(&tok)?;
    out.write_all(rest.as_bytes())?;
    // Only the generated text goes to a pipe (scripts compare it byte for byte); a
    // terminal also gets a final newline so the shell prompt starts on its own line.
    if out.is_terminal() {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

pub fn score(a: ScoreArgs, device: DeviceChoice) -> Result<()> {
    on_backend!(super::device::model_backend(device)?, |b| score_on(a, b))
}

fn score_on<B: Backend>(a: ScoreArgs, backend: B) -> Result<()> {
    let path = model_arg::resolve(a.model)?;
    let (model, tok) = cmt_runtime::load_model_as(&path, backend, a.weights.format)
        .with_context(|| format!("loading {}", path.display()))?;
    let ids = tok.encode(&a.text, false)?;
    if ids.len() < 2 {
        anyhow::bail!(
            "--text has {} token(s); scoring needs at least 2",
            ids.len()
        );
    }
    if ids.len() > model.cfg.max_positions {
        anyhow::bail!(
            "--text has {} tokens; the model's context is {}",
            ids.len(),
            model.cfg.max_positions
        );
    }
    let mut sess = model.session(1, ids.len())?;
    let loss = cmt_runtime::score::text_loss(&model, &mut sess, &ids)?;
    println!("{loss:.6}");
    Ok(())
}
