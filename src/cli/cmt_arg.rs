//! `--model` and `--checkpoint` together: θ plus the trained parts.
use super::model_arg;
use anyhow::{Context, Result};
use clap::Args;
use cmt_core::Cmt;
use cmt_runtime::WeightFormat;
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct CmtArgs {
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The CMT checkpoint (default: the trained default checkpoint, or $CMT_CHECKPOINT).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// How θ's weight matrices are held: `native` keeps a GGUF's Q8_0/Q4_0/Q4_1 blocks
    /// (the same weight values as f32, activations rounded to 16 bits; about a quarter of
    /// f32's memory), `f32` dequantises everything (the path checkpoints are trained on),
    /// `bf16` rounds every matrix to bf16.
    #[arg(long, default_value = "native")]
    pub weights: WeightFormat,
}

impl CmtArgs {
    pub fn open(&self) -> Result<Cmt> {
        let model = model_arg::resolve(self.model.clone())?;
        let cmt = match &self.checkpoint {
            Some(c) => {
                if !c.exists() {
                    anyhow::bail!("--checkpoint {}: no such file", c.display());
                }
                Cmt::open_as(&model, c, self.weights)
            }
            None => Cmt::open_default_checkpoint(&model, self.weights),
        };
        cmt.with_context(|| format!("loading {}", model.display()))
    }
}
