//! `--model` and `--checkpoint` together: θ plus the trained parts.
use super::model_arg::{self, WeightsArg};
use anyhow::{Context, Result};
use clap::Args;
use cmt_core::search::SearchWith;
use cmt_core::Cmt;
use std::path::PathBuf;

#[derive(Args, Clone)]
pub struct CmtArgs {
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The CMT checkpoint (default: the trained default checkpoint, or $CMT_CHECKPOINT).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub weights: WeightsArg,
}

impl CmtArgs {
    /// θ on `backend` plus the checkpoint.
    pub fn open_on<B: SearchWith>(&self, backend: B) -> Result<Cmt<B>> {
        let model = model_arg::resolve(self.model.clone())?;
        let cmt = match &self.checkpoint {
            Some(c) => {
                if !c.exists() {
                    anyhow::bail!("--checkpoint {}: no such file", c.display());
                }
                Cmt::open_on(&model, c, backend, self.weights.format)
            }
            None => Cmt::open_default_checkpoint_on(&model, backend, self.weights.format),
        };
        cmt.with_context(|| format!("loading {}", model.display()))
    }
}
