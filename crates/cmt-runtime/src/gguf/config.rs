//! `ModelConfig` from GGUF metadata (`general.architecture`, `{arch}.*`).
use super::GgufFile;
use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};

pub(super) fn model_config(f: &GgufFile) -> Result<ModelConfig> {
    let arch_name = f
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::config(&f.path, "general.architecture", "missing"))?
        .to_string();
    let arch = Arch::parse(&arch_name).ok_or_else(|| {
        Error::config(
            &f.path,
            "general.architecture",
            format!("`{arch_name}` is not supported (llama, mistral, qwen2 are)"),
        )
    })?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let uint = |k: &str| -> Result<Option<usize>> {
        let full = key(k);
        match f.get(&full) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                Error::config(&f.path, &full, format!("expected an integer, got {v:?}"))
            }),
        }
    };
    let need = |k: &str| uint(k)?.ok_or_else(|| Error::config(&f.path, &key(k), "missing"));
    let float = |k: &str| f.f64_meta(&key(k));
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let head_dim = uint("attention.key_length")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    if let Some(rot) = uint("rope.dimension_count")? {
        if rot != head_dim {
            return Err(Error::config(
                &f.path,
                &key("rope.dimension_count"),
                format!("partial rotary ({rot} of {head_dim} dims) is not supported"),
            ));
        }
    }
    let vocab = match uint("vocab_size")? {
        Some(v) => v,
        None => f
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(|a| a.len())
            .ok_or_else(|| {
                Error::config(
                    &f.path,
                    &key("vocab_size"),
                    "missing (and no tokenizer.ggml.tokens)",
                )
            })?,
    };
    let tok_id = |k: &str| f.get(k).and_then(|v| v.as_u64()).map(|x| x as u32);
    let cfg = ModelConfig {
        arch,
        hidden,
        intermediate: need("feed_forward_length")?,
        layers: need("block_count")?,
        heads,
        kv_heads: uint("attention.head_count_kv")?.unwrap_or(heads),
        head_dim,
        vocab,
        rms_eps: float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5) as f32,
        rope_theta: float("rope.freq_base")?.unwrap_or(10_000.0) as f32,
        rope_scaling: super::rope::rope_scaling(f, &arch_name)?,
        tie_embeddings: f.tensor("output.weight").is_none(),
        qkv_bias: f.tensor("blk.0.attn_q.bias").is_some(),
        max_positions: uint("context_length")?.unwrap_or(4096),
        bos_token: tok_id("tokenizer.ggml.bos_token_id"),
        eos_tokens: tok_id("tokenizer.ggml.eos_token_id").into_iter().collect(),
    };
    cfg.validate(&f.path)?;
    Ok(cfg)
}
