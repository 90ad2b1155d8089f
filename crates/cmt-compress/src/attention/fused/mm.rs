//! `C (+)= A·B` for the H pass's tile products, where B has contiguous rows: a
//! register-blocked AVX-512 kernel (6 rows × 64 columns of C in 24 zmm accumulators, K in
//! blocks whose B panel stays in L1), and the `gemm` crate where AVX-512F is missing.
use crate::attention::linalg::{matmul, View};
use std::sync::atomic::{AtomicBool, Ordering};

static PORTABLE: AtomicBool = AtomicBool::new(false);

/// Test hook: route the tile products to the portable (`gemm`) path even on AVX-512.
pub fn force_portable(on: bool) {
    PORTABLE.store(on, Ordering::Relaxed);
}

fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]`; `b` row-major with row stride `ldb`, `c` with `ldc`.
#[allow(clippy::too_many_arguments)]
pub fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: View,
    b: &[f32],
    ldb: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if m > 0
        && n > 0
        && k > 0
        && !PORTABLE.load(Ordering::Relaxed)
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        assert!(
            ldc >= n && extent(m, n, ldc, 1) <= c.len(),
            "mm: c too small"
        );
        assert!(extent(m, k, a.rs, a.cs) <= a.data.len(), "mm: a too small");
        assert!(extent(k, n, ldb, 1) <= b.len(), "mm: b too small");
        // SAFETY: the CPU supports AVX-512F (checked above); every element the kernel reads
        // or writes lies inside the extents just checked (columns past n are masked off),
        // and c is a unique borrow with non-overlapping rows (ldc >= n).
        unsafe {
            avx512::mm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                ldc,
                accumulate,
                a.data.as_ptr(),
                a.rs,
                a.cs,
                b.as_ptr(),
                ldb,
            )
        };
        return;
    }
    matmul(m, n, k, c, ldc, accumulate, a, View::rows(b, ldb), 1.0, 1);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// K per block: a 128 × 64 panel of B is 32 KB, inside L1.
    const KC: usize = 128;
    const MR: usize = 6;

    /// Mask of the valid lanes of vector `v` (16 columns each) when `nc` columns are valid.
    #[inline(always)]
    fn lane_mask(nc: usize, v: usize) -> __mmask16 {
        let valid = nc.saturating_sub(16 * v).min(16);
        ((1u32 << valid) - 1) as __mmask16
    }

    /// See [`super::mm`]; the caller checked the extents and the CPU.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mm(
        m: usize,
        n: usize,
        k: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        a: *const f32,
        ars: usize,
        acs: usize,
        b: *const f32,
        ldb: usize,
    ) {
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let acc = accumulate || k0 > 0;
            for j0 in (0..n).step_by(64) {
                let nc = 64.min(n - j0);
                let masks = [
                    lane_mask(nc, 0),
                    lane_mask(nc, 1),
                    lane_mask(nc, 2),
                    lane_mask(nc, 3),
                ];
                let bp = b.wrapping_add(k0 * ldb + j0);
                let mut i0 = 0;
                while i0 < m {
                    let ap = a.wrapping_add(i0 * ars + k0 * acs);
                    let cp = c.wrapping_add(i0 * ldc + j0);
                    let mr = MR.min(m - i0);
                    // SAFETY (all arms): rows i0..i0+mr < m, columns j0..j0+nc <= n (masked
                    // beyond), k0..k0+kc <= k: inside the caller-checked extents.
                    match mr {
                        6 => micro::<6>(kc, ap, ars, acs, bp, ldb, cp, ldc, acc, masks),
                        5 => micro::<5>(kc, ap, ars, acs, bp, ldb, cp, ldc, acc, masks),
                        4 => micro::<4>(kc, ap, ars, acs, bp, ldb, cp, ldc, acc, masks),
                        3 => micro::<3>(kc, ap, ars, acs, bp, ldb, cp, ldc, acc, masks),
                        2 => micro::<2>(kc, ap, ars, acs, bp, ldb, cp, ldc, acc, masks),
                        _ => micro::<1>(kc, ap, ars, acs, bp, ldb, cp, ldc, acc, masks),
                    }
                    i0 += mr;
                }
            }
        }
    }

    /// R rows × 64 columns of C over `kc` values of K, accumulators in registers.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn micro<const R: usize>(
        kc: usize,
        a: *const f32,
        ars: usize,
        acs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        masks: [__mmask16; 4],
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for kk in 0..kc {
            let brow = b.wrapping_add(kk * ldb);
            // SAFETY: row kk of the B panel; lanes past the valid columns are masked off
            // (masked-off lanes are not accessed).
            let mut bv = [_mm512_setzero_ps(); 4];
            for v in 0..4 {
                bv[v] = _mm512_maskz_loadu_ps(masks[v], brow.wrapping_add(16 * v));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: element (r, kk) of the A block, inside the checked extent.
                let av = _mm512_set1_ps(*a.wrapping_add(r * ars + kk * acs));
                for v in 0..4 {
                    acc[v] = _mm512_fmadd_ps(av, bv[v], acc[v]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for v in 0..4 {
                let p = c.wrapping_add(r * ldc + 16 * v);
                // SAFETY: row r < m of C, valid columns only (mask).
                let x = if accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], p), acc[v])
                } else {
                    acc[v]
                };
                _mm512_mask_storeu_ps(p, masks[v], x);
            }
        }
    }
}
