//! The compressor's hyper-parameters (DESIGN §1 steps 2–3).
use crate::error::{Error, Result};
use crate::input_stats::InputStats;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompressorConfig {
    /// Width of the document hidden states and of the memory tokens (the frozen model's D).
    pub d: usize,
    /// Memory tokens per document (T).
    pub mem_tokens: usize,
    /// Cross-attention + MLP blocks (B).
    pub blocks: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Hidden width of each block's MLP.
    pub mlp_hidden: usize,
    /// Width of the matching key (r).
    pub key_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Standardisation of the hidden states before the first block (absent: read raw, as
    /// every checkpoint made before the option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_stats: Option<InputStats>,
}

impl CompressorConfig {
    /// The defaults of DESIGN §1 for a model of hidden size `d`: T = 16, B = 2, heads of
    /// 64 (or the largest divisor of d not above 64), MLP 2·d, r = 128.
    pub fn for_hidden(d: usize) -> Self {
        let head_dim = (1..=64.min(d))
            .rev()
            .find(|h| d.is_multiple_of(*h))
            .unwrap_or(1);
        CompressorConfig {
            d,
            mem_tokens: 16,
            blocks: 2,
            heads: d / head_dim.max(1),
            head_dim,
            mlp_hidden: 2 * d,
            key_dim: 128,
            eps: 1e-6,
            input_stats: None,
        }
    }

    pub fn attn_width(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("d", self.d),
            ("mem_tokens", self.mem_tokens),
            ("blocks", self.blocks),
            ("heads", self.heads),
            ("head_dim", self.head_dim),
            ("mlp_hidden", self.mlp_hidden),
            ("key_dim", self.key_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::Config(format!(
                "eps must be positive and finite, got {}",
                self.eps
            )));
        }
        if let Some(s) = &self.input_stats {
            s.validate(self.d)?;
        }
        Ok(())
    }
}
