//! Opening a model: a GGUF file or an HF model directory, into config, tokenizer and weights.
use crate::backend::Backend;
use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufSource};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::weights::{SafetensorsSource, WeightFormat, Weights};
use std::path::Path;

/// What `--model` points at.
pub enum ModelFormat {
    Gguf,
    HfDir,
}

pub fn detect_format(path: &Path) -> Result<ModelFormat> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        if !path.join("config.json").exists() {
            return Err(Error::Invalid(format!(
                "{}: a model directory needs config.json (HF layout)",
                path.display()
            )));
        }
        return Ok(ModelFormat::HfDir);
    }
    let mut magic = [0u8; 4];
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.read_exact(&mut magic).map_err(|e| Error::io(path, e))?;
    if &magic == b"GGUF" {
        Ok(ModelFormat::Gguf)
    } else {
        Err(Error::Format {
            path: path.into(),
            offset: 0,
            msg: "neither a GGUF file nor an HF model directory".into(),
        })
    }
}

/// Config and tokenizer only (cheap): what `convert` and the CLI need before the weights.
pub fn load_config_and_tokenizer(path: &Path) -> Result<(ModelConfig, Tokenizer)> {
    match detect_format(path)? {
        ModelFormat::Gguf => {
            let g = GgufFile::open(path)?;
            Ok((g.model_config()?, g.tokenizer()?))
        }
        ModelFormat::HfDir => Ok((
            ModelConfig::from_hf_json(&path.join("config.json"))?,
            Tokenizer::from_file(&path.join("tokenizer.json"))?,
        )),
    }
}

/// Loads a whole model onto `backend`, every matrix as f32 (the golden path).
pub fn load_model<B: Backend>(path: &Path, backend: B) -> Result<(Model<B>, Tokenizer)> {
    load_model_as(path, backend, WeightFormat::F32)
}

/// Loads a whole model onto `backend`, its matrices held as `format` says
/// ([`WeightFormat::Native`] keeps a GGUF's quantised matrices quantised; HF directories and
/// the types without a kernel load as f32).
pub fn load_model_as<B: Backend>(
    path: &Path,
    backend: B,
    format: WeightFormat,
) -> Result<(Model<B>, Tokenizer)> {
    match detect_format(path)? {
        ModelFormat::Gguf => {
            let g = GgufFile::open(path)?;
            let cfg = g.model_config()?;
            let tok = g.tokenizer()?;
            let src = GgufSource {
                file: &g,
                unpermute_qk: matches!(cfg.arch, Arch::Llama | Arch::Mistral),
                heads: cfg.heads,
                kv_heads: cfg.kv_heads,
            };
            let w = Weights::load_as(&cfg, &src, &backend, format)?;
            Ok((Model::new(cfg, backend, w)?, tok))
        }
        ModelFormat::HfDir => {
            let cfg = ModelConfig::from_hf_json(&path.join("config.json"))?;
            let tok = Tokenizer::from_file(&path.join("tokenizer.json"))?;
            let src = SafetensorsSource::open(path)?;
            let w = Weights::load_as(&cfg, &src, &backend, format)?;
            Ok((Model::new(cfg, backend, w)?, tok))
        }
    }
}
