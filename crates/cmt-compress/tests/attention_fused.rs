//! The fused cross-attention against the unfused composition (`slow`), forward and every
//! gradient, on random shapes with ragged documents.
mod attn_common;

use attn_common::{check_fused_against_slow as check_case, Case, Grads};
use cmt_compress::attention::{fused, CrossAttnDims};
use cmt_compress::Error;
use proptest::prelude::*;

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        1usize..=5,
        1usize..=4,
        1usize..=24,
        1usize..=40,
        1usize..=300,
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
    // Up to three tiles per document, ragged, the production widths (fewer documents).
    let dims = CrossAttnDims {
        t: 16,
        d: 576,
        heads: 9,
        head_dim: 64,
    };
    check_case(&Case::random(dims, 300, vec![300, 1, 64, 129, 257], 5, 1.0));
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
