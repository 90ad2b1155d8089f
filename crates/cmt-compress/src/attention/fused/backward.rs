//! Fused backward: per document, the folded query/output gradients around one
//! FlashAttention-2-style pass over H ([`hpass_backward`]).
use super::forward::transpose;
use super::kernel::{hpass_backward, KernelScratch, TILE};
use super::mm::mm;
use super::{pieces_per_doc, simd, Saved};
use crate::attention::linalg::View;
use crate::attention::DocBatch;
use crate::attention::{check_grad_shapes, CrossAttnDims, CrossAttnGrads, CrossAttnWeights};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// What every document shares.
struct Ctx<'a> {
    w: &'a CrossAttnWeights<'a>,
    t: usize,
    d: usize,
    a: usize,
    hd: usize,
    heads: usize,
    /// Wk / √hd  `[A, d]` and its transpose `[d, A]`.
    wks: Vec<f32>,
    wks_t: Vec<f32>,
    /// Runs of H rows per document processed in parallel (whole tiles each).
    runs: usize,
}

/// One document's inputs.
struct DocIn<'a> {
    q: &'a [f32],
    d_out: &'a [f32],
    h: &'a [f32],
    len: usize,
    u: &'a [f32],
    lse: &'a [f32],
}

/// Per-thread weight-gradient partials and document scratch.
struct Acc {
    /// Σ q_hᵀ · dqraw_h  (dWk before the scaling by 1/√hd).
    dwk: Vec<f32>,
    /// Σ dO_hᵀ · u_h  (dWv before the column scaling by g_h).
    dwv: Vec<f32>,
    dg: Vec<f32>,
    /// qraw = Wk_hᵀ q / √hd  `[tq, d]`.
    qraw: Vec<f32>,
    /// [du; qhat]  `[2·tq, d]`.
    qd: Vec<f32>,
    delta: Vec<f32>,
    /// dqhat partials, one per run of rows: `[runs, tq, d]`.
    dqhat: Vec<f32>,
    ks: KernelScratch,
}

impl Acc {
    fn new(a: usize, d: usize, tq: usize, runs: usize) -> Self {
        Self {
            dwk: vec![0.0; a * d],
            dwv: vec![0.0; a * d],
            dg: vec![0.0; d],
            qraw: vec![0.0; tq * d],
            qd: vec![0.0; 2 * tq * d],
            delta: vec![0.0; tq],
            dqhat: vec![0.0; runs * tq * d],
            ks: KernelScratch::new(tq, d),
        }
    }

    /// One document: writes its `dq` and `dh` rows, adds to the partials.
    fn doc(&mut self, c: &Ctx, x: DocIn, dq: &mut [f32], dh: &mut [f32]) {
        let (t, d, a, hd, heads, tq) = (c.t, c.d, c.a, c.hd, c.heads, c.t * c.heads);
        let (w, gh) = (c.w, c.w.g_h);
        let (du, qhat) = self.qd.split_at_mut(tq * d);
        for hh in 0..heads {
            // qraw_h = q_h Wk_h / √hd;  dU_h = dO_h Wv_h (into du).
            let qv = View::rows(&x.q[hh * hd..], a);
            let wks = &c.wks[hh * hd * d..];
            mm(
                t,
                d,
                hd,
                &mut self.qraw[hh * d..],
                heads * d,
                false,
                qv,
                wks,
                d,
            );
            let dov = View::rows(&x.d_out[hh * hd..], a);
            let wv = &w.wv[hh * hd * d..];
            mm(t, d, hd, &mut du[hh * d..], heads * d, false, dov, wv, d);
        }
        // qhat = g ⊙ qraw;  dg += dU ⊙ u;  du = g ⊙ dU;  δ = du·u.
        for (i, delta) in self.delta.iter_mut().enumerate() {
            let r = i * d..(i + 1) * d;
            simd::mul_to(&self.qraw[r.clone()], gh, &mut qhat[r.clone()]);
            simd::acc_mul(&du[r.clone()], &x.u[r.clone()], &mut self.dg);
            simd::mul_assign(&mut du[r.clone()], gh);
            *delta = simd::dot(&du[r.clone()], &x.u[r]);
        }
        let (qdu, delta) = (&self.qd[..], &self.delta[..]);
        let (h, dh) = (&x.h[..x.len * d], &mut dh[..x.len * d]);
        let eps = w.eps;
        if c.runs == 1 {
            self.dqhat.fill(0.0);
            hpass_backward(
                qdu,
                x.lse,
                delta,
                h,
                d,
                eps,
                &mut self.dqhat,
                dh,
                &mut self.ks,
            );
        } else {
            // Runs of whole tiles in parallel, each into its own dqhat partial.
            let run_rows = x.len.div_ceil(TILE).div_ceil(c.runs) * TILE;
            self.dqhat
                .par_chunks_mut(tq * d)
                .zip(h.par_chunks(run_rows * d))
                .zip(dh.par_chunks_mut(run_rows * d))
                .for_each_init(
                    || KernelScratch::new(tq, d),
                    |ks, ((part, h), dh)| {
                        part.fill(0.0);
                        hpass_backward(qdu, x.lse, delta, h, d, eps, part, dh, ks);
                    },
                );
            // Only the runs that hold rows of this document ran.
            let used = x.len.div_ceil(run_rows);
            let (first, rest) = self.dqhat.split_at_mut(tq * d);
            for part in rest.chunks_exact(tq * d).take(used - 1) {
                first.iter_mut().zip(part).for_each(|(x, y)| *x += y);
            }
        }
        // dg += qraw ⊙ dqhat;  dqraw = g ⊙ dqhat (in place).
        let dqraw = &mut self.dqhat[..tq * d];
        for (qr, dqr) in self.qraw.chunks_exact(d).zip(dqraw.chunks_exact_mut(d)) {
            simd::acc_mul(qr, dqr, &mut self.dg);
            simd::mul_assign(dqr, gh);
        }
        for hh in 0..heads {
            let dqr = &dqraw[hh * d..];
            let dqv = View {
                data: dqr,
                rs: heads * d,
                cs: 1,
            };
            // dq_h = dqraw_h (Wk_h / √hd)ᵀ
            mm(
                t,
                hd,
                d,
                &mut dq[hh * hd..],
                a,
                false,
                dqv,
                &c.wks_t[hh * hd..],
                a,
            );
            // dWk_h (before / √hd) += q_hᵀ dqraw_h;  dWv_h (before ⊙ g) += dO_hᵀ u_h
            let qt = View {
                data: &x.q[hh * hd..],
                rs: 1,
                cs: a,
            };
            mm(
                hd,
                d,
                t,
                &mut self.dwk[hh * hd * d..],
                d,
                true,
                qt,
                dqr,
                heads * d,
            );
            let dot = View {
                data: &x.d_out[hh * hd..],
                rs: 1,
                cs: a,
            };
            let u = &x.u[hh * d..];
            mm(
                hd,
                d,
                t,
                &mut self.dwv[hh * hd * d..],
                d,
                true,
                dot,
                u,
                heads * d,
            );
        }
    }

    fn add(mut self, o: Self) -> Self {
        for (x, y) in [
            (&mut self.dwk, &o.dwk),
            (&mut self.dwv, &o.dwv),
            (&mut self.dg, &o.dg),
        ] {
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        }
        self
    }
}

/// Same gradients as [`crate::attention::slow::backward`], from the forward's [`Saved`].
pub fn backward(
    dims: &CrossAttnDims,
    docs: &DocBatch,
    w: &CrossAttnWeights,
    q: &[f32],
    saved: &Saved,
    d_out: &[f32],
    g: &mut CrossAttnGrads,
) -> Result<()> {
    check_grad_shapes(dims, docs, w, q, d_out, g)?;
    let (t, d, a, hd, heads) = (dims.t, dims.d, dims.attn_width(), dims.head_dim, dims.heads);
    let (tq, n_max, nd) = (t * heads, docs.n_max, docs.docs());
    if (saved.docs, saved.tq, saved.d) != (nd, tq, d) {
        return Err(Error::Shape(format!(
            "cross-attention backward: saved holds {} documents × {} rows × {}, \
             expected {nd} × {tq} × {d}",
            saved.docs, saved.tq, saved.d
        )));
    }
    if nd == 0 {
        return Ok(());
    }
    let runs = pieces_per_doc(nd, n_max.div_ceil(TILE));
    let scale = 1.0 / (hd as f32).sqrt();
    let wks: Vec<f32> = w.wk.iter().map(|x| x * scale).collect();
    let wks_t = transpose(&wks, a, d);
    let c = Ctx {
        w,
        t,
        d,
        a,
        hd,
        heads,
        wks,
        wks_t,
        runs,
    };
    let acc =
        g.dq.par_chunks_mut(t * a)
            .zip(g.dh.par_chunks_mut(n_max * d))
            .zip(q.par_chunks(t * a).zip(d_out.par_chunks(t * a)))
            .zip(docs.h.par_chunks(n_max * d).zip(docs.lens.par_iter()))
            .zip(saved.u.par_chunks(tq * d).zip(saved.lse.par_chunks(tq)))
            .fold(
                || Acc::new(a, d, tq, runs),
                |mut acc, ((((dq, dh), (q, d_out)), (h, &len)), (u, lse))| {
                    let x = DocIn {
                        q,
                        d_out,
                        h,
                        len,
                        u,
                        lse,
                    };
                    acc.doc(&c, x, dq, dh);
                    acc
                },
            )
            .reduce_with(Acc::add)
            .expect("at least one document");
    g.dwk
        .iter_mut()
        .zip(&acc.dwk)
        .for_each(|(x, y)| *x += y * scale);
    for (x, y) in g.dwv.chunks_exact_mut(d).zip(acc.dwv.chunks_exact(d)) {
        for ((x, y), gc) in x.iter_mut().zip(y).zip(w.g_h) {
            *x += y * gc;
        }
    }
    g.dg_h.iter_mut().zip(&acc.dg).for_each(|(x, y)| *x += y);
    Ok(())
}
