//! The fused self-matching / top-k aggregation (DESIGN §1 steps 5–6), CPU.
//!
//! For a batch of question keys q (nq × r) and a bank of keys k_d with memories M_d:
//! raw score `q·k_d` (f32, fused multiply-adds in dimension order), `s = q·k_d / τ`,
//! S = the k best live entries by raw score (ties: lower id first), `w = softmax(s over S)`,
//! `A = Σ_{d∈S} w_d M_d` (f32 out, M_d in f32 or bf16).
//!
//! It is split in two, so that a bank sharded over machines or devices gives exactly the
//! same result (DESIGN §7):
//! - [`scan`] runs where the keys are: one pass over the key matrix, per-thread top-k
//!   queues, merged to ≤ k candidates (id, raw score) per question;
//! - [`merge`] takes the union of several shards' candidates and keeps the top k
//!   (exactly the global top-k, since every shard returns its own top-k);
//! - [`combine`] does the softmax over the k selected scores and the weighted sum of their
//!   memories, fetched through a [`MemorySource`] (a bank, or whatever gathers from shards).
//!
//! The softmax state is not carried along the scan (an "online" softmax over the queue):
//! on the CPU the combine is O(k·T·D) and reads each selected memory once, whereas
//! accumulating Σ w M while scanning would read memories of candidates that are later
//! evicted. [`backward`] gives the gradients for training; [`slow`] is the brute-force
//! reference.
//!
//! Keys are f32 or bf16 ([`crate::KeyDtype`]): a bf16 matrix halves the scan's bytes and is
//! widened exactly in registers, so it scores like an f32 matrix of the rounded keys. The
//! CUDA version is kernels/topk_aggregate.cu (same split, same fold and tie rule, checked
//! against [`slow`] by crates/cmt-kernel-check); [`device::DeviceBank`] runs it over a copy of
//! a [`crate::Bank`].
pub(crate) mod axpy;
pub mod backward;
pub mod combine;
/// The search on a device (kernels/topk_aggregate.cu over an uploaded copy of a bank).
pub mod device;
pub(crate) mod heap;
/// Launch geometry of kernels/topk_aggregate.cu (the CUDA search of the bank).
pub mod launch;
pub mod scan;
pub(crate) mod simd;
pub mod slow;

pub use backward::{backward, SelectedGrads};
pub use combine::{combine, MemorySource, TopK};
pub use scan::{scan, scan_with};
pub use simd::Kernel;

use crate::error::Result;
use heap::TopKHeap;

/// The largest k a search accepts.
pub const MAX_K: usize = 64;

/// One candidate: a raw score q·k_d (before τ) and the entry's id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub id: u64,
}

/// The candidates of a batch of questions, each list best first (score descending, then id
/// ascending), at most k long.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Candidates {
    pub per_query: Vec<Vec<Candidate>>,
}

/// The top k of the union of several candidate sets (threads, shards) of the same questions.
pub fn merge(parts: &[Candidates], k: usize) -> Result<Candidates> {
    let nq = parts.first().map_or(0, |p| p.per_query.len());
    if parts.iter().any(|p| p.per_query.len() != nq) {
        return Err(crate::Error::Invalid(
            "merge: candidate sets for different numbers of questions".into(),
        ));
    }
    let per_query = (0..nq)
        .map(|q| {
            let mut h = TopKHeap::new(k);
            for p in parts {
                for c in &p.per_query[q] {
                    h.push(*c);
                }
            }
            h.into_sorted()
        })
        .collect();
    Ok(Candidates { per_query })
}
