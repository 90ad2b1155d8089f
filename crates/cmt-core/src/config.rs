//! The CMT model's hyper-parameters and architecture switches (DESIGN §1), recorded in every
//! checkpoint so that a checkpoint fully describes the model it was trained as.
use crate::error::{Error, Result};
use cmt_compress::CompressorConfig;
use cmt_memory::MAX_K;
use serde::{Deserialize, Serialize};

/// Which hidden states of θ the compressor reads (ℓ_enc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodeLayer {
    /// The output of θ's final RMSNorm.
    FinalNorm,
    /// The residual stream after this many layers.
    Residual(usize),
}

impl EncodeLayer {
    /// The runtime's name for this capture point.
    pub fn hidden_layer(self) -> cmt_runtime::HiddenLayer {
        match self {
            EncodeLayer::FinalNorm => cmt_runtime::HiddenLayer::FinalNorm,
            EncodeLayer::Residual(n) => cmt_runtime::HiddenLayer::Residual(n),
        }
    }
}

/// How G_ω injects A′ into θ (DESIGN §1 step 7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixMode {
    /// Low-rank per-layer projections straight to every layer's keys and values.
    #[default]
    Kv,
    /// A′ becomes p soft input embeddings; θ's own layers turn them into each layer's keys
    /// and values (the prefix is θ's cache after those rows), so what θ reads is in its
    /// own distribution from the first step.
    Soft,
}

/// Everything that shapes the trainable parts φ, W_key, ψ, ω and τ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CmtConfig {
    /// The compressor C_φ (T = `compressor.mem_tokens`, r = `compressor.key_dim`).
    pub compressor: CompressorConfig,
    /// Memories aggregated per question (k), 1..=64.
    pub k: usize,
    /// Top-k aggregation on; off aggregates every entry of the bank (ablation).
    pub topk: bool,
    /// The aggregator ψ on; off uses A′ = A.
    pub aggregator: bool,
    /// ψ's cross-attention + MLP blocks (1 or 2).
    pub aggregator_blocks: usize,
    /// Rank of G_ω's per-layer projections (soft mode: of its one residual projection).
    pub prefix_rank: usize,
    /// How the prefix is made (absent in checkpoints made before the switch: `kv`).
    #[serde(default)]
    pub prefix_mode: PrefixMode,
    /// Soft mode: the RMS the soft rows start at (θ's embedding RMS, set at initialisation).
    #[serde(default = "one")]
    pub soft_scale: f32,
    /// Initial matching temperature τ.
    pub tau_init: f32,
    /// τ is clamped to [tau_min, tau_max].
    pub tau_min: f32,
    /// Upper clamp of τ.
    pub tau_max: f32,
    /// ℓ_enc.
    pub encode_layer: EncodeLayer,
    /// Longest chunk of a document (tokens); longer documents become several entries.
    pub max_doc_tokens: usize,
    /// Tokens shared by consecutive chunks.
    pub chunk_overlap: usize,
    /// Longest question (tokens) fed to θ + C_φ for matching.
    pub max_question_tokens: usize,
}

fn one() -> f32 {
    1.0
}

impl CmtConfig {
    /// The defaults of DESIGN §1 for a model of hidden size `d`: T = 16, k = 4, r = 128,
    /// top-k and ψ on, one ψ block, rank-64 prefix projections, τ = 0.1.
    pub fn for_hidden(d: usize) -> Self {
        CmtConfig {
            compressor: CompressorConfig::for_hidden(d),
            k: 4,
            topk: true,
            aggregator: true,
            aggregator_blocks: 1,
            prefix_rank: 64,
            prefix_mode: PrefixMode::Kv,
            soft_scale: 1.0,
            tau_init: 0.1,
            tau_min: 0.01,
            tau_max: 1.0,
            encode_layer: EncodeLayer::FinalNorm,
            max_doc_tokens: 512,
            chunk_overlap: 32,
            max_question_tokens: 128,
        }
    }

    /// T, the memory tokens per document.
    pub fn t(&self) -> usize {
        self.compressor.mem_tokens
    }

    /// p, the prefix length per layer (= T: G_ω maps each memory token to one prefix slot).
    pub fn p(&self) -> usize {
        self.compressor.mem_tokens
    }

    /// r, the matching-key width.
    pub fn r(&self) -> usize {
        self.compressor.key_dim
    }

    /// ψ's block stack, in the compressor's block shape (T query rows per question).
    pub fn aggregator_blocks_config(&self) -> CompressorConfig {
        // ψ reads memories, not θ's hidden states: no input statistics.
        CompressorConfig {
            blocks: self.aggregator_blocks,
            input_stats: None,
            ..self.compressor.clone()
        }
    }

    /// Checks every value's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.compressor
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let bad = |m: String| Err(Error::Config(m));
        if self.k == 0 || self.k > MAX_K {
            return bad(format!("k = {}: must be in 1..={MAX_K}", self.k));
        }
        if !(1..=2).contains(&self.aggregator_blocks) {
            return bad(format!(
                "aggregator_blocks = {}: ψ has 1 or 2 blocks",
                self.aggregator_blocks
            ));
        }
        if !(self.soft_scale.is_finite() && self.soft_scale > 0.0) {
            return bad(format!(
                "soft_scale = {}: must be positive",
                self.soft_scale
            ));
        }
        if self.prefix_rank == 0 {
            return bad("prefix_rank must be positive".into());
        }
        let taus = [self.tau_min, self.tau_init, self.tau_max];
        if taus.iter().any(|t| !(t.is_finite() && *t > 0.0))
            || !(self.tau_min <= self.tau_init && self.tau_init <= self.tau_max)
        {
            return bad(format!(
                "temperatures must satisfy 0 < tau_min ≤ tau_init ≤ tau_max, got {} ≤ {} ≤ {}",
                self.tau_min, self.tau_init, self.tau_max
            ));
        }
        if self.max_doc_tokens == 0 || self.chunk_overlap >= self.max_doc_tokens {
            return bad(format!(
                "max_doc_tokens = {} must be positive and above chunk_overlap = {}",
                self.max_doc_tokens, self.chunk_overlap
            ));
        }
        if self.max_question_tokens == 0 {
            return bad("max_question_tokens must be positive".into());
        }
        Ok(())
    }
}
