//! `--model`: an explicit path, or the default model fetched on first use; `--weights`.
use anyhow::Result;
use clap::Args;
use cmt_runtime::WeightFormat;
use std::path::PathBuf;

/// `--weights`, shared by every command that runs θ without training it.
#[derive(Args, Clone, Copy)]
pub struct WeightsArg {
    /// How θ's weight matrices are held: `native` keeps a GGUF's quantised matrices
    /// quantised (the file's weight values, activations rounded to 16 bits on CPUs with AVX2
    /// or AVX-512, about a quarter of f32's memory; types without a kernel load as f32),
    /// `f32` dequantises everything (the golden path, and the one checkpoints are trained
    /// on), `bf16` stores every matrix as bf16 (half of f32's bytes; exact for bf16
    /// checkpoints).
    #[arg(long = "weights", value_name = "WEIGHTS", default_value = "native")]
    pub format: WeightFormat,
}

pub fn resolve(model: Option<PathBuf>) -> Result<PathBuf> {
    match model {
        Some(p) => {
            if !p.exists() {
                anyhow::bail!("--model {}: no such file or directory", p.display());
            }
            Ok(p)
        }
        None => Ok(cmt_runtime::fetch::fetch_default_model(&mut |line| {
            eprintln!("{line}")
        })?),
    }
}
