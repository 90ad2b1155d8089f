//! Weights stored as bf16 (`--weights bf16`): half of f32's bytes, exact for checkpoints
//! published in bf16 (most HF models, GGUF BF16), rounded to nearest-even from anything else.
//!
//! The matmul keeps activations in f32: a bf16 weight widens to f32 exactly (a 16-bit
//! shift), so decode computes the f32 path's products from half the bytes. AVX-512 BF16's
//! `vdpbf16ps` would be fewer instructions but rounds the activations to bf16 as well (8
//! mantissa bits, the precision problem `--weights native` needs two int8 planes to avoid),
//! and decode is bound by reading the weights, not by these instructions.
use super::dot::SimdLevel;
use crate::backend::cpu::matmul::by_columns;
use half::bf16;

/// A [rows, cols] weight in bf16, row-major.
#[derive(Debug, Clone)]
pub struct Bf16Matrix {
    pub rows: usize,
    pub cols: usize,
    data: Vec<bf16>,
}

impl Bf16Matrix {
    /// Rounds each f32 to the nearest bf16 (ties to even); exact for bf16-valued input.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(
            values.len(),
            rows * cols,
            "bf16 matrix: {rows} × {cols} values"
        );
        Bf16Matrix {
            rows,
            cols,
            data: values.iter().map(|&v| bf16::from_f32(v)).collect(),
        }
    }

    pub fn row(&self, r: usize) -> &[bf16] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Rows `r0..r1` as f32, row-major into `out`.
    pub fn dequantize_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        let src = &self.data[r0 * self.cols..r1 * self.cols];
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v.to_f32();
        }
    }

    /// Every value, row after row.
    pub fn values(&self) -> &[bf16] {
        &self.data
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 2
    }
}

/// x · w for one f32 row and one bf16 row at `level` (`Avx512Vnni` here means AVX-512F).
pub fn dot_bf16(level: SimdLevel, x: &[f32], w: &[bf16]) -> f32 {
    let n = x.len().min(w.len());
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers pass a level `supported()` confirmed, which for AVX-512 VNNI
        // includes AVX-512F and for AVX2 includes FMA; both read n elements of each slice.
        SimdLevel::Avx512Vnni => unsafe { x86::dot_avx512(&x[..n], &w[..n]) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        SimdLevel::Avx2 => unsafe { x86::dot_avx2(&x[..n], &w[..n]) },
        _ => portable(&x[..n], &w[..n]),
    }
}

/// The reference: f32 products, added in order.
pub fn portable(x: &[f32], w: &[bf16]) -> f32 {
    x.iter().zip(w).map(|(&a, &b)| a * b.to_f32()).sum()
}

/// out[m, n] = x[m, k] · wᵀ (+ bias) for m ≤ [`super::matmul::INT8_MAX_M`]: output rows
/// banded over threads, each weight row read once for all m activation rows.
pub fn matmul_bf16_gemv(
    level: SimdLevel,
    x: &[f32],
    w: &Bf16Matrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
) {
    let (n, k) = (w.rows, w.cols);
    assert!(
        x.len() >= m * k && out.len() >= m * n && bias.is_none_or(|b| b.len() >= n),
        "bf16 matmul: buffers too small"
    );
    const ROWS_PER_TASK: usize = 64;
    by_columns(out, m, n, ROWS_PER_TASK, |j, vals| {
        let b = bias.map_or(0.0, |b| b[j]);
        for (i, v) in vals.iter_mut().enumerate() {
            *v = dot_bf16(level, &x[i * k..(i + 1) * k], w.row(j)) + b;
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::bf16;
    use std::arch::x86_64::*;

    /// SAFETY: the CPU has AVX-512F; x and w have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_avx512(x: &[f32], w: &[bf16]) -> f32 {
        let n = x.len();
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n for both slices.
            unsafe {
                let wv = _mm256_loadu_si256(w.as_ptr().add(i) as *const __m256i);
                // bf16 is the top half of an f32: widening and shifting is exact.
                let wf = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(wv), 16));
                let xv = _mm512_loadu_ps(x.as_ptr().add(i));
                let a = (i / 16) & 3;
                acc[a] = _mm512_fmadd_ps(xv, wf, acc[a]);
            }
            i += 16;
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(s) + super::portable(&x[i..], &w[i..])
    }

    /// SAFETY: the CPU has AVX2 and FMA; x and w have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_avx2(x: &[f32], w: &[bf16]) -> f32 {
        let n = x.len();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n for both slices.
            unsafe {
                let wv = _mm_loadu_si128(w.as_ptr().add(i) as *const __m128i);
                let wf = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(wv), 16));
                let xv = _mm256_loadu_ps(x.as_ptr().add(i));
                let a = (i / 8) & 3;
                acc[a] = _mm256_fmadd_ps(xv, wf, acc[a]);
            }
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_movehdup_ps(h));
        _mm_cvtss_f32(h) + super::portable(&x[i..], &w[i..])
    }
}
