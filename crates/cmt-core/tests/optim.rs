//! AdamW against the update written out in f64 from the paper's algorithm, the schedule's
//! shape, clipping, and exact continuation from a copied state.
use cmt_core::train::optim::{AdamW, AdamWConfig};

/// Loshchilov & Hutter, Algorithm 2 (with Adam's bias correction), in f64.
fn reference(cfg: &AdamWConfig, p0: &[f64], grads: &[Vec<f64>], decay: bool) -> Vec<f64> {
    let (mut p, mut m, mut v) = (p0.to_vec(), vec![0.0; p0.len()], vec![0.0; p0.len()]);
    for (t, g) in grads.iter().enumerate() {
        let t = t as u64 + 1;
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let s = if cfg.clip > 0.0 && norm > cfg.clip as f64 {
            cfg.clip as f64 / norm
        } else {
            1.0
        };
        let lr = cfg.lr_at(t) as f64;
        let (b1, b2) = (cfg.beta1 as f64, cfg.beta2 as f64);
        for j in 0..p.len() {
            let gj = g[j] * s;
            m[j] = b1 * m[j] + (1.0 - b1) * gj;
            v[j] = b2 * v[j] + (1.0 - b2) * gj * gj;
            let mh = m[j] / (1.0 - b1.powi(t as i32));
            let vh = v[j] / (1.0 - b2.powi(t as i32));
            let wd = if decay { cfg.weight_decay as f64 } else { 0.0 };
            p[j] -= lr * (wd * p[j] + mh / (vh.sqrt() + cfg.eps as f64));
        }
    }
    p
}

fn cfg() -> AdamWConfig {
    AdamWConfig {
        lr: 0.05,
        weight_decay: 0.1,
        warmup: 3,
        total: 12,
        min_lr: 0.001,
        clip: 1.5,
        ..Default::default()
    }
}

#[test]
fn matches_the_written_out_update_with_clipping_and_decay() {
    let c = cfg();
    let p0 = vec![0.5f32, -1.0, 2.0, 0.0];
    let q0 = vec![1.5f32, -0.25];
    let grads: Vec<(Vec<f32>, Vec<f32>)> = (0..12)
        .map(|t| {
            let t = t as f32;
            (
                vec![0.3 * t.sin(), 1.0 - 0.1 * t, 0.7, -0.2 * t],
                vec![0.05 * t, (t * 0.7).cos()],
            )
        })
        .collect();
    let mut opt = AdamW::new(c.clone(), &[4, 2]);
    let (mut p, mut q) = (p0.clone(), q0.clone());
    let mut clipped = 0;
    for (gp, gq) in &grads {
        let info = opt
            .step(&mut [&mut p, &mut q], &[gp, gq], &[true, false])
            .unwrap();
        clipped += (info.grad_norm > c.clip) as usize;
    }
    assert!(
        clipped > 3 && clipped < 12,
        "the case must exercise both sides of the clip"
    );
    // Clipping is over the global norm: the reference sees both tensors' gradients at once.
    let joint: Vec<Vec<f64>> = grads
        .iter()
        .map(|(a, b)| a.iter().chain(b).map(|&x| x as f64).collect())
        .collect();
    let p64: Vec<f64> = p0.iter().chain(&q0).map(|&x| x as f64).collect();
    let want_decay = reference(&c, &p64, &joint, true);
    let want_plain = reference(&c, &p64, &joint, false);
    for j in 0..4 {
        assert!(
            (p[j] as f64 - want_decay[j]).abs() < 1e-5,
            "p[{j}] {} vs {}",
            p[j],
            want_decay[j]
        );
    }
    for j in 0..2 {
        assert!(
            (q[j] as f64 - want_plain[4 + j]).abs() < 1e-5,
            "q[{j}] {} vs {}",
            q[j],
            want_plain[4 + j]
        );
    }
}

#[test]
fn schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor() {
    let c = cfg();
    assert!((c.lr_at(1) - 0.05 / 3.0).abs() < 1e-7);
    assert!((c.lr_at(3) - 0.05).abs() < 1e-7);
    let mid = c.lr_at(3 + 9 / 2) as f64;
    let want = 0.001 + 0.049 * 0.5 * (1.0 + (std::f64::consts::PI * 4.0 / 9.0).cos());
    assert!((mid - want).abs() < 1e-6, "{mid} vs {want}");
    assert!((c.lr_at(12) - 0.001).abs() < 1e-7);
    assert!((c.lr_at(100) - 0.001).abs() < 1e-7);
    let lrs: Vec<f32> = (3..=12).map(|t| c.lr_at(t)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
}

#[test]
fn a_copied_state_continues_bit_exactly_and_bad_input_is_refused() {
    let mut a = AdamW::new(cfg(), &[3]);
    let mut p = vec![1.0f32, 2.0, 3.0];
    let g = |t: usize| vec![0.1 * t as f32, -0.2, 0.3];
    for t in 0..4 {
        a.step(&mut [&mut p], &[&g(t)], &[true]).unwrap();
    }
    let (mut b, mut q) = (a.clone(), p.clone());
    for t in 4..8 {
        a.step(&mut [&mut p], &[&g(t)], &[true]).unwrap();
        b.step(&mut [&mut q], &[&g(t)], &[true]).unwrap();
    }
    assert_eq!(p, q);
    assert_eq!(a, b);
    assert!(a
        .step(&mut [&mut p], &[&[f32::NAN, 0.0, 0.0]], &[true])
        .is_err());
    assert!(a.step(&mut [&mut p], &[&[0.0, 0.0]], &[true]).is_err());
}
