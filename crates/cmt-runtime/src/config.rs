//! Model hyper-parameters, read from an HF `config.json` or from GGUF metadata.
mod rope_hf;
use crate::error::{Error, Result};
use crate::rope::RopeScaling;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Architectures the runtime runs. They share one forward pass; they differ in q/k/v bias
/// (Qwen2) and in how GGUF stores the q/k projections (see `gguf::load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
}

impl Arch {
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "llama" => Some(Arch::Llama),
            "mistral" => Some(Arch::Mistral),
            "qwen2" => Some(Arch::Qwen2),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Rotary frequency scaling (`rope_scaling` / `rope_parameters`, GGUF `rope.scaling.*`
    /// or `rope_freqs.weight`); [`RopeScaling::None`] for HF's default rotary.
    pub rope_scaling: RopeScaling,
    pub tie_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    pub max_positions: usize,
    pub bos_token: Option<u32>,
    pub eos_tokens: Vec<u32>,
}

impl ModelConfig {
    /// Checks the invariants the forward pass relies on; `src` names the file for errors.
    pub fn validate(&self, src: &Path) -> Result<()> {
        let bad = |field: &str, msg: String| Err(Error::config(src, field, msg));
        for (field, v) in [
            ("hidden_size", self.hidden),
            ("intermediate_size", self.intermediate),
            ("num_hidden_layers", self.layers),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab),
        ] {
            if v == 0 {
                return bad(field, "must be > 0".into());
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(
                "num_key_value_heads",
                format!(
                    "{} attention heads are not a multiple of {} key/value heads",
                    self.heads, self.kv_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("{} is odd; rotary needs pairs", self.head_dim),
            );
        }
        if !(self.rms_eps > 0.0 && self.rms_eps.is_finite()) {
            return bad(
                "rms_norm_eps",
                format!("{} is not a positive number", self.rms_eps),
            );
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return bad(
                "rope_theta",
                format!("{} is not a positive number", self.rope_theta),
            );
        }
        self.rope_scaling.validate(src, self.head_dim)
    }

    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Parses an HF `config.json` (Llama, Mistral, Qwen2).
    pub fn from_hf_json(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.into(),
            offset: 0,
            msg: format!("not valid JSON: {e}"),
        })?;
        let get_usize = |field: &str| -> Result<Option<usize>> {
            match v.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                    Error::config(path, field, format!("expected an integer, got {x}"))
                }),
            }
        };
        let need = |field: &str| -> Result<usize> {
            get_usize(field)?.ok_or_else(|| Error::config(path, field, "missing"))
        };
        let get_f64 = |field: &str| -> Result<Option<f64>> {
            match v.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).ok_or_else(|| {
                    Error::config(path, field, format!("expected a number, got {x}"))
                }),
            }
        };
        let model_type = v
            .get("model_type")
            .and_then(|x| x.as_str())
            .ok_or_else(|| Error::config(path, "model_type", "missing"))?;
        let arch = Arch::parse(model_type).ok_or_else(|| {
            Error::config(
                path,
                "model_type",
                format!("`{model_type}` is not supported (llama, mistral, qwen2 are)"),
            )
        })?;
        let rope = rope_hf::parse(path, &v)?;
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let eos_tokens = match v.get("eos_token_id") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect(),
            Some(x) => x.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            None => vec![],
        };
        let bool_field =
            |field: &str, default: bool| v.get(field).and_then(|x| x.as_bool()).unwrap_or(default);
        let cfg = ModelConfig {
            arch,
            hidden,
            intermediate: need("intermediate_size")?,
            layers: need("num_hidden_layers")?,
            heads,
            kv_heads: get_usize("num_key_value_heads")?.unwrap_or(heads),
            head_dim: get_usize("head_dim")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
            vocab: need("vocab_size")?,
            rms_eps: get_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            rope_theta: rope.theta.unwrap_or(10_000.0) as f32,
            rope_scaling: rope.scaling,
            tie_embeddings: bool_field("tie_word_embeddings", false),
            qkv_bias: arch == Arch::Qwen2 || bool_field("attention_bias", false),
            max_positions: get_usize("max_position_embeddings")?.unwrap_or(4096),
            bos_token: get_usize("bos_token_id")?.map(|x| x as u32),
            eos_tokens,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The HF `config.json` for this model, as `cmt convert` writes it (rotary scaling as a
    /// top-level `rope_scaling`). An error only for rotary scaling with no config.json form.
    pub fn to_hf_json(&self) -> Result<serde_json::Value> {
        let arch_class = match self.arch {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        };
        let mut v = serde_json::json!({
            "architectures": [arch_class],
            "model_type": self.arch.as_str(),
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_positions,
            "hidden_act": "silu",
            "torch_dtype": "float32",
            "eos_token_id": self.eos_tokens,
        });
        if let Some(b) = self.bos_token {
            v["bos_token_id"] = b.into();
        }
        if self.arch != Arch::Qwen2 {
            v["attention_bias"] = self.qkv_bias.into();
        }
        if let Some(rs) = self
            .rope_scaling
            .to_hf_json(self.head_dim, self.rope_theta)?
        {
            v["rope_scaling"] = rs;
        }
        Ok(v)
    }
}
