//! Shared helpers of the cross-attention tests: random cases and an independent scalar
//! f64 forward.
#![allow(dead_code)]
use cmt_compress::attention::{
    fused, slow, CrossAttnDims, CrossAttnGrads, CrossAttnWeights, DocBatch,
};

/// SplitMix64: deterministic values from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym() * scale).collect()
    }
}

/// One random problem: owned buffers for every input.
#[derive(Clone, Debug)]
pub struct Case {
    pub dims: CrossAttnDims,
    pub n_max: usize,
    pub lens: Vec<usize>,
    pub h: Vec<f32>,
    pub g_h: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub eps: f32,
    pub q: Vec<f32>,
    pub d_out: Vec<f32>,
}

impl Case {
    /// Random values; `q_scale` sets how peaked the softmax is. Padding rows of `h` hold
    /// garbage (large values), which must have no influence.
    pub fn random(
        dims: CrossAttnDims,
        n_max: usize,
        lens: Vec<usize>,
        seed: u64,
        q_scale: f32,
    ) -> Self {
        let mut r = Rng::new(seed);
        let (d, a) = (dims.d, dims.attn_width());
        let docs = lens.len();
        let mut h = r.vec(docs * n_max * d, 2.0);
        for (i, &len) in lens.iter().enumerate() {
            for x in &mut h[(i * n_max + len) * d..(i + 1) * n_max * d] {
                *x = 1e3 * (1.0 + r.sym());
            }
        }
        let wscale = 1.0 / (d as f32).sqrt();
        Self {
            dims,
            n_max,
            h,
            g_h: (0..d).map(|_| 1.0 + 0.5 * r.sym()).collect(),
            wk: r.vec(a * d, wscale * 1.7),
            wv: r.vec(a * d, wscale * 1.7),
            eps: 1e-5,
            q: r.vec(docs * dims.t * a, q_scale),
            d_out: r.vec(docs * dims.t * a, 1.0),
            lens,
        }
    }
    pub fn docs(&self) -> DocBatch<'_> {
        DocBatch {
            h: &self.h,
            n_max: self.n_max,
            lens: &self.lens,
        }
    }
    pub fn weights(&self) -> CrossAttnWeights<'_> {
        CrossAttnWeights {
            g_h: &self.g_h,
            wk: &self.wk,
            wv: &self.wv,
            eps: self.eps,
        }
    }
    pub fn out_len(&self) -> usize {
        self.lens.len() * self.dims.t * self.dims.attn_width()
    }
}

/// Owned gradient buffers, pre-filled with `init` values (to check accumulation).
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    pub dq: Vec<f32>,
    pub dwk: Vec<f32>,
    pub dwv: Vec<f32>,
    pub dg_h: Vec<f32>,
    pub dh: Vec<f32>,
}

impl Grads {
    pub fn filled(c: &Case, seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let (d, a) = (c.dims.d, c.dims.attn_width());
        Self {
            dq: r.vec(c.out_len(), 1.0),
            dwk: r.vec(a * d, 1.0),
            dwv: r.vec(a * d, 1.0),
            dg_h: r.vec(d, 1.0),
            dh: r.vec(c.h.len(), 1.0),
        }
    }
    pub fn view(&mut self) -> CrossAttnGrads<'_> {
        CrossAttnGrads {
            dq: &mut self.dq,
            dwk: &mut self.dwk,
            dwv: &mut self.dwv,
            dg_h: &mut self.dg_h,
            dh: &mut self.dh,
        }
    }
    pub fn named(&self) -> [(&'static str, &[f32]); 5] {
        [
            ("dq", &self.dq),
            ("dwk", &self.dwk),
            ("dwv", &self.dwv),
            ("dg_h", &self.dg_h),
            ("dh", &self.dh),
        ]
    }
}

/// The forward in f64, written from the module docs' equations with plain loops.
#[allow(clippy::too_many_arguments)]
pub fn forward_f64(
    dims: &CrossAttnDims,
    n_max: usize,
    lens: &[usize],
    h: &[f64],
    g: &[f64],
    wk: &[f64],
    wv: &[f64],
    eps: f64,
    q: &[f64],
) -> Vec<f64> {
    let (t, d, hd, a) = (dims.t, dims.d, dims.head_dim, dims.attn_width());
    let mut out = vec![0.0; lens.len() * t * a];
    for (b, &len) in lens.iter().enumerate() {
        let hn: Vec<Vec<f64>> = (0..len)
            .map(|j| {
                let row = &h[(b * n_max + j) * d..(b * n_max + j + 1) * d];
                let ms = row.iter().map(|x| x * x).sum::<f64>() / d as f64;
                let r = 1.0 / (ms + eps).sqrt();
                row.iter().zip(g).map(|(x, g)| x * r * g).collect()
            })
            .collect();
        let proj = |w: &[f64], j: usize, o: usize| -> f64 {
            (0..d).map(|c| hn[j][c] * w[o * d + c]).sum()
        };
        for head in 0..dims.heads {
            for ti in 0..t {
                let qrow = &q[(b * t + ti) * a + head * hd..(b * t + ti) * a + (head + 1) * hd];
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..hd)
                            .map(|e| qrow[e] * proj(wk, j, head * hd + e))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for e in 0..hd {
                    out[(b * t + ti) * a + head * hd + e] = (0..len)
                        .map(|j| (s[j] - m).exp() / z * proj(wv, j, head * hd + e))
                        .sum();
                }
            }
        }
    }
    out
}

/// `atol + rtol·|ref|`; panics naming the buffer and the worst element.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (&x, &y)) in got.iter().zip(want).enumerate() {
        let excess = (x as f64 - y).abs() - (atol + rtol * y.abs());
        assert!(!x.is_nan(), "{name}[{i}] is NaN");
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let i = worst.0;
    assert!(
        worst.1 <= 0.0,
        "{name}[{i}]: got {} want {} (|diff| {:e} > atol {atol:e} + rtol {rtol:e}·|ref|)",
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs()
    );
}

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

const RTOL: f64 = 1e-4;

/// atol scaled to the buffer's magnitude, floored at the O(1) scale of the terms: f32
/// rounding is relative to the size of the summed terms, not of a cancelling result (with
/// len = 1 the softmax is constant and the exact dq is 0, built from O(1) terms that
/// cancel).
fn atol_for(want: &[f64]) -> f64 {
    let max = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    1e-5 * max.max(1.0)
}

/// Fused vs slow on one case: forward, every gradient (accumulated onto prefilled
/// buffers), and untouched padding rows of dh.
pub fn check_fused_against_slow(c: &Case) {
    let (docs, w) = (c.docs(), c.weights());
    let mut want = vec![f32::NAN; c.out_len()];
    slow::forward(&c.dims, &docs, &w, &c.q, &mut want).unwrap();
    let mut got = vec![f32::NAN; c.out_len()];
    let saved = fused::forward(&c.dims, &docs, &w, &c.q, &mut got).unwrap();
    let want = to64(&want);
    assert_close("out", &got, &want, atol_for(&want), RTOL);

    let init = Grads::filled(c, 99);
    let (mut gs, mut gf) = (init.clone(), init.clone());
    slow::backward(&c.dims, &docs, &w, &c.q, &c.d_out, &mut gs.view()).unwrap();
    fused::backward(&c.dims, &docs, &w, &c.q, &saved, &c.d_out, &mut gf.view()).unwrap();
    for ((name, got), (_, want)) in gf.named().into_iter().zip(gs.named()) {
        // Compare the gradient itself, not the prefilled values it was added to.
        let k = ["dq", "dwk", "dwv", "dg_h", "dh"]
            .iter()
            .position(|n| *n == name)
            .unwrap();
        let base: &[f32] = if k == 0 { &[] } else { init.named()[k].1 };
        let sub = |v: &[f32]| -> Vec<f64> {
            v.iter()
                .enumerate()
                .map(|(i, &x)| x as f64 - base.get(i).map_or(0.0, |&b| b as f64))
                .collect()
        };
        let (got, want) = (sub(got), sub(want));
        let got32: Vec<f32> = got.iter().map(|&x| x as f32).collect();
        assert_close(name, &got32, &want, atol_for(&want), RTOL);
    }
    // Padding rows of dh are left exactly as they were.
    let d = c.dims.d;
    for (b, &len) in c.lens.iter().enumerate() {
        let pad = (b * c.n_max + len) * d..(b + 1) * c.n_max * d;
        assert_eq!(
            gf.dh[pad.clone()],
            init.dh[pad],
            "doc {b}: padding rows of dh changed"
        );
    }
}
