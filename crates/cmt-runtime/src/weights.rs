//! Model weights: where they come from (`TensorSource`: an HF safetensors directory or a
//! GGUF file) and the per-layer set the forward pass uses, on a backend.
use crate::backend::{Backend, Mat, MatData};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::quant::bf16::Bf16Matrix;
use crate::quant::QuantMatrix;
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
    /// The matrix `name` in its stored block layout, where it is stored in a type the
    /// quantised kernels read ([`crate::quant::QType`]); None for every other type.
    fn load_quant(&self, _name: &str, _shape: [usize; 2]) -> Result<Option<QuantMatrix>> {
        Ok(None)
    }
}

/// How weight matrices are held in memory (`--weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Every matrix dequantised to f32 at load (the golden path; training needs it).
    #[default]
    F32,
    /// A GGUF's quantised matrices kept quantised ([`crate::quant::QType::from_ggml`] says
    /// which types on this CPU); any other type (and every HF directory) is loaded as f32.
    Native,
    /// Every matrix stored as bf16 (exact for bf16 checkpoints, rounded from others).
    Bf16,
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(WeightFormat::F32),
            "native" => Ok(WeightFormat::Native),
            "bf16" => Ok(WeightFormat::Bf16),
            other => Err(format!(
                "unknown weight format `{other}` (native: keep the file's quantised matrices \
                 quantised; bf16: store every matrix as bf16; f32: dequantise everything)"
            )),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Native => "native",
            WeightFormat::Bf16 => "bf16",
        })
    }
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
        Self::load_as(cfg, src, be, WeightFormat::F32)
    }

    pub fn load_as(
        cfg: &ModelConfig,
        src: &dyn TensorSource,
        be: &B,
        format: WeightFormat,
    ) -> Result<Self> {
        let mat = |name: &str, rows: usize, cols: usize| -> Result<Mat<B>> {
            if format == WeightFormat::Native {
                if let Some(q) = src.load_quant(name, [rows, cols])? {
                    return Ok(Mat {
                        data: be.quant_matrix(q)?,
                        rows,
                        cols,
                    });
                }
            }
            let data = src.load(name, &[rows, cols])?;
            check_finite(src.path(), name, &data)?;
            if format == WeightFormat::Bf16 {
                return Ok(Mat {
                    data: be.bf16_matrix(Bf16Matrix::from_f32(rows, cols, &data))?,
                    rows,
                    cols,
                });
            }
            Ok(Mat::dense(be.upload(data)?, rows, cols))
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

    /// Embedding rows of `ids` into `out` from row `out_row` on (rows of width `hidden`).
    /// An id past the vocabulary is an error, not a panic.
    pub fn embed_rows(&self, be: &B, ids: &[u32], out: &mut B::Buf, out_row: usize) -> Result<()> {
        let e = &self.embed;
        match &e.data {
            MatData::Dense(buf) | MatData::Device(buf, _) => {
                be.gather_rows(buf, e.cols, ids, out, out_row)
            }
            MatData::Quant(_) | MatData::Bf16(_) => {
                let mut host = vec![0.0f32; ids.len() * e.cols];
                for (row, &id) in host.chunks_exact_mut(e.cols).zip(ids) {
                    if id as usize >= e.rows {
                        return Err(Error::Invalid(format!(
                            "row {id} is out of range (0..{}): a token id outside the vocabulary?",
                            e.rows
                        )));
                    }
                    e.row_to_host(be, id as usize, row)?;
                }
                be.write(out, out_row * e.cols, &host)
            }
        }
    }

    /// Bytes the weight matrices hold (f32 or blocks), vectors left out.
    pub fn matrix_bytes(&self) -> usize {
        self.sum_matrices(|m| match &m.data {
            MatData::Dense(_) => m.rows * m.cols * 4,
            // What a matmul reads: the packed copy where there is one (the blocks then
            // serve only embedding lookups).
            MatData::Quant(q) => q
                .packed
                .as_ref()
                .map_or(q.bytes() + q.table_bytes(), |p| p.bytes()),
            MatData::Bf16(b) => b.bytes(),
            MatData::Device(_, bytes) => *bytes,
        })
    }

    /// Bytes the weight matrices would hold as f32.
    pub fn matrix_bytes_f32(&self) -> usize {
        self.sum_matrices(|m| m.rows * m.cols * 4)
    }

    fn sum_matrices(&self, one: impl Fn(&Mat<B>) -> usize) -> usize {
        let mut n = one(&self.embed) + self.lm_head.as_ref().map_or(0, &one);
        for l in &self.layers {
            for m in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                n += one(m);
            }
        }
        n
    }
}

/// How many int8 planes a quantised matrix's input is quantised into (`--weights native`):
/// two everywhere. One plane (llama.cpp's 8-bit activations) moved the default model's
/// logits by up to ~0.3 and kept HF's greedy continuation of a golden prompt for only 5 of
/// 24 tokens; two planes only for the inputs that are not RMSNorm outputs (o_proj,
/// down_proj) fixed that prompt but left another at 10 of 24 depending on how ties round;
/// two everywhere keep all three at 24 of 24 and the perplexity paragraph's loss within
/// 6e-6 of HF's, for no decode speed this machine can resolve (`docs/perf.md`). Matrices
/// with a packed copy (every kept type, wherever AVX2 or AVX-512 runs) quantise their input
/// to 16 bits instead, the same accuracy in one operand (`quant::packed`).
pub(crate) const ACTIVATION_PLANES: usize = 2;

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
