//! The packed kernel on AVX-512 VNNI: 16 rows a zmm, `vpdpwssd`.
use super::{group_block_bytes, Acts16, Packed, BLOCK, GROUP, TILE_M};
use std::arch::x86_64::*;

/// `acc[j]` = the 16 outputs of group `g` for activation row i0 + j, j < rows.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn group_tile(
    w: &Packed,
    g: usize,
    a: &Acts16,
    i0: usize,
    rows: usize,
    acc: &mut [[f32; GROUP]; TILE_M],
) {
    // One instance per tile height and weight format, so the accumulator arrays live
    // in registers.
    macro_rules! heights {
        ($nib:literal, $off:literal, $w32:literal, $split:literal) => {
            match rows {
                8 => tile::<8, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                7 => tile::<7, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                6 => tile::<6, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                5 => tile::<5, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                4 => tile::<4, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                3 => tile::<3, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                2 => tile::<2, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                1 => tile::<1, $nib, $off, $w32, $split>(w, g, a, i0, acc),
                _ => unreachable!("tile heights are 1..=TILE_M"),
            }
        };
    }
    for_layout!(w, heights)
}

/// The `bytes`-long pair vector number `at` of a group's blocks.
#[inline(always)]
fn wb_ptr(wq: *const u8, at: usize, bytes: usize) -> *const u8 {
    wq.wrapping_add(at * bytes)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
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
    acc: &mut [[f32; GROUP]; TILE_M],
) {
    let (nb, k, gbb) = (w.blocks(), a.k, group_block_bytes(NIB));
    let halves = if SPLIT { 2 } else { 1 };
    assert!(
        w.tile_fits((NIB, OFF, W32, SPLIT), g, a, i0, R),
        "packed tile out of range"
    );
    let wq = w.qs.as_ptr().add(g * nb * gbb);
    // Entry i of a table: 16 f32, or 16 f16 widened by one instruction.
    let esz = if W32 { 4 } else { 2 };
    let wd = w.d.as_ptr().add(g * nb * GROUP * halves * esz);
    let wm =
        w.m.as_ref()
            .map_or(std::ptr::null(), |m| m.as_ptr().add(g * nb * GROUP * esz));
    let table16 = |t: *const u8, i: usize| -> __m512 {
        if W32 {
            _mm512_loadu_ps((t as *const f32).add(i))
        } else {
            _mm512_cvtph_ps(_mm256_loadu_si256((t as *const u16).add(i) as *const _))
        }
    };
    let xs = a.dsum.as_ptr().add(i0 * nb);
    // Lane r of a Q4 pair: byte r = lo | hi << 4 widened to a dword, then lo in the low
    // 16 bits and hi in the high 16: (v | v << 12) & 0x000F000F.
    let nib_mask = _mm512_set1_epi32(0x000F_000F);
    let load_pair = |at: usize| -> __m512i {
        if NIB {
            let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(wb_ptr(wq, at, 16) as *const _));
            _mm512_and_si512(_mm512_or_si512(v, _mm512_slli_epi32(v, 12)), nib_mask)
        } else {
            _mm512_cvtepi8_epi16(_mm256_loadu_si256(wb_ptr(wq, at, 32) as *const _))
        }
    };
    let xq = a.qs.as_ptr().add(i0 * k);
    let xd = a.d.as_ptr().add(i0 * nb);
    // Two i32 sums per row (the block's two 16-element halves: pairs 0..8 and 8..16): each
    // `vpdpwssd` chain is 8 long per block instead of 16, so 2R independent chains hide its
    // latency, and Q6_K's halves take their own scales; with the R f32 sums that is
    // 3R ≤ 24 of the 32 zmm registers.
    let mut f = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        let (mut s0, mut s1) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
        for p in 0..8 {
            // SAFETY (all loads): inside the ranges asserted above.
            let (w0, w1) = (load_pair(b * 16 + p), load_pair(b * 16 + p + 8));
            for j in 0..R {
                // Columns (b·32 + 2p, +1) of activation row i0 + j as one i32, and the pair
                // 16 columns on.
                let at = xq.add(j * k + b * BLOCK + 2 * p) as *const i32;
                s0[j] = _mm512_dpwssd_epi32(s0[j], w0, _mm512_set1_epi32(at.read_unaligned()));
                s1[j] =
                    _mm512_dpwssd_epi32(s1[j], w1, _mm512_set1_epi32(at.add(8).read_unaligned()));
            }
        }
        for j in 0..R {
            let da = _mm512_set1_ps(*xd.add(j * nb + b));
            if SPLIT {
                for (half, sh) in [s0[j], s1[j]].into_iter().enumerate() {
                    let scale = _mm512_mul_ps(table16(wd, (b * 2 + half) * GROUP), da);
                    f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sh), scale, f[j]);
                }
            } else {
                let scale = _mm512_mul_ps(table16(wd, b * GROUP), da);
                let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[j], s1[j]));
                f[j] = _mm512_fmadd_ps(sum, scale, f[j]);
            }
            if OFF {
                let off = table16(wm, b * GROUP);
                f[j] = _mm512_fmadd_ps(off, _mm512_set1_ps(*xs.add(j * nb + b)), f[j]);
            }
        }
    }
    for (j, fj) in f.iter().enumerate() {
        _mm512_storeu_ps(acc[j].as_mut_ptr(), *fj);
    }
}

/// Whole 32-element blocks of `xs` to i16, the same bits as [`quantize_block`](crate::quant::acts::quantize_block) with qmax
/// 32767 (the scalar steps in the same f32 order: d = max|x| / 32767, id = 1/d, q =
/// trunc(x·id + ½·sign(x·id)) clamped to ±32767; a maximum is exact in any order). Inputs
/// with NaN or infinities may differ from the scalar code (the conversion's out-of-range
/// value then clamps to −32767 where the scalar cast saturates).
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `qs` must hold `xs.len()` values and `d`, `dsum`
/// one per block.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_blocks16(
    xs: &[f32],
    qs: &mut [i16],
    d: &mut [f32],
    dsum: &mut [f32],
) {
    let nb = xs.len() / BLOCK;
    assert!(
        xs.len() == nb * BLOCK && qs.len() == xs.len() && d.len() == nb && dsum.len() == nb,
        "quantize_blocks16: mismatched slices"
    );
    let abs_mask = _mm512_set1_epi32(0x7FFF_FFFF);
    let sign_mask = _mm512_set1_epi32(i32::MIN);
    let half = _mm512_set1_ps(0.5);
    let (lo, hi) = (_mm512_set1_epi32(-32767), _mm512_set1_epi32(32767));
    for b in 0..nb {
        // SAFETY: block b is inside xs and qs (asserted).
        let (x0, x1) = (
            _mm512_loadu_ps(xs.as_ptr().add(b * BLOCK)),
            _mm512_loadu_ps(xs.as_ptr().add(b * BLOCK + 16)),
        );
        let abs =
            |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs(x0), abs(x1)));
        let db = amax / 32767.0;
        let id = if db > 0.0 { 1.0 / db } else { 0.0 };
        let q = |v: __m512| {
            let t = _mm512_mul_ps(v, _mm512_set1_ps(id));
            let sign = _mm512_and_si512(_mm512_castps_si512(t), sign_mask);
            let r = _mm512_add_ps(
                t,
                _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(half), sign)),
            );
            _mm512_max_epi32(_mm512_min_epi32(_mm512_cvttps_epi32(r), hi), lo)
        };
        let (q0, q1) = (q(x0), q(x1));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        _mm256_storeu_si256(
            qs.as_mut_ptr().add(b * BLOCK) as *mut __m256i,
            _mm512_cvtepi32_epi16(q0),
        );
        _mm256_storeu_si256(
            qs.as_mut_ptr().add(b * BLOCK + 16) as *mut __m256i,
            _mm512_cvtepi32_epi16(q1),
        );
        d[b] = db;
        dsum[b] = db * sum as f32;
    }
}
