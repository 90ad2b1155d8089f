//! ψ (aggregator) and G_ω (prefix generator) against plain f64 compositions of their
//! equations, forward and backward (f64 central differences), on proptest shapes.
mod common;
use cmt_compress::{BlockParams, CompressorConfig};
use cmt_core::aggregator::{self, AggInput};
use cmt_core::config::PrefixMode;
use cmt_core::prefix::{self, PrefixDims, PrefixParams};
use cmt_core::soft_prefix;
use common::Rng;
use proptest::prelude::*;

type M = Vec<Vec<f64>>;

fn rows(v: &[f64], cols: usize) -> M {
    v.chunks(cols).map(<[f64]>::to_vec).collect()
}
/// x · wᵀ, w given row-major as [out, in].
fn lin(x: &M, w: &M) -> M {
    x.iter()
        .map(|r| {
            w.iter()
                .map(|wr| r.iter().zip(wr).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect()
}
fn rms(x: &M, g: &[f64], eps: f64) -> M {
    x.iter()
        .map(|r| {
            let s = (r.iter().map(|v| v * v).sum::<f64>() / r.len() as f64 + eps).sqrt();
            r.iter().zip(g).map(|(v, gg)| v / s * gg).collect()
        })
        .collect()
}
fn add(a: &mut M, b: &M) {
    for (x, y) in a.iter_mut().zip(b) {
        x.iter_mut().zip(y).for_each(|(p, q)| *p += q);
    }
}

/// One parameter set of blocks in f64, named like `cmt_core::params::block_tensors`.
struct Blk {
    t: Vec<Vec<f64>>, // norm_q, norm_h, wq, wk, wv, wo, norm_mlp, w1, w2
}

fn blk64(b: &BlockParams) -> Blk {
    Blk {
        t: cmt_core::params::block_tensors(b)
            .iter()
            .map(|(_, v)| v.iter().map(|&x| x as f64).collect())
            .collect(),
    }
}

/// ψ for one question, plain f64: A′ = A + blocks(M_x; [sel…, A]) − M_x.
fn psi_ref(
    cfg: &CompressorConfig,
    blocks: &[Blk],
    mx: &[f64],
    sel: &[Vec<f64>],
    a: &[f64],
) -> Vec<f64> {
    let (d, hd, heads) = (cfg.d, cfg.head_dim, cfg.heads);
    let aw = heads * hd;
    let mut x = rows(mx, d);
    let mut h: M = sel.iter().flat_map(|m| rows(m, d)).collect();
    h.extend(rows(a, d));
    for b in blocks {
        let t = &b.t;
        let q = lin(&rms(&x, &t[0], cfg.eps as f64), &rows(&t[2], d));
        let hn = rms(&h, &t[1], cfg.eps as f64);
        let (k, v) = (lin(&hn, &rows(&t[3], d)), lin(&hn, &rows(&t[4], d)));
        let mut o = vec![vec![0.0; aw]; x.len()];
        for (qi, orow) in q.iter().zip(o.iter_mut()) {
            for hh in 0..heads {
                let r = hh * hd..(hh + 1) * hd;
                let s: Vec<f64> = k
                    .iter()
                    .map(|kr| {
                        qi[r.clone()]
                            .iter()
                            .zip(&kr[r.clone()])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, vr) in v.iter().enumerate() {
                    for c in r.clone() {
                        orow[c] += e[j] / z * vr[c];
                    }
                }
            }
        }
        add(&mut x, &lin(&o, &rows(&t[5], aw)));
        let z1 = lin(&rms(&x, &t[6], cfg.eps as f64), &rows(&t[7], d));
        let act: M = z1
            .iter()
            .map(|r| r.iter().map(|z| z / (1.0 + (-z).exp())).collect())
            .collect();
        add(&mut x, &lin(&act, &rows(&t[8], cfg.mlp_hidden)));
    }
    x.concat()
        .iter()
        .zip(a)
        .zip(mx)
        .map(|((o, a), m)| a + o - m)
        .collect()
}

/// G_ω for one aggregate, plain f64: K and V as [L, n_kv, p, h] each.
fn prefix_ref(
    dm: &PrefixDims,
    norm: &[f64],
    down: &[f64],
    up: &[f64],
    bias: &[f64],
    a: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (d, r, kvd, p, hd, g) = (dm.d, dm.rank, dm.kv_dim(), dm.p, dm.head_dim, dm.kv_heads);
    let u = rms(&rows(a, d), norm, 1e-6);
    let mut k = vec![0.0; dm.layers * g * p * hd];
    let mut v = k.clone();
    for l in 0..dm.layers {
        for s in 0..2 {
            let ls = l * 2 + s;
            let dn = rows(&down[ls * r * d..(ls + 1) * r * d], d);
            let upm = rows(&up[ls * kvd * r..(ls + 1) * kvd * r], r);
            let y = lin(&lin(&u, &dn), &upm);
            let dst = if s == 0 { &mut k } else { &mut v };
            for (j, yr) in y.iter().enumerate() {
                for gi in 0..g {
                    for e in 0..hd {
                        dst[((l * g + gi) * p + j) * hd + e] =
                            yr[gi * hd + e] + bias[ls * kvd + gi * hd + e];
                    }
                }
            }
        }
    }
    (k, v)
}

/// E = U + (U·Downᵀ)·Upᵀ + b with U = RMSNorm(A′)·g, row by row (soft mode).
fn soft_ref(
    dm: &PrefixDims,
    norm: &[f64],
    down: &[f64],
    up: &[f64],
    bias: &[f64],
    a: &[f64],
) -> Vec<f64> {
    let (d, r) = (dm.d, dm.rank);
    let u = rms(&rows(a, d), norm, 1e-6);
    let mut e = lin(&lin(&u, &rows(down, d)), &rows(up, r));
    add(&mut e, &u);
    e.into_iter()
        .flat_map(|row| {
            row.into_iter()
                .zip(bias)
                .map(|(x, b)| x + b)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn check(got: &[f32], want: &[f64], what: &str) {
    // The scale floor: a tensor whose true gradient is exactly 0 (one key/value row makes
    // the softmax constant, so dL/dWq = 0) still gets f32 round-off of cancelling terms of
    // size ~1; 1e-2 puts that floor at 2e-6, far below the gradients checked elsewhere.
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-2);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 2e-4 * scale + 2e-3 * w.abs();
        assert!(
            ((*g as f64) - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tol {tol:.2e})"
        );
    }
}

/// Central differences of `f` at `x` (f64), each coordinate.
fn fd(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xs = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-5 * x[i].abs().max(1.0);
            xs[i] = x[i] + h;
            let up = f(&xs);
            xs[i] = x[i] - h;
            let dn = f(&xs);
            xs[i] = x[i];
            (up - dn) / (2.0 * h)
        })
        .collect()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn agg_cfg(d: usize, t: usize, heads: usize, blocks: usize) -> CompressorConfig {
    CompressorConfig {
        d,
        mem_tokens: t,
        blocks,
        heads,
        head_dim: d / heads,
        mlp_hidden: d + 2,
        key_dim: 4,
        eps: 1e-6,
        input_stats: None,
    }
}

fn random_blocks(cfg: &CompressorConfig, seed: u64) -> Vec<BlockParams> {
    // The initialisation, then every tensor moved off it (gains ≠ 1, larger output
    // projections) so that each term of the backward matters.
    let mut p = cmt_compress::Params::init(cfg, seed).unwrap();
    let mut rng = Rng(seed ^ 77);
    for (_, t) in p.tensors_mut() {
        t.iter_mut().for_each(|x| *x += 0.3 * rng.next());
    }
    p.blocks
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn aggregator_matches_f64_and_finite_differences(
        d in prop::sample::select(vec![4usize, 8]),
        t in 1usize..=3,
        heads in prop::sample::select(vec![1usize, 2]),
        blocks in 1usize..=2,
        counts in prop::collection::vec(0usize..=3, 1..=3),
        seed in 0u64..1000,
    ) {
        let cfg = agg_cfg(d, t, heads, blocks);
        let bp = random_blocks(&cfg, seed);
        let td = t * d;
        let nq = counts.len();
        let mut rng = Rng(seed + 5);
        let mx = rng.vec(nq * td, 1.0);
        let a = rng.vec(nq * td, 1.0);
        let mems: Vec<Vec<Vec<f32>>> = counts.iter().map(|&c| (0..c).map(|_| rng.vec(td, 1.0)).collect()).collect();
        let sel: Vec<Vec<&[f32]>> = mems.iter().map(|q| q.iter().map(Vec::as_slice).collect()).collect();
        let input = AggInput { m_x: &mx, selected: &sel, a: &a };
        let (out, tape) = aggregator::forward(&cfg, &bp, &input).unwrap();
        let b64: Vec<Blk> = bp.iter().map(blk64).collect();
        let want: Vec<f64> = (0..nq).flat_map(|q| {
            let s64: Vec<Vec<f64>> = mems[q].iter().map(|m| to64(m)).collect();
            psi_ref(&cfg, &b64, &to64(&mx[q * td..(q + 1) * td]), &s64, &to64(&a[q * td..(q + 1) * td]))
        }).collect();
        check(&out, &want, "A′");

        // L = Σ c ⊙ A′ for a random c.
        let c = to64(&rng.vec(nq * td, 1.0));
        let mut grads = cmt_compress::Params::zeros(&cfg).blocks;
        let c32: Vec<f32> = c.iter().map(|&x| x as f32).collect();
        let g = aggregator::backward(&cfg, &bp, &tape, &c32, &mut grads).unwrap();
        let loss_q = |q: usize, b: &[Blk], mxq: &[f64], s: &[Vec<f64>], aq: &[f64]| -> f64 {
            psi_ref(&cfg, b, mxq, s, aq).iter().zip(&c[q * td..(q + 1) * td]).map(|(o, w)| o * w).sum()
        };
        for q in 0..nq {
            let s64: Vec<Vec<f64>> = mems[q].iter().map(|m| to64(m)).collect();
            let (mxq, aq) = (to64(&mx[q * td..(q + 1) * td]), to64(&a[q * td..(q + 1) * td]));
            check(&g.d_mx[q * td..(q + 1) * td], &fd(&mxq, &|x| loss_q(q, &b64, x, &s64, &aq)), "dM_x");
            check(&g.d_a[q * td..(q + 1) * td], &fd(&aq, &|x| loss_q(q, &b64, &mxq, &s64, x)), "dA");
            for i in 0..s64.len() {
                let f = |x: &[f64]| { let mut s = s64.clone(); s[i] = x.to_vec(); loss_q(q, &b64, &mxq, &s, &aq) };
                check(&g.d_selected[q][i], &fd(&s64[i], &f), "dM_sel");
            }
        }
        let total = |b: &[Blk]| -> f64 {
            (0..nq).map(|q| {
                let s64: Vec<Vec<f64>> = mems[q].iter().map(|m| to64(m)).collect();
                loss_q(q, b, &to64(&mx[q * td..(q + 1) * td]), &s64, &to64(&a[q * td..(q + 1) * td]))
            }).sum()
        };
        for (bi, gb) in grads.iter().enumerate() {
            for (ti, (name, gt)) in cmt_core::params::block_tensors(gb).iter().enumerate() {
                let f = |x: &[f64]| {
                    let mut b: Vec<Blk> = bp.iter().map(blk64).collect();
                    b[bi].t[ti] = x.to_vec();
                    total(&b)
                };
                check(gt, &fd(&b64[bi].t[ti], &f), &format!("block {bi} {name}"));
            }
        }
    }

    #[test]
    fn prefix_generator_matches_f64_and_finite_differences(
        layers in 1usize..=3,
        kv_heads in 1usize..=2,
        head_dim in prop::sample::select(vec![2usize, 4]),
        d in prop::sample::select(vec![4usize, 6]),
        p in 1usize..=3,
        rank in 1usize..=3,
        n in 1usize..=2,
        seed in 0u64..1000,
    ) {
        let dm = PrefixDims { layers, kv_heads, head_dim, d, p, rank, mode: PrefixMode::Kv, soft_scale: 1.0 };
        let mut w = PrefixParams::init(&dm, seed);
        let mut rng = Rng(seed + 9);
        for (_, t) in w.tensors_mut() {
            t.iter_mut().for_each(|x| *x += 0.5 * rng.next());
        }
        let a = rng.vec(n * p * d, 1.0);
        let (pre, tape) = prefix::forward(&dm, &w, &a).unwrap();
        let w64: Vec<Vec<f64>> = w.tensors().iter().map(|(_, t)| to64(t)).collect();
        for (q, pr) in pre.iter().enumerate() {
            prop_assert_eq!(pr.len, p);
            let (k, v) = prefix_ref(&dm, &w64[0], &w64[1], &w64[2], &w64[3], &to64(&a[q * p * d..(q + 1) * p * d]));
            check(&pr.k, &k, "K");
            check(&pr.v, &v, "V");
        }
        let per = layers * kv_heads * p * head_dim;
        let cs: Vec<(Vec<f32>, Vec<f32>)> = (0..n).map(|_| (rng.vec(per, 1.0), rng.vec(per, 1.0))).collect();
        let dpre: Vec<(&[f32], &[f32])> = cs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        let mut g = PrefixParams::zeros(&dm);
        let da = prefix::backward(&dm, &w, &tape, &dpre, &mut g).unwrap();
        let loss = |t: &[Vec<f64>], a: &[f64]| -> f64 {
            (0..n).map(|q| {
                let (k, v) = prefix_ref(&dm, &t[0], &t[1], &t[2], &t[3], &a[q * p * d..(q + 1) * p * d]);
                k.iter().zip(&cs[q].0).map(|(x, c)| x * *c as f64).sum::<f64>()
                    + v.iter().zip(&cs[q].1).map(|(x, c)| x * *c as f64).sum::<f64>()
            }).sum()
        };
        check(&da, &fd(&to64(&a), &|x| loss(&w64, x)), "dA′");
        for (ti, (name, gt)) in g.tensors().iter().enumerate() {
            let f = |x: &[f64]| { let mut t = w64.clone(); t[ti] = x.to_vec(); loss(&t, &to64(&a)) };
            check(gt, &fd(&w64[ti], &f), name);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn soft_prefix_generator_matches_f64_and_finite_differences(
        d in prop::sample::select(vec![4usize, 6]),
        p in 1usize..=3,
        rank in 1usize..=3,
        n in 1usize..=2,
        seed in 0u64..1000,
    ) {
        let dm = PrefixDims {
            layers: 2, kv_heads: 1, head_dim: 2, d, p, rank,
            mode: PrefixMode::Soft, soft_scale: 0.3,
        };
        let fresh = PrefixParams::init(&dm, seed);
        // Fresh: E is the normalised A′ at the soft scale (up and bias start at zero).
        prop_assert!(fresh.norm.iter().all(|&g| g == 0.3));
        prop_assert!(fresh.up.iter().chain(&fresh.bias).all(|&x| x == 0.0));
        let mut w = fresh;
        let mut rng = Rng(seed + 9);
        for (_, t) in w.tensors_mut() {
            t.iter_mut().for_each(|x| *x += 0.5 * rng.next());
        }
        let a = rng.vec(n * p * d, 1.0);
        let (e, tape) = soft_prefix::forward(&dm, &w, &a).unwrap();
        let w64: Vec<Vec<f64>> = w.tensors().iter().map(|(_, t)| to64(t)).collect();
        check(&e, &soft_ref(&dm, &w64[0], &w64[1], &w64[2], &w64[3], &to64(&a)), "E");
        let c = rng.vec(e.len(), 1.0);
        let mut g = PrefixParams::zeros(&dm);
        let da = soft_prefix::backward(&dm, &w, &tape, &c, &mut g).unwrap();
        let loss = |t: &[Vec<f64>], a: &[f64]| -> f64 {
            soft_ref(&dm, &t[0], &t[1], &t[2], &t[3], a).iter().zip(&c).map(|(x, c)| x * *c as f64).sum()
        };
        check(&da, &fd(&to64(&a), &|x| loss(&w64, x)), "dA′");
        for (ti, (name, gt)) in g.tensors().iter().enumerate() {
            let f = |x: &[f64]| { let mut t = w64.clone(); t[ti] = x.to_vec(); loss(&t, &to64(&a)) };
            check(gt, &fd(&w64[ti], &f), name);
        }
        // The two modes refuse each other's calls.
        prop_assert!(prefix::forward(&dm, &w, &a).is_err());
    }
}

#[test]
fn default_prefix_generator_is_under_five_percent_of_the_default_model() {
    // SmolLM2-135M: 30 layers, 3 kv heads of 64, hidden 576, 134.5M parameters.
    let dm = PrefixDims {
        layers: 30,
        kv_heads: 3,
        head_dim: 64,
        d: 576,
        p: 16,
        rank: 64,
        mode: PrefixMode::Kv,
        soft_scale: 1.0,
    };
    let n = PrefixParams::zeros(&dm).num_params();
    assert_eq!(n, 576 + 30 * 2 * (64 * 576 + 192 * 64 + 192));
    assert!((n as f64) < 0.05 * 134_515_008.0, "{n}");
}
