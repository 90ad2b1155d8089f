//! Backward functions of the forward ops (input gradients only, llm.c style: explicit
//! functions over saved activations). Shapes are row-major, as in `backend::Backend`.
use crate::backend::cpu::simd::{axpy, dot};
use rayon::prelude::*;

/// RMSNorm backward. Forward: y = w ⊙ x·r with r = (mean(x²) + eps)^(−1/2).
/// dx += r·(w ⊙ dy) − x·r³/D · Σ_j w_j dy_j x_j, for each of `rows` rows of width w.len().
pub fn rmsnorm_backward(x: &[f32], w: &[f32], dy: &[f32], dx: &mut [f32], eps: f32) {
    let d = w.len();
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(dy.par_chunks(d)))
        .for_each(|(dx, (x, dy))| {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let r = 1.0 / (ms + eps).sqrt();
            let mut s = 0.0f32;
            for j in 0..d {
                s += w[j] * dy[j] * x[j];
            }
            let c = s * r * r * r / d as f32;
            for j in 0..d {
                dx[j] += r * w[j] * dy[j] - c * x[j];
            }
        });
}

/// Rotary backward, in place: the forward rotates each (a_i, b_i) = (x_i, x_{i+hd/2}) pair
/// by +angle, so the gradient rotates by −angle. `cos`/`sin` are [max_pos, hd/2].
pub fn rope_backward(
    dx: &mut [f32],
    positions: &[u32],
    heads: usize,
    hd: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let width = heads * hd;
    let half = hd / 2;
    dx.par_chunks_mut(width)
        .zip(positions.par_iter())
        .for_each(|(row, &p)| {
            let c = &cos[p as usize * half..(p as usize + 1) * half];
            let s = &sin[p as usize * half..(p as usize + 1) * half];
            for head in row.chunks_exact_mut(hd) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (ga, gb) = (a[i], b[i]);
                    a[i] = ga * c[i] + gb * s[i];
                    b[i] = gb * c[i] - ga * s[i];
                }
            }
        });
}

/// SwiGLU backward. Forward: act = silu(g)·u. Overwrites `gate` with d_gate and `up` with
/// d_up (the forward values are no longer needed once read).
pub fn swiglu_backward(gate: &mut [f32], up: &mut [f32], d_act: &[f32]) {
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks_mut(4096).zip(d_act.par_chunks(4096)))
        .for_each(|(g, (u, da))| {
            for i in 0..g.len() {
                let sig = 1.0 / (1.0 + (-g[i]).exp());
                let silu = g[i] * sig;
                let d_silu = sig * (1.0 + g[i] * (1.0 - sig));
                let ui = u[i];
                g[i] = da[i] * ui * d_silu;
                u[i] = da[i] * silu;
            }
        });
}

/// Geometry of one sequence's attention for the backward pass: its new rows, and where its
/// keys sit in a cache slot laid out [kv_heads, capacity, hd].
#[derive(Debug, Clone, Copy)]
pub struct AttnSeq {
    pub row_start: usize,
    pub rows: usize,
    /// Cache position of the first row (= prefix length when the slot started empty).
    pub pos: usize,
}

/// Attention backward for one sequence and one kv head `g` (all heads of its group).
/// Recomputes the softmax from q and the cached keys (nothing but q, K, V is saved).
/// `q`, `d_out` are [rows_total, heads·hd]; `dq` is this sequence's [rows, group·hd] block
/// (the group's heads only); `k`, `v`, `dk`, `dv` are this slot's [capacity, hd] block for
/// head g; dk/dv accumulate over the group's heads.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_group(
    q: &[f32],
    d_out: &[f32],
    dq: &mut [f32],
    k: &[f32],
    v: &[f32],
    dk: &mut [f32],
    dv: &mut [f32],
    sq: AttnSeq,
    g: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    scratch: &mut Vec<f32>,
) {
    let group = heads / kv_heads;
    let qd = heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let n_keys_max = sq.pos + sq.rows;
    scratch.resize(2 * n_keys_max, 0.0);
    let (p, dp) = scratch.split_at_mut(n_keys_max);
    for h in g * group..(g + 1) * group {
        for r in 0..sq.rows {
            let row = sq.row_start + r;
            let n = sq.pos + r + 1;
            let qh = &q[row * qd + h * hd..row * qd + (h + 1) * hd];
            let doh = &d_out[row * qd + h * hd..row * qd + (h + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for t in 0..n {
                p[t] = dot(qh, &k[t * hd..(t + 1) * hd]) * scale;
                max = max.max(p[t]);
            }
            let mut sum = 0.0;
            for pt in p[..n].iter_mut() {
                *pt = (*pt - max).exp();
                sum += *pt;
            }
            let inv = 1.0 / sum;
            // dP_t = dout·v_t; D = Σ_t P_t dP_t; dS_t = P_t (dP_t − D)
            let mut big_d = 0.0;
            for t in 0..n {
                p[t] *= inv;
                dp[t] = dot(doh, &v[t * hd..(t + 1) * hd]);
                big_d += p[t] * dp[t];
            }
            let lq = (r * group + (h - g * group)) * hd;
            let dqh = &mut dq[lq..lq + hd];
            for t in 0..n {
                let ds = p[t] * (dp[t] - big_d) * scale;
                axpy(ds, &k[t * hd..(t + 1) * hd], dqh);
                axpy(ds, qh, &mut dk[t * hd..(t + 1) * hd]);
                axpy(p[t], doh, &mut dv[t * hd..(t + 1) * hd]);
            }
        }
    }
}

/// Mean cross-entropy over labelled rows, fused with its gradient (llm.c style): for each
/// row, `logits` is overwritten with d loss / d logits = (softmax − onehot) · `scale`.
/// Returns Σ −log softmax[target] (not yet divided).
pub fn cross_entropy_backward(
    logits: &mut [f32],
    targets: &[u32],
    vocab: usize,
    scale: f32,
) -> f64 {
    logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter())
        .map(|(row, &y)| {
            let y = y as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z_y = row[y];
            let mut sum = 0.0f64;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v as f64;
            }
            let nll = sum.ln() - (z_y - max) as f64;
            let inv = (1.0 / sum) as f32;
            for v in row.iter_mut() {
                *v *= inv * scale;
            }
            row[y] -= scale;
            nll
        })
        .sum()
}
