//! Dot product and axpy with runtime dispatch: AVX-512F, then AVX2+FMA, then portable.
//! The portable bodies are written with independent lane accumulators so the compiler can
//! vectorise them under each `target_feature` without reassociating floating point.

/// Σ a[i]·b[i] over min(len) elements.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { dot_avx512(a, b) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// y[i] += alpha · x[i].
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { axpy_avx512(alpha, x, y) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { axpy_avx2(alpha, x, y) };
        }
    }
    axpy_portable(alpha, x, y)
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let mut ca = a.chunks_exact(L);
    let mut cb = b.chunks_exact(L);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

#[inline(always)]
fn axpy_portable(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_portable(alpha, x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads below): i + 64 <= n, resp. i + 16 <= n, and both slices hold n values.
    while i + 64 <= n {
        for (u, acc) in acc.iter_mut().enumerate() {
            let x = _mm512_loadu_ps(pa.add(i + 16 * u));
            let y = _mm512_loadu_ps(pb.add(i + 16 * u));
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(
            _mm512_loadu_ps(pa.add(i)),
            _mm512_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 16;
    }
    if i < n {
        let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
        let x = _mm512_maskz_loadu_ps(mask, pa.add(i));
        let y = _mm512_maskz_loadu_ps(mask, pb.add(i));
        acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_avx512(alpha: f32, x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let a = _mm512_set1_ps(alpha);
    let mut i = 0;
    // SAFETY (all loads/stores below): i + 16 <= n or masked to n, both slices hold n values.
    while i + 16 <= n {
        let v = _mm512_fmadd_ps(a, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
        _mm512_storeu_ps(py.add(i), v);
        i += 16;
    }
    if i < n {
        let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
        let v = _mm512_fmadd_ps(
            a,
            _mm512_maskz_loadu_ps(mask, px.add(i)),
            _mm512_maskz_loadu_ps(mask, py.add(i)),
        );
        _mm512_mask_storeu_ps(py.add(i), mask, v);
    }
}

/// x[i] ← e^x[i]. AVX-512: Cephes' single-precision polynomial (≤ 2 ulp against the
/// exact value, checked in the tests) with the 2ⁿ step by `vscalefps`, which also
/// underflows to 0 and overflows to ∞ as libm does; elsewhere libm's `expf`. libm's call
/// was 2–3 % of a prefill (softmax and SiLU, one call per element).
#[inline]
pub fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { exp_avx512(x) };
    }
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// out[i] = silu(g[i]) · u[i] = g / (1 + e^−g) · u, with [`exp_in_place`]'s exponential.
#[inline]
pub fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    let n = out.len().min(g.len()).min(u.len());
    let (g, u, out) = (&g[..n], &u[..n], &mut out[..n]);
    for (o, &gv) in out.iter_mut().zip(g) {
        *o = -gv;
    }
    exp_in_place(out);
    for ((o, &gv), &uv) in out.iter_mut().zip(g).zip(u) {
        *o = gv / (1.0 + *o) * uv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_avx512(x: &mut [f32]) {
    use std::arch::x86_64::*;
    // e^x = 2ⁿ · e^r, n = round(x·log₂e), r = x − n·ln 2 in two parts (Cody–Waite), e^r =
    // 1 + r + r²·P(r) on |r| ≤ ln2/2. x is clamped to [−120, 89] first: below, 2ⁿ·e^r
    // underflows to 0 anyway, above it overflows to ∞, and the clamp keeps r finite (for
    // x = ±∞ the subtraction would give NaN). `max_ps(c, x)` returns x when x is NaN, so
    // NaN stays NaN.
    let exp1 = |v: __m512| -> __m512 {
        let v = _mm512_min_ps(
            _mm512_set1_ps(89.0),
            _mm512_max_ps(_mm512_set1_ps(-120.0), v),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), v);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
        _mm512_scalef_ps(e, n)
    };
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    // SAFETY (all loads/stores below): i + 16 <= n or masked to n; x holds n values.
    while i + 16 <= n {
        _mm512_storeu_ps(p.add(i), exp1(_mm512_loadu_ps(p.add(i))));
        i += 16;
    }
    if i < n {
        let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
        _mm512_mask_storeu_ps(p.add(i), mask, exp1(_mm512_maskz_loadu_ps(mask, p.add(i))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Distance in units in the last place between two finite f32 of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value() {
        // Every 97th f32 bit pattern in [−87.3, 88.7] (normal results) against f64's exp,
        // then the edges: underflow to 0, overflow to ∞, NaN kept.
        let mut xs: Vec<f32> = (0..u32::MAX / 97)
            .map(|i| f32::from_bits(i * 97))
            .filter(|v| v.is_finite() && (-87.3..88.7).contains(v))
            .collect();
        xs.extend((-100..=100).map(|i| i as f32 * 0.873));
        let mut got = xs.clone();
        exp_in_place(&mut got);
        let mut worst = 0;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(g, want));
            assert!(ulps(g, want) <= 2, "exp({x}) = {g}, exact {want}");
        }
        eprintln!("exp: {} inputs, worst {worst} ulp", xs.len());
        let mut edges = [
            -1e30f32,
            -120.0,
            -200.0,
            f32::NEG_INFINITY,
            89.0,
            1e30,
            f32::INFINITY,
            f32::NAN,
        ];
        exp_in_place(&mut edges);
        assert_eq!(&edges[..4], &[0.0; 4]);
        assert!(edges[4..7].iter().all(|v| *v == f32::INFINITY));
        assert!(edges[7].is_nan());
    }

    #[test]
    fn silu_mul_matches_its_definition() {
        let g: Vec<f32> = (0..300).map(|i| (i as f32 - 150.0) * 0.137).collect();
        let u: Vec<f32> = (0..300).map(|i| 1.0 + (i % 13) as f32 * 0.25).collect();
        let mut out = vec![f32::NAN; 300];
        silu_mul(&g, &u, &mut out);
        for i in 0..300 {
            let (gv, uv) = (g[i] as f64, u[i] as f64);
            let want = gv / (1.0 + (-gv).exp()) * uv;
            assert!(
                (out[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "silu({gv})·{uv} = {} vs {want}",
                out[i]
            );
        }
    }

    proptest! {
        #[test]
        fn dot_and_axpy_match_f64(v in proptest::collection::vec(-4.0f32..4.0, 0..300), alpha in -2.0f32..2.0) {
            let w: Vec<f32> = v.iter().enumerate().map(|(i, x)| x * 0.5 - (i % 7) as f32 * 0.1).collect();
            let want: f64 = v.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
            let got = dot(&v, &w) as f64;
            let scale: f64 = v.iter().zip(&w).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
            prop_assert!((got - want).abs() <= 1e-5 * scale + 1e-6, "dot {got} vs {want}");
            let mut y = w.clone();
            axpy(alpha, &v, &mut y);
            for i in 0..v.len() {
                let want = w[i] as f64 + alpha as f64 * v[i] as f64;
                prop_assert!((y[i] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
            }
        }
    }
}
