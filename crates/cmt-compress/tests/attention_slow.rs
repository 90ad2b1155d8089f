//! The unfused cross-attention (`attention::slow`) against an independent f64 scalar
//! forward and its central finite differences; padding and shape errors.
mod attn_common;

use attn_common::{assert_close, forward_f64, to64, Case, Grads};
use cmt_compress::attention::{slow, CrossAttnDims};
use cmt_compress::Error;

fn small_case(seed: u64) -> Case {
    let dims = CrossAttnDims {
        t: 3,
        d: 8,
        heads: 2,
        head_dim: 4,
    };
    // len = 1, a middle length, and len = n_max.
    Case::random(dims, 5, vec![1, 3, 5], seed, 1.5)
}

fn f64_forward(c: &Case, h: &[f64], g: &[f64], wk: &[f64], wv: &[f64], q: &[f64]) -> Vec<f64> {
    forward_f64(&c.dims, c.n_max, &c.lens, h, g, wk, wv, c.eps as f64, q)
}

#[test]
fn slow_forward_matches_f64_reference() {
    for seed in 0..4 {
        let c = small_case(seed);
        let mut out = vec![f32::NAN; c.out_len()];
        slow::forward(&c.dims, &c.docs(), &c.weights(), &c.q, &mut out).unwrap();
        let want = f64_forward(
            &c,
            &to64(&c.h),
            &to64(&c.g_h),
            &to64(&c.wk),
            &to64(&c.wv),
            &to64(&c.q),
        );
        assert_close("out", &out, &want, 1e-5, 1e-4);
    }
}

/// Central differences of L = Σ d_out ⊙ out in f64 with respect to every input value.
fn finite_differences(c: &Case) -> [Vec<f64>; 5] {
    let base = [
        to64(&c.q),
        to64(&c.wk),
        to64(&c.wv),
        to64(&c.g_h),
        to64(&c.h),
    ];
    let dout = to64(&c.d_out);
    let loss = |v: &[Vec<f64>; 5]| -> f64 {
        let out = f64_forward(c, &v[4], &v[3], &v[1], &v[2], &v[0]);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum()
    };
    let step = 1e-6;
    std::array::from_fn(|which| {
        (0..base[which].len())
            .map(|i| {
                let mut v = base.clone();
                v[which][i] += step;
                let up = loss(&v);
                v[which][i] -= 2.0 * step;
                let down = loss(&v);
                (up - down) / (2.0 * step)
            })
            .collect()
    })
}

#[test]
fn slow_backward_matches_finite_differences() {
    for seed in 10..13 {
        let c = small_case(seed);
        let init = Grads::filled(&c, seed + 100);
        let mut g = init.clone();
        slow::backward(
            &c.dims,
            &c.docs(),
            &c.weights(),
            &c.q,
            &c.d_out,
            &mut g.view(),
        )
        .unwrap();
        let fd = finite_differences(&c);
        for (k, ((name, got), want)) in g.named().into_iter().zip(&fd).enumerate() {
            // dq is overwritten; the others accumulate onto what the buffer held.
            let want: Vec<f64> = if k == 0 {
                want.clone()
            } else {
                want.iter()
                    .zip(init.named()[k].1)
                    .map(|(w, i)| w + *i as f64)
                    .collect()
            };
            assert_close(name, got, &want, 2e-5, 1e-4);
        }
    }
}

#[test]
fn slow_padding_rows_have_no_influence() {
    let c = small_case(7);
    let mut c2 = c.clone();
    let d = c.dims.d;
    for (b, &len) in c.lens.iter().enumerate() {
        for x in &mut c2.h[(b * c.n_max + len) * d..(b + 1) * c.n_max * d] {
            *x = -*x * 0.37 + 5.0;
        }
    }
    let (mut o1, mut o2) = (vec![0.0; c.out_len()], vec![0.0; c.out_len()]);
    slow::forward(&c.dims, &c.docs(), &c.weights(), &c.q, &mut o1).unwrap();
    slow::forward(&c2.dims, &c2.docs(), &c2.weights(), &c2.q, &mut o2).unwrap();
    assert_eq!(o1, o2);
    let init = Grads::filled(&c, 3);
    let (mut g1, mut g2) = (init.clone(), init.clone());
    slow::backward(
        &c.dims,
        &c.docs(),
        &c.weights(),
        &c.q,
        &c.d_out,
        &mut g1.view(),
    )
    .unwrap();
    slow::backward(
        &c2.dims,
        &c2.docs(),
        &c2.weights(),
        &c2.q,
        &c2.d_out,
        &mut g2.view(),
    )
    .unwrap();
    assert_eq!(g1, g2);
    // Padding rows of dh are untouched, valid rows are not.
    for (b, &len) in c.lens.iter().enumerate() {
        let pad = (b * c.n_max + len) * d..(b + 1) * c.n_max * d;
        assert_eq!(
            g1.dh[pad.clone()],
            init.dh[pad],
            "doc {b}: padding rows of dh changed"
        );
        let valid = b * c.n_max * d..(b * c.n_max + len) * d;
        assert_ne!(
            g1.dh[valid.clone()],
            init.dh[valid],
            "doc {b}: valid rows of dh unchanged"
        );
    }
}

#[test]
fn slow_shape_errors_name_the_buffer() {
    let c = small_case(1);
    let mut out = vec![0.0; c.out_len() + 1];
    let e = slow::forward(&c.dims, &c.docs(), &c.weights(), &c.q, &mut out).unwrap_err();
    assert!(matches!(&e, Error::Shape(m) if m.contains("out")), "{e}");
    let mut g = Grads::filled(&c, 0);
    g.dwv.pop();
    let e = slow::backward(
        &c.dims,
        &c.docs(),
        &c.weights(),
        &c.q,
        &c.d_out,
        &mut g.view(),
    )
    .unwrap_err();
    assert!(matches!(&e, Error::Shape(m) if m.contains("dwv")), "{e}");
    let mut lens = c.lens.clone();
    lens[1] = 0;
    let mut c0 = c.clone();
    c0.lens = lens;
    let mut out = vec![0.0; c.out_len()];
    let e = slow::forward(&c0.dims, &c0.docs(), &c0.weights(), &c0.q, &mut out).unwrap_err();
    assert!(
        matches!(&e, Error::Shape(m) if m.contains("document 1")),
        "{e}"
    );
}
