//! One pass of answering: a set of questions, one method, the memory as streamed so far.
//! Every method decodes the same way (greedy, `max_new_tokens`, stop at EOS or newline,
//! through [`BaseLm::answer`]) with the engine's one template.
use super::{Bm25Index, Engine, EvalOptions, Method, Prediction, RankedDoc};
use crate::ask::{self, AskOptions, UsedMemory};
use crate::bank::{doc_entries, DocEntry};
use crate::data::{Document, Question};
use crate::error::{Error, Result};
use crate::metrics;
use crate::model::BaseLm;
use crate::template::Template;
use cmt_memory::Bank;
use cmt_runtime::Backend;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

/// The memory a pass answers from.
pub(crate) struct Memory<'a> {
    /// The bank (cmt methods), holding the stream so far.
    pub bank: Option<&'a Bank>,
    /// The BM25 index (rag) over `stream[..index.len()]`.
    pub bm25: Option<&'a Bm25Index>,
    /// The whole stream (data documents, then distractors): raw texts by position.
    pub stream: &'a [&'a Document],
    /// Stream position of each document id.
    pub by_id: &'a HashMap<&'a str, usize>,
}

impl Memory<'_> {
    fn text(&self, id: &str) -> Result<&str> {
        self.by_id
            .get(id)
            .map(|&i| self.stream[i].text.as_str())
            .ok_or_else(|| Error::Invalid(format!("document {id:?} is not in the stream")))
    }

    fn bank(&self, method: Method) -> Result<&Bank> {
        self.bank
            .ok_or_else(|| Error::Invalid(format!("{method}: no bank to answer from")))
    }
}

/// The prompt for `question` with an optional context passage; a context too long for
/// θ's window (with `reserve` positions kept for a prefix and the answer) is cut, by a
/// quarter of its characters at a time, until the prompt fits.
pub(crate) fn fit_prompt<B: Backend>(
    lm: &BaseLm<B>,
    template: &Template,
    question: &str,
    context: Option<&str>,
    reserve: usize,
) -> Result<Vec<u32>> {
    let max = lm.model.cfg.max_positions;
    let mut ctx = context;
    loop {
        let ids = lm.tok.encode(&template.render(question, ctx)?, false)?;
        if ids.len() + reserve <= max {
            return Ok(ids);
        }
        match ctx {
            Some(c) if !c.is_empty() => {
                let mut end = c.len() * 3 / 4;
                while !c.is_char_boundary(end) {
                    end -= 1;
                }
                ctx = Some(&c[..end]);
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "the prompt for question {question:?} has {} tokens: with {reserve} \
                     positions for a prefix and the answer it exceeds the model's context of \
                     {max}",
                    ids.len()
                )))
            }
        }
    }
}

/// Distinct documents of a match, best first (each at its best entry's score).
fn docs_of(memories: &[UsedMemory]) -> Vec<RankedDoc> {
    let mut out: Vec<RankedDoc> = Vec::new();
    for m in memories {
        if !out.iter().any(|d| d.id == m.id) {
            out.push(RankedDoc {
                id: m.id.clone(),
                score: m.score,
            });
        }
    }
    out
}

/// `cmt-shuffled`'s selection for question number `qi`: up to k entries drawn uniformly
/// without replacement from the entries of documents other than `gold`, from a generator
/// seeded by (seed, qi) so a draw depends on neither batching nor pass order.
pub(crate) fn shuffled_entries(
    entries: &[DocEntry],
    gold: &str,
    k: usize,
    seed: u64,
    qi: usize,
) -> Vec<u64> {
    let others: Vec<u64> = entries
        .iter()
        .filter(|e| e.doc.doc_id != gold)
        .map(|e| e.meta.id)
        .collect();
    let n = k.min(others.len());
    let mix = (qi as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = StdRng::seed_from_u64(seed ^ mix);
    rand::seq::index::sample(&mut rng, others.len(), n)
        .into_iter()
        .map(|j| others[j])
        .collect()
}

/// What a method did for one question, before scoring.
struct Raw {
    prediction: String,
    context_doc: Option<String>,
    documents: Vec<RankedDoc>,
    memories: Vec<UsedMemory>,
    with_memory: bool,
    prompt_tokens: usize,
}

/// Answers `questions` (pairs of dataset index and question) with `opts.method`; `k` is
/// the number of memories (cmt methods) and of documents for recall@k.
pub(crate) fn answer_questions<B: Backend>(
    engine: &Engine<'_, B>,
    opts: &EvalOptions,
    k: usize,
    mem: &Memory,
    questions: &[(usize, &Question)],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Prediction>> {
    let method = opts.method;
    let shuffle_pool = match method {
        Method::CmtShuffled => Some(doc_entries(mem.bank(method)?)?),
        _ => None,
    };
    let p = engine.cmt().map_or(0, |m| m.cfg().p());
    let tok = &engine.lm().tok;
    let mut out = Vec::with_capacity(questions.len());
    progress(0, questions.len());
    for group in questions.chunks(opts.batch.max(1)) {
        let raws = answer_batch(engine, opts, k, mem, group, shuffle_pool.as_deref())?;
        for (&(_, q), r) in group.iter().zip(raws) {
            let s = metrics::score(&r.prediction, &q.answers);
            let answer_tokens = tok.encode(&r.prediction, false)?.len();
            let context_tokens = if method.uses_prefix() {
                if r.with_memory {
                    p
                } else {
                    0
                }
            } else {
                r.prompt_tokens
            };
            out.push(Prediction {
                id: q.id.clone(),
                question: q.question.clone(),
                doc_id: q.doc_id.clone(),
                prediction: r.prediction,
                answers: q.answers.clone(),
                em: s.em,
                prefix_em: s.prefix_em,
                f1: s.f1,
                context_doc: r.context_doc,
                documents: r.documents,
                memories: r.memories,
                with_memory: r.with_memory,
                prompt_tokens: r.prompt_tokens,
                answer_tokens,
                context_tokens,
            });
        }
        progress(out.len(), questions.len());
    }
    Ok(out)
}

fn answer_batch<B: Backend>(
    engine: &Engine<'_, B>,
    opts: &EvalOptions,
    k: usize,
    mem: &Memory,
    group: &[(usize, &Question)],
    shuffle_pool: Option<&[DocEntry]>,
) -> Result<Vec<Raw>> {
    let method = opts.method;
    let texts: Vec<String> = group.iter().map(|(_, q)| q.question.clone()).collect();
    let ask_opts = AskOptions {
        k: Some(k),
        batch: opts.batch.max(1),
        max_new_tokens: opts.max_new_tokens,
        ..Default::default()
    };
    if method.uses_prefix() {
        let model = engine
            .cmt()
            .ok_or_else(|| Error::Invalid(format!("{method} needs a CMT checkpoint")))?;
        let bank = mem.bank(method)?;
        let answers = match method {
            Method::CmtShuffled => {
                let pool = shuffle_pool.unwrap_or(&[]);
                let picks: Vec<Vec<u64>> = group
                    .iter()
                    .map(|&(qi, q)| shuffled_entries(pool, &q.doc_id, k, opts.seed, qi))
                    .collect();
                ask::ask_with_entries(model, bank, &texts, &picks, &ask_opts)?
            }
            _ => ask::ask(model, Some(bank), &texts, &ask_opts)?,
        };
        return group
            .iter()
            .zip(answers)
            .map(|(&(_, q), a)| {
                Ok(Raw {
                    prediction: a.answer,
                    context_doc: None,
                    documents: if method == Method::Cmt {
                        docs_of(&a.memories)
                    } else {
                        vec![]
                    },
                    memories: a.memories,
                    with_memory: a.with_memory,
                    prompt_tokens: model.prompt_ids(&q.question, None)?.len(),
                })
            })
            .collect();
    }
    // In-prompt methods: pick each question's context document (or none).
    let mut raws: Vec<Raw> = match method {
        Method::ClosedBook => group
            .iter()
            .map(|_| raw_with(None, vec![], vec![]))
            .collect(),
        Method::Oracle => group
            .iter()
            .map(|(_, q)| raw_with(Some(q.doc_id.clone()), vec![], vec![]))
            .collect(),
        Method::Rag => {
            let idx = mem
                .bm25
                .ok_or_else(|| Error::Invalid("rag: no BM25 index to answer from".into()))?;
            group
                .iter()
                .map(|(_, q)| {
                    let docs: Vec<RankedDoc> = idx
                        .search(&q.question, k)
                        .into_iter()
                        .map(|(i, score)| RankedDoc {
                            id: mem.stream[i].id.clone(),
                            score,
                        })
                        .collect();
                    raw_with(docs.first().map(|d| d.id.clone()), docs, vec![])
                })
                .collect()
        }
        Method::CmtKeysRag => {
            let model = engine
                .cmt()
                .ok_or_else(|| Error::Invalid(format!("{method} needs a CMT checkpoint")))?;
            ask::match_questions(model, mem.bank(method)?, &texts, k)?
                .into_iter()
                .map(|m| {
                    let docs = docs_of(&m);
                    raw_with(docs.first().map(|d| d.id.clone()), docs, m)
                })
                .collect()
        }
        Method::Cmt | Method::CmtShuffled => {
            return Err(Error::Invalid(format!("{method}: not an in-prompt method")))
        }
    };
    let lm = engine.lm();
    let prompts: Vec<Vec<u32>> = group
        .iter()
        .zip(&raws)
        .map(|((_, q), r)| {
            let ctx = r
                .context_doc
                .as_deref()
                .map(|id| mem.text(id))
                .transpose()?;
            fit_prompt(lm, engine.template(), &q.question, ctx, opts.max_new_tokens)
        })
        .collect::<Result<_>>()?;
    let answers = lm.answer(&prompts, None, opts.max_new_tokens)?;
    for ((r, a), p) in raws.iter_mut().zip(answers).zip(&prompts) {
        r.prediction = a;
        r.prompt_tokens = p.len();
    }
    Ok(raws)
}

fn raw_with(
    context_doc: Option<String>,
    documents: Vec<RankedDoc>,
    memories: Vec<UsedMemory>,
) -> Raw {
    Raw {
        prediction: String::new(),
        context_doc,
        documents,
        memories,
        with_memory: false,
        prompt_tokens: 0,
    }
}
