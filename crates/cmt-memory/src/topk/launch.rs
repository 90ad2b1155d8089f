//! Launch geometry of kernels/topk_aggregate.cu, the fused self-matching / top-k aggregation
//! (layouts and the scoring contract at the top of the .cu file). Two launches per search:
//! [`scan`] (keys → per-block candidates) then [`combine`] (candidates → top-k, softmax
//! weights, aggregated memory), so that a sharded bank runs the scan per shard and one
//! combine over the union (DESIGN §7).
// Kernel signatures mirror the CUDA ones, pointer by pointer.
#![allow(clippy::too_many_arguments)]
use cmt_runtime::cuda::launch::{i32_of, Arg, DType, Launch};
use cmt_runtime::cuda::CudaError;

/// Threads per block of both kernels (`TOPK_BLOCK`).
pub const THREADS: u32 = 256;
/// Largest k (`TOPK_MAX_K`).
pub const MAX_K: usize = 64;
/// Questions per scan block (`TOPK_QG`); more questions add grid rows.
pub const QUESTIONS_PER_BLOCK: usize = 32;
/// Scan blocks aimed for: enough to fill a large GPU a few times over (132 SMs on an H100
/// SXM, 8 blocks of 256 threads each at most), few enough that the combine merges only
/// `blocks · k` candidates per question.
pub const TARGET_BLOCKS: usize = 1024;

/// How the rows of a bank are split over scan blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanSplit {
    /// Rows per block: a multiple of [`THREADS`].
    pub rows_per_block: usize,
    /// Blocks along x (each writes k candidates per question).
    pub blocks: usize,
}

impl ScanSplit {
    /// The split [`scan`] uses: ≤ [`TARGET_BLOCKS`] blocks of whole tiles.
    pub fn new(n: usize) -> Self {
        let tiles = n.div_ceil(THREADS as usize).max(1);
        Self::with_tiles(n, tiles.div_ceil(TARGET_BLOCKS))
    }
    /// `tiles_per_block` tiles of [`THREADS`] rows per block (tests use it to make several
    /// tiles per block on small banks).
    pub fn with_tiles(n: usize, tiles_per_block: usize) -> Self {
        let rows_per_block = tiles_per_block.max(1) * THREADS as usize;
        ScanSplit {
            rows_per_block,
            blocks: n.div_ceil(rows_per_block),
        }
    }
    /// Candidates per question (the combine's `ncand`).
    pub fn candidates(&self, k: usize) -> usize {
        self.blocks * k
    }
}

fn check_k(k: usize) -> Result<(), CudaError> {
    if k == 0 || k > MAX_K {
        return Err(CudaError::Shape(format!(
            "topk: k = {k} is outside 1..={MAX_K}"
        )));
    }
    Ok(())
}

/// Scan of `n` rows (keys column-major with leading dimension `ld ≥ n`, in `key_dt`; `live`
/// one bit per row in u32 words) for `nq` questions of width `r` (f32, row-major). Writes
/// `cand_scores` (f32) and `cand_rows` (u32), both `[nq][split.blocks][k]`. An empty bank
/// (`n = 0`) is an empty launch.
pub fn scan(
    key_dt: DType,
    cand_scores: u64,
    cand_rows: u64,
    keys: u64,
    ld: usize,
    live: u64,
    n: usize,
    queries: u64,
    nq: usize,
    r: usize,
    k: usize,
) -> Result<(Launch, ScanSplit), CudaError> {
    let split = ScanSplit::new(n);
    let l = scan_split(
        key_dt,
        cand_scores,
        cand_rows,
        keys,
        ld,
        live,
        n,
        queries,
        nq,
        r,
        k,
        split,
    )?;
    Ok((l, split))
}

/// [`scan`] with an explicit split of the rows over blocks.
pub fn scan_split(
    key_dt: DType,
    cand_scores: u64,
    cand_rows: u64,
    keys: u64,
    ld: usize,
    live: u64,
    n: usize,
    queries: u64,
    nq: usize,
    r: usize,
    k: usize,
    split: ScanSplit,
) -> Result<Launch, CudaError> {
    check_k(k)?;
    if !split.rows_per_block.is_multiple_of(THREADS as usize)
        || split.blocks * split.rows_per_block < n
    {
        return Err(CudaError::Shape(format!(
            "topk: {split:?} does not cover {n} rows in whole tiles"
        )));
    }
    if r == 0 || nq == 0 {
        return Err(CudaError::Shape(format!(
            "topk: r = {r}, nq = {nq}: must be > 0"
        )));
    }
    if ld < n {
        return Err(CudaError::Shape(format!("topk: ld = {ld} < n = {n}")));
    }
    // Offsets are 64-bit in the kernel; counts and the candidate count must fit i32.
    nq.checked_mul(split.candidates(k))
        .filter(|&c| c <= i32::MAX as usize)
        .ok_or_else(|| {
            CudaError::Shape(format!(
                "topk: {nq} questions × {} candidates overflow",
                split.candidates(k)
            ))
        })?;
    let args = vec![
        Arg::Ptr(cand_scores),
        Arg::Ptr(cand_rows),
        Arg::Ptr(keys),
        Arg::I32(i32_of("ld", ld)?),
        Arg::Ptr(live),
        Arg::I32(i32_of("n", n)?),
        Arg::Ptr(queries),
        Arg::I32(i32_of("nq", nq)?),
        Arg::I32(i32_of("r", r)?),
        Arg::I32(i32_of("k", k)?),
        Arg::I32(i32_of("rows_per_block", split.rows_per_block)?),
    ];
    let groups = nq.div_ceil(QUESTIONS_PER_BLOCK);
    let mut l = Launch::new("topk_aggregate", "topk_scan", key_dt, 0, THREADS, args);
    l.grid = [
        u32::try_from(split.blocks)
            .map_err(|_| CudaError::Shape("topk: too many blocks".into()))?,
        u32::try_from(groups).map_err(|_| CudaError::Shape("topk: too many questions".into()))?,
        1,
    ];
    Ok(l)
}

/// Combine for `nq` questions of `ncand` candidates each (`[nq][ncand]`, distinct rows per
/// question): writes `out_rows` (i32, −1 past the selected entries), `out_scores` (s = q·k/τ),
/// `out_weights` (softmax over the selected) — each `[nq][k]` — and `out_agg` f32
/// `[nq][td]`. `mem` holds the memories (`mem_dt`, row-major, `td` values each) indexed by
/// the candidates' rows.
pub fn combine(
    mem_dt: DType,
    out_rows: u64,
    out_scores: u64,
    out_weights: u64,
    out_agg: u64,
    cand_scores: u64,
    cand_rows: u64,
    ncand: usize,
    nq: usize,
    k: usize,
    tau: f32,
    mem: u64,
    td: usize,
) -> Result<Launch, CudaError> {
    check_k(k)?;
    if !(tau.is_finite() && tau > 0.0) {
        return Err(CudaError::Shape(format!(
            "topk: τ = {tau} must be finite and > 0"
        )));
    }
    nq.checked_mul(ncand.max(td).max(k))
        .ok_or_else(|| CudaError::Shape("topk: output size overflows".into()))?;
    let args = vec![
        Arg::Ptr(out_rows),
        Arg::Ptr(out_scores),
        Arg::Ptr(out_weights),
        Arg::Ptr(out_agg),
        Arg::Ptr(cand_scores),
        Arg::Ptr(cand_rows),
        Arg::I32(i32_of("ncand", ncand)?),
        Arg::I32(i32_of("k", k)?),
        Arg::F32(tau),
        Arg::Ptr(mem),
        Arg::I32(i32_of("td", td)?),
    ];
    let grid =
        u32::try_from(nq).map_err(|_| CudaError::Shape("topk: too many questions".into()))?;
    Ok(Launch::new(
        "topk_aggregate",
        "topk_combine",
        mem_dt,
        grid,
        THREADS,
        args,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_row_once() {
        for n in [0, 1, 255, 256, 257, 4096, 1_000_000, 262_145] {
            let s = ScanSplit::new(n);
            assert_eq!(s.rows_per_block % THREADS as usize, 0);
            assert!(s.blocks <= TARGET_BLOCKS, "n={n}: {s:?}");
            assert!(s.blocks * s.rows_per_block >= n);
            assert!(
                n == 0 || (s.blocks - 1) * s.rows_per_block < n,
                "n={n}: empty block"
            );
        }
        assert_eq!(ScanSplit::new(1_000_000).blocks, 977);
    }
}
