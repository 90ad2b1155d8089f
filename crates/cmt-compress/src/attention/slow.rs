//! The unfused composition of plain ops: the test reference and the benchmark's peer.
//!
//! Per document (rayon over documents, each product a single-threaded `gemm` call):
//! `Hn = RMSNorm(H)`, `K = Hn Wkᵀ`, `V = Hn Wvᵀ`, and per head `S = Q Kᵀ/√hd`, masked
//! softmax over the `len` valid rows, `O = P V`. The backward recomputes all of it and
//! applies the textbook chain rule; weight gradients are reduced over per-thread partials.
use super::linalg::{matmul, View};
use super::{
    check_grad_shapes, check_shapes, CrossAttnDims, CrossAttnGrads, CrossAttnWeights, DocBatch,
};
use crate::error::Result;
use rayon::prelude::*;

/// Per-thread buffers, sized for one document of `n_max` rows.
struct Scratch {
    hn: Vec<f32>,
    rinv: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    p: Vec<f32>,
}

impl Scratch {
    fn new(dims: &CrossAttnDims, n_max: usize) -> Self {
        let a = dims.attn_width();
        Self {
            hn: vec![0.0; n_max * dims.d],
            rinv: vec![0.0; n_max],
            k: vec![0.0; n_max * a],
            v: vec![0.0; n_max * a],
            p: vec![0.0; dims.t * n_max],
        }
    }

    /// Hn, rinv, K and V of one document's `len` valid rows.
    fn project(&mut self, dims: &CrossAttnDims, w: &CrossAttnWeights, h: &[f32], len: usize) {
        let (d, a) = (dims.d, dims.attn_width());
        for j in 0..len {
            let row = &h[j * d..(j + 1) * d];
            let ms = row.iter().map(|x| x * x).sum::<f32>() / d as f32;
            let r = 1.0 / (ms + w.eps).sqrt();
            self.rinv[j] = r;
            for ((o, x), g) in self.hn[j * d..(j + 1) * d].iter_mut().zip(row).zip(w.g_h) {
                *o = x * r * g;
            }
        }
        let hn = View::rows(&self.hn, d);
        matmul(
            len,
            a,
            d,
            &mut self.k,
            a,
            false,
            hn,
            View::t(w.wk, d),
            1.0,
            1,
        );
        matmul(
            len,
            a,
            d,
            &mut self.v,
            a,
            false,
            hn,
            View::t(w.wv, d),
            1.0,
            1,
        );
    }

    /// P = softmax over the `len` valid rows of (Q_h K_hᵀ)/√hd, `[t, len]` row-major.
    fn probs(&mut self, dims: &CrossAttnDims, q: &[f32], head: usize, len: usize) {
        let (t, a, hd) = (dims.t, dims.attn_width(), dims.head_dim);
        let off = head * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let (qv, kt) = (View::rows(&q[off..], a), View::t(&self.k[off..], a));
        matmul(t, len, hd, &mut self.p, len, false, qv, kt, scale, 1);
        for row in self.p[..t * len].chunks_exact_mut(len) {
            let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            row.iter_mut().for_each(|x| *x /= sum);
        }
    }
}

/// `out[docs, t, heads·hd]` = the cross-attention of `q` over the documents (module docs).
pub fn forward(
    dims: &CrossAttnDims,
    docs: &DocBatch,
    w: &CrossAttnWeights,
    q: &[f32],
    out: &mut [f32],
) -> Result<()> {
    check_shapes(dims, docs, w, q, out.len())?;
    if docs.docs() == 0 {
        return Ok(());
    }
    let (t, d, a, hd) = (dims.t, dims.d, dims.attn_width(), dims.head_dim);
    let n_max = docs.n_max;
    out.par_chunks_mut(t * a)
        .zip(q.par_chunks(t * a))
        .zip(docs.h.par_chunks(n_max * d))
        .zip(docs.lens.par_iter())
        .for_each_init(
            || Scratch::new(dims, n_max),
            |s, (((o, qd), h), &len)| {
                s.project(dims, w, h, len);
                for head in 0..dims.heads {
                    s.probs(dims, qd, head, len);
                    let off = head * hd;
                    let (p, v) = (View::rows(&s.p, len), View::rows(&s.v[off..], a));
                    matmul(t, hd, len, &mut o[off..], a, false, p, v, 1.0, 1);
                }
            },
        );
    Ok(())
}

/// Per-thread partial sums of the weight gradients, plus the document scratch.
struct Acc {
    s: Scratch,
    dwk: Vec<f32>,
    dwv: Vec<f32>,
    dg: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dhn: Vec<f32>,
    dp: Vec<f32>,
}

impl Acc {
    fn new(dims: &CrossAttnDims, n_max: usize) -> Self {
        let (d, a) = (dims.d, dims.attn_width());
        Self {
            s: Scratch::new(dims, n_max),
            dwk: vec![0.0; a * d],
            dwv: vec![0.0; a * d],
            dg: vec![0.0; d],
            dk: vec![0.0; n_max * a],
            dv: vec![0.0; n_max * a],
            dhn: vec![0.0; n_max * d],
            dp: vec![0.0; dims.t * n_max],
        }
    }

    fn add(mut self, other: Self) -> Self {
        let pairs = [
            (&mut self.dwk, &other.dwk),
            (&mut self.dwv, &other.dwv),
            (&mut self.dg, &other.dg),
        ];
        for (x, y) in pairs {
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        }
        self
    }

    /// One document: writes its `dq` and `dh` rows, adds to the weight partials.
    #[allow(clippy::too_many_arguments)]
    fn doc(
        &mut self,
        dims: &CrossAttnDims,
        w: &CrossAttnWeights,
        h: &[f32],
        len: usize,
        q: &[f32],
        d_out: &[f32],
        dq: &mut [f32],
        dh: &mut [f32],
    ) {
        let (t, d, a, hd) = (dims.t, dims.d, dims.attn_width(), dims.head_dim);
        let scale = 1.0 / (hd as f32).sqrt();
        self.s.project(dims, w, h, len);
        for head in 0..dims.heads {
            let off = head * hd;
            self.s.probs(dims, q, head, len);
            let s = &mut self.s;
            let dout_h = View::rows(&d_out[off..], a);
            // dV_h = Pᵀ dO_h.
            let pt = View::t(&s.p, len);
            matmul(
                len,
                hd,
                t,
                &mut self.dv[off..],
                a,
                false,
                pt,
                dout_h,
                1.0,
                1,
            );
            // dP = dO_h V_hᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)), in the `dp` buffer.
            let dp = &mut self.dp[..t * len];
            let vt = View::t(&s.v[off..], a);
            matmul(t, len, hd, dp, len, false, dout_h, vt, 1.0, 1);
            for (dr, pr) in dp.chunks_exact_mut(len).zip(s.p.chunks_exact(len)) {
                let delta: f32 = dr.iter().zip(pr).map(|(x, y)| x * y).sum();
                dr.iter_mut()
                    .zip(pr)
                    .for_each(|(x, p)| *x = p * (*x - delta));
            }
            // dQ_h = dS K_h / √hd, dK_h = dSᵀ Q_h / √hd.
            let (ds, kv) = (View::rows(dp, len), View::rows(&s.k[off..], a));
            matmul(t, hd, len, &mut dq[off..], a, false, ds, kv, scale, 1);
            let (dst, qv) = (View::t(dp, len), View::rows(&q[off..], a));
            matmul(len, hd, t, &mut self.dk[off..], a, false, dst, qv, scale, 1);
        }
        let s = &self.s;
        // dHn = dK Wk + dV Wv; dWk += dKᵀ Hn; dWv += dVᵀ Hn.
        let (dk, dv) = (View::rows(&self.dk, a), View::rows(&self.dv, a));
        matmul(
            len,
            d,
            a,
            &mut self.dhn,
            d,
            false,
            dk,
            View::rows(w.wk, d),
            1.0,
            1,
        );
        matmul(
            len,
            d,
            a,
            &mut self.dhn,
            d,
            true,
            dv,
            View::rows(w.wv, d),
            1.0,
            1,
        );
        let hn = View::rows(&s.hn, d);
        matmul(
            a,
            d,
            len,
            &mut self.dwk,
            d,
            true,
            View::t(&self.dk, a),
            hn,
            1.0,
            1,
        );
        matmul(
            a,
            d,
            len,
            &mut self.dwv,
            d,
            true,
            View::t(&self.dv, a),
            hn,
            1.0,
            1,
        );
        // Through the RMSNorm: y = H·rinv, Hn = y ⊙ g; dy = g ⊙ dHn,
        // dH = rinv (dy − (dy·y / d) y).
        for j in 0..len {
            let r = s.rinv[j];
            let (hrow, dhn) = (&h[j * d..(j + 1) * d], &self.dhn[j * d..(j + 1) * d]);
            let mut dot = 0.0f32;
            for c in 0..d {
                let y = hrow[c] * r;
                self.dg[c] += dhn[c] * y;
                dot += w.g_h[c] * dhn[c] * y;
            }
            let coef = dot / d as f32;
            for (c, o) in dh[j * d..(j + 1) * d].iter_mut().enumerate() {
                let y = hrow[c] * r;
                *o += r * (w.g_h[c] * dhn[c] - coef * y);
            }
        }
    }
}

/// Gradients of `Σ d_out ⊙ forward(...)`: `dq` overwritten, the rest accumulated.
pub fn backward(
    dims: &CrossAttnDims,
    docs: &DocBatch,
    w: &CrossAttnWeights,
    q: &[f32],
    d_out: &[f32],
    g: &mut CrossAttnGrads,
) -> Result<()> {
    check_grad_shapes(dims, docs, w, q, d_out, g)?;
    if docs.docs() == 0 {
        return Ok(());
    }
    let (t, d, a) = (dims.t, dims.d, dims.attn_width());
    let n_max = docs.n_max;
    let acc =
        g.dq.par_chunks_mut(t * a)
            .zip(g.dh.par_chunks_mut(n_max * d))
            .zip(q.par_chunks(t * a))
            .zip(d_out.par_chunks(t * a))
            .zip(docs.h.par_chunks(n_max * d))
            .zip(docs.lens.par_iter())
            .fold(
                || Acc::new(dims, n_max),
                |mut acc, (((((dq, dh), qd), dod), h), &len)| {
                    acc.doc(dims, w, h, len, qd, dod, dq, dh);
                    acc
                },
            )
            .reduce_with(Acc::add)
            .expect("at least one document");
    for (x, y) in [
        (&mut *g.dwk, &acc.dwk),
        (&mut *g.dwv, &acc.dwv),
        (&mut *g.dg_h, &acc.dg),
    ] {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
    }
    Ok(())
}
