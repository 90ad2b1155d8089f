//! The whole compressor against its f64 reference (tests/common/reference.rs): forward
//! values, and every gradient (all parameters and H) against central finite differences of
//! the reference in f64. Also padding and batching invariance.
mod common;

use cmt_compress::attention::DocBatch;
use cmt_compress::{Compressor, CompressorConfig, Params};
use common::reference;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn small_config() -> CompressorConfig {
    CompressorConfig {
        d: 12,
        mem_tokens: 3,
        blocks: 2,
        heads: 2,
        head_dim: 4,
        mlp_hidden: 10,
        key_dim: 5,
        eps: 1e-6,
        input_stats: None,
    }
}

/// Random hidden states `[docs, n_max, d]` at the scale of a model's final-norm output;
/// padding rows hold garbage that must not matter.
fn hidden(rng: &mut StdRng, docs: usize, n_max: usize, d: usize, lens: &[usize]) -> Vec<f32> {
    let mut h: Vec<f32> = (0..docs * n_max * d)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    for (doc, &len) in lens.iter().enumerate() {
        for v in &mut h[(doc * n_max + len) * d..(doc + 1) * n_max * d] {
            *v = 1e3;
        }
    }
    h
}

/// Parameters with every tensor random (norm gains around 1), so no gradient is trivially
/// zero.
fn random_params(cfg: &CompressorConfig, seed: u64) -> Params {
    let mut p = Params::init(cfg, seed).expect("valid config");
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for (name, t) in p.tensors_mut() {
        if name.contains("norm") {
            t.iter_mut().for_each(|v| *v = rng.random_range(0.5..1.5));
        } else if name.ends_with("wo") || name.ends_with("w2") {
            t.iter_mut().for_each(|v| *v *= 2.0);
        }
    }
    p
}

fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, reference {w} (|Δ| {err:.3e})"
        );
    }
}

#[test]
fn forward_matches_f64_reference() {
    let cfg = small_config();
    let mut rng = StdRng::seed_from_u64(1);
    let (n_max, lens) = (7, [7usize, 4, 1]);
    let h = hidden(&mut rng, lens.len(), n_max, cfg.d, &lens);
    let comp = Compressor::new(cfg.clone(), random_params(&cfg, 2)).expect("compressor");
    let batch = DocBatch {
        h: &h,
        n_max,
        lens: &lens,
    };
    let out = comp.forward(&batch).expect("forward");
    let h64: Vec<f64> = h.iter().map(|&v| f64::from(v)).collect();
    let (mem, keys) =
        reference::forward(&cfg, &reference::to_f64(&comp.params), &h64, n_max, &lens);
    assert_close("memories", &out.memories, &mem, 1e-4, 1e-5);
    assert_close("keys", &out.keys, &keys, 1e-4, 1e-6);
}

#[test]
fn gradients_match_finite_differences_of_f64_reference() {
    let cfg = small_config();
    let mut rng = StdRng::seed_from_u64(3);
    let (n_max, lens) = (6, [6usize, 3]);
    let h = hidden(&mut rng, lens.len(), n_max, cfg.d, &lens);
    let comp = Compressor::new(cfg.clone(), random_params(&cfg, 4)).expect("compressor");
    let batch = DocBatch {
        h: &h,
        n_max,
        lens: &lens,
    };
    let (t, d, kd) = (cfg.mem_tokens, cfg.d, cfg.key_dim);
    // Loss L = Σ c_M·M + Σ c_k·key with fixed random cotangents.
    let c_mem: Vec<f32> = (0..lens.len() * t * d)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let c_key: Vec<f32> = (0..lens.len() * kd)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let (_, tape) = comp.forward_train(&batch).expect("forward");
    let mut grads = Params::zeros(&cfg);
    let mut dh = vec![0.0f32; h.len()];
    comp.backward(
        &batch,
        &tape,
        Some(&c_mem),
        Some(&c_key),
        &mut grads,
        Some(&mut dh),
    )
    .expect("backward");

    let h64: Vec<f64> = h.iter().map(|&v| f64::from(v)).collect();
    let loss = |p: &reference::RefParams, h: &[f64]| {
        let (m, k) = reference::forward(&cfg, p, h, n_max, &lens);
        let lm: f64 = m.iter().zip(&c_mem).map(|(m, &c)| m * f64::from(c)).sum();
        let lk: f64 = k.iter().zip(&c_key).map(|(k, &c)| k * f64::from(c)).sum();
        lm + lk
    };
    let base = reference::to_f64(&comp.params);
    let step = 1e-5;
    // Per tensor: every entry of small tensors, a spread sample of large ones.
    for (name, g) in grads.tensors() {
        let n = g.len();
        let picks: Vec<usize> = if n <= 24 {
            (0..n).collect()
        } else {
            (0..24).map(|i| (i * n / 24 + i % 3).min(n - 1)).collect()
        };
        let mut fd = Vec::new();
        for &i in &picks {
            let mut p = base.clone();
            let v = p.get_mut(&name).expect("tensor");
            v[i] += step;
            let up = loss(&p, &h64);
            let v = p.get_mut(&name).expect("tensor");
            v[i] -= 2.0 * step;
            let down = loss(&p, &h64);
            fd.push((up - down) / (2.0 * step));
        }
        let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            scale > 1e-6,
            "{name}: finite differences all ~0, the check would be vacuous"
        );
        let got: Vec<f32> = picks.iter().map(|&i| g[i]).collect();
        assert_close(&format!("d{name}"), &got, &fd, 2e-3, 2e-4 * scale);
    }
    // H: valid rows against finite differences; padding rows get exactly nothing.
    let mut fd = Vec::new();
    let mut got = Vec::new();
    for (doc, &len) in lens.iter().enumerate() {
        for j in [0, len - 1] {
            for c in [0, 5, d - 1] {
                let i = (doc * n_max + j) * d + c;
                let mut hp = h64.clone();
                hp[i] += step;
                let up = loss(&base, &hp);
                hp[i] -= 2.0 * step;
                let down = loss(&base, &hp);
                fd.push((up - down) / (2.0 * step));
                got.push(dh[i]);
            }
        }
        let pad = &dh[(doc * n_max + len) * d..(doc + 1) * n_max * d];
        assert!(
            pad.iter().all(|&v| v == 0.0),
            "document {doc}: gradient on padding rows"
        );
    }
    let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close("dH", &got, &fd, 2e-3, 2e-4 * scale);
}

#[test]
fn batching_and_padding_do_not_change_a_document() {
    let cfg = small_config();
    let mut rng = StdRng::seed_from_u64(5);
    let comp = Compressor::init(cfg.clone(), 6).expect("compressor");
    let (n_max, lens) = (9, [9usize, 2, 5]);
    let h = hidden(&mut rng, lens.len(), n_max, cfg.d, &lens);
    let all = comp
        .forward(&DocBatch {
            h: &h,
            n_max,
            lens: &lens,
        })
        .expect("batch");
    let (t, d, kd) = (cfg.mem_tokens, cfg.d, cfg.key_dim);
    for (doc, &len) in lens.iter().enumerate() {
        let alone = &h[doc * n_max * d..(doc * n_max + len) * d];
        let one = comp
            .forward(&DocBatch {
                h: alone,
                n_max: len,
                lens: &[len],
            })
            .expect("alone");
        let mem = &all.memories[doc * t * d..(doc + 1) * t * d];
        let key = &all.keys[doc * kd..(doc + 1) * kd];
        for (x, y) in one.memories.iter().zip(mem).chain(one.keys.iter().zip(key)) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "document {doc}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn bad_batches_give_errors_not_panics() {
    let cfg = small_config();
    let comp = Compressor::init(cfg.clone(), 7).expect("compressor");
    let h = vec![0.5f32; 2 * 4 * cfg.d];
    let err = comp
        .forward(&DocBatch {
            h: &h,
            n_max: 4,
            lens: &[4, 0],
        })
        .unwrap_err();
    assert!(err.to_string().contains("document 1"), "{err}");
    let err = comp
        .forward(&DocBatch {
            h: &h[1..],
            n_max: 4,
            lens: &[4, 4],
        })
        .unwrap_err();
    assert!(err.to_string().contains("hidden states hold"), "{err}");
    let err = comp
        .forward(&DocBatch {
            h: &[],
            n_max: 4,
            lens: &[],
        })
        .unwrap_err();
    assert!(err.to_string().contains("empty batch"), "{err}");
}

#[test]
fn default_config_for_the_default_model_and_config_errors() {
    let c = CompressorConfig::for_hidden(576);
    assert_eq!(
        (c.mem_tokens, c.blocks, c.heads, c.head_dim, c.key_dim),
        (16, 2, 9, 64, 128)
    );
    c.validate().expect("valid");
    let odd = CompressorConfig::for_hidden(60);
    assert_eq!(odd.heads * odd.head_dim, 60);
    let mut bad = c.clone();
    bad.heads = 0;
    let err = Compressor::init(bad, 1)
        .expect_err("zero heads accepted")
        .to_string();
    assert!(err.contains("heads must be positive"), "{err}");
    let mut bad = c;
    bad.eps = f32::NAN;
    assert!(bad.validate().is_err());
}
