//! Combine → aggregate: softmax over the selected scores and the weighted sum of the
//! selected memories. Runs once per question on ≤ k candidates, after the scan (and after
//! the merge of shards, when there are several).
use super::axpy::axpy_mem;
use super::Candidates;
use crate::error::{Error, Result};
use crate::types::MemView;

/// Where the memories of selected entries come from: a bank, or a router over shards.
pub trait MemorySource {
    /// Values per memory (T·D).
    fn memory_len(&self) -> usize;
    /// The memory of entry `id`, checked (a source must never hand out damaged memories).
    fn memory(&self, id: u64) -> Result<MemView<'_>>;
}

/// The result for one question.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    /// Selected entries, best first (score descending, then id ascending).
    pub ids: Vec<u64>,
    /// Their scores s = q·k_d / τ.
    pub scores: Vec<f32>,
    /// softmax(s) over the selected entries.
    pub weights: Vec<f32>,
    /// A = Σ w_d M_d, T·D values (f32).
    pub aggregate: Vec<f32>,
}

pub(crate) fn check_tau(tau: f32) -> Result<()> {
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::Invalid(format!(
            "temperature τ = {tau}: must be finite and > 0"
        )));
    }
    Ok(())
}

/// Softmax of `s` in f64 (max subtracted), returned as f32.
pub(crate) fn softmax(s: &[f32]) -> Vec<f32> {
    let m = s.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let e: Vec<f64> = s.iter().map(|&x| (x as f64 - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| (x / z) as f32).collect()
}

/// Softmax weights and aggregated memory for every question of `cands`.
pub fn combine(cands: &Candidates, tau: f32, mem: &impl MemorySource) -> Result<Vec<TopK>> {
    check_tau(tau)?;
    let len = mem.memory_len();
    cands
        .per_query
        .iter()
        .map(|c| {
            let ids: Vec<u64> = c.iter().map(|c| c.id).collect();
            let scores: Vec<f32> = c.iter().map(|c| c.score / tau).collect();
            if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
                return Err(Error::Invalid(format!(
                    "score of entry {} is not finite (q·k = {}, τ = {tau}): keys or \
                     questions far too large",
                    ids[i], c[i].score
                )));
            }
            let weights = softmax(&scores);
            let mut aggregate = vec![0.0f32; len];
            for (&id, &w) in ids.iter().zip(&weights) {
                let m = mem.memory(id)?;
                if m.len() != len {
                    return Err(Error::Invalid(format!(
                        "memory of entry {id} has {} values, expected {len}",
                        m.len()
                    )));
                }
                axpy_mem(w, m, &mut aggregate);
            }
            Ok(TopK {
                ids,
                scores,
                weights,
                aggregate,
            })
        })
        .collect()
}
