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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
