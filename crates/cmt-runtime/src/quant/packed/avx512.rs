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
