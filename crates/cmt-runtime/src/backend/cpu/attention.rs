//! Causal grouped-query attention against the KV cache, and the cache write.
use super::simd::{axpy, dot, exp_in_place};
use crate::backend::{AttnShape, SeqSpan};
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// Per-thread score buffer, grown on demand and reused: no allocation per token.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Offset of (slot, kv head, position) in a cache laid out [slots, kv_heads, capacity, hd].
#[inline]
fn cache_at(s: AttnShape, slot: usize, g: usize, pos: usize) -> usize {
    ((slot * s.kv_heads + g) * s.capacity + pos) * s.head_dim
}

pub fn kv_write(
    k: &[f32],
    v: &[f32],
    ck: &mut [f32],
    cv: &mut [f32],
    seqs: &[SeqSpan],
    s: AttnShape,
) {
    let kvd = s.kv_heads * s.head_dim;
    for sq in seqs {
        assert!(
            sq.pos + sq.rows <= s.capacity,
            "kv_write: sequence overflows the cache"
        );
        for r in 0..sq.rows {
            let src = (sq.row_start + r) * kvd;
            for g in 0..s.kv_heads {
                let dst = cache_at(s, sq.slot, g, sq.pos + r);
                let from = src + g * s.head_dim;
                ck[dst..dst + s.head_dim].copy_from_slice(&k[from..from + s.head_dim]);
                cv[dst..dst + s.head_dim].copy_from_slice(&v[from..from + s.head_dim]);
            }
        }
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (row, head) blocks of the output (see `attention`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not `.0`) so closures capture the whole `Sync` wrapper, not the raw field.
    fn get(&self) -> *mut f32 {
        self.0
    }
}

pub fn attention(
    q: &[f32],
    ck: &[f32],
    cv: &[f32],
    seqs: &[SeqSpan],
    s: AttnShape,
    out: &mut [f32],
) {
    let hd = s.head_dim;
    let qd = s.heads * hd;
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let rows_total: usize = seqs
        .iter()
        .map(|sq| sq.row_start + sq.rows)
        .max()
        .unwrap_or(0);
    assert!(
        q.len() >= rows_total * qd && out.len() >= rows_total * qd,
        "attention: buffers too small"
    );
    let optr = OutPtr(out.as_mut_ptr());
    if seqs.iter().all(|sq| sq.rows >= GEMM_MIN_ROWS) {
        return attention_blocks(q, ck, cv, seqs, s, optr);
    }
    // One task per (sequence, head, row): at least `heads` tasks per sequence in decode (one
    // row). Nested iterators, no task list: this runs once per decoded token and must not
    // allocate.
    seqs.par_iter().enumerate().for_each(|(si, sq)| {
        (0..s.heads * sq.rows).into_par_iter().for_each(|hr| {
            let (h, r) = (hr / sq.rows, hr % sq.rows);
            let sq = seqs[si];
            let g = h / group;
            let row = sq.row_start + r;
            let qh = &q[row * qd + h * hd..row * qd + (h + 1) * hd];
            let n_keys = sq.pos + r + 1;
            SCORES.with(|sc| {
                let mut sc = sc.borrow_mut();
                if sc.len() < n_keys {
                    sc.resize(n_keys, 0.0);
                }
                let scores = &mut sc[..n_keys];
                let base = cache_at(s, sq.slot, g, 0);
                let mut max = f32::NEG_INFINITY;
                for (t, sv) in scores.iter_mut().enumerate() {
                    *sv = dot(qh, &ck[base + t * hd..base + (t + 1) * hd]) * scale;
                    max = max.max(*sv);
                }
                scores.iter_mut().for_each(|sv| *sv -= max);
                exp_in_place(scores);
                let inv = 1.0 / scores.iter().sum::<f32>();
                // SAFETY: (row, h) is unique to this task, so this hd-long block of `out` is
                // written by no other thread; row < rows_total was checked above.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(optr.get().add(row * qd + h * hd), hd)
                };
                o.fill(0.0);
                for (t, &p) in scores.iter().enumerate() {
                    axpy(p * inv, &cv[base + t * hd..base + (t + 1) * hd], o);
                }
            });
        });
    });
}

/// Sequences of at least this many rows (prefill) take [`attention_blocks`].
const GEMM_MIN_ROWS: usize = 16;
/// Query rows per task there.
const BLOCK_ROWS: usize = 32;

thread_local! {
    /// Per-thread [BLOCK_ROWS × keys] score tile of [`attention_blocks`].
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Prefill: one task per (sequence, head, block of [`BLOCK_ROWS`] query rows), each two
/// GEMMs over the keys its last row sees — S = scale·Q·Kᵀ, then O = P·V — with the causal
/// softmax between them (P's entries past a row's own position set to 0). The per-row
/// path's dot and axpy per (row, key) were ~10 % of a 128-token prefill; here the same
/// arithmetic runs in the `gemm` crate's kernels (summed in another order).
fn attention_blocks(
    q: &[f32],
    ck: &[f32],
    cv: &[f32],
    seqs: &[SeqSpan],
    s: AttnShape,
    optr: OutPtr,
) {
    let hd = s.head_dim;
    let qd = s.heads * hd;
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    seqs.par_iter().for_each(|sq| {
        let blocks = sq.rows.div_ceil(BLOCK_ROWS);
        (0..s.heads * blocks).into_par_iter().for_each(|hb| {
            let (h, b) = (hb / blocks, hb % blocks);
            let (r0, r1) = (b * BLOCK_ROWS, ((b + 1) * BLOCK_ROWS).min(sq.rows));
            let (m, keys) = (r1 - r0, sq.pos + r1);
            let base = cache_at(s, sq.slot, h / group, 0);
            assert!(
                base + keys * hd <= ck.len().min(cv.len()) && (sq.row_start + r1) * qd <= q.len(),
                "attention: block outside the cache or the queries"
            );
            TILE.with(|tile| {
                let mut tile = tile.borrow_mut();
                if tile.len() < m * keys {
                    tile.resize(m * keys, 0.0);
                }
                let sc = &mut tile[..m * keys];
                let q0 = (sq.row_start + r0) * qd + h * hd;
                // SAFETY: lhs = Q rows r0..r1 of head h (row stride qd, inside q: asserted);
                // rhs = Kᵀ, element (d, t) at ck[base + t·hd + d] for t < keys (asserted);
                // dst = sc, m × keys row-major.
                unsafe {
                    gemm::gemm(
                        m,
                        keys,
                        hd,
                        sc.as_mut_ptr(),
                        1,
                        keys as isize,
                        false,
                        q.as_ptr().add(q0),
                        1,
                        qd as isize,
                        ck.as_ptr().add(base),
                        hd as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                };
                for (i, row) in sc.chunks_exact_mut(keys).enumerate() {
                    // Row r0 + i sees keys 0..=pos + r0 + i.
                    let (seen, masked) = row.split_at_mut(sq.pos + r0 + i + 1);
                    let max = seen.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    seen.iter_mut().for_each(|v| *v -= max);
                    exp_in_place(seen);
                    let inv = 1.0 / seen.iter().sum::<f32>();
                    seen.iter_mut().for_each(|v| *v *= inv);
                    masked.fill(0.0);
                }
                // SAFETY: lhs = P (m × keys, row-major); rhs = V rows 0..keys (row stride
                // hd, inside cv: asserted); dst = output rows r0..r1 of head h (row stride
                // qd), an m × hd block that no other task writes ((sequence rows, head)
                // are disjoint across tasks) and inside `out` (checked by `attention`).
                unsafe {
                    gemm::gemm(
                        m,
                        hd,
                        keys,
                        optr.get().add(q0),
                        1,
                        qd as isize,
                        false,
                        sc.as_ptr(),
                        1,
                        keys as isize,
                        cv.as_ptr().add(base),
                        1,
                        hd as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                };
            });
        });
    });
}
