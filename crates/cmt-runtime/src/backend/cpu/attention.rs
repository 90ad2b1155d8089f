//! Causal grouped-query attention against the KV cache, and the cache write.
use super::simd::{axpy, dot};
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
    // One task per (sequence, head, row): plenty of parallelism for prefill, and for decode
    // (one row) at least `heads` tasks per sequence. Nested iterators, no task list: this
    // runs once per decoded token and must not allocate.
    let optr = OutPtr(out.as_mut_ptr());
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
                let mut sum = 0.0f32;
                for sv in scores.iter_mut() {
                    *sv = (*sv - max).exp();
                    sum += *sv;
                }
                let inv = 1.0 / sum;
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
