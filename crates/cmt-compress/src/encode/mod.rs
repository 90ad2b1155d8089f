//! Document encoding through the frozen model θ (DESIGN §1 step 1): token ids in, the
//! hidden states of layer ℓ_enc out, as a padded batch the compressor reads directly
//! ([`EncodedBatch::doc_batch`] → [`DocBatch`]).
//!
//! - Documents are split into chunks by [`Chunking`] (see [`chunk`] for the exact
//!   boundaries); each chunk is one memory entry and one row of the output batch.
//! - Every chunk is encoded as its own sequence starting at position 0, in its own
//!   session slot, so its hidden states do not depend on the other chunks of the call,
//!   on their order or on how they are grouped into forward steps.
//! - Chunks are grouped into forward steps by a token budget: a step of `c` chunks whose
//!   longest has `m` tokens satisfies `c·m ≤ max_batch_tokens` (chunks are taken longest
//!   first), which bounds the session's KV cache and scratch buffers whatever the input.
//!   With [`EncodeOptions::batch_invariant`] (the default) grouping is further limited so
//!   that a chunk's bits equal those of encoding it alone (see `run::steps`).
//!   The output itself holds `chunks · n_max · d` floats: callers bound it by how many
//!   documents they pass per call.
//! - Only the requested layer is copied out of the runtime ([`Model::forward_hidden`]).
//! - Work runs on the runtime's backend, i.e. the current rayon pool for the CPU.
//! - The output is right-padded: chunk `c` holds `lens[c]` valid rows followed by zero rows
//!   up to `n_max`.
pub mod chunk;
mod run;

use crate::attention::DocBatch;
use crate::error::{Error, Result};
use cmt_runtime::{Backend, Model};
use std::ops::Range;

pub use chunk::Chunking;
pub use cmt_runtime::HiddenLayer;

/// When to draw a progress bar on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Progress {
    /// Only when stderr is a terminal and the call encodes at least
    /// [`Progress::AUTO_MIN_TOKENS`] tokens.
    #[default]
    Auto,
    /// Whatever the size of the encode (indicatif still draws only to a terminal).
    Always,
    Never,
}

impl Progress {
    pub const AUTO_MIN_TOKENS: usize = 16_384;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// ℓ_enc; default the final-norm output.
    pub layer: HiddenLayer,
    pub chunking: Chunking,
    /// Padded tokens per forward step (see the module docs); at least `max_doc_tokens`.
    pub max_batch_tokens: usize,
    /// Bit-reproducible encoding (default): a chunk gets exactly the bits of encoding it
    /// alone, whatever else is in the call, so cache hits equal fresh encodes. Costs
    /// little for chunks of tens of tokens or more (each is its own forward step then);
    /// `false` packs chunks into steps by the budget only (faster for many chunks of
    /// middling length), and a chunk's hidden states then vary in the last bits (~1e-6
    /// relative) with its step companions.
    pub batch_invariant: bool,
    pub progress: Progress,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            layer: HiddenLayer::FinalNorm,
            chunking: Chunking::default(),
            max_batch_tokens: 4096,
            batch_invariant: true,
            progress: Progress::Auto,
        }
    }
}

/// Where a chunk of the output came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChunkInfo {
    /// Index of the document in the call's input.
    pub doc: usize,
    /// Token range of the chunk inside that document.
    pub tokens: Range<usize>,
}

/// Hidden states of a batch of chunks, right-padded to a common length.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedBatch {
    /// `[chunks, n_max, d]`; rows past `lens[c]` are zero.
    pub h: Vec<f32>,
    pub n_max: usize,
    pub d: usize,
    /// Valid rows per chunk (= its token count), each in `1..=n_max`.
    pub lens: Vec<usize>,
    /// One per chunk, in output order: documents in input order, chunks in order.
    pub chunks: Vec<ChunkInfo>,
}

impl EncodedBatch {
    pub fn num_chunks(&self) -> usize {
        self.lens.len()
    }

    /// The batch as the compressor's input.
    pub fn doc_batch(&self) -> DocBatch<'_> {
        DocBatch {
            h: &self.h,
            n_max: self.n_max,
            lens: &self.lens,
        }
    }

    /// The valid rows of chunk `c`: `[lens[c], d]`.
    pub fn rows(&self, c: usize) -> &[f32] {
        let start = c * self.n_max * self.d;
        &self.h[start..start + self.lens[c] * self.d]
    }

    /// An all-zero batch for `chunks` (private: filled by the encoder or the cache).
    pub(crate) fn zeros(chunks: Vec<ChunkInfo>, d: usize) -> EncodedBatch {
        let lens: Vec<usize> = chunks.iter().map(|c| c.tokens.len()).collect();
        let n_max = lens.iter().copied().max().unwrap_or(0);
        EncodedBatch {
            h: vec![0.0; lens.len() * n_max * d],
            n_max,
            d,
            lens,
            chunks,
        }
    }

    pub(crate) fn rows_mut(&mut self, c: usize) -> &mut [f32] {
        let start = c * self.n_max * self.d;
        &mut self.h[start..start + self.lens[c] * self.d]
    }
}

/// Runs the frozen model over documents; see the module docs.
pub struct Encoder<'m, B: Backend> {
    model: &'m Model<B>,
    opts: EncodeOptions,
}

impl<'m, B: Backend> Encoder<'m, B> {
    /// Checks the options against the model: the layer exists, a chunk fits the model's
    /// context, the token budget holds at least one full chunk.
    pub fn new(model: &'m Model<B>, opts: EncodeOptions) -> Result<Self> {
        let cfg = &model.cfg;
        opts.layer.capture_index(cfg.layers)?;
        let c = Chunking::new(opts.chunking.max_doc_tokens(), opts.chunking.overlap())?;
        if c.max_doc_tokens() > cfg.max_positions {
            return Err(Error::Config(format!(
                "max_doc_tokens {} exceeds the model's context of {} positions",
                c.max_doc_tokens(),
                cfg.max_positions
            )));
        }
        if opts.max_batch_tokens < c.max_doc_tokens() {
            return Err(Error::Config(format!(
                "max_batch_tokens {} is smaller than max_doc_tokens {}: a full chunk must fit one step",
                opts.max_batch_tokens,
                c.max_doc_tokens()
            )));
        }
        Ok(Encoder { model, opts })
    }

    pub fn options(&self) -> &EncodeOptions {
        &self.opts
    }

    pub fn model(&self) -> &'m Model<B> {
        self.model
    }

    /// Width of the hidden states (the model's D).
    pub fn dim(&self) -> usize {
        self.model.cfg.hidden
    }

    /// The chunks `docs` split into, in output order. Errors on an empty document.
    pub fn plan<D: AsRef<[u32]>>(&self, docs: &[D]) -> Result<Vec<ChunkInfo>> {
        let mut out = Vec::new();
        for (doc, ids) in docs.iter().enumerate() {
            let ranges = self.opts.chunking.ranges(doc, ids.as_ref().len())?;
            out.extend(ranges.into_iter().map(|tokens| ChunkInfo { doc, tokens }));
        }
        Ok(out)
    }

    /// Encodes every chunk of `docs` (token ids; add BOS yourself if you want one).
    pub fn encode<D: AsRef<[u32]>>(&self, docs: &[D]) -> Result<EncodedBatch> {
        let chunks = self.plan(docs)?;
        let mut out = EncodedBatch::zeros(chunks, self.dim());
        let all: Vec<usize> = (0..out.num_chunks()).collect();
        let chunks = out.chunks.clone();
        self.encode_chunks(docs, &chunks, &all, |c, rows| {
            out.rows_mut(c).copy_from_slice(rows);
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes the real tokens of each row of a left- or right-padded batch (one document
    /// per row). The output is right-padded like [`Encoder::encode`]'s, whatever the input
    /// padding. Errors on a row without tokens or with padding inside it.
    pub fn encode_padded(&self, batch: &cmt_runtime::PaddedBatch) -> Result<EncodedBatch> {
        let n = batch.batch * batch.width;
        if batch.ids.len() != n || batch.mask.len() != n {
            return Err(Error::Shape(format!(
                "padded batch {}×{} needs {n} ids and mask values, got {} and {}",
                batch.batch,
                batch.width,
                batch.ids.len(),
                batch.mask.len()
            )));
        }
        let docs = (0..batch.batch)
            .map(|b| {
                let s = batch.span(b)?;
                Ok(&batch.ids[b * batch.width + s.start..b * batch.width + s.end])
            })
            .collect::<Result<Vec<&[u32]>>>()?;
        self.encode(&docs)
    }
}
