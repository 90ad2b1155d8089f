//! Training examples: documents as θ's token ids (cut to one chunk), each with its
//! questions as matching ids and a labelled QA sequence (the checkpoint's template, then
//! ` answer` + EOS, loss on the answer tokens only — DESIGN §1.9), and the deterministic
//! schedule of which documents, questions and reconstruction windows each step sees.
use super::objective::Labelled;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::CmtModel;
use cmt_runtime::score::IGNORE;
use std::collections::HashMap;

/// One question of a training document.
#[derive(Clone, Debug)]
pub struct TrainQuestion {
    /// The bare question (matching input, cut to `max_question_tokens`).
    pub match_ids: Vec<u32>,
    /// Prompt then answer, answer tokens labelled.
    pub qa: Labelled,
}

/// One training document.
#[derive(Clone, Debug)]
pub struct TrainDoc {
    /// The document's id in the data.
    pub id: String,
    /// Its tokens, cut to `max_doc_tokens` (one bank entry).
    pub ids: Vec<u32>,
    /// Its questions (at least one).
    pub questions: Vec<TrainQuestion>,
}

/// What [`prepare`] kept and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Documents with at least one usable question.
    pub docs: usize,
    /// Questions kept.
    pub questions: usize,
    /// Documents dropped for having no question.
    pub docs_without_questions: usize,
    /// Documents longer than one chunk, cut to `max_doc_tokens`.
    pub docs_cut: usize,
    /// Questions dropped (no answer text).
    pub questions_without_answer: usize,
}

/// Tokenizes `data` for training with `model`'s template and chunk size.
pub fn prepare(model: &CmtModel, data: &Dataset) -> Result<(Vec<TrainDoc>, Prepared)> {
    let cfg = model.cfg();
    let tok = &model.base.tok;
    let eos = *model.base.model.cfg.eos_tokens.first().ok_or_else(|| {
        Error::Invalid(format!(
            "{}: the model defines no EOS token, which ends every training answer",
            model.base.path.display()
        ))
    })?;
    let mut by_doc: HashMap<&str, Vec<TrainQuestion>> = HashMap::new();
    let mut stats = Prepared::default();
    for q in &data.questions {
        let Some(answer) = q.answers.iter().find(|a| !a.trim().is_empty()) else {
            stats.questions_without_answer += 1;
            continue;
        };
        let mut match_ids = model.question_ids(&q.question)?;
        match_ids.truncate(cfg.max_question_tokens);
        let mut ids = model.prompt_ids(&q.question, None)?;
        let n_prompt = ids.len();
        ids.extend(tok.encode(&format!(" {}", answer.trim()), false)?);
        ids.push(eos);
        let labels = ids
            .iter()
            .enumerate()
            .map(|(i, &t)| if i < n_prompt { IGNORE } else { t as i32 })
            .collect();
        by_doc
            .entry(q.doc_id.as_str())
            .or_default()
            .push(TrainQuestion {
                match_ids,
                qa: (ids, labels),
            });
    }
    let mut docs = Vec::new();
    for d in &data.documents {
        let Some(questions) = by_doc.remove(d.id.as_str()) else {
            stats.docs_without_questions += 1;
            continue;
        };
        let mut ids = tok.encode(&d.text, false)?;
        if ids.is_empty() {
            stats.docs_without_questions += 1;
            continue;
        }
        if ids.len() > cfg.max_doc_tokens {
            ids.truncate(cfg.max_doc_tokens);
            stats.docs_cut += 1;
        }
        stats.questions += questions.len();
        docs.push(TrainDoc {
            id: d.id.clone(),
            ids,
            questions,
        });
    }
    stats.docs = docs.len();
    if docs.is_empty() {
        return Err(Error::Invalid(
            "the training data has no document with an answered question".into(),
        ));
    }
    Ok((docs, stats))
}

/// splitmix64: the schedule's only source of randomness, a pure function of its input so
/// that any step's draws can be recomputed on resume.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in `0..n` from (seed, a, b, c).
pub fn draw(seed: u64, a: u64, b: u64, c: u64, n: usize) -> usize {
    let h = mix(mix(mix(seed ^ 0x5eed) ^ a) ^ b.wrapping_mul(31)) ^ c;
    (mix(h) % n.max(1) as u64) as usize
}

/// The order of the documents in `epoch`: a seeded Fisher–Yates permutation.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, draw(seed, 1, epoch, i as u64, i + 1));
    }
    p
}

/// What one micro-batch reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicroPlan {
    /// Document indices (distinct).
    pub docs: Vec<usize>,
    /// Per document: the indices of its questions in this batch.
    pub questions: Vec<Vec<usize>>,
    /// Per document: the token range L_rec reconstructs.
    pub rec: Vec<std::ops::Range<usize>>,
}

/// The schedule: every micro-batch's documents, questions and windows, from the seed.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Documents per micro-batch.
    pub batch_docs: usize,
    /// Questions per document per micro-batch (at most; a random subset).
    pub questions_per_doc: usize,
    /// Longest reconstruction window (tokens).
    pub rec_tokens: usize,
    /// The seed.
    pub seed: u64,
}

impl Schedule {
    /// Micro-batch `m` (0-based, counting over the whole run) of `docs`.
    pub fn micro(&self, docs: &[TrainDoc], m: u64) -> MicroPlan {
        let n = docs.len();
        let b = self.batch_docs.min(n);
        let mut picked = Vec::with_capacity(b);
        let mut order: Option<(u64, Vec<usize>)> = None;
        // Consecutive slots of the epoch permutations; a document that is already in the
        // batch (a batch straddling two epochs) is skipped, so the batch may come out short
        // by the duplicates.
        for g in m * b as u64..(m + 1) * b as u64 {
            let epoch = g / n as u64;
            if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                order = Some((epoch, epoch_order(n, self.seed, epoch)));
            }
            let d = order
                .as_ref()
                .map_or(0, |(_, o)| o[(g % n as u64) as usize]);
            if !picked.contains(&d) {
                picked.push(d);
            }
        }
        let questions = picked
            .iter()
            .map(|&d| {
                let nq = docs[d].questions.len();
                let mut qs: Vec<usize> = (0..nq).collect();
                for i in (1..nq).rev() {
                    qs.swap(i, draw(self.seed, 2, m, (d * 4096 + i) as u64, i + 1));
                }
                qs.truncate(self.questions_per_doc.max(1));
                qs
            })
            .collect();
        let rec = picked
            .iter()
            .map(|&d| {
                let len = docs[d].ids.len();
                let w = self.rec_tokens.min(len);
                let start = draw(self.seed, 3, m, d as u64, len - w + 1);
                start..start + w
            })
            .collect();
        MicroPlan {
            docs: picked,
            questions,
            rec,
        }
    }
}
