//! The compressor's trainable parameters φ and W_key: initialisation, named access (for
//! optimisers and checkpoints) and safetensors save/load.
use crate::config::CompressorConfig;
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// One block: `Q ← Q + CrossAttn(RMSNorm(Q), RMSNorm(H))`, `Q ← Q + MLP(RMSNorm(Q))`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParams {
    /// `[d]` RMSNorm gain of the queries.
    pub norm_q: Vec<f32>,
    /// `[d]` RMSNorm gain of the document hidden states.
    pub norm_h: Vec<f32>,
    /// `[heads·hd, d]` each (HF Linear layout: out × in).
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    /// `[d, heads·hd]`.
    pub wo: Vec<f32>,
    /// `[d]` RMSNorm gain before the MLP.
    pub norm_mlp: Vec<f32>,
    /// `[mlp_hidden, d]`.
    pub w1: Vec<f32>,
    /// `[d, mlp_hidden]`.
    pub w2: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// `[T, d]` the learned queries Q₀.
    pub q0: Vec<f32>,
    /// `[r, d]` the key head.
    pub w_key: Vec<f32>,
    pub blocks: Vec<BlockParams>,
}

/// Tensor names and shapes, in checkpoint order.
pub fn shapes(cfg: &CompressorConfig) -> Vec<(String, Vec<usize>)> {
    let (d, a, f) = (cfg.d, cfg.attn_width(), cfg.mlp_hidden);
    let mut v = vec![
        ("q0".to_string(), vec![cfg.mem_tokens, d]),
        ("w_key".to_string(), vec![cfg.key_dim, d]),
    ];
    for b in 0..cfg.blocks {
        for (name, shape) in [
            ("norm_q", vec![d]),
            ("norm_h", vec![d]),
            ("wq", vec![a, d]),
            ("wk", vec![a, d]),
            ("wv", vec![a, d]),
            ("wo", vec![d, a]),
            ("norm_mlp", vec![d]),
            ("w1", vec![f, d]),
            ("w2", vec![d, f]),
        ] {
            v.push((format!("blocks.{b}.{name}"), shape));
        }
    }
    v
}

fn normal(rng: &mut StdRng, std: f32) -> f32 {
    // Box–Muller; 1 − u keeps the logarithm finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * std
}

impl Params {
    /// All zeros (gradient accumulators), shaped for `cfg`.
    pub fn zeros(cfg: &CompressorConfig) -> Self {
        let mut p = Params {
            q0: vec![],
            w_key: vec![],
            blocks: vec![],
        };
        p.blocks = (0..cfg.blocks)
            .map(|_| BlockParams {
                norm_q: vec![],
                norm_h: vec![],
                wq: vec![],
                wk: vec![],
                wv: vec![],
                wo: vec![],
                norm_mlp: vec![],
                w1: vec![],
                w2: vec![],
            })
            .collect();
        for ((_, shape), t) in shapes(cfg).iter().zip(p.tensors_mut()) {
            *t.1 = vec![0.0; shape.iter().product()];
        }
        p
    }

    /// The initialisation: Q₀ ~ N(0, 1); linear weights ~ N(0, 1/fan_in), the two that write
    /// into the residual stream (wo, w2) further scaled by 1/sqrt(2B) so that the memory
    /// starts near Q₀ + small updates; norm gains 1. Deterministic in `seed`.
    pub fn init(cfg: &CompressorConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = Self::zeros(cfg);
        let resid = 1.0 / (2.0 * cfg.blocks as f32).sqrt();
        for ((name, shape), (_, t)) in shapes(cfg).iter().zip(p.tensors_mut()) {
            let leaf = name.rsplit('.').next().unwrap_or(name);
            let std = match leaf {
                "norm_q" | "norm_h" | "norm_mlp" => {
                    t.fill(1.0);
                    continue;
                }
                "q0" => 1.0,
                "wo" | "w2" => resid / (shape[1] as f32).sqrt(),
                _ => 1.0 / (shape[1] as f32).sqrt(),
            };
            t.iter_mut().for_each(|x| *x = normal(&mut rng, std));
        }
        Ok(p)
    }

    /// Every tensor with its checkpoint name, in [`shapes`] order.
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut v: Vec<(String, &[f32])> =
            vec![("q0".into(), &self.q0), ("w_key".into(), &self.w_key)];
        for (b, blk) in self.blocks.iter().enumerate() {
            for (name, t) in [
                ("norm_q", &blk.norm_q),
                ("norm_h", &blk.norm_h),
                ("wq", &blk.wq),
                ("wk", &blk.wk),
                ("wv", &blk.wv),
                ("wo", &blk.wo),
                ("norm_mlp", &blk.norm_mlp),
                ("w1", &blk.w1),
                ("w2", &blk.w2),
            ] {
                v.push((format!("blocks.{b}.{name}"), t.as_slice()));
            }
        }
        v
    }

    /// As [`Params::tensors`], mutable.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut Vec<f32>)> {
        let mut v: Vec<(String, &mut Vec<f32>)> = vec![
            ("q0".into(), &mut self.q0),
            ("w_key".into(), &mut self.w_key),
        ];
        for (b, blk) in self.blocks.iter_mut().enumerate() {
            for (name, t) in [
                ("norm_q", &mut blk.norm_q),
                ("norm_h", &mut blk.norm_h),
                ("wq", &mut blk.wq),
                ("wk", &mut blk.wk),
                ("wv", &mut blk.wv),
                ("wo", &mut blk.wo),
                ("norm_mlp", &mut blk.norm_mlp),
                ("w1", &mut blk.w1),
                ("w2", &mut blk.w2),
            ] {
                v.push((format!("blocks.{b}.{name}"), t));
            }
        }
        v
    }

    pub fn num_params(&self) -> usize {
        self.tensors().iter().map(|(_, t)| t.len()).sum()
    }

    /// Checks every tensor has the length `cfg` implies; the error names the tensor.
    pub fn check(&self, cfg: &CompressorConfig) -> Result<()> {
        if self.blocks.len() != cfg.blocks {
            return Err(Error::Config(format!(
                "{} blocks of parameters for a config of {}",
                self.blocks.len(),
                cfg.blocks
            )));
        }
        for ((name, shape), (_, t)) in shapes(cfg).iter().zip(self.tensors()) {
            let n: usize = shape.iter().product();
            if t.len() != n {
                return Err(Error::Config(format!(
                    "{name} holds {} values, shape {shape:?} needs {n}",
                    t.len()
                )));
            }
        }
        Ok(())
    }
}

const FORMAT: &str = "cmt-compressor";
const VERSION: &str = "1";

/// Writes `params` as f32 safetensors; the metadata records the format, its version, the
/// config (JSON) and the caller's `extra` entries (e.g. the base model's hash).
pub fn save(
    path: &Path,
    cfg: &CompressorConfig,
    params: &Params,
    extra: &[(&str, &str)],
) -> Result<()> {
    params.check(cfg)?;
    let shapes = shapes(cfg);
    let tensors = params.tensors();
    let views = shapes
        .iter()
        .zip(&tensors)
        .map(|((name, shape), (_, t))| {
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(t),
            )
            .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_err(path, e))?;
    let mut meta: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("version".into(), VERSION.into());
    meta.insert(
        "config".into(),
        serde_json::to_string(cfg).map_err(|e| Error::Config(e.to_string()))?,
    );
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => Error::Io {
            path: path.to_owned(),
            source,
        },
        e => format_err(path, e),
    })
}

fn format_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.to_owned(),
        msg: e.to_string(),
    }
}

/// A checkpoint read back: config, parameters and the whole metadata map.
pub struct Loaded {
    pub cfg: CompressorConfig,
    pub params: Params,
    pub metadata: HashMap<String, String>,
}

/// Reads a checkpoint written by [`save`]. Every tensor's presence, dtype, shape and
/// finiteness is checked; errors name the file and the tensor.
pub fn load(path: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format_err(path, e))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format_err(path, e))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        metadata.get(k).ok_or_else(|| {
            format_err(
                path,
                format!("metadata has no \"{k}\": not a {FORMAT} checkpoint"),
            )
        })
    };
    if field("format")? != FORMAT {
        return Err(format_err(
            path,
            format!("metadata format is not \"{FORMAT}\""),
        ));
    }
    if field("version")? != VERSION {
        return Err(format_err(
            path,
            format!(
                "checkpoint version {} (this build reads {VERSION})",
                field("version")?
            ),
        ));
    }
    let cfg: CompressorConfig = serde_json::from_str(field("config")?)
        .map_err(|e| format_err(path, format!("metadata \"config\": {e}")))?;
    cfg.validate().map_err(|e| format_err(path, e))?;
    let mut params = Params::zeros(&cfg);
    for ((name, shape), (_, t)) in shapes(&cfg).iter().zip(params.tensors_mut()) {
        let view = st
            .tensor(name)
            .map_err(|_| format_err(path, format!("tensor {name} is missing")))?;
        if view.dtype() != safetensors::Dtype::F32 || view.shape() != shape.as_slice() {
            return Err(format_err(
                path,
                format!(
                    "tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                ),
            ));
        }
        for (i, (dst, src)) in t.iter_mut().zip(view.data().chunks_exact(4)).enumerate() {
            let v = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
            if !v.is_finite() {
                return Err(format_err(path, format!("tensor {name}[{i}] is {v}")));
            }
            *dst = v;
        }
    }
    Ok(Loaded {
        cfg,
        params,
        metadata,
    })
}
