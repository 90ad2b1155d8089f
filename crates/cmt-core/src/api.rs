//! The library's front door: [`Cmt`] opens a model with a checkpoint, and ingests, asks and
//! deletes with exactly the CLI's behaviour (the CLI only adds arguments, progress bars and
//! printing).
use crate::ask::{self, Answer, AskOptions};
use crate::bank;
use crate::checkpoint::{self, CkptDtype, CkptMeta};
use crate::config::CmtConfig;
use crate::data::Document;
use crate::error::{Error, Result};
use crate::ingest::{self, IngestOptions, IngestProgress, IngestReport};
use crate::model::{BaseLm, CmtModel};
use crate::params::CmtParams;
use crate::search::SearchWith;
use crate::template::chat_template_of;
use cmt_memory::Bank;
use cmt_runtime::{Backend, CpuBackend, WeightFormat};
use std::path::{Path, PathBuf};

/// Where the trained default checkpoint for the default model lives in the repository.
pub const DEFAULT_CHECKPOINT: &str = "checkpoints/smollm2-135m-instruct/cmt.safetensors";

/// The default checkpoint: `$CMT_CHECKPOINT` if set, else the repository's committed one
/// (None when there is none yet).
pub fn default_checkpoint_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CMT_CHECKPOINT").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DEFAULT_CHECKPOINT);
    p.exists().then_some(p)
}

/// The question template a new checkpoint gets: the model's chat template when it has one.
pub fn default_template(model_path: &Path) -> Result<&'static str> {
    Ok(if chat_template_of(model_path)?.is_some() {
        "chat"
    } else {
        "plain"
    })
}

/// Parameters of θ (for the "G_ω under 5% of θ" figure).
pub fn base_param_count(cfg: &cmt_runtime::ModelConfig) -> usize {
    cmt_runtime::convert::hf_tensor_shapes(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

/// A freshly initialised checkpoint for `base` (untrained: for tests and until a trained
/// one exists), written to `out`.
pub fn init_checkpoint(
    base: &BaseLm,
    cfg: &CmtConfig,
    template: &str,
    seed: u64,
    command: &str,
    out: &Path,
) -> Result<(CkptMeta, CmtParams)> {
    let params = CmtParams::init(cfg, &base.dims(), seed)?;
    let meta = CkptMeta {
        config: cfg.clone(),
        base: base.describe(),
        template: template.to_string(),
        command: command.to_string(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        extra: serde_json::json!({ "trained": false, "seed": seed }),
        dtype: CkptDtype::F32,
    };
    checkpoint::save(out, &meta, &params)?;
    Ok((meta, params))
}

/// θ plus a checkpoint: what ingest and ask run on. θ runs on the CPU or, for inference, on
/// any backend (`Cmt::open_on`); the compressor, the bank search and ψ / G_ω run on the CPU.
pub struct Cmt<B: Backend = CpuBackend> {
    /// The model: θ, the checkpoint and the template.
    pub model: CmtModel<B>,
}

impl Cmt {
    /// Loads θ from `model_path` (f32 matrices) and the checkpoint at `checkpoint` (refused
    /// when it was made for another model).
    pub fn open(model_path: &Path, checkpoint: &Path) -> Result<Cmt> {
        Self::open_as(model_path, checkpoint, WeightFormat::F32)
    }

    /// As [`Cmt::open`], θ's matrices held as `weights` says (`Native`: a GGUF's quantised
    /// blocks, the same weight values as f32 with activations rounded to 16 bits).
    pub fn open_as(model_path: &Path, checkpoint: &Path, weights: WeightFormat) -> Result<Cmt> {
        Cmt::open_on(model_path, checkpoint, CpuBackend, weights)
    }

    /// As [`Cmt::open_as`] with the default checkpoint; an error says so when there is none.
    pub fn open_default_checkpoint(model_path: &Path, weights: WeightFormat) -> Result<Cmt> {
        Cmt::open_default_checkpoint_on(model_path, CpuBackend, weights)
    }
}

impl<B: Backend> Cmt<B> {
    /// As [`Cmt::open_as`], θ on `backend`, and banks searched where θ runs (the device
    /// backend's device: kernels/topk_aggregate.cu).
    pub fn open_on(
        model_path: &Path,
        checkpoint: &Path,
        backend: B,
        weights: WeightFormat,
    ) -> Result<Cmt<B>>
    where
        B: SearchWith,
    {
        let search = backend.bank_search();
        let base = BaseLm::load_on(model_path, backend, weights)?;
        let ckpt = checkpoint::load(checkpoint)?;
        let mut model = CmtModel::new(base, ckpt)?;
        model.set_search(search);
        Ok(Cmt { model })
    }

    /// As [`Cmt::open_on`] with the default checkpoint; an error says so when there is none.
    pub fn open_default_checkpoint_on(
        model_path: &Path,
        backend: B,
        weights: WeightFormat,
    ) -> Result<Cmt<B>>
    where
        B: SearchWith,
    {
        let ckpt = default_checkpoint_path().ok_or_else(|| {
            Error::Invalid(format!(
                "no default checkpoint yet ({DEFAULT_CHECKPOINT} is absent and CMT_CHECKPOINT \
                 is unset): pass --checkpoint, or make an untrained one with `cmt checkpoint \
                 init --out FILE`"
            ))
        })?;
        Self::open_on(model_path, &ckpt, backend, weights)
    }

    /// Opens (or creates) the bank at `dir` as its writer.
    pub fn open_bank_writer(&self, dir: &Path) -> Result<Bank> {
        bank::open_writer(dir, &self.model)
    }

    /// Opens the bank at `dir` read-only (a snapshot; a writer may keep appending).
    pub fn open_bank_reader(&self, dir: &Path) -> Result<Bank> {
        bank::open_reader(dir, &self.model)
    }

    /// See [`ingest::ingest`].
    pub fn ingest(
        &self,
        bank: &mut Bank,
        docs: &[Document],
        opts: &IngestOptions,
        progress: impl FnMut(IngestProgress),
    ) -> Result<IngestReport> {
        ingest::ingest(&self.model, bank, docs, opts, progress)
    }

    /// See [`ask::ask`].
    pub fn ask(
        &self,
        bank: Option<&Bank>,
        questions: &[String],
        opts: &AskOptions,
    ) -> Result<Vec<Answer>> {
        ask::ask(&self.model, bank, questions, opts)
    }

    /// Tombstones every entry of the given documents; returns (entries deleted, ids absent).
    pub fn delete(&self, bank: &mut Bank, doc_ids: &[String]) -> Result<(usize, Vec<String>)> {
        ingest::delete_documents(bank, doc_ids)
    }
}
