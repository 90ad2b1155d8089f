//! kernels/compress_attention.cu (the compressor's H pass, forward and backward) compiled as
//! host C++ and run on the CPU emulator against the f64 reference of
//! `cmt_kernel_check::cases_compress`, on proptest shapes: n not a multiple of the row tile
//! (small d gives 64-row tiles, d in 400..=1024 gives 8..20-row tiles), ragged lengths with 1,
//! n_max and 0, tq not a multiple of the 8-query group, d not a multiple of 32, several
//! documents; NaN padding rows, poisoned outputs with guard zones. Small shapes: the emulator
//! runs one OS thread per CUDA thread.
use cmt_compress::attention::launch::{compress_attention_forward, Dims, MAX_D};
use cmt_kernel_check::cases_compress::{self, compress_attention, Measured};
use cmt_kernel_check::emu::Emu;
use cmt_runtime::cuda::DType;
use proptest::prelude::*;

fn check(r: Result<Vec<Measured>, cmt_kernel_check::CheckError>) -> Result<(), TestCaseError> {
    let outs = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(outs.len(), 2);
    for m in outs {
        let o = m.outcome;
        o.check().map_err(TestCaseError::fail)?;
    }
    Ok(())
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::Bf16)]
}

/// Lengths: the first document full, the second a single row, the third anything in
/// 0..=n_max (0 included).
fn lens_of(docs: usize, n_max: usize, raw: usize) -> Vec<usize> {
    [n_max, 1, raw % (n_max + 1)][..docs].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn compress_attention_matches_reference(
        dt in dtype(),
        docs in 1usize..=3,
        tq in 1usize..=19,
        n_max in 1usize..=30,
        d in prop_oneof![1usize..=100, 400usize..=MAX_D],
        raw: usize,
        seed: u64,
    ) {
        let dims = Dims { docs, tq, n_max, d };
        check(compress_attention(&Emu, dt, dims, &lens_of(docs, n_max, raw), true, seed))?;
    }
}

/// Several row tiles with a ragged last one, in both block kinds, and a long tail of
/// one-row-at-a-time steps: d = 1000 gives 8-row tiles and 4-query dH chunks.
#[test]
fn many_tiles_and_query_chunks() {
    for dt in DType::ALL {
        let dims = Dims {
            docs: 2,
            tq: 11,
            n_max: 29,
            d: 1000,
        };
        let outs = compress_attention(&Emu, dt, dims, &[29, 17], true, 5).expect("runs");
        assert_ok(&outs);
    }
}

/// The gpu-check geometry at a small length: d = 576 (12-row tiles, so 12 + 1 rows here;
/// 6-query dH chunks) and
/// tq = 144 = 18 query groups, as for SmolLM2-135M with T = 16, 9 heads.
#[test]
fn smollm2_width_and_query_count() {
    let dims = Dims {
        docs: 1,
        tq: 144,
        n_max: 13,
        d: 576,
    };
    let outs = compress_attention(&Emu, DType::Bf16, dims, &[13], true, 21).expect("runs");
    assert_ok(&outs);
}

/// An empty document (u = 0, lse = −inf, dqhat = 0, dH untouched), a one-row document, and
/// the backward without dH (only the dqhat blocks run; dH must stay as it was).
#[test]
fn empty_document_and_null_dh() {
    for dt in DType::ALL {
        let dims = Dims {
            docs: 3,
            tq: 9,
            n_max: 6,
            d: 45,
        };
        for with_dh in [true, false] {
            let outs = compress_attention(&Emu, dt, dims, &[0, 1, 6], with_dh, 9).expect("runs");
            assert_ok(&outs);
            cases_compress::print_report(&outs);
        }
    }
}

fn assert_ok(outs: &[Measured]) {
    for m in outs {
        let o = &m.outcome;
        assert!(
            o.failures.is_empty(),
            "{} {}: {:?}",
            o.kernel,
            o.shape,
            o.failures
        );
    }
}

#[test]
fn launch_builder_rejects_widths_it_cannot_hold() {
    for d in [0, MAX_D + 1] {
        let dims = Dims {
            docs: 1,
            tq: 1,
            n_max: 1,
            d,
        };
        assert!(compress_attention_forward(DType::F32, 1, 1, 1, 1, 1, dims, 1e-5).is_err());
    }
}

/// The reference's backward is the gradient of its forward: L = Σ_i du_i·u_i, central
/// differences in f64 on qhat and on H (valid rows), both against the analytic dqhat / dH.
#[test]
fn reference_backward_matches_finite_differences() {
    let dims = Dims {
        docs: 2,
        tq: 3,
        n_max: 5,
        d: 7,
    };
    let lens = [5, 3];
    let x = cases_compress::inputs(DType::F32, dims, &lens, 3);
    let loss = |q: &[f32], h: &[f32]| -> f64 {
        let r = cases_compress::reference(q, h, &lens, &x.du, dims, cases_compress::EPS);
        r.u.iter().zip(&x.du).map(|(u, &g)| u * f64::from(g)).sum()
    };
    let r = cases_compress::reference(&x.qhat, &x.h, &lens, &x.du, dims, cases_compress::EPS);
    let step = 1e-2f32;
    let fd = |v: &[f32], e: usize, f: &dyn Fn(&[f32]) -> f64| -> f64 {
        let (mut a, mut b) = (v.to_vec(), v.to_vec());
        a[e] += step;
        b[e] -= step;
        (f(&a) - f(&b)) / (f64::from(a[e]) - f64::from(b[e]))
    };
    let mut checked = 0;
    for e in 0..x.qhat.len() {
        let num = fd(&x.qhat, e, &|q| loss(q, &x.h));
        assert!(
            (num - r.dq[e]).abs() <= 1e-4 + 1e-3 * num.abs(),
            "dqhat[{e}]: fd {num}, analytic {}",
            r.dq[e]
        );
        checked += 1;
    }
    for e in 0..x.h.len() {
        let (b, j) = (e / (dims.n_max * dims.d), e / dims.d % dims.n_max);
        if j >= lens[b] {
            assert_eq!(r.dh[e], 0.0, "padding row {j} of doc {b} has a gradient");
            continue;
        }
        let num = fd(&x.h, e, &|h| loss(&x.qhat, h));
        assert!(
            (num - r.dh[e]).abs() <= 1e-4 + 1e-3 * num.abs(),
            "dH[{e}]: fd {num}, analytic {}",
            r.dh[e]
        );
        checked += 1;
    }
    assert_eq!(checked, dims.docs * dims.tq * dims.d + 8 * dims.d);
}
