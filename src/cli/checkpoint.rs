//! `cmt checkpoint init|show`.
use super::model_arg;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use cmt_core::checkpoint;
use cmt_core::config::{EncodeLayer, PrefixMode};
use cmt_core::model::BaseLm;
use cmt_core::params::prefix_dims;
use cmt_core::CmtConfig;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CheckpointCmd {
    /// Write a freshly initialised (untrained) checkpoint for a model.
    Init(InitArgs),
    /// Print a checkpoint's metadata and parameter counts (default: the default checkpoint).
    Show {
        file: Option<PathBuf>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a checkpoint in bf16 (for shipping: half the bytes) or f32.
    Export {
        /// The checkpoint to read.
        input: PathBuf,
        /// Where to write the copy.
        out: PathBuf,
        /// bf16 or f32.
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// A JSON file of measured figures (e.g. the dev table) to record in the copy's
        /// metadata under `extra.results`.
        #[arg(long)]
        results: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct InitArgs {
    /// Where to write the checkpoint (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Question template: plain or chat (default: chat when the model has a chat template).
    #[arg(long)]
    template: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    arch: ArchArgs,
}

/// The architecture of a new checkpoint. Every field is optional so that a run that takes
/// its architecture from a checkpoint (`train --init/--resume`) can refuse them instead of
/// silently ignoring them; the defaults are DESIGN §1's.
#[derive(Args, Clone, Debug)]
pub struct ArchArgs {
    /// Memory tokens per document (T; also the prefix length p) [default: 16].
    #[arg(long)]
    pub mem_tokens: Option<usize>,
    /// Memories aggregated per question (1..=64) [default: 4].
    #[arg(long = "topk", visible_alias = "k")]
    pub k: Option<usize>,
    /// Matching-key width r [default: 128].
    #[arg(long)]
    pub key_dim: Option<usize>,
    /// Rank of the prefix generator's projections [default: 64].
    #[arg(long)]
    pub prefix_rank: Option<usize>,
    /// How memories reach θ: `kv` (low-rank projections to every layer's keys and values)
    /// or `soft` (p soft input embeddings whose keys and values θ's own layers compute)
    /// [default: kv].
    #[arg(long, value_parser = ["kv", "soft"])]
    pub prefix_mode: Option<String>,
    /// Aggregate every memory of the bank instead of the top k (ablation).
    #[arg(long)]
    pub no_topk: bool,
    /// Use A′ = A (no aggregator ψ; ablation).
    #[arg(long)]
    pub no_aggregator: bool,
    /// θ's hidden states the compressor reads: `final` (final norm) or a layer count (the
    /// residual stream after that many layers) [default: final].
    #[arg(long)]
    pub encode_layer: Option<String>,
}

impl ArchArgs {
    /// The flags given on the command line, as they were spelt (empty: none).
    pub fn given(&self) -> Vec<&'static str> {
        [
            (self.mem_tokens.is_some(), "--mem-tokens"),
            (self.k.is_some(), "--topk"),
            (self.key_dim.is_some(), "--key-dim"),
            (self.prefix_rank.is_some(), "--prefix-rank"),
            (self.prefix_mode.is_some(), "--prefix-mode"),
            (self.no_topk, "--no-topk"),
            (self.no_aggregator, "--no-aggregator"),
            (self.encode_layer.is_some(), "--encode-layer"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// The configuration for θ (its width, and its embedding scale for soft rows).
    pub fn config(&self, theta: &cmt_runtime::Model<cmt_runtime::CpuBackend>) -> Result<CmtConfig> {
        let mut cfg = CmtConfig::for_hidden(theta.cfg.hidden);
        if self.prefix_mode.as_deref() == Some("soft") {
            cfg.prefix_mode = PrefixMode::Soft;
            cfg.soft_scale = theta.embedding_rms()?;
        }
        if let Some(t) = self.mem_tokens {
            cfg.compressor.mem_tokens = t;
        }
        if let Some(r) = self.key_dim {
            cfg.compressor.key_dim = r;
        }
        if let Some(k) = self.k {
            cfg.k = k;
        }
        if let Some(r) = self.prefix_rank {
            cfg.prefix_rank = r;
        }
        cfg.topk = !self.no_topk;
        cfg.aggregator = !self.no_aggregator;
        cfg.encode_layer = match self.encode_layer.as_deref() {
            None | Some("final") => EncodeLayer::FinalNorm,
            Some(n) => EncodeLayer::Residual(n.parse().with_context(|| {
                format!("--encode-layer {n}: expected `final` or a layer count")
            })?),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(cmd: CheckpointCmd) -> Result<()> {
    match cmd {
        CheckpointCmd::Init(a) => init(a),
        CheckpointCmd::Show { file, json } => show(file, json),
        CheckpointCmd::Export {
            input,
            out,
            dtype,
            results,
        } => export(&input, &out, &dtype, results.as_deref()),
    }
}

fn export(
    input: &std::path::Path,
    out: &std::path::Path,
    dtype: &str,
    results: Option<&std::path::Path>,
) -> Result<()> {
    let mut ck = checkpoint::load(input)?;
    if let Some(r) = results {
        let text =
            std::fs::read_to_string(r).with_context(|| format!("reading {}", r.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", r.display()))?;
        if !ck.meta.extra.is_object() {
            ck.meta.extra = serde_json::json!({});
        }
        ck.meta.extra["results"] = v;
    }
    ck.meta.dtype = match dtype {
        "bf16" => checkpoint::CkptDtype::Bf16,
        "f32" => checkpoint::CkptDtype::F32,
        d => anyhow::bail!("--dtype {d}: expected bf16 or f32"),
    };
    checkpoint::save(out, &ck.meta, &ck.params)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {} ({dtype}, {bytes} bytes)", out.display());
    Ok(())
}

fn init(a: InitArgs) -> Result<()> {
    let path = model_arg::resolve(a.model)?;
    let base = BaseLm::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let cfg = a.arch.config(&base.model)?;
    let template = match a.template {
        Some(t) => t,
        None => cmt_core::default_template(&path)?.to_string(),
    };
    let command: Vec<String> = std::env::args().collect();
    let (meta, params) =
        cmt_core::init_checkpoint(&base, &cfg, &template, a.seed, &command.join(" "), &a.out)?;
    let theta = cmt_core::base_param_count(&base.model.cfg);
    let g = params.prefix.num_params();
    eprintln!(
        "wrote {} (untrained): {} trainable parameters; G_ω {} = {:.2}% of θ's {}",
        a.out.display(),
        params.num_params(),
        g,
        100.0 * g as f64 / theta as f64,
        theta
    );
    let _ = meta;
    Ok(())
}

fn show(file: Option<PathBuf>, json: bool) -> Result<()> {
    let path = match file {
        Some(f) => f,
        None => cmt_core::default_checkpoint_path().ok_or_else(|| {
            anyhow::anyhow!(
                "no default checkpoint yet ({} is absent and CMT_CHECKPOINT is unset); \
                 name a file, or make an untrained one with `cmt checkpoint init --out FILE`",
                cmt_core::DEFAULT_CHECKPOINT
            )
        })?,
    };
    let ck = checkpoint::load(&path)?;
    let m = &ck.meta;
    let p = &ck.params;
    let pd = prefix_dims(&m.config, &m.base.dims);
    let counts = serde_json::json!({
        "compressor": p.compressor.params.num_params(),
        "aggregator": p.aggregator.iter().map(|b| cmt_core::params::block_tensors(b).iter().map(|(_, t)| t.len()).sum::<usize>()).sum::<usize>(),
        "prefix": p.prefix.num_params(),
        "total": p.num_params(),
    });
    let obj = serde_json::json!({
        "file": path.display().to_string(),
        "sha256": ck.sha256,
        "format_version": checkpoint::VERSION,
        "dtype": format!("{:?}", m.dtype).to_lowercase(),
        "base_model": m.base,
        "config": m.config,
        "T": m.config.t(), "p": pd.p, "r": m.config.r(), "k": m.config.k,
        "tau": p.tau(&m.config),
        "template": m.template,
        "command": m.command,
        "created": m.created,
        "parameters": counts,
        "extra": m.extra,
    });
    if json {
        println!("{obj}");
    } else {
        println!("{}", serde_json::to_string_pretty(&obj)?);
    }
    Ok(())
}
