//! The quantised-weight kernels (`--weights native`) against the dequantise-then-f32
//! reference, on random shapes: every block type, every SIMD level this CPU runs plus the
//! portable one, block counts odd and even (the AVX-512 kernel takes blocks in pairs), row
//! counts that leave ragged thread bands.
//!
//! The error bound. Activations are quantised per 32-element block b to q with scale
//! d_b = max|x|/127, so |x_i − d_b·q_i| ≤ d_b/2. The integer block sums are exact, so
//! against the exact dot Σ w_i·x_i of the dequantised weights w the kernel is off by at
//! most Σ_b (d_b/2)·Σ_{i∈b} |w_i| (activation rounding) plus f32 rounding of the block
//! terms, bounded here by 1e-5·Σ|w_i|·|x_i| + 1e-5·Σ|w_i|·d_b (a few ulps of each term).
//! SIMD levels differ from the portable kernel only in the order of the f32 additions.
use cmt_runtime::backend::cpu::matmul_nt;
use cmt_runtime::quant::acts::QuantActs;
use cmt_runtime::quant::dot::{DotKernel, SimdLevel};
use cmt_runtime::quant::matmul::{matmul_dequant_gemm, matmul_int8, quant_matmul_nt};
use cmt_runtime::quant::{QType, QuantMatrix, BLOCK};
use half::f16;
use proptest::prelude::*;

const TYPES: [QType; 3] = [QType::Q8_0, QType::Q4_0, QType::Q4_1];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
}

/// Random blocks: random quant bytes (Q8_0 includes −128, which a file may hold even if
/// ggml's quantiser never writes it) and small finite f16 scale/minimum fields.
fn random_matrix(ty: QType, rows: usize, cols: usize, seed: u64) -> QuantMatrix {
    let mut r = Rng(seed | 1);
    let bb = ty.block_bytes();
    let per_block = ty.block_elems();
    let mut data = Vec::with_capacity(rows * cols / per_block * bb);
    for _ in 0..rows * cols / per_block {
        let mut b: Vec<u8> = (0..bb).map(|_| r.next() as u8).collect();
        let mut put =
            |at: usize, v: f32| b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        if ty == QType::Q6K {
            // Q6_K's only f16 is d, at the end of the block.
            put(208, 0.05 * r.unit());
        } else {
            put(0, 0.05 * r.unit());
        }
        if ty == QType::Q4_1 || ty == QType::Q5_1 || ty == QType::Q4K || ty == QType::Q5K {
            put(2, 0.2 * r.unit());
        }
        data.extend(b);
    }
    QuantMatrix::new(ty, rows, cols, data).unwrap()
}

/// Activations with a spread of magnitudes across blocks, and one all-zero block when there
/// is room (scale 0 must give 0, not NaN).
fn random_acts(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut x: Vec<f32> = (0..n)
        .map(|i| r.unit() * [0.01, 1.0, 30.0][(i / BLOCK) % 3])
        .collect();
    if n >= 3 * BLOCK {
        x[2 * BLOCK..3 * BLOCK].fill(0.0);
    }
    x
}

fn dequantized(w: &QuantMatrix) -> Vec<f32> {
    let mut out = vec![0.0; w.rows * w.cols];
    w.dequantize_rows(0, w.rows, &mut out);
    out
}

/// (exact dot in f64, the error bound above) of a dequantised row with x's row.
fn reference(wrow: &[f32], x: &[f32], acts: &QuantActs, xrow: usize) -> (f64, f64) {
    let nb = wrow.len() / BLOCK;
    let (mut dot, mut quant, mut mag) = (0.0f64, 0.0f64, 0.0f64);
    for b in 0..nb {
        let d = acts.d[xrow * nb + b] as f64;
        for i in b * BLOCK..(b + 1) * BLOCK {
            let (w, v) = (wrow[i] as f64, x[i] as f64);
            dot += w * v;
            quant += d / 2.0 * w.abs();
            mag += w.abs() * (v.abs() + d);
        }
    }
    (dot, quant + 1e-5 * mag + 1e-30)
}

fn check_dot(ty: QType, nb: usize, seed: u64) {
    let k = nb * BLOCK;
    let w = random_matrix(ty, 1, k, seed);
    let wf = dequantized(&w);
    let x = random_acts(k, seed);
    let acts = QuantActs::quantize(&x, 1, k);
    let (want, bound) = reference(&wf, &x, &acts, 0);
    let portable = DotKernel::new(SimdLevel::Portable)
        .unwrap()
        .dot(&w.row(0), &acts.row(0));
    for level in SimdLevel::available() {
        let got = DotKernel::new(level).unwrap().dot(&w.row(0), &acts.row(0));
        assert!(
            (got as f64 - want).abs() <= bound,
            "{ty:?} {level:?} {nb} blocks: {got} vs exact {want} (bound {bound})"
        );
        // The same integer sums; only f32 addition order differs from the portable kernel.
        let mag: f64 = wf.iter().zip(&x).map(|(a, b)| (a * b).abs() as f64).sum();
        assert!(
            (got - portable).abs() as f64 <= 1e-5 * (mag + bound),
            "{ty:?} {level:?} {nb} blocks: {got} vs portable {portable}"
        );
    }
}

#[test]
fn every_level_is_tested_here() {
    // The levels this machine runs, so a CI log shows which kernels these tests covered.
    eprintln!("SIMD levels on this CPU: {:?}", SimdLevel::available());
    assert_eq!(SimdLevel::available()[0], SimdLevel::Portable);
    assert_eq!(
        DotKernel::best().level(),
        *SimdLevel::available().last().unwrap()
    );
}

#[test]
fn dot_of_every_type_at_every_block_count_up_to_forty() {
    // Past 32 blocks the AVX-512 kernel's 16-block scale chunks repeat, with masked tails.
    for ty in TYPES {
        for nb in 1..=40 {
            check_dot(ty, nb, 17 + nb as u64);
        }
    }
}

#[test]
fn q8_0_extremes_do_not_saturate() {
    // w = −128 everywhere and x at ±127: the largest pair sums the kernels form.
    let k = 4 * BLOCK;
    let mut data = Vec::new();
    for _ in 0..4 {
        data.extend(f16::from_f32(0.01).to_le_bytes());
        data.extend([0x80u8; 32]);
    }
    let w = QuantMatrix::new(QType::Q8_0, 1, k, data).unwrap();
    let x: Vec<f32> = (0..k)
        .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let acts = QuantActs::quantize(&x, 1, k);
    let wf = dequantized(&w);
    let (want, bound) = reference(&wf, &x, &acts, 0);
    for level in SimdLevel::available() {
        let got = DotKernel::new(level).unwrap().dot(&w.row(0), &acts.row(0));
        assert!(
            (got as f64 - want).abs() <= bound,
            "{level:?}: {got} vs {want}"
        );
    }
}

#[test]
fn a_second_plane_shrinks_the_activation_error_254_fold() {
    let x = random_acts(5 * BLOCK, 9);
    let a = QuantActs::quantize_planes(&x, 1, 5 * BLOCK, 2);
    let r = a.residual.as_ref().expect("two planes asked for");
    for (i, &v) in x.iter().enumerate() {
        let b = i / BLOCK;
        let got = a.d[b] * a.qs[i] as f32 + r.d[b] * r.qs[i] as f32;
        assert!(r.d[b] <= a.d[b] / 254.0 * (1.0 + 1e-5), "block {b}");
        assert!(
            (v - got).abs() <= r.d[b] * 0.5 * (1.0 + 1e-5) + 1e-12,
            "elt {i}: {v} vs {got}"
        );
    }
}

#[test]
fn activation_quantisation_error_is_at_most_half_a_step() {
    let x = random_acts(7 * BLOCK, 5);
    let a = QuantActs::quantize(&x, 1, 7 * BLOCK);
    for (b, xs) in x.chunks(BLOCK).enumerate() {
        let mut sum = 0;
        for (i, &v) in xs.iter().enumerate() {
            let q = a.qs[b * BLOCK + i];
            assert!(
                q != i8::MIN,
                "block {b}: −128 would break the symmetric range"
            );
            let err = (v - a.d[b] * q as f32).abs();
            assert!(
                err <= a.max_error(b) * (1.0 + 1e-6),
                "block {b} elt {i}: {err}"
            );
            sum += q as i32;
        }
        assert_eq!(sum, a.sum[b], "block {b}: stored Σq");
        assert_eq!(a.dsum[b], a.d[b] * sum as f32, "block {b}: stored d·Σq");
    }
}

/// The int8 matmul at `level` against the f32 matmul of the dequantised weights, each
/// output within the bound above (plus the bias, added exactly).
/// With two planes the bound is the second plane's: x − d₁q₁ is quantised again, so the
/// per-element error is at most d₂/2 ≤ d₁/508.
fn check_int8_matmul(
    level: SimdLevel,
    ty: QType,
    (m, n, nb): (usize, usize, usize),
    planes: usize,
    seed: u64,
) {
    let k = nb * BLOCK;
    let mut w = random_matrix(ty, n, k, seed);
    w.act_planes = planes;
    let wf = dequantized(&w);
    let x = random_acts(m * k, seed + 1);
    let bias: Vec<f32> = random_acts(n, seed + 2);
    let planed = QuantActs::quantize_planes(&x, m, k, planes);
    let acts = match &planed.residual {
        Some(r) => r.as_ref().clone(),
        None => planed.clone(),
    };
    let mut got = vec![f32::NAN; m * n];
    matmul_int8(
        DotKernel::new(level).unwrap(),
        &x,
        &w,
        Some(&bias),
        &mut got,
        m,
    );
    for i in 0..m {
        for j in 0..n {
            let (want, bound) =
                reference(&wf[j * k..(j + 1) * k], &x[i * k..(i + 1) * k], &acts, i);
            let want = want + bias[j] as f64;
            let g = got[i * n + j] as f64;
            assert!(
                (g - want).abs() <= bound + 1e-6 * want.abs(),
                "{ty:?} {level:?} m{m} n{n} k{k}: out[{i},{j}] {g} vs {want} (bound {bound})"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn dot_matches_the_dequantised_reference(t in 0usize..3, nb in 1usize..40, seed in 1u64..u64::MAX) {
        check_dot(TYPES[t], nb, seed);
    }

    #[test]
    fn int8_matmul_matches_f32_on_ragged_shapes(
        t in 0usize..3, m in 1usize..=8, n in 1usize..200, nb in 1usize..8, seed in 1u64..u64::MAX,
    ) {
        for level in SimdLevel::available() {
            for planes in [1, 2] {
                check_int8_matmul(level, TYPES[t], (m, n, nb), planes, seed);
            }
        }
    }

    /// The prefill path holds the exact f32 values the f32 path loads, so it matches the f32
    /// matmul up to summation order.
    #[test]
    fn dequantised_gemm_matches_f32_matmul(
        t in 0usize..3, m in 9usize..40, n in 1usize..200, nb in 1usize..8, seed in 1u64..u64::MAX,
    ) {
        let (ty, k) = (TYPES[t], nb * BLOCK);
        let w = random_matrix(ty, n, k, seed);
        let wf = dequantized(&w);
        let x = random_acts(m * k, seed + 1);
        let bias = random_acts(n, seed + 2);
        let mut want = vec![0.0; m * n];
        matmul_nt(&x, &wf, Some(&bias), &mut want, m, n, k);
        let mut got = vec![f32::NAN; m * n];
        matmul_dequant_gemm(&x, &w, Some(&bias), &mut got, m);
        let mut via_dispatch = vec![f32::NAN; m * n];
        quant_matmul_nt(&x, &w, Some(&bias), &mut via_dispatch, m);
        for i in 0..m {
            for j in 0..n {
                let mag: f32 = (0..k).map(|c| (x[i * k + c] * wf[j * k + c]).abs()).sum::<f32>() + bias[j].abs();
                let (g, v, e) = (got[i * n + j], via_dispatch[i * n + j], want[i * n + j]);
                prop_assert!((g - e).abs() <= 1e-5 * mag + 1e-7, "out[{},{}] {} vs f32 {}", i, j, g, e);
                prop_assert_eq!(g.to_bits(), v.to_bits(), "dispatch for m = {} is the GEMM path", m);
            }
        }
    }
}

mod bf16_storage {
    use super::*;
    use cmt_runtime::quant::bf16::{dot_bf16, matmul_bf16_gemv, portable, Bf16Matrix};
    use cmt_runtime::quant::matmul::bf16_matmul_nt;

    #[test]
    fn bf16_values_are_stored_exactly_and_others_round_to_nearest_even() {
        let exact: Vec<f32> = (0..64)
            .map(|i| half::bf16::from_f32(i as f32 * 0.37 - 9.0).to_f32())
            .collect();
        let m = Bf16Matrix::from_f32(2, 32, &exact);
        let mut back = vec![0.0; 64];
        m.dequantize_rows(0, 2, &mut back);
        assert_eq!(back, exact);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to the even mantissa (1.0);
        // 1 + 3·2^-8 halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6.
        let m = Bf16Matrix::from_f32(1, 2, &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
        let mut back = vec![0.0; 2];
        m.dequantize_rows(0, 1, &mut back);
        assert_eq!(back, [1.0, 1.0 + 1.0 / 64.0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The widening is exact, so every level is the f32 dot of the stored values up
        /// to summation order.
        #[test]
        fn bf16_dot_matches_f32_at_every_level(k in 1usize..300, seed in 1u64..u64::MAX) {
            let w = Bf16Matrix::from_f32(1, k, &random_acts(k, seed));
            let x = random_acts(k, seed + 7);
            let mut wf = vec![0.0; k];
            w.dequantize_rows(0, 1, &mut wf);
            let exact: f64 = wf.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let mag: f64 = wf.iter().zip(&x).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            prop_assert!((portable(&x, w.row(0)) as f64 - exact).abs() <= 1e-6 * mag + 1e-30);
            for level in SimdLevel::available() {
                let got = dot_bf16(level, &x, w.row(0)) as f64;
                prop_assert!((got - exact).abs() <= 1e-6 * mag + 1e-30, "{:?}: {} vs {}", level, got, exact);
            }
        }

        #[test]
        fn bf16_matmul_matches_f32_matmul(m in 1usize..24, n in 1usize..150, k in 1usize..100, seed in 1u64..u64::MAX) {
            let w = Bf16Matrix::from_f32(n, k, &random_acts(n * k, seed));
            let mut wf = vec![0.0; n * k];
            w.dequantize_rows(0, n, &mut wf);
            let x = random_acts(m * k, seed + 1);
            let bias = random_acts(n, seed + 2);
            let mut want = vec![0.0; m * n];
            matmul_nt(&x, &wf, Some(&bias), &mut want, m, n, k);
            let mut got = vec![f32::NAN; m * n];
            bf16_matmul_nt(&x, &w, Some(&bias), &mut got, m);
            let mut gemv = vec![f32::NAN; m * n];
            if m <= 8 {
                matmul_bf16_gemv(SimdLevel::Portable, &x, &w, Some(&bias), &mut gemv, m);
            }
            for i in 0..m {
                for j in 0..n {
                    let mag: f32 = (0..k).map(|c| (x[i * k + c] * wf[j * k + c]).abs()).sum::<f32>() + bias[j].abs();
                    let e = want[i * n + j];
                    prop_assert!((got[i * n + j] - e).abs() <= 1e-5 * mag + 1e-7, "out[{},{}] {} vs {}", i, j, got[i * n + j], e);
                    if m <= 8 {
                        prop_assert!((gemv[i * n + j] - e).abs() <= 1e-5 * mag + 1e-7, "portable out[{},{}]", i, j);
                    }
                }
            }
        }
    }
}

mod k_quants {
    use super::*;
    use cmt_runtime::gguf::GgmlType;

    fn k_types() -> [QType; 3] {
        [
            QType::from_ggml_any_cpu(GgmlType::Q4K).unwrap(),
            QType::from_ggml_any_cpu(GgmlType::Q5K).unwrap(),
            QType::from_ggml_any_cpu(GgmlType::Q6K).unwrap(),
        ]
    }

    #[test]
    fn k_quants_are_kept_only_where_their_fast_kernel_runs() {
        let best = DotKernel::best().level();
        // Wherever a packed kernel runs.
        for t in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            assert_eq!(
                QType::from_ggml(t).is_some(),
                best != SimdLevel::Portable,
                "{t:?}"
            );
        }
        // Float types are never kept as blocks (bf16 has its own --weights format).
        for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            assert_eq!(QType::from_ggml_any_cpu(t), None, "{t:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Same bound as the 32-element types: the activation blocks are the sub-blocks.
        #[test]
        fn k_dot_matches_the_dequantised_reference(t in 0usize..3, sb in 1usize..6, seed in 1u64..u64::MAX) {
            let ty = k_types()[t];
            check_dot(ty, 8 * sb, seed);
        }

        #[test]
        fn k_int8_matmul_matches_f32(t in 0usize..3, m in 1usize..=8, n in 1usize..90, sb in 1usize..4, seed in 1u64..u64::MAX) {
            for level in SimdLevel::available() {
                for planes in [1, 2] {
                    check_int8_matmul(level, k_types()[t], (m, n, 8 * sb), planes, seed);
                }
            }
        }
    }
}

/// Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 repacked in 16-row groups with 16-bit activations (`quant::packed`,
/// every matmul of those types on AVX-512 VNNI). Its bound: per block b the activation scale is
/// d_b = max|x|/32767, so the rounding error is Σ_b (d_b/2)·Σ_{i∈b} |w_i|, plus f32
/// rounding as above.
mod packed {
    use super::*;
    use cmt_runtime::gguf::GgmlType;
    use cmt_runtime::quant::packed::{packed_matmul_nt, Acts16, Packed};

    const PACKED: [QType; 5] = [
        QType::Q8_0,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
    ];

    fn levels() -> Vec<DotKernel> {
        [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512Vnni]
            .into_iter()
            .filter_map(DotKernel::new)
            .collect()
    }

    /// `nb` 32-element blocks a row (a multiple of 8 for the k-quants).
    fn check(ty: QType, m: usize, n: usize, nb: usize, seed: u64) {
        let k = nb * BLOCK;
        let w = random_matrix(ty, n, k, seed);
        let wf = dequantized(&w);
        let p = Packed::new(&w);
        let x = random_acts(m * k, seed + 1);
        let bias = random_acts(n, seed + 2);
        let acts = Acts16::quantize(&x, m, k);
        let mut first: Option<Vec<f32>> = None;
        for kernel in levels() {
            let mut got = vec![f32::NAN; m * n];
            packed_matmul_nt(&x, &p, Some(&bias), &mut got, m, kernel);
            for i in 0..m {
                for j in 0..n {
                    let (mut want, mut bound) = (bias[j] as f64, 1e-30);
                    for b in 0..nb {
                        let d = acts.d[i * nb + b] as f64;
                        for c in b * BLOCK..(b + 1) * BLOCK {
                            let (wv, xv) = (wf[j * k + c] as f64, x[i * k + c] as f64);
                            want += wv * xv;
                            bound += d / 2.0 * wv.abs() + 1e-5 * wv.abs() * (xv.abs() + d);
                        }
                    }
                    let g = got[i * n + j] as f64;
                    assert!(
                        (g - want).abs() <= bound + 1e-6 * want.abs(),
                        "{ty:?} {:?} m{m} n{n} k{k}: out[{i},{j}] {g} vs {want} (bound {bound})",
                        kernel.level()
                    );
                }
            }
            // The same integer sums and the same f32 steps in the same order: every level
            // gives the same bits.
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{:?} differs from the portable kernel",
                    kernel.level()
                ),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        /// Ragged groups (n not a multiple of 16), tile tails (m not a multiple of 8),
        /// odd block counts.
        #[test]
        fn packed_matmul_matches_the_dequantised_reference(
            t in 0usize..5, m in 1usize..30, n in 1usize..90, nb in 1usize..8, seed in 1u64..u64::MAX,
        ) {
            check(PACKED[t], m, n, nb, seed);
        }

        /// The k-quants through the same kernel: 256-element super-blocks of 8 sub-blocks,
        /// each its own scale and offset (Q6_K: a scale per 16 elements, no offset).
        #[test]
        fn packed_k_quants_match_the_dequantised_reference(
            t in 0usize..3, m in 1usize..20, n in 1usize..40, sb in 1usize..4, seed in 1u64..u64::MAX,
        ) {
            check([QType::Q4K, QType::Q5K, QType::Q6K][t], m, n, 8 * sb, seed);
        }
    }

    /// The AVX-512 activation quantiser (rows split over threads) gives the scalar
    /// quantiser's bits: block scales, d·Σq and every i16, on rows with an all-zero block,
    /// exact ties (x·id = n + ½) and widely varying block scales.
    #[test]
    fn simd_activation_quantiser_matches_the_scalar_one() {
        if !SimdLevel::Avx512Vnni.supported() {
            eprintln!("SKIPPED: no AVX-512 VNNI on this CPU");
            return;
        }
        for (m, nb, seed) in [
            (1, 1, 3u64),
            (7, 5, 4),
            (16, 18, 5),
            (17, 18, 6),
            (40, 48, 7),
        ] {
            let k = nb * BLOCK;
            let mut x = random_acts(m * k, seed);
            for (b, blk) in x.chunks_exact_mut(BLOCK).enumerate() {
                match b % 5 {
                    0 => blk.iter_mut().for_each(|v| *v = 0.0),
                    1 => {
                        // max|x| = 32767 → d = 1, id = 1: ties at n + ½ round away from 0.
                        blk[0] = 32767.0;
                        for (i, v) in blk.iter_mut().enumerate().skip(1) {
                            *v = (i as f32 - 16.0) + 0.5;
                        }
                    }
                    2 => blk.iter_mut().for_each(|v| *v *= 1e-6),
                    3 => blk.iter_mut().for_each(|v| *v *= 3e4),
                    _ => {}
                }
            }
            let scalar = Acts16::quantize_with(SimdLevel::Portable, &x, m, k);
            let simd = Acts16::quantize_with(SimdLevel::Avx512Vnni, &x, m, k);
            assert_eq!(scalar.qs, simd.qs, "m{m} nb{nb}: quantised values differ");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&scalar.d), bits(&simd.d), "m{m} nb{nb}: scales differ");
            assert_eq!(
                bits(&scalar.dsum),
                bits(&simd.dsum),
                "m{m} nb{nb}: d·Σq differ"
            );
            // And the scalar one against its definition on a tie block.
            if nb > 1 {
                let q = &scalar.qs[BLOCK..2 * BLOCK];
                assert_eq!((q[0], q[1], q[16], q[17]), (32767, -15, 1, 2));
            }
        }
    }

    #[test]
    fn extremes_do_not_overflow_the_block_sums() {
        // Every weight −128 and every activation at full scale: a block sums to
        // 32 · (−128) · 32767, the largest magnitude there is.
        let (n, nb) = (17, 3);
        let k = nb * BLOCK;
        let mut data = Vec::new();
        for _ in 0..n * nb {
            data.extend(f16::from_f32(1.0).to_le_bytes());
            data.extend([0x80u8; BLOCK]);
        }
        let w = QuantMatrix::new(QType::Q8_0, n, k, data).unwrap();
        let p = Packed::new(&w);
        let x = vec![2.5f32; 3 * k];
        for kernel in levels() {
            let mut got = vec![0.0; 3 * n];
            packed_matmul_nt(&x, &p, None, &mut got, 3, kernel);
            for v in got {
                assert!((v as f64 + 128.0 * 2.5 * k as f64).abs() < 1e-3, "{v}");
            }
        }
    }

    #[test]
    fn the_loader_packs_where_a_simd_level_runs_and_every_m_reads_it() {
        let (m, n, nb) = (24, 40, 5);
        let k = nb * BLOCK;
        let mut w = random_matrix(QType::Q8_0, n, k, 7);
        // The loader packs wherever a SIMD level runs (this CPU's best is what it takes).
        let packs = DotKernel::best().level() != SimdLevel::Portable;
        assert_eq!(w.pack(), packs);
        for ty in [QType::Q4_0, QType::Q4_1, QType::Q5_0, QType::Q5_1] {
            assert_eq!(random_matrix(ty, n, k, 7).pack(), packs, "{ty:?}");
        }
        // Q5_0/Q5_1 have only the packed kernels: a file's Q5 tensors stay quantised only
        // where one runs (elsewhere they load as f32).
        for (g, q) in [(GgmlType::Q5_0, QType::Q5_0), (GgmlType::Q5_1, QType::Q5_1)] {
            assert_eq!(QType::from_ggml(g), packs.then_some(q));
            assert_eq!(QType::from_ggml_any_cpu(g), Some(q));
        }
        assert_eq!(random_matrix(QType::Q4K, n, 256, 7).pack(), packs, "Q4_K");
        assert_eq!(random_matrix(QType::Q5K, n, 256, 7).pack(), packs, "Q5_K");
        assert_eq!(random_matrix(QType::Q6K, n, 256, 7).pack(), packs, "Q6_K");
        if packs {
            let kernel = DotKernel::best();
            let x = random_acts(m * k, 8);
            let (mut via_dispatch, mut direct) = (vec![0.0; m * n], vec![0.0; m * n]);
            quant_matmul_nt(&x, &w, None, &mut via_dispatch, m);
            let p = w.packed.as_ref().unwrap();
            packed_matmul_nt(&x, p, None, &mut direct, m, kernel);
            assert_eq!(
                via_dispatch, direct,
                "the dispatch goes through the packed kernel"
            );
        }
    }
}
