//! Dot kernels for ggml's k-quants kept quantised: Q4_K and Q5_K, super-blocks of 256
//! weights in 8 sub-blocks of 32, each with a 6-bit scale and minimum (x = d·sc·q − dmin·m).
//! A sub-block lines up with one 32-element activation block, so per sub-block j of
//! activation block b the term is dx_b·d·sc_j·Σ q·qx − dmin·m_j·(dx_b·Σqx).
//!
//! Layout (ggml): d f16, dmin f16, scales[12] (packed 6-bit), [Q5_K: qh[32], bit j of
//! qh[l] is the fifth bit of element l of sub-block j], qs[128]: bytes 32c..32c+32 hold
//! sub-block 2c in their low nibbles and 2c+1 in their high ones.
//!
//! Q6_K (16-element scale groups) has no kernel yet and loads as f32 under native.
use super::acts::ActRow;
use super::{QType, BLOCK};
use crate::gguf::quant_k::scale_min_k4;
use half::f16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// (qh, qs) of a super-block.
fn planes(ty: QType, blk: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match ty {
        QType::Q5K => (Some(&blk[16..48]), &blk[48..176]),
        _ => (None, &blk[16..144]),
    }
}

/// The reference: sub-block by sub-block, integer sums in i32.
pub(crate) fn portable(ty: QType, w: &[u8], a: &ActRow, nb: usize) -> f32 {
    let bb = ty.block_bytes();
    let mut acc = 0.0f32;
    for s in 0..nb / 8 {
        let blk = &w[s * bb..(s + 1) * bb];
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let (qh, qs) = planes(ty, blk);
        for j in 0..8 {
            let b = 8 * s + j;
            let (sc, m) = scale_min_k4(j, &blk[4..16]);
            let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let x = &a.qs[b * BLOCK..(b + 1) * BLOCK];
            let mut isum = 0i32;
            for l in 0..32 {
                let mut n = if j % 2 == 0 { q[l] & 0x0f } else { q[l] >> 4 } as i32;
                if let Some(qh) = qh {
                    n += (((qh[l] >> j) & 1) as i32) << 4;
                }
                isum += n * x[l] as i32;
            }
            acc += a.d[b] * d * sc * isum as f32 - dmin * m * a.dsum[b];
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{planes, scale_min_k4, ActRow, QType, BLOCK};
    use std::arch::x86_64::*;

    /// SAFETY: the CPU has AVX-512 F/BW/VNNI and AVX2; w holds nb/8 super-blocks of ty
    /// (Q4_K or Q5_K) and a nb activation blocks (nb a multiple of 8).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(crate) unsafe fn dot_avx512(ty: QType, w: &[u8], a: &ActRow, nb: usize) -> f32 {
        let bb = ty.block_bytes();
        let m4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut side = 0.0f32;
        for s in 0..nb / 8 {
            let blk = &w[s * bb..(s + 1) * bb];
            let d = super::f16_at(blk, 0);
            let dmin = super::f16_at(blk, 2);
            let (qh, qs) = planes(ty, blk);
            // Per sub-block: the integer dot's factor d·sc·dx, and the minimum's term.
            let mut dsc = [0.0f32; 8];
            for (j, f) in dsc.iter_mut().enumerate() {
                let b = 8 * s + j;
                let (sc, m) = scale_min_k4(j, &blk[4..16]);
                *f = d * sc * a.d[b];
                side -= dmin * m * a.dsum[b];
            }
            // SAFETY: qh has 32 bytes (Q5_K), qs 128: both loads are inside the block.
            let qh_v = qh.map(|h| unsafe { _mm256_loadu_si256(h.as_ptr() as *const __m256i) });
            for c in 0..4 {
                // SAFETY: bytes 32c..32c+32 of qs, and activation blocks 8s+2c and
                // 8s+2c+1 (64 bytes) are in bounds for c < 4 and s < nb/8.
                let (lo, hi, xv) = unsafe {
                    let q = _mm256_loadu_si256(qs.as_ptr().add(32 * c) as *const __m256i);
                    let xv =
                        _mm512_loadu_si512(a.qs.as_ptr().add((8 * s + 2 * c) * BLOCK) as *const _);
                    (
                        _mm256_and_si256(q, m4),
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                        xv,
                    )
                };
                let (lo, hi) = match qh_v {
                    Some(h) => {
                        // Bit 2c (2c+1) of each byte to bit 4. A 16-bit shift carries the
                        // next byte's low bits into this byte's top, which `& 1` drops.
                        let bit = |k: i32| {
                            let t =
                                _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(k)), one);
                            _mm256_slli_epi16(t, 4)
                        };
                        let k = 2 * c as i32;
                        (_mm256_or_si256(lo, bit(k)), _mm256_or_si256(hi, bit(k + 1)))
                    }
                    None => (lo, hi),
                };
                // Lanes 0–7: sub-block 2c against activation block 8s+2c; 8–15: 2c+1.
                let wv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                let prod = _mm512_dpbusd_epi32(zero, wv, xv);
                let scale = _mm512_mask_blend_ps(
                    0xff00,
                    _mm512_set1_ps(dsc[2 * c]),
                    _mm512_set1_ps(dsc[2 * c + 1]),
                );
                acc[c & 1] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(prod), acc[c & 1]);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + side
    }
}
