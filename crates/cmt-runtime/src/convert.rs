//! `cmt convert`: a GGUF model written out as an HF model directory (config.json,
//! model.safetensors in f32, tokenizer.json), so the same model loads through both paths.
use crate::config::Arch;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufSource};
use crate::weights::TensorSource;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::Path;

/// HF tensor names and shapes of a model.
pub fn hf_tensor_shapes(cfg: &crate::ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, qd, kvd, f) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab, d])];
    for l in 0..cfg.layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        t.push((p("input_layernorm.weight"), vec![d]));
        t.push((p("self_attn.q_proj.weight"), vec![qd, d]));
        t.push((p("self_attn.k_proj.weight"), vec![kvd, d]));
        t.push((p("self_attn.v_proj.weight"), vec![kvd, d]));
        if cfg.qkv_bias {
            t.push((p("self_attn.q_proj.bias"), vec![qd]));
            t.push((p("self_attn.k_proj.bias"), vec![kvd]));
            t.push((p("self_attn.v_proj.bias"), vec![kvd]));
        }
        t.push((p("self_attn.o_proj.weight"), vec![d, qd]));
        t.push((p("post_attention_layernorm.weight"), vec![d]));
        t.push((p("mlp.gate_proj.weight"), vec![f, d]));
        t.push((p("mlp.up_proj.weight"), vec![f, d]));
        t.push((p("mlp.down_proj.weight"), vec![d, f]));
    }
    t.push(("model.norm.weight".to_string(), vec![d]));
    if !cfg.tie_embeddings {
        t.push(("lm_head.weight".to_string(), vec![cfg.vocab, d]));
    }
    t
}

/// Writes `gguf` as an HF directory at `out_dir` (created if needed).
pub fn gguf_to_hf(gguf: &Path, out_dir: &Path) -> Result<()> {
    let g = GgufFile::open(gguf)?;
    let cfg = g.model_config()?;
    // Before anything is written: a config with no config.json form leaves no directory.
    let hf = cfg
        .to_hf_json()
        .map_err(|e| Error::Invalid(format!("{}: {e}", gguf.display())))?;
    let tok = g.tokenizer()?;
    let src = GgufSource {
        file: &g,
        unpermute_qk: matches!(cfg.arch, Arch::Llama | Arch::Mistral),
        heads: cfg.heads,
        kv_heads: cfg.kv_heads,
    };
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let shapes = hf_tensor_shapes(&cfg);
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let v = src.load(&name, &shape)?;
        data.push((name, shape, bytemuck::cast_slice(&v).to_vec()));
    }
    let views = data
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::tensor(out_dir, n, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let st_path = out_dir.join("model.safetensors");
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(meta), &st_path).map_err(|e| Error::Format {
        path: st_path.clone(),
        offset: 0,
        msg: format!("writing safetensors: {e}"),
    })?;
    let cfg_path = out_dir.join("config.json");
    let json = serde_json::to_string_pretty(&hf).expect("config serialises");
    std::fs::write(&cfg_path, json).map_err(|e| Error::io(&cfg_path, e))?;
    tok.save(&out_dir.join("tokenizer.json"))
}
