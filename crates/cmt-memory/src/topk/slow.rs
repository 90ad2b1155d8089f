//! The brute-force composition the fused kernel is tested against: every score, a full sort,
//! softmax and weighted sum in f64. Same score fold and the same tie rule as the kernel
//! (see `simd` and `heap`), nothing else shared.
use super::combine::{check_tau, MemorySource, TopK};
use super::heap::better;
use super::scan::check_args;
use super::Candidate;
use crate::error::{Error, Result};

/// The raw score q·k as every kernel computes it: f32 fused multiply-adds in order.
pub fn dot_fma(q: &[f32], k: &[f32]) -> f32 {
    q.iter()
        .zip(k)
        .fold(0.0f32, |acc, (a, b)| a.mul_add(*b, acc))
}

/// Top-k aggregation over plain rows: `keys` is n × r row-major, `ids` strictly increasing,
/// `live[i]` false for deleted rows.
#[allow(clippy::too_many_arguments)]
pub fn search_slow(
    keys: &[f32],
    r: usize,
    ids: &[u64],
    live: &[bool],
    queries: &[f32],
    k: usize,
    tau: f32,
    mem: &impl MemorySource,
) -> Result<Vec<TopK>> {
    check_args(r, queries, k)?;
    check_tau(tau)?;
    if !live.iter().any(|&l| l) {
        return Err(Error::Empty {
            bank: "<reference>".into(),
        });
    }
    let len = mem.memory_len();
    queries
        .chunks_exact(r)
        .map(|q| {
            let mut all: Vec<Candidate> = keys
                .chunks_exact(r)
                .zip(ids)
                .zip(live)
                .filter(|(_, &l)| l)
                .map(|((key, &id), _)| Candidate {
                    score: dot_fma(q, key),
                    id,
                })
                .filter(|c| !c.score.is_nan())
                .collect();
            all.sort_by(|a, b| {
                if better(a, b) {
                    std::cmp::Ordering::Less
                } else if better(b, a) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            });
            all.truncate(k);
            let scores: Vec<f32> = all.iter().map(|c| c.score / tau).collect();
            let m = scores
                .iter()
                .fold(f64::NEG_INFINITY, |m, &s| m.max(s as f64));
            let e: Vec<f64> = scores.iter().map(|&s| (s as f64 - m).exp()).collect();
            let z: f64 = e.iter().sum();
            let w: Vec<f64> = e.iter().map(|x| x / z).collect();
            let mut a = vec![0.0f64; len];
            for (c, &wi) in all.iter().zip(&w) {
                let mv = mem.memory(c.id)?;
                for (i, ai) in a.iter_mut().enumerate() {
                    *ai += wi * mv.get(i) as f64;
                }
            }
            Ok(TopK {
                ids: all.iter().map(|c| c.id).collect(),
                scores,
                weights: w.iter().map(|&x| x as f32).collect(),
                aggregate: a.iter().map(|&x| x as f32).collect(),
            })
        })
        .collect()
}
