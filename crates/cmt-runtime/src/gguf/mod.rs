//! GGUF files: header, metadata and tensor directory parsing, dequantisation at load, the
//! architecture from metadata, and the tokenizer rebuilt from `tokenizer.ggml.*`.
//!
//! Every read is bounds-checked against the file length: a truncated or damaged file gives
//! an [`Error::Format`] naming the file and the byte offset, never a panic or a huge
//! allocation.
mod config;
pub(crate) mod quant;
pub(crate) mod quant_k;
mod reader;
mod rope;
mod tokenizer;

pub use quant::{dequantize, GgmlType};
pub use reader::{GgufFile, TensorInfo, Value};

use crate::error::{Error, Result};
use crate::quant::{QType, QuantMatrix};
use crate::weights::TensorSource;
use std::path::Path;

impl GgufFile {
    /// Model hyper-parameters from `general.architecture` and `{arch}.*` keys.
    pub fn model_config(&self) -> Result<crate::ModelConfig> {
        config::model_config(self)
    }

    /// A numeric metadata value (`None` when absent; a non-number is an error naming the key).
    pub(crate) fn f64_meta(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::config(&self.path, key, format!("expected a number, got {v:?}"))
            }),
        }
    }

    /// The tokenizer stored in `tokenizer.ggml.*` as a `tokenizers::Tokenizer`.
    pub fn tokenizer(&self) -> Result<crate::Tokenizer> {
        tokenizer::build(self)
    }
}

/// Reads GGUF tensors under their Hugging Face names, dequantised to f32.
pub struct GgufSource<'a> {
    pub file: &'a GgufFile,
    /// llama.cpp stores llama q/k projection rows permuted for its interleaved rotary; the
    /// runtime uses HF's half-split rotary, so those rows are put back in HF order.
    pub unpermute_qk: bool,
    pub heads: usize,
    pub kv_heads: usize,
}

/// Maps an HF tensor name to its GGUF name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let g = match suffix {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}"))
}

/// Inverse of llama.cpp's `permute` for a q or k projection: rows of each head are stored as
/// [head_dim/2, 2] (interleaved pairs) and HF wants [2, head_dim/2] (halves). Works on a
/// weight ([rows, cols]) or a bias (cols = 1).
fn unpermute_rows<T: Copy + Default>(data: &[T], heads: usize, rows: usize, cols: usize) -> Vec<T> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for t in 0..2 {
            for j in 0..half {
                let dst = h * hd + t * half + j;
                let src = h * hd + j * 2 + t;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

impl TensorSource for GgufSource<'_> {
    fn path(&self) -> &Path {
        &self.file.path
    }

    fn has(&self, hf_name: &str) -> bool {
        gguf_name(hf_name).is_some_and(|g| self.file.tensor(&g).is_some())
    }

    fn load(&self, hf_name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (gname, info) = self.lookup(hf_name, shape)?;
        let data = self.file.dequantize(info)?;
        if let Some(heads) = self.permuted_heads(&gname) {
            let rows = shape[0];
            let cols = if shape.len() > 1 { shape[1] } else { 1 };
            return Ok(unpermute_rows(&data, heads, rows, cols));
        }
        Ok(data)
    }

    fn load_quant(&self, hf_name: &str, shape: [usize; 2]) -> Result<Option<QuantMatrix>> {
        let (gname, info) = self.lookup(hf_name, &shape)?;
        let Some(ty) = QType::from_ggml(info.dtype) else {
            return Ok(None);
        };
        let [rows, cols] = shape;
        let m = match self.permuted_heads(&gname) {
            Some(heads) => {
                // A row is whole blocks, so the permutation moves rows of bytes (a copy).
                let data = self.file.bytes(info);
                let data = unpermute_rows(data, heads, rows, data.len() / rows.max(1));
                QuantMatrix::new(ty, rows, cols, data)
            }
            None => {
                let (map, range) = self.file.mapped(info);
                QuantMatrix::mapped(ty, rows, cols, map, range)
            }
        };
        m.map(Some)
            .map_err(|m| Error::tensor(&self.file.path, &gname, m))
    }
}

impl GgufSource<'_> {
    /// The GGUF tensor behind an HF name, checked to have `shape`.
    fn lookup(&self, hf_name: &str, shape: &[usize]) -> Result<(String, &TensorInfo)> {
        let gname = gguf_name(hf_name).ok_or_else(|| {
            Error::tensor(
                &self.file.path,
                hf_name,
                "no GGUF equivalent for this tensor",
            )
        })?;
        let info = self
            .file
            .tensor(&gname)
            .ok_or_else(|| Error::tensor(&self.file.path, &gname, "missing from the file"))?;
        // GGUF dims are fastest-first: [cols, rows] for a matrix.
        let want: Vec<usize> = shape.iter().rev().copied().collect();
        if info.dims != want {
            return Err(Error::tensor(
                &self.file.path,
                &gname,
                format!("shape {:?} (GGUF order), expected {:?}", info.dims, want),
            ));
        }
        Ok((gname, info))
    }

    /// Heads of a q/k projection whose rows llama.cpp permuted (None for other tensors).
    fn permuted_heads(&self, gname: &str) -> Option<usize> {
        if !self.unpermute_qk {
            return None;
        }
        let is_q = gname.ends_with("attn_q.weight") || gname.ends_with("attn_q.bias");
        let is_k = gname.ends_with("attn_k.weight") || gname.ends_with("attn_k.bias");
        (is_q || is_k).then_some(if is_q { self.heads } else { self.kv_heads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's convert script, written out: reshape(h, 2, hd/2, c).swapaxes(1, 2).
    fn permute_rows(data: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
        let hd = rows / heads;
        let half = hd / 2;
        let mut out = vec![0.0; data.len()];
        for h in 0..heads {
            for j in 0..half {
                for t in 0..2 {
                    let dst = h * hd + j * 2 + t;
                    let src = h * hd + t * half + j;
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&data[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, hd, cols) = (3, 8, 5);
        let rows = heads * hd;
        let data: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let back = unpermute_rows(&permute_rows(&data, heads, rows, cols), heads, rows, cols);
        assert_eq!(back, data);
    }

    #[test]
    fn names_map_both_ways_we_need() {
        assert_eq!(
            gguf_name("model.layers.12.mlp.up_proj.weight").as_deref(),
            Some("blk.12.ffn_up.weight")
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
    }
}
