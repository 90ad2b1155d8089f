//! Backward of the aggregation, straight-through over the selected set: the top-k selection
//! is held fixed (as in MoE routing, DESIGN §1.8) and gradients flow through the softmax
//! weights and scores to the question key, the selected keys, τ, and to the selected
//! memories.
//!
//! With s_i = q·k_i/τ, w = softmax(s), A = Σ_i w_i M_i and G = dL/dA:
//! ```text
//! g_i    = ⟨G, M_i⟩                 dL/dw_i
//! ds_i   = w_i (g_i − Σ_j w_j g_j)   dL/ds_i
//! dq     = Σ_i ds_i k_i / τ
//! dk_i   = ds_i q / τ
//! dτ     = −Σ_i ds_i s_i / τ
//! dM_i   = w_i G
//! ```
//! Sums are taken in f64.
use super::combine::check_tau;
use crate::error::{Error, Result};
use crate::types::MemView;

/// Gradients for one question; per-entry vectors follow the order of the selection.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectedGrads {
    pub d_query: Vec<f32>,
    pub d_keys: Vec<Vec<f32>>,
    pub d_memories: Vec<Vec<f32>>,
    pub d_scores: Vec<f32>,
    pub d_tau: f32,
}

/// `query` (r), the selected `keys` and `memories`, their `scores` s_i (already divided by
/// τ) and `weights`, as returned by the forward, and `d_a` = dL/dA (T·D).
pub fn backward(
    query: &[f32],
    keys: &[&[f32]],
    memories: &[MemView<'_>],
    scores: &[f32],
    weights: &[f32],
    tau: f32,
    d_a: &[f32],
) -> Result<SelectedGrads> {
    check_tau(tau)?;
    let n = keys.len();
    if memories.len() != n || scores.len() != n || weights.len() != n {
        return Err(Error::Invalid(format!(
            "backward: {n} keys but {} memories, {} scores, {} weights",
            memories.len(),
            scores.len(),
            weights.len()
        )));
    }
    let r = query.len();
    if let Some(k) = keys.iter().find(|k| k.len() != r) {
        return Err(Error::Invalid(format!(
            "backward: a key of length {}, the query has {r}",
            k.len()
        )));
    }
    if let Some(m) = memories.iter().find(|m| m.len() != d_a.len()) {
        return Err(Error::Invalid(format!(
            "backward: a memory of {} values, dL/dA has {}",
            m.len(),
            d_a.len()
        )));
    }
    let tau64 = tau as f64;
    let g: Vec<f64> = memories
        .iter()
        .map(|m| {
            d_a.iter()
                .enumerate()
                .map(|(t, &ga)| ga as f64 * m.get(t) as f64)
                .sum()
        })
        .collect();
    let gbar: f64 = g.iter().zip(weights).map(|(gi, &w)| gi * w as f64).sum();
    let ds: Vec<f64> = g
        .iter()
        .zip(weights)
        .map(|(gi, &w)| w as f64 * (gi - gbar))
        .collect();
    let mut dq = vec![0.0f64; r];
    for (k, &d) in keys.iter().zip(&ds) {
        for (o, &x) in dq.iter_mut().zip(k.iter()) {
            *o += d * x as f64 / tau64;
        }
    }
    let d_keys = ds
        .iter()
        .map(|&d| {
            query
                .iter()
                .map(|&x| (d * x as f64 / tau64) as f32)
                .collect()
        })
        .collect();
    let d_tau = -ds
        .iter()
        .zip(scores)
        .map(|(d, &s)| d * s as f64)
        .sum::<f64>()
        / tau64;
    let d_memories = weights
        .iter()
        .map(|&w| d_a.iter().map(|&x| w * x).collect())
        .collect();
    Ok(SelectedGrads {
        d_query: dq.iter().map(|&x| x as f32).collect(),
        d_keys,
        d_memories,
        d_scores: ds.iter().map(|&x| x as f32).collect(),
        d_tau: d_tau as f32,
    })
}
