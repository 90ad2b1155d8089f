//! Checkpoints: one safetensors file holding φ, W_key, ψ, ω and τ (bf16 for shipping, f32
//! while training), with metadata that makes the file self-describing:
//!
//! | key | value |
//! |---|---|
//! | `format` | `cmt-checkpoint` |
//! | `version` | `1` |
//! | `config` | the [`CmtConfig`] as JSON (T, p, r, k, every switch) |
//! | `base_model` | JSON: `sha256`, `name`, `dims` ([`BaseDims`]) of θ |
//! | `template` | the question template name |
//! | `command` | the command line that made the file |
//! | `created` | Unix seconds |
//! | `extra` | free-form JSON (training figures, step, …) |
//!
//! Loading checks every tensor's presence, dtype, shape and finiteness, the config, and the
//! base model: a checkpoint made for another θ is refused with both hashes named.
use crate::config::CmtConfig;
use crate::error::{Error, Result};
use crate::params::{check_base, BaseDims, CmtParams};
use half::bf16;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `format` metadata value of a CMT checkpoint.
pub const FORMAT: &str = "cmt-checkpoint";
/// The format version this build writes and reads.
pub const VERSION: &str = "1";

/// Storage type of the tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CkptDtype {
    /// 32-bit floats (training).
    F32,
    /// bfloat16 (shipping; half the bytes).
    Bf16,
}

/// The base model a checkpoint belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// sha256 of θ's file(s), see [`crate::model::model_sha256`].
    pub sha256: String,
    /// θ's file name, for messages.
    pub name: String,
    /// θ's dimensions.
    pub dims: BaseDims,
}

/// A checkpoint's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct CkptMeta {
    /// Every hyper-parameter and switch.
    pub config: CmtConfig,
    /// The θ it belongs to.
    pub base: BaseModel,
    /// The question template's name (`plain` or `chat`).
    pub template: String,
    /// The command line that made the file.
    pub command: String,
    /// Unix seconds at writing.
    pub created: u64,
    /// Free-form JSON (training figures, step, seed, …).
    pub extra: serde_json::Value,
    /// Storage type of the tensors.
    pub dtype: CkptDtype,
}

/// A checkpoint read back.
pub struct Checkpoint {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its metadata.
    pub meta: CkptMeta,
    /// φ, W_key, ψ, ω and τ, widened to f32.
    pub params: CmtParams,
    /// sha256 of the file's bytes: what a bank records to stay bound to these parameters.
    pub sha256: String,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Writes `params` with `meta` to `path` (through a temporary file and a rename, so a crash
/// never leaves a half-written checkpoint under the final name).
pub fn save(path: &Path, meta: &CkptMeta, params: &CmtParams) -> Result<()> {
    meta.config.validate()?;
    params.check(&meta.config, &meta.base.dims)?;
    let tensors = params.tensors();
    let shapes = shapes_of(&meta.config, &meta.base.dims, params);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| match meta.dtype {
            CkptDtype::F32 => bytemuck::cast_slice::<f32, u8>(t).to_vec(),
            CkptDtype::Bf16 => t
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        })
        .collect();
    let dtype = match meta.dtype {
        CkptDtype::F32 => Dtype::F32,
        CkptDtype::Bf16 => Dtype::BF16,
    };
    let views = tensors
        .iter()
        .zip(&shapes)
        .zip(&bytes)
        .map(|(((name, _), shape), b)| {
            TensorView::new(dtype, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::checkpoint(path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut md = HashMap::new();
    md.insert("format".to_string(), FORMAT.to_string());
    md.insert("version".to_string(), VERSION.to_string());
    md.insert("config".to_string(), json(&meta.config));
    md.insert("base_model".to_string(), json(&meta.base));
    md.insert("template".to_string(), meta.template.clone());
    md.insert("command".to_string(), meta.command.clone());
    md.insert("created".to_string(), meta.created.to_string());
    md.insert("extra".to_string(), meta.extra.to_string());
    let data = safetensors::serialize(views, Some(md))
        .map_err(|e| Error::checkpoint(path, e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &data).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Tensor shapes in [`CmtParams::tensors`] order.
fn shapes_of(cfg: &CmtConfig, base: &BaseDims, params: &CmtParams) -> Vec<Vec<usize>> {
    let mut v: Vec<Vec<usize>> = cmt_compress::params::shapes(&cfg.compressor)
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let agg = cmt_compress::params::shapes(&cfg.aggregator_blocks_config());
    v.extend(agg.into_iter().skip(2).map(|(_, s)| s));
    v.extend(
        crate::params::prefix_dims(cfg, base)
            .shapes()
            .into_iter()
            .map(|(_, s)| s),
    );
    v.push(vec![1]);
    debug_assert_eq!(v.len(), params.tensors().len());
    v
}

fn sha256_bytes(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Reads a checkpoint; every tensor and metadata field is checked, errors name the file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::checkpoint(path, m);
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("damaged ({e})")))?;
    let md = header.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        md.get(k)
            .ok_or_else(|| bad(format!("metadata has no \"{k}\": not a {FORMAT} file")))
    };
    if field("format")? != FORMAT {
        return Err(bad(format!(
            "metadata format is \"{}\", not \"{FORMAT}\"",
            field("format")?
        )));
    }
    if field("version")? != VERSION {
        return Err(bad(format!(
            "checkpoint version {} (this build reads {VERSION})",
            field("version")?
        )));
    }
    let config: CmtConfig = serde_json::from_str(field("config")?)
        .map_err(|e| bad(format!("metadata \"config\": {e}")))?;
    config
        .validate()
        .map_err(|e| bad(format!("metadata \"config\": {e}")))?;
    let base: BaseModel = serde_json::from_str(field("base_model")?)
        .map_err(|e| bad(format!("metadata \"base_model\": {e}")))?;
    check_base(&config, &base.dims).map_err(|e| bad(e.to_string()))?;
    let created = field("created")?
        .parse()
        .map_err(|e| bad(format!("metadata \"created\": {e}")))?;
    let extra = serde_json::from_str(field("extra")?)
        .map_err(|e| bad(format!("metadata \"extra\": {e}")))?;
    let mut params = CmtParams::zeros(&config, &base.dims);
    let shapes = shapes_of(&config, &base.dims, &params);
    let mut dtype = None;
    for ((name, t), shape) in params.tensors_mut().into_iter().zip(&shapes) {
        let view = st
            .tensor(&name)
            .map_err(|_| bad(format!("tensor {name} is missing")))?;
        if view.shape() != shape.as_slice() {
            return Err(bad(format!(
                "tensor {name} has shape {:?}, the config needs {shape:?}",
                view.shape()
            )));
        }
        let dt = match view.dtype() {
            Dtype::F32 => CkptDtype::F32,
            Dtype::BF16 => CkptDtype::Bf16,
            other => return Err(bad(format!("tensor {name} is {other:?}, not F32 or BF16"))),
        };
        dtype.get_or_insert(dt);
        let data = view.data();
        match dt {
            CkptDtype::F32 => {
                for (dst, s) in t.iter_mut().zip(data.chunks_exact(4)) {
                    *dst = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                }
            }
            CkptDtype::Bf16 => {
                for (dst, s) in t.iter_mut().zip(data.chunks_exact(2)) {
                    *dst = bf16::from_le_bytes([s[0], s[1]]).to_f32();
                }
            }
        }
        if let Some(i) = t.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("tensor {name}[{i}] is {}", t[i])));
        }
    }
    let meta = CkptMeta {
        config,
        base,
        template: field("template")?.clone(),
        command: field("command")?.clone(),
        created,
        extra,
        dtype: dtype.unwrap_or(CkptDtype::F32),
    };
    Ok(Checkpoint {
        path: path.to_owned(),
        meta,
        params,
        sha256: sha256_bytes(&bytes),
    })
}

impl Checkpoint {
    /// Refuses a checkpoint made for another base model than (`sha256`, `dims`).
    pub fn check_base_model(&self, sha256: &str, dims: &BaseDims) -> Result<()> {
        let b = &self.meta.base;
        if b.sha256 != sha256 {
            return Err(Error::checkpoint(
                &self.path,
                format!(
                    "made for base model {} (sha256 {}), but the loaded model's sha256 is {sha256}",
                    b.name, b.sha256
                ),
            ));
        }
        if &b.dims != dims {
            return Err(Error::checkpoint(
                &self.path,
                format!(
                    "made for base-model dims {:?}, the loaded model has {dims:?}",
                    b.dims
                ),
            ));
        }
        Ok(())
    }
}
