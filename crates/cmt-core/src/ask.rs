//! Ask (DESIGN §2): question → θ + C_φ → k_x → fused match / top-k / aggregate over the
//! bank → ψ → G_ω prefix → θ generates; the answer comes with the memories it used.
use crate::bank::{decode_source, EntryDoc};
use crate::error::{Error, Result};
use crate::model::{CmtModel, MAX_NEW_TOKENS};
use cmt_memory::{Bank, TopK, MAX_K};
use cmt_runtime::Backend;
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
    // Every kept entry is read (and its memory checksum checked) once, for all questions.
    let mut keys = Vec::with_capacity(metas.len());
    let mut mems = Vec::with_capacity(metas.len());
    for m in &metas {
        let e = bank
            .get(m.id)?
            .ok_or_else(|| Error::Invalid(format!("entry {} vanished", m.id)))?;
        keys.push(e.key.to_vec());
        mems.push(e.memory.to_f32_vec());
    }
    let s = bank.stats();
    let len = s.t * s.d;
    Ok(q.chunks_exact(r)
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
            let mut agg = vec![0.0f32; len];
            for (mem, &w) in mems.iter().zip(&weights) {
                agg.iter_mut().zip(mem).for_each(|(a, &m)| *a += w * m);
            }
            TopK {
                ids: metas.iter().map(|m| m.id).collect(),
                scores,
                weights,
                aggregate: agg,
            }
        })
        .collect())
}

/// The prompt ids of `questions` (the template without a context: memory comes as a prefix).
fn closed_prompts<B: Backend>(model: &CmtModel<B>, questions: &[String]) -> Result<Vec<Vec<u32>>> {
    questions
        .iter()
        .map(|q| model.prompt_ids(q, None))
        .collect()
}

/// Answers `questions` with memories from `bank` (closed-book when it is `None` or empty).
pub fn ask<B: Backend>(
    model: &CmtModel<B>,
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

fn ask_batch<B: Backend>(
    model: &CmtModel<B>,
    bank: Option<&Bank>,
    questions: &[String],
    k: usize,
    opts: &AskOptions,
) -> Result<Vec<Answer>> {
    let mut tm = Timings {
        batch: questions.len(),
        ..Default::default()
    };
    let prompts = closed_prompts(model, questions)?;
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
            model
                .search
                .search(bank, &qx.keys, k, tau)
                .map_err(Error::from)
        };
        let sel = match sel {
            Ok(s) if s.iter().all(|s| !s.ids.is_empty()) => Some(s),
            Ok(_) | Err(Error::Memory(cmt_memory::Error::Empty { .. })) => None,
            Err(e) => return Err(e),
        };
        if let Some(sel) = sel {
            let entries = fetch_selected(bank, &sel)?;
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
            used = used_memories(&sel, &entries);
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

/// A selected entry read back: its memory (f32), title and document fields.
type Fetched = (Vec<f32>, String, EntryDoc);

/// Reads every selected entry of `sel` from the bank, per question, best first.
fn fetch_selected(bank: &Bank, sel: &[TopK]) -> Result<Vec<Vec<Fetched>>> {
    sel.iter()
        .map(|s| {
            s.ids
                .iter()
                .map(|&id| {
                    let e = bank
                        .get(id)?
                        .ok_or_else(|| Error::Invalid(format!("entry {id} vanished")))?;
                    Ok((
                        e.memory.to_f32_vec(),
                        e.title.to_string(),
                        decode_source(e.source),
                    ))
                })
                .collect()
        })
        .collect()
}

/// The [`UsedMemory`] lists of selections and their fetched entries.
fn used_memories(sel: &[TopK], entries: &[Vec<Fetched>]) -> Vec<Vec<UsedMemory>> {
    sel.iter()
        .zip(entries)
        .map(|(s, row)| {
            s.ids
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
                .collect()
        })
        .collect()
}

/// Self-matching alone (DESIGN §1 steps 5–6 without ψ, G_ω or generation): each question's
/// `k` best entries of `bank` by s = k_x·k_d / τ, best first, with their softmax weights.
/// Ranks by score whatever the checkpoint's `topk` switch (the ranking is what retrieval
/// recall and `cmt-keys-rag` read). An empty bank gives empty lists.
pub fn match_questions<B: Backend>(
    model: &CmtModel<B>,
    bank: &Bank,
    questions: &[String],
    k: usize,
) -> Result<Vec<Vec<UsedMemory>>> {
    if k == 0 || k > MAX_K {
        return Err(Error::Invalid(format!("k = {k}: must be in 1..={MAX_K}")));
    }
    if questions.is_empty() || bank.live_count() == 0 {
        return Ok(vec![vec![]; questions.len()]);
    }
    let ids: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| model.question_ids(q))
        .collect::<Result<_>>()?;
    let qx = model.encode_questions(&ids)?;
    let sel = model
        .search
        .search(bank, &qx.keys, k, model.params().tau(model.cfg()))?;
    let entries = fetch_selected(bank, &sel)?;
    Ok(used_memories(&sel, &entries))
}

/// Answers each question through the same ψ / G_ω prefix path as [`ask`], but with the bank
/// entries `entries[i]` as question i's selection instead of its top-k: their scores
/// s = k_x·k_d / τ, softmax weights over them and A = Σ w M_d, then ψ, G_ω and generation.
/// This is the `cmt-shuffled` control (entries of other documents, drawn at random). A
/// question with no entries is answered without memory. Entries are reported best first.
pub fn ask_with_entries<B: Backend>(
    model: &CmtModel<B>,
    bank: &Bank,
    questions: &[String],
    entries: &[Vec<u64>],
    opts: &AskOptions,
) -> Result<Vec<Answer>> {
    if entries.len() != questions.len() {
        return Err(Error::Invalid(format!(
            "{} questions but {} entry lists",
            questions.len(),
            entries.len()
        )));
    }
    if let Some(e) = entries.iter().find(|e| e.len() > MAX_K) {
        return Err(Error::Invalid(format!(
            "{} entries for one question: at most {MAX_K}",
            e.len()
        )));
    }
    let b = opts.batch.max(1);
    let mut out = Vec::with_capacity(questions.len());
    for (qs, es) in questions.chunks(b).zip(entries.chunks(b)) {
        out.extend(ask_with_entries_batch(model, bank, qs, es, opts)?);
    }
    Ok(out)
}

/// The selection of one question over the given entries: scores, softmax weights, A.
fn selection_of(bank: &Bank, key: &[f32], ids: &[u64], tau: f32) -> Result<TopK> {
    let mut scored = Vec::with_capacity(ids.len());
    for &id in ids {
        let e = bank
            .get(id)?
            .ok_or_else(|| Error::Invalid(format!("entry {id}: not a live entry of the bank")))?;
        let s = e.key.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() / tau;
        scored.push((id, s));
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let m = scored
        .iter()
        .fold(f64::NEG_INFINITY, |m, &(_, s)| m.max(s as f64));
    let ex: Vec<f64> = scored.iter().map(|&(_, s)| (s as f64 - m).exp()).collect();
    let z: f64 = ex.iter().sum();
    let weights: Vec<f32> = ex.iter().map(|x| (x / z) as f32).collect();
    let len = bank.stats().t * bank.stats().d;
    let mut aggregate = vec![0.0f32; len];
    for (&(id, _), &w) in scored.iter().zip(&weights) {
        let e = bank
            .get(id)?
            .ok_or_else(|| Error::Invalid(format!("entry {id} vanished")))?;
        for (i, a) in aggregate.iter_mut().enumerate() {
            *a += w * e.memory.get(i);
        }
    }
    Ok(TopK {
        ids: scored.iter().map(|&(id, _)| id).collect(),
        scores: scored.iter().map(|&(_, s)| s).collect(),
        weights,
        aggregate,
    })
}

fn ask_with_entries_batch<B: Backend>(
    model: &CmtModel<B>,
    bank: &Bank,
    questions: &[String],
    entries: &[Vec<u64>],
    opts: &AskOptions,
) -> Result<Vec<Answer>> {
    let mut tm = Timings {
        batch: questions.len(),
        ..Default::default()
    };
    let prompts = closed_prompts(model, questions)?;
    let mut prefixes: Vec<Option<KvPrefix>> = vec![None; questions.len()];
    let mut used: Vec<Vec<UsedMemory>> = vec![vec![]; questions.len()];
    // Only questions with entries go through θ + C_φ, ψ and G_ω.
    let with: Vec<usize> = (0..questions.len())
        .filter(|&i| !entries[i].is_empty())
        .collect();
    if !with.is_empty() {
        let t0 = Instant::now();
        let ids: Vec<Vec<u32>> = with
            .iter()
            .map(|&i| model.question_ids(&questions[i]))
            .collect::<Result<_>>()?;
        let qx = model.encode_questions(&ids)?;
        tm.encode_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let tau = model.params().tau(model.cfg());
        let r = model.cfg().r();
        let sel: Vec<TopK> = with
            .iter()
            .enumerate()
            .map(|(j, &i)| selection_of(bank, &qx.keys[j * r..(j + 1) * r], &entries[i], tau))
            .collect::<Result<_>>()?;
        let fetched = fetch_selected(bank, &sel)?;
        tm.search_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let selected: Vec<Vec<&[f32]>> = fetched
            .iter()
            .map(|row| row.iter().map(|(m, _, _)| m.as_slice()).collect())
            .collect();
        let a_prime = model.refine(&qx.memories, &sel, &selected)?;
        let ps = model.prefixes(&a_prime)?;
        tm.prefix_s = t2.elapsed().as_secs_f64();
        for ((&i, p), u) in with.iter().zip(ps).zip(used_memories(&sel, &fetched)) {
            prefixes[i] = Some(p);
            used[i] = u;
        }
    }
    let t3 = Instant::now();
    let answers = model.base.answer(
        &prompts,
        (!with.is_empty()).then_some(prefixes.as_slice()),
        opts.max_new_tokens,
    )?;
    tm.generate_s = t3.elapsed().as_secs_f64();
    Ok(questions
        .iter()
        .zip(answers)
        .zip(used)
        .zip(prefixes)
        .map(|(((q, answer), memories), p)| Answer {
            question: q.clone(),
            answer,
            with_memory: p.is_some(),
            memories,
            timings: tm,
        })
        .collect())
}
