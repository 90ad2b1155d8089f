//! `out += w · M` for a memory in f32 or bf16 (widened on the fly), AVX-512 or portable.
use crate::types::MemView;
use half::bf16;

pub(crate) fn axpy_mem(w: f32, m: MemView<'_>, out: &mut [f32]) {
    match m {
        MemView::F32(x) => axpy_f32(w, x, out),
        MemView::Bf16(x) => axpy_bf16(w, x, out),
    }
}

fn axpy_f32(w: f32, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { axpy_f32_avx512(w, x, out) };
        }
    }
    for (o, v) in out.iter_mut().zip(x) {
        *o = w.mul_add(*v, *o);
    }
}

fn axpy_bf16(w: f32, x: &[bf16], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { axpy_bf16_avx512(w, x, out) };
        }
    }
    for (o, v) in out.iter_mut().zip(x) {
        *o = w.mul_add(v.to_f32(), *o);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_f32_avx512(w: f32, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len().min(out.len());
    let (px, po) = (x.as_ptr(), out.as_mut_ptr());
    let a = _mm512_set1_ps(w);
    let mut i = 0;
    // SAFETY (all loads and stores below): i + 16 <= n, or masked to n; both slices hold n.
    while i + 16 <= n {
        let v = _mm512_fmadd_ps(a, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(po.add(i)));
        _mm512_storeu_ps(po.add(i), v);
        i += 16;
    }
    if i < n {
        let m: __mmask16 = ((1u32 << (n - i)) - 1) as u16;
        let v = _mm512_fmadd_ps(
            a,
            _mm512_maskz_loadu_ps(m, px.add(i)),
            _mm512_maskz_loadu_ps(m, po.add(i)),
        );
        _mm512_mask_storeu_ps(po.add(i), m, v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_bf16_avx512(w: f32, x: &[bf16], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len().min(out.len());
    let (px, po) = (x.as_ptr() as *const u16, out.as_mut_ptr());
    let a = _mm512_set1_ps(w);
    let mut i = 0;
    // SAFETY: i + 16 <= n, both slices hold n; bf16 is a 16-bit value, so the 16 halves at
    // px+i are 32 readable bytes. A bf16 widens to f32 by a 16-bit left shift.
    while i + 16 <= n {
        let h = _mm256_loadu_si256(px.add(i) as *const __m256i);
        let f = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
        _mm512_storeu_ps(po.add(i), _mm512_fmadd_ps(a, f, _mm512_loadu_ps(po.add(i))));
        i += 16;
    }
    for j in i..n {
        // SAFETY: j < n, inside both slices.
        let v = f32::from_bits((*px.add(j) as u32) << 16);
        *po.add(j) = w.mul_add(v, *po.add(j));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar() {
        for n in [0usize, 1, 15, 16, 17, 40] {
            let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 3.0).collect();
            let xb: Vec<bf16> = x.iter().map(|v| bf16::from_f32(*v)).collect();
            let mut o1 = vec![1.0f32; n];
            let mut o2 = vec![1.0f32; n];
            axpy_mem(0.5, MemView::F32(&x), &mut o1);
            axpy_mem(0.5, MemView::Bf16(&xb), &mut o2);
            for i in 0..n {
                assert_eq!(o1[i], 0.5f32.mul_add(x[i], 1.0));
                assert_eq!(o2[i], 0.5f32.mul_add(xb[i].to_f32(), 1.0));
            }
        }
    }
}
