//! Fused forward: folded queries, one H pass per document, folded output.
use super::kernel::{hpass_forward, KernelScratch};
use super::mm::mm;
use super::{pieces_per_doc, Saved};
use crate::attention::linalg::View;
use crate::attention::{check_shapes, CrossAttnDims, CrossAttnWeights, DocBatch};
use crate::error::Result;
use rayon::prelude::*;

/// `w ⊙ g` per column, times `scale`: `[rows, d]`.
pub(super) fn fold_gain(w: &[f32], g: &[f32], scale: f32) -> Vec<f32> {
    let d = g.len();
    let mut out = vec![0.0; w.len()];
    for (o, r) in out.chunks_exact_mut(d).zip(w.chunks_exact(d)) {
        for ((o, x), g) in o.iter_mut().zip(r).zip(g) {
            *o = x * g * scale;
        }
    }
    out
}

/// `[cols, rows]` from `[rows, cols]`.
pub(super) fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for (r, row) in x.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

/// Same result as [`crate::attention::slow::forward`]; returns what the backward needs.
pub fn forward(
    dims: &CrossAttnDims,
    docs: &DocBatch,
    w: &CrossAttnWeights,
    q: &[f32],
    out: &mut [f32],
) -> Result<Saved> {
    check_shapes(dims, docs, w, q, out.len())?;
    let (t, d, a, hd, heads) = (dims.t, dims.d, dims.attn_width(), dims.head_dim, dims.heads);
    let (tq, n_max, nd) = (t * heads, docs.n_max, docs.docs());
    let mut saved = Saved {
        u: vec![0.0; nd * tq * d],
        lse: vec![0.0; nd * tq],
        docs: nd,
        tq,
        d,
    };
    if nd == 0 {
        return Ok(saved);
    }
    // qhat_i = (g_h ⊙ Wk_hᵀ q)/√hd = q · (Wk ⊙ g/√hd); O = u · (Wv ⊙ g)ᵀ.
    let wkg = fold_gain(w.wk, w.g_h, 1.0 / (hd as f32).sqrt());
    let wvg_t = transpose(&fold_gain(w.wv, w.g_h, 1.0), a, d);
    // Query groups: runs of whole t values (rows t·heads .. ), so each is contiguous.
    let groups = pieces_per_doc(nd, t);
    let group_rows = t.div_ceil(groups) * heads;
    let eps = w.eps;
    out.par_chunks_mut(t * a)
        .zip(saved.u.par_chunks_mut(tq * d))
        .zip(saved.lse.par_chunks_mut(tq))
        .zip(q.par_chunks(t * a))
        .zip(docs.h.par_chunks(n_max * d))
        .zip(docs.lens.par_iter())
        .for_each_init(
            || (vec![0.0f32; tq * d], KernelScratch::new(group_rows, d)),
            |(qhat, ks), (((((o, u), lse), qd), h), &len)| {
                for hh in 0..heads {
                    let qv = View::rows(&qd[hh * hd..], a);
                    let b = &wkg[hh * hd * d..];
                    mm(t, d, hd, &mut qhat[hh * d..], heads * d, false, qv, b, d);
                }
                let h = &h[..len * d];
                if groups == 1 {
                    hpass_forward(qhat, h, d, eps, u, lse, ks);
                } else {
                    u.par_chunks_mut(group_rows * d)
                        .zip(lse.par_chunks_mut(group_rows))
                        .zip(qhat.par_chunks(group_rows * d))
                        .for_each_init(
                            || KernelScratch::new(group_rows, d),
                            |ks, ((u, lse), qh)| hpass_forward(qh, h, d, eps, u, lse, ks),
                        );
                }
                for hh in 0..heads {
                    let uv = View {
                        data: &u[hh * d..],
                        rs: heads * d,
                        cs: 1,
                    };
                    mm(
                        t,
                        hd,
                        d,
                        &mut o[hh * hd..],
                        a,
                        false,
                        uv,
                        &wvg_t[hh * hd..],
                        a,
                    );
                }
            },
        );
    Ok(saved)
}
