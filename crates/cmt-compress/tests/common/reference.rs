//! A plain f64 re-implementation of the whole compressor (DESIGN §1 steps 2–3), written
//! from the equations with scalar loops and the unfused attention (K, V and the scores
//! formed explicitly): the independent reference for the f32 forward and for finite
//! differences of the backward.
#![allow(dead_code)]
use cmt_compress::{CompressorConfig, Params};
use std::collections::HashMap;

pub type RefParams = HashMap<String, Vec<f64>>;

pub fn to_f64(p: &Params) -> RefParams {
    p.tensors()
        .into_iter()
        .map(|(n, t)| (n, t.iter().map(|&v| f64::from(v)).collect()))
        .collect()
}

/// y[m] = Σ_k w[m, k] x[k] for a row-major `w` of `rows × x.len()`.
fn linear(w: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
    let k = x.len();
    (0..rows)
        .map(|m| (0..k).map(|i| w[m * k + i] * x[i]).sum())
        .collect()
}

fn rmsnorm(x: &[f64], g: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let rinv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(g).map(|(v, g)| v * rinv * g).collect()
}

/// Memories `[docs, T, d]` and keys `[docs, r]` for hidden states `h` `[docs, n_max, d]`.
pub fn forward(
    cfg: &CompressorConfig,
    p: &RefParams,
    h: &[f64],
    n_max: usize,
    lens: &[usize],
) -> (Vec<f64>, Vec<f64>) {
    let (t, d, hd, heads, f) = (
        cfg.mem_tokens,
        cfg.d,
        cfg.head_dim,
        cfg.heads,
        cfg.mlp_hidden,
    );
    let a = heads * hd;
    let eps = f64::from(cfg.eps);
    let mut mems = Vec::new();
    let mut keys = Vec::new();
    for (doc, &len) in lens.iter().enumerate() {
        let rows: Vec<&[f64]> = (0..len)
            .map(|j| &h[(doc * n_max + j) * d..(doc * n_max + j + 1) * d])
            .collect();
        let mut x: Vec<Vec<f64>> = p["q0"].chunks(d).map(<[f64]>::to_vec).collect();
        for b in 0..cfg.blocks {
            let w = |name: &str| &p[&format!("blocks.{b}.{name}")];
            let hn: Vec<Vec<f64>> = rows.iter().map(|r| rmsnorm(r, w("norm_h"), eps)).collect();
            let k: Vec<Vec<f64>> = hn.iter().map(|r| linear(w("wk"), r, a)).collect();
            let v: Vec<Vec<f64>> = hn.iter().map(|r| linear(w("wv"), r, a)).collect();
            for xt in x.iter_mut() {
                let q = linear(w("wq"), &rmsnorm(xt, w("norm_q"), eps), a);
                let mut o = vec![0.0; a];
                for hh in 0..heads {
                    let sl = hh * hd..(hh + 1) * hd;
                    let s: Vec<f64> = k
                        .iter()
                        .map(|kj| {
                            q[sl.clone()]
                                .iter()
                                .zip(&kj[sl.clone()])
                                .map(|(x, y)| x * y)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, vj) in v.iter().enumerate() {
                        for c in sl.clone() {
                            o[c] += e[j] / z * vj[c];
                        }
                    }
                }
                let upd = linear(w("wo"), &o, d);
                xt.iter_mut().zip(upd).for_each(|(x, u)| *x += u);
                let z1 = linear(w("w1"), &rmsnorm(xt, w("norm_mlp"), eps), f);
                let act: Vec<f64> = z1.iter().map(|z| z / (1.0 + (-z).exp())).collect();
                let upd = linear(w("w2"), &act, d);
                xt.iter_mut().zip(upd).for_each(|(x, u)| *x += u);
            }
        }
        let mut pooled = vec![0.0; d];
        for xt in &x {
            pooled
                .iter_mut()
                .zip(xt)
                .for_each(|(p, v)| *p += v / t as f64);
        }
        let z = linear(&p["w_key"], &pooled, cfg.key_dim);
        let n = (z.iter().map(|v| v * v).sum::<f64>() + 1e-12).sqrt();
        keys.extend(z.iter().map(|v| v / n));
        mems.extend(x.into_iter().flatten());
    }
    (mems, keys)
}
