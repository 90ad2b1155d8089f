//! Scan → candidates: one pass over all keys of a key matrix for a batch of questions,
//! split in ranges of blocks over the rayon pool; each range keeps its own top-k queue per
//! question, and the queues are merged at the end. This is the part of the kernel that runs
//! where the keys are (one shard, DESIGN §7); its output is small (≤ k per question).
use super::heap::TopKHeap;
use super::simd::{scan_blocks, Kernel};
use super::{merge, Candidates, MAX_K};
use crate::error::{Error, Result};
use crate::keys::{KeyMatrix, GROUP};
use rayon::prelude::*;

/// Checks the arguments shared by every search entry point; returns the number of questions.
pub(crate) fn check_args(r: usize, queries: &[f32], k: usize) -> Result<usize> {
    if k == 0 || k > MAX_K {
        return Err(Error::Invalid(format!("k = {k}: must be in 1..={MAX_K}")));
    }
    if queries.is_empty() || r == 0 || !queries.len().is_multiple_of(r) {
        return Err(Error::Invalid(format!(
            "queries of length {}: expected a positive multiple of the key width r = {r}",
            queries.len()
        )));
    }
    if let Some(i) = queries.iter().position(|x| !x.is_finite()) {
        return Err(Error::Invalid(format!(
            "query {} element {} is not finite",
            i / r,
            i % r
        )));
    }
    Ok(queries.len() / r)
}

/// The top-k candidates (raw scores q·k, not yet divided by τ) of each question over the
/// live keys of `keys`. `queries` is nq × r, row-major. `name` names the bank in errors.
pub fn scan(keys: &KeyMatrix, queries: &[f32], k: usize, name: &str) -> Result<Candidates> {
    scan_with(keys, queries, k, name, Kernel::Auto)
}

/// [`scan`] with an explicit kernel choice.
pub fn scan_with(
    keys: &KeyMatrix,
    queries: &[f32],
    k: usize,
    name: &str,
    kernel: Kernel,
) -> Result<Candidates> {
    let nq = check_args(keys.r(), queries, k)?;
    if keys.live_count() == 0 {
        return Err(Error::Empty {
            bank: name.to_string(),
        });
    }
    let blocks = keys.blocks();
    // A few ranges per thread so that a thread that finishes early can steal; ranges of at
    // least 64 blocks (1024 keys) so small banks are not split into crumbs.
    let threads = rayon::current_num_threads().max(1);
    let ranges = (threads * 4).min(blocks.div_ceil(64)).max(1);
    // Whole groups of blocks per range, so the widest tiles apply everywhere.
    let per = blocks.div_ceil(ranges).next_multiple_of(GROUP);
    let parts: Vec<Candidates> = (0..ranges)
        .into_par_iter()
        .map(|i| {
            let (b0, b1) = ((i * per).min(blocks), ((i + 1) * per).min(blocks));
            let mut heaps: Vec<TopKHeap> = (0..nq).map(|_| TopKHeap::new(k)).collect();
            if b0 < b1 {
                scan_blocks(keys, b0, b1, queries, &mut heaps, kernel);
            }
            Candidates {
                per_query: heaps.into_iter().map(TopKHeap::into_sorted).collect(),
            }
        })
        .collect();
    merge(&parts, k)
}
