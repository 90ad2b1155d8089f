//! Ask (DESIGN §2): question → θ + C_φ → k_x → fused match / top-k / aggregate over the
//! bank → ψ → G_ω prefix → θ generates; the answer comes with the memories it used.
use crate::bank::decode_source;
use crate::error::{Error, Result};
use crate::model::{CmtModel, MAX_NEW_TOKENS};
use cmt_memory::{Bank, TopK, MAX_K};
use cmt_runtime::KvPrefix;
use std::time::Instant;

/// Options of [`ask`].
#[derive(Clone, Debug)]
pub struct AskOptions {
    /// Memories per question (default: the checkpoint's k).
    pub k: Option<usize>,
    /// Only memories with a timestamp in `[since, until]` (Unix seconds, inclusive).
    pub since: Option<u64>,
    /// Upper end of the time window (inclusive).
    pub until: Option<u64>,
    /// New tokens at most per answer (24 in every method's protocol).
    pub max_new_tokens: usize,
    /// Questions answered together.
    pub batch: usize,
}

impl Default for AskOptions {
    fn default() -> Self {
        AskOptions {
            k: None,
            since: None,
            until: None,
            max_new_tokens: MAX_NEW_TOKENS,
            batch: 8,
        }
    }
}

/// A memory an answer used.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct UsedMemory {
    /// The bank entry.
    pub entry: u64,
    /// The document it came from, and which chunk of it.
    pub id: String,
    /// Chunk number of the entry within its document.
    pub chunk: usize,
    /// The document's title.
    pub title: String,
    /// s = k_x·k_d / τ.
    pub score: f32,
    /// Its softmax weight in A.
    pub weight: f32,
}

/// Seconds spent in each stage, for the batch the question was answered in.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    /// θ + C_φ on the questions.
    pub encode_s: f64,
    /// Match, top-k and aggregation over the bank.
    pub search_s: f64,
    /// ψ and G_ω.
    pub prefix_s: f64,
    /// θ prefill and decoding.
    pub generate_s: f64,
    /// Questions in the batch.
    pub batch: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
/// One question's answer.
pub struct Answer {
    /// The question as asked.
    pub question: String,
    /// The generated answer (up to the first newline).
    pub answer: String,
    /// False when the bank was empty (or nothing fell in the time window): answered
    /// without memory.
    pub with_memory: bool,
    /// The memories aggregated into the prefix, best first.
    pub memories: Vec<UsedMemory>,
    /// Stage times of the batch this question was answered in.
    pub timings: Timings,
}

/// Aggregation over every live entry in the window (the `topk = false` ablation): the
/// softmax over all scores, A = Σ w M.
fn dense(
    bank: &Bank,
    q: &[f32],
    tau: f32,
    keep: &dyn Fn(&cmt_memory::EntryMeta) -> bool,
) -> Result<Vec<TopK>> {
    let r = bank.keys().r();
    let metas: Vec<_> = bank.live_metas()?.into_iter().filter(|m| keep(m)).collect();
    let mut keys = Vec::with_capacity(metas.len());
    for m in &metas {
        let e = bank
            .get(m.id)?
            .ok_or_else(|| Error::Invalid(format!("entry {} vanished", m.id)))?;
        keys.push(e.key.to_vec());
    }
    q.chunks_exact(r)
        .map(|qk| {
            let scores: Vec<f32> = keys
                .iter()
                .map(|k| k.iter().zip(qk).map(|(a, b)| a * b).sum::<f32>() / tau)
                .collect();
            let m = scores
                .iter()
                .fold(f64::NEG_INFINITY, |m, &s| m.max(s as f64));
            let e: Vec<f64> = scores.iter().map(|&s| (s as f64 - m).exp()).collect();
            let z: f64 = e.iter().sum();
            let weights: Vec<f32> = e.iter().map(|x| (x / z) as f32).collect();
            let len = bank.stats().t * bank.stats().d;
            let mut agg = vec![0.0f32; len];
            for (meta, &w) in metas.iter().zip(&weights) {
                let e = bank
                    .get(meta.id)?
                    .ok_or_else(|| Error::Invalid(format!("entry {} vanished", meta.id)))?;
                for (i, a) in agg.iter_mut().enumerate() {
                    *a += w * e.memory.get(i);
                }
            }
            Ok(TopK {
                ids: metas.iter().map(|m| m.id).collect(),
                scores,
                weights,
                aggregate: agg,
            })
        })
        .collect()
}

/// Answers `questions` with memories from `bank` (closed-book when it is `None` or empty).
pub fn ask(
    model: &CmtModel,
    bank: Option<&Bank>,
    questions: &[String],
    opts: &AskOptions,
) -> Result<Vec<Answer>> {
    let k = opts.k.unwrap_or(model.cfg().k);
    if k == 0 || k > MAX_K {
        return Err(Error::Invalid(format!("k = {k}: must be in 1..={MAX_K}")));
    }
    let mut out = Vec::with_capacity(questions.len());
    for group in questions.chunks(opts.batch.max(1)) {
        out.extend(ask_batch(model, bank, group, k, opts)?);
    }
    Ok(out)
}

fn ask_batch(
    model: &CmtModel,
    bank: Option<&Bank>,
    questions: &[String],
    k: usize,
    opts: &AskOptions,
) -> Result<Vec<Answer>> {
    let mut tm = Timings {
        batch: questions.len(),
        ..Default::default()
    };
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| model.prompt_ids(q, None))
        .collect::<Result<_>>()?;
    let (since, until) = (opts.since.unwrap_or(0), opts.until.unwrap_or(u64::MAX));
    let keep = move |m: &cmt_memory::EntryMeta| m.timestamp >= since && m.timestamp <= until;
    let windowed = opts.since.is_some() || opts.until.is_some();
    let bank = bank.filter(|b| b.live_count() > 0);
    let mut prefixes: Vec<Option<KvPrefix>> = vec![None; questions.len()];
    let mut used: Vec<Vec<UsedMemory>> = vec![vec![]; questions.len()];
    let mut with_memory = false;
    if let Some(bank) = bank {
        let t0 = Instant::now();
        let ids: Vec<Vec<u32>> = questions
            .iter()
            .map(|q| model.question_ids(q))
            .collect::<Result<_>>()?;
        let qx = model.encode_questions(&ids)?;
        tm.encode_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let tau = model.params().tau(model.cfg());
        let sel = if !model.cfg().topk {
            dense(bank, &qx.keys, tau, &keep)
        } else if windowed {
            bank.search_where(&qx.keys, k, tau, keep)
                .map_err(Error::from)
        } else {
            bank.search(&qx.keys, k, tau).map_err(Error::from)
        };
        let sel = match sel {
            Ok(s) if s.iter().all(|s| !s.ids.is_empty()) => Some(s),
            Ok(_) | Err(Error::Memory(cmt_memory::Error::Empty { .. })) => None,
            Err(e) => return Err(e),
        };
        if let Some(sel) = sel {
            let mut entries = Vec::new();
            for s in &sel {
                let mut row = Vec::with_capacity(s.ids.len());
                for &id in &s.ids {
                    let e = bank
                        .get(id)?
                        .ok_or_else(|| Error::Invalid(format!("entry {id} vanished")))?;
                    row.push((
                        e.memory.to_f32_vec(),
                        e.title.to_string(),
                        decode_source(e.source),
                    ));
                }
                entries.push(row);
            }
            tm.search_s = t1.elapsed().as_secs_f64();
            let t2 = Instant::now();
            let selected: Vec<Vec<&[f32]>> = entries
                .iter()
                .map(|row| row.iter().map(|(m, _, _)| m.as_slice()).collect())
                .collect();
            let a_prime = model.refine(&qx.memories, &sel, &selected)?;
            for (slot, p) in model.prefixes(&a_prime)?.into_iter().enumerate() {
                prefixes[slot] = Some(p);
            }
            tm.prefix_s = t2.elapsed().as_secs_f64();
            for (q, (s, row)) in sel.iter().zip(&entries).enumerate() {
                used[q] = s
                    .ids
                    .iter()
                    .zip(&s.scores)
                    .zip(&s.weights)
                    .zip(row)
                    .map(
                        |(((&entry, &score), &weight), (_, title, doc))| UsedMemory {
                            entry,
                            id: doc.doc_id.clone(),
                            chunk: doc.chunk,
                            title: title.clone(),
                            score,
                            weight,
                        },
                    )
                    .collect();
            }
            with_memory = true;
        }
    }
    let t3 = Instant::now();
    let answers = model.base.answer(
        &prompts,
        with_memory.then_some(prefixes.as_slice()),
        opts.max_new_tokens,
    )?;
    tm.generate_s = t3.elapsed().as_secs_f64();
    Ok(questions
        .iter()
        .zip(answers)
        .zip(used)
        .map(|((q, answer), memories)| Answer {
            question: q.clone(),
            answer,
            with_memory,
            memories,
            timings: tm,
        })
        .collect())
}
