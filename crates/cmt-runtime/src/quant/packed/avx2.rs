//! The packed kernel on AVX2: the same layout read 8 rows a ymm (a group in two halves),
//! `vpmaddwd` + `vpaddd` where AVX-512 has `vpdpwssd`. The integer sums are exact and the
//! f32 steps those of the portable kernel, so both give the same bits.
use super::{group_block_bytes, Acts16, Packed, BLOCK, GROUP, TILE_M};
use std::arch::x86_64::*;

/// Rows of a group one ymm holds.
const HALF: usize = GROUP / 2;

/// `acc[j]` = the 16 outputs of group `g` for activation row i0 + j, j < rows.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn group_tile(
    w: &Packed,
    g: usize,
    a: &Acts16,
    i0: usize,
    rows: usize,
    acc: &mut [[f32; GROUP]; TILE_M],
) {
    // At most 4 activation rows at a time: 4 i32 + 4 f32 accumulators and the weights fit
    // the 16 ymm registers.
    let mut at = 0;
    while at < rows {
        let r = (rows - at).min(4);
        let acc = &mut acc[at..];
        macro_rules! heights {
            ($nib:literal, $off:literal, $w32:literal, $split:literal) => {
                match r {
                    4 => tile::<4, $nib, $off, $w32, $split>(w, g, a, i0 + at, acc),
                    3 => tile::<3, $nib, $off, $w32, $split>(w, g, a, i0 + at, acc),
                    2 => tile::<2, $nib, $off, $w32, $split>(w, g, a, i0 + at, acc),
                    1 => tile::<1, $nib, $off, $w32, $split>(w, g, a, i0 + at, acc),
                    _ => unreachable!("sub-tiles are 1..=4 rows"),
                }
            };
        }
        for_layout!(w, heights);
        at += r;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tile<
    const R: usize,
    const NIB: bool,
    const OFF: bool,
    const W32: bool,
    const SPLIT: bool,
>(
    w: &Packed,
    g: usize,
    a: &Acts16,
    i0: usize,
    acc: &mut [[f32; GROUP]],
) {
    let (nb, k, gbb) = (w.blocks(), a.k, group_block_bytes(NIB));
    let halves = if SPLIT { 2 } else { 1 };
    assert!(
        acc.len() >= R && w.tile_fits((NIB, OFF, W32, SPLIT), g, a, i0, R),
        "packed tile out of range"
    );
    let esz = if W32 { 4 } else { 2 };
    let wq = w.qs.as_ptr().add(g * nb * gbb);
    let wd = w.d.as_ptr().add(g * nb * GROUP * halves * esz);
    let wm =
        w.m.as_ref()
            .map_or(std::ptr::null(), |m| m.as_ptr().add(g * nb * GROUP * esz));
    // Entries i..i + 8 of a table, as f32.
    let table8 = |t: *const u8, i: usize| -> __m256 {
        if W32 {
            _mm256_loadu_ps((t as *const f32).add(i))
        } else {
            _mm256_cvtph_ps(_mm_loadu_si128((t as *const u16).add(i) as *const _))
        }
    };
    let nib_mask = _mm256_set1_epi32(0x000F_000F);
    let xq = a.qs.as_ptr().add(i0 * k);
    let xd = a.d.as_ptr().add(i0 * nb);
    let xs = a.dsum.as_ptr().add(i0 * nb);
    for h in 0..2 {
        let mut f = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            // The sums of the block's two 16-element halves (pairs 0..8 and 8..16).
            let (mut s0, mut s1) = ([_mm256_setzero_si256(); R], [_mm256_setzero_si256(); R]);
            // SAFETY (all loads): inside the ranges asserted above. Pair vector b·16 + p
            // holds 16 rows; rows 8h.. are its second half.
            let load = |pv: usize| -> __m256i {
                if NIB {
                    // 8 bytes (rows 8h..8h + 8), each lo | hi << 4, widened to dwords and
                    // split into the two 16-bit halves, as in the AVX-512 kernel.
                    let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        wq.add(pv * GROUP + HALF * h) as *const _
                    ));
                    _mm256_and_si256(_mm256_or_si256(v, _mm256_slli_epi32(v, 12)), nib_mask)
                } else {
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(
                        wq.add(pv * GROUP * 2 + 2 * HALF * h) as *const _
                    ))
                }
            };
            for p in 0..8 {
                let (w0, w1) = (load(b * 16 + p), load(b * 16 + p + 8));
                for j in 0..R {
                    let at = xq.add(j * k + b * BLOCK + 2 * p) as *const i32;
                    let (x0, x1) = (at.read_unaligned(), at.add(8).read_unaligned());
                    s0[j] = _mm256_add_epi32(s0[j], _mm256_madd_epi16(w0, _mm256_set1_epi32(x0)));
                    s1[j] = _mm256_add_epi32(s1[j], _mm256_madd_epi16(w1, _mm256_set1_epi32(x1)));
                }
            }
            for j in 0..R {
                let da = _mm256_set1_ps(*xd.add(j * nb + b));
                if SPLIT {
                    for (half, sh) in [s0[j], s1[j]].into_iter().enumerate() {
                        let dw = table8(wd, (b * 2 + half) * GROUP + HALF * h);
                        f[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sh), _mm256_mul_ps(dw, da), f[j]);
                    }
                } else {
                    let dw = table8(wd, b * GROUP + HALF * h);
                    let sum = _mm256_cvtepi32_ps(_mm256_add_epi32(s0[j], s1[j]));
                    f[j] = _mm256_fmadd_ps(sum, _mm256_mul_ps(dw, da), f[j]);
                }
                if OFF {
                    let off = table8(wm, b * GROUP + HALF * h);
                    f[j] = _mm256_fmadd_ps(off, _mm256_set1_ps(*xs.add(j * nb + b)), f[j]);
                }
            }
        }
        for (j, fj) in f.iter().enumerate() {
            _mm256_storeu_ps(acc[j][HALF * h..].as_mut_ptr(), *fj);
        }
    }
}
