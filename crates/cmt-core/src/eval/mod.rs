//! The evaluation harness (DESIGN §1 step 9, `cmt eval`): the online adaptation protocol,
//! its baselines and its metrics, all in one harness with one question template and one
//! decoding (greedy, at most 24 new tokens, stop at EOS or newline).
//!
//! Protocol: the dataset's documents, then the distractors, are *streamed* in file order
//! into an empty memory (a temporary bank for the CMT methods, a BM25 index for `rag`; no
//! gradient step anywhere); then every question of the dataset is answered. Along the way,
//! after every [`EvalOptions::retention_every`] streamed documents (200 by default,
//! distractors included) and once at the end, a fixed sample of questions about the first
//! block of documents is answered again: its F1 relative to the first such point is the
//! **retention** curve (the last point is the final pass itself).
//!
//! Methods ([`Method`]): `closed-book` (the question alone), `oracle` (the gold document's
//! raw text in the prompt), `rag` (BM25 over the streamed documents, the top-1 document's
//! raw text in the prompt), `cmt` (memories only, as `cmt ask`), `cmt-keys-rag` (CMT's own
//! self-matching picks the document, its raw text goes in the prompt) and `cmt-shuffled`
//! (the same prefix path fed k entries of other documents drawn at random: what a trained
//! prefix gives without the right memories).
//!
//! Entry point: [`evaluate`], with an [`Engine`] (θ and a template, or the full CMT
//! model), a [`Dataset`], the distractors and [`EvalOptions`]; it returns an
//! [`EvalOutput`]: the [`EvalSummary`] (table, JSON, plot) and every [`Prediction`].
use crate::data::{Dataset, Document};
use crate::error::{Error, Result};
use crate::model::{BaseLm, CmtModel, MAX_NEW_TOKENS};
use crate::template::Template;
use cmt_runtime::{Backend, CpuBackend};

mod answer;
mod bm25;
mod plot;
mod report;
mod retention;
mod run;

pub use bm25::Bm25Index;
pub use plot::plot_png;
pub use report::{peak_rss_bytes, write_outputs, EvalSummary, RetentionPoint};
pub use retention::RetentionPlan;
pub use run::evaluate;

/// The methods the harness runs (DESIGN §1 step 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// CMT: memories only, as `cmt ask` (top-k aggregation, ψ, G_ω prefix).
    Cmt,
    /// No memory: the question alone.
    ClosedBook,
    /// The gold document's raw text in the prompt (upper bound).
    Oracle,
    /// BM25 over the streamed documents; the top-1 document's raw text in the prompt.
    Rag,
    /// CMT's self-matching picks the document; its raw text goes in the prompt.
    CmtKeysRag,
    /// The CMT prefix path fed the memories of k random other documents (the control).
    CmtShuffled,
}

impl Method {
    /// Every method, in the order the docs list them.
    pub const ALL: [Method; 6] = [
        Method::Cmt,
        Method::ClosedBook,
        Method::Oracle,
        Method::Rag,
        Method::CmtKeysRag,
        Method::CmtShuffled,
    ];

    /// The method's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Cmt => "cmt",
            Method::ClosedBook => "closed-book",
            Method::Oracle => "oracle",
            Method::Rag => "rag",
            Method::CmtKeysRag => "cmt-keys-rag",
            Method::CmtShuffled => "cmt-shuffled",
        }
    }

    /// Whether it needs a CMT checkpoint (the compressor, keys, ψ, G_ω).
    pub fn needs_checkpoint(self) -> bool {
        matches!(self, Method::Cmt | Method::CmtKeysRag | Method::CmtShuffled)
    }

    /// Whether it streams the documents into a memory (bank or index) at all; closed-book
    /// and oracle do not, and have no retention curve.
    pub fn streams(self) -> bool {
        !matches!(self, Method::ClosedBook | Method::Oracle)
    }

    /// Whether it retrieves, so that recall of the gold document is defined.
    pub fn retrieves(self) -> bool {
        matches!(self, Method::Cmt | Method::Rag | Method::CmtKeysRag)
    }

    /// Whether the context is a key/value prefix (else: text in the prompt, or nothing).
    pub fn uses_prefix(self) -> bool {
        matches!(self, Method::Cmt | Method::CmtShuffled)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
                Error::Invalid(format!(
                    "unknown method \"{s}\" (one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// Options of [`evaluate`].
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The method to run.
    pub method: Method,
    /// Memories per question (cmt methods) and the k of recall@k (default: the
    /// checkpoint's k, or 4 without a checkpoint).
    pub k: Option<usize>,
    /// A retention point after every this many streamed documents (default 200).
    pub retention_every: usize,
    /// At most this many questions of the first block in the retention sample (default 200).
    pub retention_sample: usize,
    /// Seed of the retention sample and of `cmt-shuffled`'s draws.
    pub seed: u64,
    /// Questions answered together.
    pub batch: usize,
    /// Documents per bank append while streaming.
    pub ingest_batch: usize,
    /// New tokens at most per answer (24 in the protocol).
    pub max_new_tokens: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            method: Method::Cmt,
            k: None,
            retention_every: 200,
            retention_sample: 200,
            seed: 0,
            batch: 8,
            ingest_batch: 16,
            max_new_tokens: MAX_NEW_TOKENS,
        }
    }
}

/// What answers: θ with a question template (enough for the baselines), or the full CMT
/// model (θ, checkpoint, and the checkpoint's template).
pub enum Engine<'a, B: Backend = CpuBackend> {
    /// θ and a template: closed-book, oracle and rag.
    Base {
        /// The frozen model.
        lm: &'a BaseLm<B>,
        /// The question template.
        template: Template,
    },
    /// The CMT model: every method (baselines use its θ and its template).
    Cmt(&'a CmtModel<B>),
}

impl<B: Backend> Engine<'_, B> {
    /// θ.
    pub fn lm(&self) -> &BaseLm<B> {
        match self {
            Engine::Base { lm, .. } => lm,
            Engine::Cmt(m) => &m.base,
        }
    }

    /// The question template every method of this engine uses.
    pub fn template(&self) -> &Template {
        match self {
            Engine::Base { template, .. } => template,
            Engine::Cmt(m) => &m.template,
        }
    }

    /// The CMT model, when there is one.
    pub fn cmt(&self) -> Option<&CmtModel<B>> {
        match self {
            Engine::Base { .. } => None,
            Engine::Cmt(m) => Some(m),
        }
    }
}

/// Which pass a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The retention sample, with `docs` documents streamed.
    Retention {
        /// Documents streamed so far.
        docs: usize,
    },
    /// Every question, after the whole stream.
    Final,
}

/// Progress of [`evaluate`], for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalProgress {
    /// Streaming documents into the memory.
    Stream {
        /// Documents streamed so far.
        done: usize,
        /// Documents in the stream (data plus distractors).
        total: usize,
    },
    /// Answering questions.
    Answer {
        /// Which pass.
        pass: Pass,
        /// Questions answered so far in this pass.
        done: usize,
        /// Questions in the pass.
        total: usize,
    },
}

/// A document an in-prompt method retrieved, with its retrieval score.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RankedDoc {
    /// The document's id.
    pub id: String,
    /// BM25 score (rag) or the best self-matching score s of its entries (cmt methods).
    pub score: f32,
}

/// One question's prediction, with what it was scored and conditioned on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The question's id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The gold document.
    pub doc_id: String,
    /// The generated answer.
    pub prediction: String,
    /// The gold answers.
    pub answers: Vec<String>,
    /// Strict exact match (SQuAD normalisation).
    pub em: bool,
    /// MAC's prefix exact match.
    pub prefix_em: bool,
    /// Token F1 in [0, 1], best over the gold answers.
    pub f1: f64,
    /// The document whose raw text was in the prompt (oracle, rag, cmt-keys-rag).
    pub context_doc: Option<String>,
    /// Retrieved documents, best first, distinct (rag, cmt, cmt-keys-rag): what recall reads.
    pub documents: Vec<RankedDoc>,
    /// The bank entries used (cmt, cmt-shuffled: the prefix's memories; cmt-keys-rag: the
    /// match), best first.
    pub memories: Vec<crate::ask::UsedMemory>,
    /// Whether a prefix of memories conditioned the answer.
    pub with_memory: bool,
    /// Tokens of the prompt θ read (template, question and any context text).
    pub prompt_tokens: usize,
    /// Tokens of the prediction re-encoded (≈ the tokens generated, less the stop token).
    pub answer_tokens: usize,
    /// Context tokens: the prefix length p (prefix methods with memory) or the prompt tokens.
    pub context_tokens: usize,
}

/// What [`evaluate`] returns.
#[derive(Clone, Debug)]
pub struct EvalOutput {
    /// The figures.
    pub summary: EvalSummary,
    /// Every question's prediction (final pass), in dataset order.
    pub predictions: Vec<Prediction>,
    /// The retention sample's predictions at each retention point (the last one taken
    /// from the final pass); empty for closed-book and oracle.
    pub retention: Vec<RetentionPass>,
}

/// The retention sample as answered at one point of the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionPass {
    /// Documents streamed when it was answered.
    pub docs: usize,
    /// The sample's predictions, in dataset order.
    pub predictions: Vec<Prediction>,
}

/// The stream: the dataset's documents then the distractors; ids must be unique across it.
pub(crate) fn stream_of<'d>(
    data: &'d Dataset,
    distractors: &'d [Document],
) -> Result<Vec<&'d Document>> {
    let mut seen = std::collections::HashSet::new();
    for d in &data.documents {
        if !seen.insert(d.id.as_str()) {
            return Err(Error::Invalid(format!(
                "document id {:?} appears twice in the data",
                d.id
            )));
        }
    }
    for d in distractors {
        if !seen.insert(d.id.as_str()) {
            return Err(Error::Invalid(format!(
                "distractor id {:?} is already a document of the data or an earlier \
                 distractor: ids must be unique across the stream",
                d.id
            )));
        }
    }
    Ok(data.documents.iter().chain(distractors).collect())
}
