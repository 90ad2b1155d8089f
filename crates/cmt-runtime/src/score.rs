//! Scoring text: mean next-token cross-entropy, optionally with labels (−100 = ignored),
//! a key/value prefix, or soft input embeddings, as HF transformers computes a causal LM loss.
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Logits, Model, SeqInput};
use crate::session::{KvPrefix, Session};

/// Label value that marks a position without loss (HF convention).
pub const IGNORE: i32 = -100;

/// −log softmax(logits)[target], computed in f64.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    lse - logits[target] as f64
}

/// The HF causal-LM loss of one sequence: mean over positions t with labels[t+1] != −100 of
/// −log p(labels[t+1] | rows ≤ t). `labels` covers every row: soft embeddings first, then ids.
/// `prefix` is put in the session's slot 0 first; `soft` is [s, hidden].
pub fn sequence_loss<B: Backend>(
    model: &Model<B>,
    sess: &mut Session<B>,
    prefix: Option<&KvPrefix>,
    soft: &[f32],
    ids: &[u32],
    labels: &[i32],
) -> Result<f64> {
    let rows = soft.len() / model.cfg.hidden + ids.len();
    if labels.len() != rows {
        return Err(Error::Invalid(format!(
            "{} labels for {rows} positions",
            labels.len()
        )));
    }
    match prefix {
        Some(p) => sess.set_prefix(&model.cfg, &model.backend, 0, p)?,
        None => sess.reset(0),
    }
    let logits = model.forward(sess, &[SeqInput { slot: 0, soft, ids }], Logits::All, None)?;
    let v = model.cfg.vocab;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for t in 0..rows.saturating_sub(1) {
        let y = labels[t + 1];
        if y == IGNORE {
            continue;
        }
        if y < 0 || y as usize >= v {
            return Err(Error::Invalid(format!(
                "label {y} at position {} is outside the vocabulary",
                t + 1
            )));
        }
        sum += nll(&logits[t * v..(t + 1) * v], y as usize);
        n += 1;
    }
    if n == 0 {
        return Err(Error::Invalid(
            "no labelled position to score (need at least 2 tokens)".into(),
        ));
    }
    Ok(sum / n as f64)
}

/// Mean next-token cross-entropy of `ids` (every token after the first is a target).
pub fn text_loss<B: Backend>(model: &Model<B>, sess: &mut Session<B>, ids: &[u32]) -> Result<f64> {
    let labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    sequence_loss(model, sess, None, &[], ids, &labels)
}
