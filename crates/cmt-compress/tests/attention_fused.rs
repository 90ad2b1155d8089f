//! The fused cross-attention against the unfused composition (`slow`), forward and every
//! gradient, on random shapes with ragged documents.
mod attn_common;

use attn_common::{assert_close, to64, Case, Grads};
use cmt_compress::attention::{fused, slow, CrossAttnDims};
use cmt_compress::Error;
use proptest::prelude::*;

const RTOL: f64 = 1e-4;

/// atol scaled to the buffer's magnitude, floored at the O(1) scale of the terms: f32
/// rounding is relative to the size of the summed terms, not of a cancelling result (with
/// len = 1 the softmax is constant and the exact dq is 0, built from O(1) terms that
/// cancel).
fn atol_for(want: &[f64]) -> f64 {
    let max = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    1e-5 * max.max(1.0)
}

fn check_case(c: &Case) {
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

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        1usize..=5,
        1usize..=4,
        1usize..=24,
        1usize..=40,
        1usize..=140,
        1usize..=4,
    )
        .prop_flat_map(|(t, heads, head_dim, d, n_max, ndocs)| {
            let lens = proptest::collection::vec(
                prop_oneof![Just(1usize), Just(n_max), 1usize..=n_max],
                ndocs,
            );
            (
                Just((t, heads, head_dim, d, n_max)),
                lens,
                any::<u64>(),
                0.2f32..4.0,
            )
        })
        .prop_map(|((t, heads, head_dim, d, n_max), lens, seed, qs)| {
            Case::random(
                CrossAttnDims {
                    t,
                    d,
                    heads,
                    head_dim,
                },
                n_max,
                lens,
                seed,
                qs,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn fused_matches_slow_on_random_shapes(c in case_strategy()) {
        check_case(&c);
    }
}

#[test]
fn fused_matches_slow_on_bench_like_shape() {
    // Several tiles per document, ragged, the production widths (fewer documents).
    let dims = CrossAttnDims {
        t: 16,
        d: 576,
        heads: 9,
        head_dim: 64,
    };
    check_case(&Case::random(dims, 200, vec![200, 1, 64, 129, 65], 5, 1.0));
}

#[test]
fn fused_many_documents_and_single_thread() {
    // Many documents (no splitting of documents) and one thread (no parallelism at all).
    let dims = CrossAttnDims {
        t: 4,
        d: 48,
        heads: 3,
        head_dim: 8,
    };
    let lens: Vec<usize> = (0..23).map(|i| 1 + (i * 37) % 150).collect();
    let c = Case::random(dims, 150, lens, 11, 2.0);
    check_case(&c);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| check_case(&c));
}

#[test]
fn fused_shape_errors_name_the_buffer() {
    let dims = CrossAttnDims {
        t: 2,
        d: 8,
        heads: 2,
        head_dim: 4,
    };
    let c = Case::random(dims, 4, vec![4, 2], 1, 1.0);
    let mut out = vec![0.0; c.out_len()];
    let saved = fused::forward(&c.dims, &c.docs(), &c.weights(), &c.q[1..], &mut out).unwrap_err();
    assert!(
        matches!(&saved, Error::Shape(m) if m.contains("q ")),
        "{saved}"
    );
    let saved = fused::forward(&c.dims, &c.docs(), &c.weights(), &c.q, &mut out).unwrap();
    let mut g = Grads::filled(&c, 0);
    g.dh.pop();
    let e = fused::backward(
        &c.dims,
        &c.docs(),
        &c.weights(),
        &c.q,
        &saved,
        &c.d_out,
        &mut g.view(),
    )
    .unwrap_err();
    assert!(matches!(&e, Error::Shape(m) if m.contains("dh")), "{e}");
    // A Saved from another batch is refused.
    let c1 = Case::random(dims, 4, vec![4], 1, 1.0);
    let mut o1 = vec![0.0; c1.out_len()];
    let other = fused::forward(&c1.dims, &c1.docs(), &c1.weights(), &c1.q, &mut o1).unwrap();
    let mut g = Grads::filled(&c, 0);
    let e = fused::backward(
        &c.dims,
        &c.docs(),
        &c.weights(),
        &c.q,
        &other,
        &c.d_out,
        &mut g.view(),
    )
    .unwrap_err();
    assert!(matches!(&e, Error::Shape(m) if m.contains("saved")), "{e}");
}
