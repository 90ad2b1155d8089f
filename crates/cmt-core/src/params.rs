//! The trainable parameters of CMT: φ and W_key (the compressor), ψ (the aggregator), ω
//! (the prefix generator) and τ, with stable names for optimisers and checkpoints.
use crate::config::CmtConfig;
use crate::error::{Error, Result};
use crate::prefix::{PrefixDims, PrefixParams};
use cmt_compress::{BlockParams, Compressor};

/// θ's dimensions that the trainable parts depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseDims {
    /// Hidden size D.
    pub hidden: usize,
    /// Layers L.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Size of a head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

impl BaseDims {
    /// The dimensions of a loaded model's config.
    pub fn of(cfg: &cmt_runtime::ModelConfig) -> Self {
        BaseDims {
            hidden: cfg.hidden,
            layers: cfg.layers,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            vocab: cfg.vocab,
        }
    }
}

/// Shapes of G_ω for a config on a base model.
pub fn prefix_dims(cfg: &CmtConfig, base: &BaseDims) -> PrefixDims {
    PrefixDims {
        layers: base.layers,
        kv_heads: base.kv_heads,
        head_dim: base.head_dim,
        d: base.hidden,
        p: cfg.p(),
        rank: cfg.prefix_rank,
        mode: cfg.prefix_mode,
        soft_scale: cfg.soft_scale,
    }
}

#[derive(Clone, Debug, PartialEq)]
/// Every trainable tensor of CMT.
pub struct CmtParams {
    /// φ and W_key (with their config, ready to run).
    pub compressor: Compressor,
    /// ψ's blocks.
    pub aggregator: Vec<BlockParams>,
    /// ω.
    pub prefix: PrefixParams,
    /// ln τ (τ = clamp(exp(ln τ), tau_min, tau_max)).
    pub log_tau: Vec<f32>,
}

/// The nine tensors of a block, by name.
pub fn block_tensors(b: &BlockParams) -> [(&'static str, &Vec<f32>); 9] {
    [
        ("norm_q", &b.norm_q),
        ("norm_h", &b.norm_h),
        ("wq", &b.wq),
        ("wk", &b.wk),
        ("wv", &b.wv),
        ("wo", &b.wo),
        ("norm_mlp", &b.norm_mlp),
        ("w1", &b.w1),
        ("w2", &b.w2),
    ]
}

fn block_tensors_mut(b: &mut BlockParams) -> [(&'static str, &mut Vec<f32>); 9] {
    [
        ("norm_q", &mut b.norm_q),
        ("norm_h", &mut b.norm_h),
        ("wq", &mut b.wq),
        ("wk", &mut b.wk),
        ("wv", &mut b.wv),
        ("wo", &mut b.wo),
        ("norm_mlp", &mut b.norm_mlp),
        ("w1", &mut b.w1),
        ("w2", &mut b.w2),
    ]
}

/// Scale of the compressor's start queries at initialisation (see [`CmtParams::init`]).
pub const Q0_SCALE: f32 = 0.1;

impl CmtParams {
    /// A fresh model: the compressor's and ψ's initialisation of `cmt_compress`, G_ω's of
    /// [`PrefixParams::init`], τ = `tau_init`. Deterministic in `seed`.
    ///
    /// The compressor's start queries are scaled down to `Q0_SCALE`: at unit variance they
    /// outweigh the first block's pooled document content several times over, so every
    /// document's fresh memory (and key) is nearly the same vector — measured: after 80
    /// training steps, gold and shuffled memories gave identical answers.
    pub fn init(cfg: &CmtConfig, base: &BaseDims, seed: u64) -> Result<Self> {
        cfg.validate()?;
        check_base(cfg, base)?;
        let mut compressor = Compressor::init(cfg.compressor.clone(), seed)?;
        compressor.params.q0.iter_mut().for_each(|x| *x *= Q0_SCALE);
        let aggregator =
            cmt_compress::Params::init(&cfg.aggregator_blocks_config(), seed ^ 1)?.blocks;
        let prefix = PrefixParams::init(&prefix_dims(cfg, base), seed ^ 2);
        Ok(CmtParams {
            compressor,
            aggregator,
            prefix,
            log_tau: vec![cfg.tau_init.ln()],
        })
    }

    /// All zeros, shaped for `cfg` (gradient accumulators).
    pub fn zeros(cfg: &CmtConfig, base: &BaseDims) -> Self {
        CmtParams {
            compressor: Compressor {
                cfg: cfg.compressor.clone(),
                params: cmt_compress::Params::zeros(&cfg.compressor),
            },
            aggregator: cmt_compress::Params::zeros(&cfg.aggregator_blocks_config()).blocks,
            prefix: PrefixParams::zeros(&prefix_dims(cfg, base)),
            log_tau: vec![0.0],
        }
    }

    /// τ as used by the matching, clamped.
    pub fn tau(&self, cfg: &CmtConfig) -> f32 {
        self.log_tau[0].exp().clamp(cfg.tau_min, cfg.tau_max)
    }

    /// d τ / d ln τ (0 where the clamp holds τ).
    pub fn dtau_dlog(&self, cfg: &CmtConfig) -> f32 {
        let raw = self.log_tau[0].exp();
        if raw < cfg.tau_min || raw > cfg.tau_max {
            0.0
        } else {
            raw
        }
    }

    /// Every tensor with its checkpoint name.
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut v: Vec<(String, &[f32])> = self
            .compressor
            .params
            .tensors()
            .into_iter()
            .map(|(n, t)| (format!("compressor.{n}"), t))
            .collect();
        for (b, blk) in self.aggregator.iter().enumerate() {
            for (n, t) in block_tensors(blk) {
                v.push((format!("aggregator.blocks.{b}.{n}"), t.as_slice()));
            }
        }
        for (n, t) in self.prefix.tensors() {
            v.push((format!("prefix.{n}"), t));
        }
        v.push(("tau.log".into(), &self.log_tau));
        v
    }

    /// As [`CmtParams::tensors`], mutable, same order.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut Vec<f32>)> {
        let mut v: Vec<(String, &mut Vec<f32>)> = self
            .compressor
            .params
            .tensors_mut()
            .into_iter()
            .map(|(n, t)| (format!("compressor.{n}"), t))
            .collect();
        for (b, blk) in self.aggregator.iter_mut().enumerate() {
            for (n, t) in block_tensors_mut(blk) {
                v.push((format!("aggregator.blocks.{b}.{n}"), t));
            }
        }
        for (n, t) in self.prefix.tensors_mut() {
            v.push((format!("prefix.{n}"), t));
        }
        v.push(("tau.log".into(), &mut self.log_tau));
        v
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.tensors().iter().map(|(_, t)| t.len()).sum()
    }

    /// Checks every tensor's length against `cfg` on `base`; the error names the tensor.
    pub fn check(&self, cfg: &CmtConfig, base: &BaseDims) -> Result<()> {
        let want = CmtParams::zeros(cfg, base);
        let (a, b) = (self.tensors(), want.tensors());
        if a.len() != b.len() {
            return Err(Error::Shape(format!(
                "{} parameter tensors, the config needs {}",
                a.len(),
                b.len()
            )));
        }
        for ((name, t), (_, w)) in a.iter().zip(&b) {
            if t.len() != w.len() {
                return Err(Error::Shape(format!(
                    "{name} holds {} values, the config needs {}",
                    t.len(),
                    w.len()
                )));
            }
        }
        Ok(())
    }
}

/// The compressor must read θ's width.
pub fn check_base(cfg: &CmtConfig, base: &BaseDims) -> Result<()> {
    if cfg.compressor.d != base.hidden {
        return Err(Error::Config(format!(
            "the compressor reads width {}, the base model's hidden size is {}",
            cfg.compressor.d, base.hidden
        )));
    }
    if let crate::config::EncodeLayer::Residual(n) = cfg.encode_layer {
        if n > base.layers {
            return Err(Error::Config(format!(
                "encode layer {n} is past the base model's {} layers",
                base.layers
            )));
        }
    }
    Ok(())
}
