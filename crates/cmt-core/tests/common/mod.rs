//! Tiny random models for cmt-core's tests: an HF model directory (config.json,
//! model.safetensors, a byte-level tokenizer.json) that `cmt_runtime::load_model` and the
//! `cmt` binary read like any other model.
#![allow(dead_code)]
use cmt_runtime::{Arch, ModelConfig};
use std::path::{Path, PathBuf};

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// 256 byte tokens + one end-of-text token.
pub const VOCAB: usize = 257;
pub const EOS: u32 = 256;

pub fn tiny_config(hidden: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        hidden,
        intermediate: 2 * hidden,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: hidden / 4,
        vocab: VOCAB,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        tie_embeddings: true,
        qkv_bias: false,
        max_positions: 2048,
        bos_token: None,
        eos_tokens: vec![EOS],
    }
}

/// GPT-2's byte → printable character map (what a byte-level BPE vocabulary holds).
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        out[*b as usize] = char::from_u32(c).expect("valid char");
    }
    out
}

/// A byte-level BPE tokenizer without merges: one token per byte.
pub fn tokenizer_json() -> serde_json::Value {
    let chars = byte_chars();
    let vocab: serde_json::Map<String, serde_json::Value> = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::Value::from(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": EOS, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
            "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
            "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "vocab": vocab, "merges": []}
    })
}

/// Writes a tiny random model directory under `dir` and returns its path.
pub fn write_tiny_model(dir: &Path, hidden: usize, seed: u64) -> PathBuf {
    let cfg = tiny_config(hidden);
    let out = dir.join(format!("tiny-{hidden}-{seed}"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_hf_json().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    let mut rng = Rng(seed);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = cmt_runtime::convert::hf_tensor_shapes(&cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if name.ends_with("norm.weight") {
                rng.vec(n, 0.2).into_iter().map(|x| 1.0 + x).collect()
            } else {
                rng.vec(n, 0.4)
            };
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    out
}

/// A small CMT config for a tiny model: T = 3, r = 8, k = 2, rank 4.
pub fn tiny_cmt_config(hidden: usize) -> cmt_core::CmtConfig {
    let mut c = cmt_core::CmtConfig::for_hidden(hidden);
    c.compressor.mem_tokens = 3;
    c.compressor.key_dim = 8;
    c.compressor.heads = 2;
    c.compressor.head_dim = hidden / 2;
    c.compressor.mlp_hidden = hidden;
    c.k = 2;
    c.prefix_rank = 4;
    c.max_doc_tokens = 96;
    c.chunk_overlap = 8;
    c.max_question_tokens = 64;
    c
}

/// `../shared` beside the checkout, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    p.exists().then_some(p)
}
