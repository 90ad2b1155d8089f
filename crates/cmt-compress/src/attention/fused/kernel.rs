//! The H-pass kernels (see [`super`] for the equations): the part of the fused
//! cross-attention that `kernels/compress_attention.cu` implements too. Both work on one
//! document, stream its rows in tiles of [`TILE`] rows (the normalised tile `y` stays in
//! L1/L2 while it is used), and never hold more than a `rows × TILE` block of scores.
use super::mm::mm;
use super::simd;
use crate::attention::linalg::View;

/// H rows per tile.
pub const TILE: usize = 128;

/// Buffers of the kernels, sized once for `rows` query rows (the backward uses twice as
/// many score rows) and width `d`; reused across tiles and documents.
pub struct KernelScratch {
    y: Vec<f32>,
    /// yᵀ `[d, TILE]`.
    yt: Vec<f32>,
    dy: Vec<f32>,
    rinv: Vec<f32>,
    s: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

impl KernelScratch {
    pub fn new(rows: usize, d: usize) -> Self {
        Self {
            y: vec![0.0; TILE * d],
            yt: vec![0.0; TILE * d],
            dy: vec![0.0; TILE * d],
            rinv: vec![0.0; TILE],
            s: vec![0.0; 2 * rows * TILE],
            m: vec![0.0; rows],
            l: vec![0.0; rows],
        }
    }

    /// rinv_j and y_j = rinv_j·H_j for the `bn` rows of `h`.
    fn normalise(&mut self, h: &[f32], bn: usize, d: usize, eps: f32) {
        for j in 0..bn {
            let row = &h[j * d..(j + 1) * d];
            let r = 1.0 / (simd::dot(row, row) / d as f32 + eps).sqrt();
            self.rinv[j] = r;
            simd::scale_to(row, r, &mut self.y[j * d..(j + 1) * d]);
        }
        // yᵀ in 16 × 16 blocks, so reads and writes of a block stay in L1.
        const B: usize = 16;
        for j0 in (0..bn).step_by(B) {
            for c0 in (0..d).step_by(B) {
                for j in j0..(j0 + B).min(bn) {
                    for c in c0..(c0 + B).min(d) {
                        self.yt[c * TILE + j] = self.y[j * d + c];
                    }
                }
            }
        }
    }
}

/// Forward H pass of one document for a block of query rows.
///
/// Inputs: `qhat` `[rows, d]` (the folded queries `g_h ⊙ Wk_hᵀ q / √hd`), `h` the
/// document's valid rows `[len, d]` (`len ≥ 1`), `eps`. Outputs: `u` `[rows, d]`
/// (`u_i = Σ_j softmax_j(s_i)·y_j`), `lse` `[rows]` (`log Σ_j e^{s_ij}`), both overwritten.
/// `rows = lse.len()`; `sc` must have been made for at least `rows`.
pub fn hpass_forward(
    qhat: &[f32],
    h: &[f32],
    d: usize,
    eps: f32,
    u: &mut [f32],
    lse: &mut [f32],
    sc: &mut KernelScratch,
) {
    let rows = lse.len();
    let len = h.len() / d;
    debug_assert!(len >= 1 && qhat.len() == rows * d && u.len() == rows * d);
    sc.m[..rows].fill(f32::NEG_INFINITY);
    sc.l[..rows].fill(0.0);
    for j0 in (0..len).step_by(TILE) {
        let bn = TILE.min(len - j0);
        sc.normalise(&h[j0 * d..(j0 + bn) * d], bn, d, eps);
        // s = qhat · yᵀ  [rows, bn]
        mm(
            rows,
            bn,
            d,
            &mut sc.s,
            bn,
            false,
            View::rows(qhat, d),
            &sc.yt,
            TILE,
        );
        // Online softmax: p = e^{s − m_new}; rescale what u and l hold by e^{m_old − m_new}.
        for i in 0..rows {
            let srow = &mut sc.s[i * bn..(i + 1) * bn];
            let m_new = sc.m[i].max(simd::max(srow));
            let alpha = (sc.m[i] - m_new).exp();
            sc.l[i] = sc.l[i] * alpha + simd::exp_shift(srow, m_new);
            if j0 > 0 && alpha != 1.0 {
                simd::scale(&mut u[i * d..(i + 1) * d], alpha);
            }
            sc.m[i] = m_new;
        }
        // u (+)= p · y
        mm(rows, d, bn, u, d, j0 > 0, View::rows(&sc.s, bn), &sc.y, d);
    }
    for i in 0..rows {
        lse[i] = sc.m[i] + sc.l[i].ln();
        simd::scale(&mut u[i * d..(i + 1) * d], 1.0 / sc.l[i]);
    }
}

/// Backward H pass over a run of a document's rows (FlashAttention-2: scores recomputed
/// from `lse`).
///
/// Inputs: `qd = [du; qhat]` `[2·rows, d]` (`du_i = g_h ⊙ Wv_hᵀ dO`), `lse`, `delta`
/// `[rows]` (`δ_i = du_i·u_i`), `h` the run's rows `[bn_total, d]`, `eps`. Outputs, both
/// accumulated: `dqhat` `[rows, d]` += `Σ_j ds_ij·y_j` over the run, and `dh` (the same
/// rows as `h`) += the RMSNorm backward of `dy_j = Σ_i p_ij·du_i + ds_ij·qhat_i`.
#[allow(clippy::too_many_arguments)]
pub fn hpass_backward(
    qd: &[f32],
    lse: &[f32],
    delta: &[f32],
    h: &[f32],
    d: usize,
    eps: f32,
    dqhat: &mut [f32],
    dh: &mut [f32],
    sc: &mut KernelScratch,
) {
    let rows = lse.len();
    let len = h.len() / d;
    debug_assert!(qd.len() == 2 * rows * d && dqhat.len() == rows * d && dh.len() == h.len());
    for j0 in (0..len).step_by(TILE) {
        let bn = TILE.min(len - j0);
        sc.normalise(&h[j0 * d..(j0 + bn) * d], bn, d, eps);
        // [du·yᵀ; s] = qd · yᵀ  [2·rows, bn]
        mm(
            2 * rows,
            bn,
            d,
            &mut sc.s,
            bn,
            false,
            View::rows(qd, d),
            &sc.yt,
            TILE,
        );
        // → [p; ds]: p = e^{s − lse}, ds = p·(du·y − δ).
        let (top, bottom) = sc.s[..2 * rows * bn].split_at_mut(rows * bn);
        for i in 0..rows {
            let r = i * bn..(i + 1) * bn;
            simd::bwd_probs(&mut top[r.clone()], &mut bottom[r], lse[i], delta[i]);
        }
        // dqhat += ds · y
        let dsv = View::rows(&sc.s[rows * bn..], bn);
        mm(rows, d, bn, dqhat, d, true, dsv, &sc.y, d);
        // dy = [p; ds]ᵀ · [du; qhat]  [bn, d]
        mm(
            bn,
            d,
            2 * rows,
            &mut sc.dy,
            d,
            false,
            View::t(&sc.s, bn),
            qd,
            d,
        );
        for j in 0..bn {
            let r = j * d..(j + 1) * d;
            let dh_row = &mut dh[(j0 + j) * d..(j0 + j + 1) * d];
            simd::dh_row(&sc.dy[r.clone()], &sc.y[r], sc.rinv[j], dh_row);
        }
    }
}
