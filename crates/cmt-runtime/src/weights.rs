//! Model weights: where they come from (`TensorSource`: an HF safetensors directory or a
//! GGUF file) and the per-layer set the forward pass uses, on a backend.
use crate::backend::{Backend, Mat};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Tensors by their Hugging Face names, as f32, in row-major HF layout.
pub trait TensorSource {
    fn path(&self) -> &Path;
    fn has(&self, name: &str) -> bool;
    /// The tensor `name`, checked to have `shape`.
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

pub struct LayerWeights<B: Backend> {
    pub attn_norm: B::Buf,
    pub wq: Mat<B>,
    pub wk: Mat<B>,
    pub wv: Mat<B>,
    pub bq: Option<B::Buf>,
    pub bk: Option<B::Buf>,
    pub bv: Option<B::Buf>,
    pub wo: Mat<B>,
    pub ffn_norm: B::Buf,
    pub w_gate: Mat<B>,
    pub w_up: Mat<B>,
    pub w_down: Mat<B>,
}

pub struct Weights<B: Backend> {
    pub embed: Mat<B>,
    pub layers: Vec<LayerWeights<B>>,
    pub final_norm: B::Buf,
    /// None when tied to `embed`.
    pub lm_head: Option<Mat<B>>,
}

impl<B: Backend> Weights<B> {
    pub fn load(cfg: &ModelConfig, src: &dyn TensorSource, be: &B) -> Result<Self> {
        let mat = |name: &str, rows: usize, cols: usize| -> Result<Mat<B>> {
            let data = src.load(name, &[rows, cols])?;
            check_finite(src.path(), name, &data)?;
            Ok(Mat {
                buf: be.upload(data)?,
                rows,
                cols,
            })
        };
        let vec = |name: &str, n: usize| -> Result<B::Buf> {
            let data = src.load(name, &[n])?;
            check_finite(src.path(), name, &data)?;
            be.upload(data)
        };
        let (d, qd, kvd, f) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let bias = |s: &str, n: usize| -> Result<Option<B::Buf>> {
                if cfg.qkv_bias {
                    vec(&p(s), n).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(LayerWeights {
                attn_norm: vec(&p("input_layernorm.weight"), d)?,
                wq: mat(&p("self_attn.q_proj.weight"), qd, d)?,
                wk: mat(&p("self_attn.k_proj.weight"), kvd, d)?,
                wv: mat(&p("self_attn.v_proj.weight"), kvd, d)?,
                bq: bias("self_attn.q_proj.bias", qd)?,
                bk: bias("self_attn.k_proj.bias", kvd)?,
                bv: bias("self_attn.v_proj.bias", kvd)?,
                wo: mat(&p("self_attn.o_proj.weight"), d, qd)?,
                ffn_norm: vec(&p("post_attention_layernorm.weight"), d)?,
                w_gate: mat(&p("mlp.gate_proj.weight"), f, d)?,
                w_up: mat(&p("mlp.up_proj.weight"), f, d)?,
                w_down: mat(&p("mlp.down_proj.weight"), d, f)?,
            });
        }
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(mat("lm_head.weight", cfg.vocab, d)?)
        };
        Ok(Weights {
            embed: mat("model.embed_tokens.weight", cfg.vocab, d)?,
            layers,
            final_norm: vec("model.norm.weight", d)?,
            lm_head,
        })
    }

    pub fn lm_head(&self) -> &Mat<B> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// A NaN or infinity in a weight is a damaged file; say which tensor and where.
fn check_finite(path: &Path, name: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::tensor(
            path,
            name,
            format!("element {i} is {} (damaged file?)", data[i]),
        )),
    }
}

/// The safetensors files of an HF model directory (single file or sharded with an index).
pub struct SafetensorsSource {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// tensor name -> index into `files`
    index: HashMap<String, usize>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Format {
                path: index_path.clone(),
                offset: 0,
                msg: format!("not valid JSON: {e}"),
            })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    Error::config(&index_path, "weight_map", "missing or not an object")
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            files.sort();
            files.dedup();
            files.iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(Error::Invalid(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut files = Vec::with_capacity(names.len());
        let mut index = HashMap::new();
        for path in names {
            let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only map kept alive with the source; the file is not expected to
            // change while the model loads.
            let mmap = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Format {
                path: path.clone(),
                offset: 0,
                msg: format!("not a valid safetensors file: {e}"),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, mmap));
        }
        Ok(SafetensorsSource {
            dir: dir.into(),
            files,
            index,
        })
    }
}

impl TensorSource for SafetensorsSource {
    fn path(&self) -> &Path {
        &self.dir
    }
    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &fi = self
            .index
            .get(name)
            .ok_or_else(|| Error::tensor(&self.dir, name, "missing from the safetensors files"))?;
        let (path, mmap) = &self.files[fi];
        let st = SafeTensors::deserialize(mmap).map_err(|e| Error::Format {
            path: path.clone(),
            offset: 0,
            msg: format!("not a valid safetensors file: {e}"),
        })?;
        let t = st
            .tensor(name)
            .map_err(|e| Error::tensor(path, name, e.to_string()))?;
        if t.shape() != shape {
            return Err(Error::tensor(
                path,
                name,
                format!("shape {:?}, expected {:?}", t.shape(), shape),
            ));
        }
        let b = t.data();
        let out: Vec<f32> = match t.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::tensor(
                    path,
                    name,
                    format!("dtype {other:?} is not supported (f32, f16, bf16 are)"),
                ))
            }
        };
        Ok(out)
    }
}
