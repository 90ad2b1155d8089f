//! Each backward function against central finite differences of a plain f64 forward of
//! the same op, on small random shapes (proptest).
use super::ops::*;
use proptest::prelude::*;

fn rng_vec(seed: u64, n: usize, scale: f64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Central differences of L(x) = Σ dy · f(x) for each coordinate of x.
fn fd(x: &[f64], dy: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let h = 1e-6;
    (0..x.len())
        .map(|i| {
            let mut a = x.to_vec();
            a[i] += h;
            let up: f64 = f(&a).iter().zip(dy).map(|(y, g)| y * g).sum();
            a[i] -= 2.0 * h;
            let down: f64 = f(&a).iter().zip(dy).map(|(y, g)| y * g).sum();
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn assert_grad(name: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 * scale + 1e-5,
            "{name}[{i}]: {g} vs {w}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn rmsnorm(rows in 1usize..4, d in 1usize..40, seed in 0u64..1000) {
        let (x, w, dy) = (rng_vec(seed, rows * d, 2.0), rng_vec(seed + 1, d, 1.5), rng_vec(seed + 2, rows * d, 1.0));
        let eps = 1e-5;
        let fwd = |x: &[f64]| -> Vec<f64> {
            x.chunks(d).flat_map(|r| {
                let s = 1.0 / (r.iter().map(|a| a * a).sum::<f64>() / d as f64 + eps).sqrt();
                r.iter().zip(&w).map(move |(a, b)| a * s * b).collect::<Vec<_>>()
            }).collect()
        };
        let init = rng_vec(seed + 3, rows * d, 1.0);
        let mut dx = f32s(&init);
        rmsnorm_backward(&f32s(&x), &f32s(&w), &f32s(&dy), &mut dx, eps as f32);
        let want: Vec<f64> = fd(&x, &dy, fwd).iter().zip(&init).map(|(g, i)| g + i).collect();
        assert_grad("rmsnorm dx (accumulated)", &dx, &want);
    }

    #[test]
    fn rope(rows in 1usize..4, heads in 1usize..3, half in 1usize..5, seed in 0u64..1000) {
        let hd = 2 * half;
        let max_pos = 20;
        let theta = 10_000.0f64;
        let positions: Vec<u32> = (0..rows).map(|r| ((r as u64 * 7 + seed) % max_pos as u64) as u32).collect();
        let ang = |p: u32, i: usize| p as f64 / theta.powf(2.0 * i as f64 / hd as f64);
        let cos: Vec<f32> = (0..max_pos as u32).flat_map(|p| (0..half).map(move |i| ang(p, i).cos() as f32)).collect();
        let sin: Vec<f32> = (0..max_pos as u32).flat_map(|p| (0..half).map(move |i| ang(p, i).sin() as f32)).collect();
        let (x, dy) = (rng_vec(seed, rows * heads * hd, 1.0), rng_vec(seed + 1, rows * heads * hd, 1.0));
        let fwd = |x: &[f64]| -> Vec<f64> {
            let mut y = x.to_vec();
            for (r, row) in y.chunks_mut(heads * hd).enumerate() {
                for h in row.chunks_mut(hd) {
                    for i in 0..half {
                        let (c, s) = (ang(positions[r], i).cos(), ang(positions[r], i).sin());
                        let (a, b) = (h[i], h[i + half]);
                        h[i] = a * c - b * s;
                        h[i + half] = b * c + a * s;
                    }
                }
            }
            y
        };
        let mut g = f32s(&dy);
        rope_backward(&mut g, &positions, heads, hd, &cos, &sin);
        assert_grad("rope", &g, &fd(&x, &dy, fwd));
    }

    #[test]
    fn swiglu(n in 1usize..50, seed in 0u64..1000) {
        let (g0, u0, dy) = (rng_vec(seed, n, 4.0), rng_vec(seed + 1, n, 2.0), rng_vec(seed + 2, n, 1.0));
        let silu = |a: f64| a / (1.0 + (-a).exp());
        let dg_want = fd(&g0, &dy, |g: &[f64]| g.iter().zip(&u0).map(|(a, b)| silu(*a) * b).collect());
        let du_want = fd(&u0, &dy, |u: &[f64]| g0.iter().zip(u).map(|(a, b)| silu(*a) * b).collect());
        let (mut g, mut u) = (f32s(&g0), f32s(&u0));
        swiglu_backward(&mut g, &mut u, &f32s(&dy));
        assert_grad("swiglu d_gate", &g, &dg_want);
        assert_grad("swiglu d_up", &u, &du_want);
    }

    #[test]
    fn cross_entropy(rows in 1usize..4, vocab in 2usize..30, seed in 0u64..1000) {
        let z = rng_vec(seed, rows * vocab, 5.0);
        let targets: Vec<u32> = (0..rows).map(|r| ((seed as usize + r * 3) % vocab) as u32).collect();
        let scale = 1.0 / rows as f64;
        let loss = |z: &[f64]| -> Vec<f64> {
            vec![z.chunks(vocab).zip(&targets).map(|(r, &y)| {
                let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                r.iter().map(|a| (a - m).exp()).sum::<f64>().ln() + m - r[y as usize]
            }).sum::<f64>() * scale]
        };
        let mut g = f32s(&z);
        let total = cross_entropy_backward(&mut g, &targets, vocab, scale as f32);
        prop_assert!((total * scale - loss(&z)[0]).abs() < 1e-5);
        assert_grad("cross entropy", &g, &fd(&z, &[1.0], loss));
    }

    /// One sequence, one kv group, with `p` prefix slots in front of its rows.
    #[test]
    fn attention(rows in 1usize..5, p in 0usize..4, group in 1usize..3, kv_heads in 1usize..3, half in 1usize..4, seed in 0u64..1000) {
        let hd = 2 * half;
        let heads = group * kv_heads;
        let (qd, cap) = (heads * hd, p + rows + 1);
        let q = rng_vec(seed, rows * qd, 1.5);
        let k = rng_vec(seed + 1, kv_heads * cap * hd, 1.5);
        let v = rng_vec(seed + 2, kv_heads * cap * hd, 1.0);
        let dy = rng_vec(seed + 3, rows * qd, 1.0);
        let scale = 1.0 / (hd as f64).sqrt();
        // out[r, h] = Σ_{t ≤ p + r} softmax_t(q[r,h]·k[g,t]·scale) v[g,t]
        let fwd = |q: &[f64], k: &[f64], v: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; rows * qd];
            for r in 0..rows {
                for h in 0..heads {
                    let g = h / group;
                    let qh = &q[r * qd + h * hd..r * qd + (h + 1) * hd];
                    let kt = |t: usize| &k[(g * cap + t) * hd..(g * cap + t + 1) * hd];
                    let s: Vec<f64> = (0..=p + r).map(|t| qh.iter().zip(kt(t)).map(|(a, b)| a * b).sum::<f64>() * scale).collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|a| (a - m).exp()).sum();
                    for (t, st) in s.iter().enumerate() {
                        for j in 0..hd {
                            out[r * qd + h * hd + j] += (st - m).exp() / z * v[(g * cap + t) * hd + j];
                        }
                    }
                }
            }
            out
        };
        let dq_want = fd(&q, &dy, |x| fwd(x, &k, &v));
        let dk_want = fd(&k, &dy, |x| fwd(&q, x, &v));
        let dv_want = fd(&v, &dy, |x| fwd(&q, &k, x));
        let (q32, k32, v32, dy32) = (f32s(&q), f32s(&k), f32s(&v), f32s(&dy));
        let mut dq = vec![0.0f32; rows * qd];
        let mut dk = vec![0.0f32; kv_heads * cap * hd];
        let mut dv = vec![0.0f32; kv_heads * cap * hd];
        let mut scratch = Vec::new();
        let w = group * hd;
        for g in 0..kv_heads {
            let blk = g * cap * hd..(g + 1) * cap * hd;
            let mut local = vec![0.0f32; rows * w];
            attention_backward_group(&q32, &dy32, &mut local, &k32[blk.clone()], &v32[blk.clone()], &mut dk[blk.clone()], &mut dv[blk.clone()],
                AttnSeq { row_start: 0, rows, pos: p }, g, heads, kv_heads, hd, &mut scratch);
            for r in 0..rows {
                dq[r * qd + g * w..r * qd + (g + 1) * w].copy_from_slice(&local[r * w..(r + 1) * w]);
            }
        }
        assert_grad("attention dq", &dq, &dq_want);
        assert_grad("attention dk", &dk, &dk_want);
        assert_grad("attention dv", &dv, &dv_want);
    }
}
