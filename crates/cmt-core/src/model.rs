//! The CMT model at inference (DESIGN §1 steps 1–7): the frozen θ with its tokenizer, the
//! trained parts (a [`Checkpoint`]) and the question template, and the stages every path
//! shares — texts to memories and keys, aggregation over a bank, ψ, G_ω, generation.
use crate::aggregator::{self, AggInput};
use crate::checkpoint::{BaseModel, Checkpoint};
use crate::config::{CmtConfig, PrefixMode};
use crate::error::{Error, Result};
use crate::params::{prefix_dims, BaseDims, CmtParams};
use crate::prefix;
use crate::search::{BankSearch, CpuSearch};
use crate::soft_prefix;
use crate::template::Template;
use cmt_compress::encode::{Chunking, EncodeOptions, Encoder, Progress};
use cmt_compress::Compressed;
use cmt_memory::TopK;
use cmt_runtime::{Backend, CpuBackend, GenerateOptions, KvPrefix, Model, Tokenizer, WeightFormat};
use std::path::{Path, PathBuf};

/// Decoding of every method (DESIGN §1.9): greedy, at most this many new tokens, stop at
/// EOS or a newline.
pub const MAX_NEW_TOKENS: usize = 24;

/// θ, loaded, with what identifies it, on the CPU (training's backward is CPU-only) or on
/// any backend for inference.
pub struct BaseLm<B: Backend = CpuBackend> {
    /// The frozen transformer.
    pub model: Model<B>,
    /// Its tokenizer.
    pub tok: Tokenizer,
    /// The file or directory it was loaded from.
    pub path: PathBuf,
    /// sha256 of the GGUF file (or of an HF directory's files, see [`model_sha256`]).
    pub sha256: String,
}

impl BaseLm {
    /// Loads θ from a GGUF file or an HF directory with f32 matrices (what training's
    /// backward reads) and hashes it.
    pub fn load(path: &Path) -> Result<BaseLm> {
        Self::load_as(path, WeightFormat::F32)
    }

    /// As [`BaseLm::load`], the matrices held as `weights` says (inference: `Native` keeps
    /// a GGUF's quantised blocks; the backward refuses anything but f32).
    pub fn load_as(path: &Path, weights: WeightFormat) -> Result<BaseLm> {
        BaseLm::load_on(path, CpuBackend, weights)
    }
}

impl<B: Backend> BaseLm<B> {
    /// As [`BaseLm::load_as`], θ on `backend` (the device backend for `--device cuda`).
    pub fn load_on(path: &Path, backend: B, weights: WeightFormat) -> Result<BaseLm<B>> {
        let sha256 = model_sha256(path)?;
        let (model, tok) = cmt_runtime::load_model_as(path, backend, weights)?;
        Ok(BaseLm {
            model,
            tok,
            path: path.to_owned(),
            sha256,
        })
    }

    /// θ's dimensions that the trainable parts depend on.
    pub fn dims(&self) -> BaseDims {
        BaseDims::of(&self.model.cfg)
    }

    /// What a checkpoint records of this θ.
    pub fn describe(&self) -> BaseModel {
        BaseModel {
            sha256: self.sha256.clone(),
            name: self
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            dims: self.dims(),
        }
    }

    /// Greedy answers to `prompts` (token ids), each with an optional prefix: at most
    /// `max_new` tokens, stopping at EOS or at the first newline (the text before it is the
    /// answer).
    pub fn answer(
        &self,
        prompts: &[Vec<u32>],
        prefixes: Option<&[Option<KvPrefix>]>,
        max_new: usize,
    ) -> Result<Vec<String>> {
        if prompts.is_empty() {
            return Ok(vec![]);
        }
        let cfg = &self.model.cfg;
        let p = prefixes
            .map(|ps| ps.iter().flatten().map(|x| x.len).max().unwrap_or(0))
            .unwrap_or(0);
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let capacity = p + longest + max_new;
        if capacity > cfg.max_positions {
            return Err(Error::Invalid(format!(
                "a prompt of {longest} tokens with a prefix of {p} and {max_new} new tokens \
                 exceeds the model's context of {}",
                cfg.max_positions
            )));
        }
        let mut sess = self.model.session(prompts.len(), capacity)?;
        let opts = GenerateOptions {
            max_new_tokens: max_new,
            stop_tokens: cfg.eos_tokens.clone(),
            ..Default::default()
        };
        let tok = &self.tok;
        let ids =
            cmt_runtime::generate(&self.model, &mut sess, prompts, prefixes, &opts, |_, id| {
                // Stop a sequence at the first token whose text holds a newline.
                Ok(!tok.decode(&[id])?.contains('\n'))
            })?;
        ids.iter()
            .map(|s| {
                let text = self.tok.decode(s)?;
                let line = text.split('\n').next().unwrap_or("");
                Ok(line.trim().to_string())
            })
            .collect()
    }
}

/// θ's encoder options as `cfg` sets them (ℓ_enc), for chunks of `max_doc_tokens` with
/// `overlap` shared tokens.
pub fn encode_options(
    cfg: &CmtConfig,
    max_doc_tokens: usize,
    overlap: usize,
    progress: Progress,
) -> Result<EncodeOptions> {
    Ok(EncodeOptions {
        layer: cfg.encode_layer.hidden_layer(),
        chunking: Chunking::new(max_doc_tokens, overlap)?,
        max_batch_tokens: 4096.max(max_doc_tokens),
        progress,
        ..Default::default()
    })
}

/// The identity of a model file: the sha256 of a GGUF file, or of an HF directory's
/// `config.json` and `*.safetensors` (in name order, each file's hash in turn hashed).
/// The default model's verified hash is used as is when the path is the default model's.
pub fn model_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    if path == cmt_runtime::fetch::default_model_path() {
        return Ok(cmt_runtime::fetch::DEFAULT_SHA256.to_string());
    }
    if !path.is_dir() {
        return Ok(cmt_runtime::fetch::sha256_file(path)?);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
            n.is_some_and(|n| n == "config.json" || n.ends_with(".safetensors"))
        })
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(cmt_runtime::fetch::sha256_file(&f)?.as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Memories and keys of a batch of texts, with which input each entry came from.
pub struct Memories {
    /// `[entries, T, D]`.
    pub memories: Vec<f32>,
    /// `[entries, r]`.
    pub keys: Vec<f32>,
    /// Per entry: (index of the input text, chunk number within it).
    pub origin: Vec<(usize, usize)>,
}

/// The full model: θ, the trained parts and the template.
pub struct CmtModel<B: Backend = CpuBackend> {
    /// θ.
    pub base: BaseLm<B>,
    /// The trained parts and their metadata.
    pub ckpt: Checkpoint,
    /// The question template the checkpoint was trained with.
    pub template: Template,
    /// Where banks are searched: the CPU unless [`CmtModel::set_search`] put it on θ's
    /// device.
    pub search: Box<dyn BankSearch>,
}

impl<B: Backend> CmtModel<B> {
    /// Searches banks with `search` from now on.
    pub fn set_search(&mut self, search: Box<dyn BankSearch>) {
        self.search = search;
    }

    /// Binds a checkpoint to θ; refused when the checkpoint was made for another model.
    pub fn new(base: BaseLm<B>, ckpt: Checkpoint) -> Result<CmtModel<B>> {
        ckpt.check_base_model(&base.sha256, &base.dims())?;
        let template = Template::for_model(&ckpt.meta.template, &base.path)?;
        Ok(CmtModel {
            base,
            ckpt,
            template,
            search: Box::new(CpuSearch),
        })
    }

    /// The checkpoint's configuration.
    pub fn cfg(&self) -> &CmtConfig {
        &self.ckpt.meta.config
    }

    /// The trainable parameters.
    pub fn params(&self) -> &CmtParams {
        &self.ckpt.params
    }

    /// θ's encoder as the config sets it (ℓ_enc, chunking), with a progress bar policy.
    pub fn encoder(
        &self,
        max_doc_tokens: usize,
        overlap: usize,
        progress: Progress,
    ) -> Result<Encoder<'_, B>> {
        let opts = encode_options(self.cfg(), max_doc_tokens, overlap, progress)?;
        Ok(Encoder::new(&self.base.model, opts)?)
    }

    /// Memories of documents (token ids): each chunk of `max_doc_tokens` is one entry.
    pub fn memorize(&self, docs: &[Vec<u32>]) -> Result<Memories> {
        let c = self.cfg();
        let enc = self.encoder(c.max_doc_tokens, c.chunk_overlap, Progress::Never)?;
        let batch = enc.encode(docs)?;
        let Compressed { memories, keys } = self.params().compressor.forward(&batch.doc_batch())?;
        let mut origin = Vec::with_capacity(batch.chunks.len());
        let mut last = (usize::MAX, 0);
        for ch in &batch.chunks {
            let n = if ch.doc == last.0 { last.1 + 1 } else { 0 };
            last = (ch.doc, n);
            origin.push((ch.doc, n));
        }
        Ok(Memories {
            memories,
            keys,
            origin,
        })
    }

    /// Memories M_x and keys k_x of questions (token ids, cut to `max_question_tokens`).
    pub fn encode_questions(&self, questions: &[Vec<u32>]) -> Result<Compressed> {
        let mq = self.cfg().max_question_tokens;
        let cut: Vec<Vec<u32>> = questions
            .iter()
            .map(|q| q[..q.len().min(mq)].to_vec())
            .collect();
        let enc = self.encoder(mq, 0, Progress::Never)?;
        let batch = enc.encode(&cut)?;
        Ok(self.params().compressor.forward(&batch.doc_batch())?)
    }

    /// The question as ids for matching (the bare question text, no template).
    pub fn question_ids(&self, question: &str) -> Result<Vec<u32>> {
        let ids = self.base.tok.encode(question.trim(), false)?;
        if ids.is_empty() {
            return Err(Error::Invalid("the question is empty".into()));
        }
        Ok(ids)
    }

    /// The prompt ids for `question` (with an optional context passage).
    pub fn prompt_ids(&self, question: &str, context: Option<&str>) -> Result<Vec<u32>> {
        let text = self.template.render(question, context)?;
        Ok(self.base.tok.encode(&text, false)?)
    }

    /// A′ for each question from its memory M_x, its selection and the selected memories.
    pub fn refine(&self, m_x: &[f32], sel: &[TopK], selected: &[Vec<&[f32]>]) -> Result<Vec<f32>> {
        let a: Vec<f32> = sel
            .iter()
            .flat_map(|s| s.aggregate.iter().copied())
            .collect();
        if !self.cfg().aggregator {
            return Ok(a);
        }
        let input = AggInput {
            m_x,
            selected,
            a: &a,
        };
        let (out, _) = aggregator::forward(
            &self.cfg().aggregator_blocks_config(),
            &self.params().aggregator,
            &input,
        )?;
        Ok(out)
    }

    /// The per-layer key/value prefixes of refined aggregates A′ (`[n, T, D]`).
    pub fn prefixes(&self, a_prime: &[f32]) -> Result<Vec<KvPrefix>> {
        let dims = prefix_dims(self.cfg(), &self.base.dims());
        match dims.mode {
            PrefixMode::Kv => Ok(prefix::forward(&dims, &self.params().prefix, a_prime)?.0),
            PrefixMode::Soft => {
                let (rows, _) = soft_prefix::forward(&dims, &self.params().prefix, a_prime)?;
                Ok(self.base.model.soft_prefixes(&rows, dims.p)?)
            }
        }
    }
}
