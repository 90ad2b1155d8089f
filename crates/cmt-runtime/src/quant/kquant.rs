//! Dot kernels for ggml's k-quants kept quantised. Q4_K and Q5_K: super-blocks of 256
//! weights in 8 sub-blocks of 32, each with a 6-bit scale and minimum (x = d·sc·q − dmin·m).
//! A sub-block lines up with one 32-element activation block, so per sub-block j of
//! activation block b the term is dx_b·d·sc_j·Σ q·qx − dmin·m_j·(dx_b·Σqx).
//!
//! Layout (ggml): d f16, dmin f16, scales[12] (packed 6-bit), [Q5_K: qh[32], bit j of
//! qh[l] is the fifth bit of element l of sub-block j], qs[128]: bytes 32c..32c+32 hold
//! sub-block 2c in their low nibbles and 2c+1 in their high ones.
//!
//! Q6_K: d f16 at byte 208, i8 scales[16] at 192 for 16-element groups, 6-bit q − 32 split
//! into ql[128] (low nibbles) and qh[64] (2 high bits); x = d·sc·(q − 32). Element l of
//! quadrant c (32 elements) of half h: low nibble of ql[64h + l + 32·(c&1)] (c < 2) or its
//! high nibble (c ≥ 2), high bits (qh[32h + l] >> 2c) & 3, scale sc[8h + 2c + l/16].
use super::acts::ActRow;
use super::{QType, BLOCK};
use crate::gguf::quant::f16_at;
use crate::gguf::quant_k::scale_min_k4;

/// (qh, qs) of a super-block.
fn planes(ty: QType, blk: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match ty {
        QType::Q5K => (Some(&blk[16..48]), &blk[48..176]),
        _ => (None, &blk[16..144]),
    }
}

/// The 6-bit value (0..63, i.e. q + 32) of element l of quadrant c of a Q6_K half.
fn q6_u(ql: &[u8], qh: &[u8], c: usize, l: usize) -> i32 {
    let byte = ql[l + 32 * (c & 1)];
    let lo = if c < 2 { byte & 0x0f } else { byte >> 4 };
    (lo | (((qh[l] >> (2 * c)) & 3) << 4)) as i32
}

/// The Q6_K reference: per 16-element group, Σ(q − 32)·qx in i32.
fn portable_q6k(w: &[u8], a: &ActRow, nb: usize) -> f32 {
    let bb = QType::Q6K.block_bytes();
    let mut acc = 0.0f32;
    for s in 0..nb / 8 {
        let blk = &w[s * bb..(s + 1) * bb];
        let d = f16_at(blk, 208);
        for bp in 0..8 {
            let (h, c, b) = (bp / 4, bp % 4, 8 * s + bp);
            let (ql, qh) = (&blk[64 * h..64 * h + 64], &blk[128 + 32 * h..160 + 32 * h]);
            let x = &a.qs[b * BLOCK..(b + 1) * BLOCK];
            for g in 0..2 {
                let isum: i32 = (16 * g..16 * g + 16)
                    .map(|l| (q6_u(ql, qh, c, l) - 32) * x[l] as i32)
                    .sum();
                let sc = blk[192 + 8 * h + 2 * c + g] as i8 as f32;
                acc += a.d[b] * d * sc * isum as f32;
            }
        }
    }
    acc
}

/// The reference: sub-block by sub-block, integer sums in i32.
pub(crate) fn portable(ty: QType, w: &[u8], a: &ActRow, nb: usize) -> f32 {
    if ty == QType::Q6K {
        return portable_q6k(w, a, nb);
    }
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
    use super::{planes, ActRow, QType, BLOCK};
    use std::arch::x86_64::*;

    /// SAFETY: the CPU has AVX-512 F/BW/VNNI and AVX2; w holds nb/8 Q6_K super-blocks and
    /// a nb activation blocks (nb a multiple of 8).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    unsafe fn dot_q6k_avx512(w: &[u8], a: &ActRow, nb: usize) -> f32 {
        let bb = QType::Q6K.block_bytes();
        let m4 = _mm512_set1_epi8(0x0f);
        let m3 = _mm512_set1_epi8(3);
        let c32 = _mm512_set1_epi8(32);
        let zero = _mm512_setzero_si512();
        // Lane k of a pair's product sums elements 4k..4k+3 of its two blocks: lanes 0–3
        // are group 0 of the first block, 4–7 its group 1, 8–15 the second block's.
        let group = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); 2];
        for s in 0..nb / 8 {
            let blk = &w[s * bb..(s + 1) * bb];
            let d = super::f16_at(blk, 208);
            // The 16 group scales d·sc·dx of the super-block, in element order.
            let mut gs = [0.0f32; 16];
            for (j, g) in gs.iter_mut().enumerate() {
                let (bp, gi) = (j / 2, j % 2);
                let (h, c) = (bp / 4, bp % 4);
                *g = d * blk[192 + 8 * h + 2 * c + gi] as i8 as f32 * a.d[8 * s + bp];
            }
            // SAFETY: gs has 16 floats.
            let gsv = unsafe { _mm512_loadu_ps(gs.as_ptr()) };
            for h in 0..2 {
                // SAFETY: ql (64 bytes at 64h) and qh (32 bytes at 128 + 32h) lie inside
                // the 210-byte block.
                let (ql, qh) = unsafe {
                    (
                        _mm512_loadu_si512(blk.as_ptr().add(64 * h) as *const _),
                        _mm256_loadu_si256(blk.as_ptr().add(128 + 32 * h) as *const __m256i),
                    )
                };
                // [qh, qh >> 2]: quadrants 0 and 1's high bits in bits 0–1 of each byte
                // (and, shifted by 4 more, quadrants 2 and 3's). A 16-bit shift carries the
                // neighbour byte's bits into this byte's top, which `& 3` drops.
                let qh2 =
                    _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
                for (half_pair, acc_hp) in acc.iter_mut().enumerate() {
                    // Quadrants (0, 1) take the low nibbles of ql[0..64], (2, 3) the high.
                    let (lo, hb) = if half_pair == 0 {
                        (_mm512_and_si512(ql, m4), _mm512_and_si512(qh2, m3))
                    } else {
                        (
                            _mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                            _mm512_and_si512(_mm512_srli_epi16(qh2, 4), m3),
                        )
                    };
                    let u = _mm512_or_si512(lo, _mm512_slli_epi16(hb, 4));
                    let bp = 4 * h + 2 * half_pair;
                    // SAFETY: activation blocks 8s+bp and 8s+bp+1 (64 bytes) are in bounds.
                    let xv = unsafe {
                        _mm512_loadu_si512(a.qs.as_ptr().add((8 * s + bp) * BLOCK) as *const _)
                    };
                    // Σ (u − 32)·x = Σ u·x − Σ 32·x, both u8 × i8.
                    let prod = _mm512_sub_epi32(
                        _mm512_dpbusd_epi32(zero, u, xv),
                        _mm512_dpbusd_epi32(zero, c32, xv),
                    );
                    let idx = _mm512_add_epi32(group, _mm512_set1_epi32(2 * bp as i32));
                    let scale = _mm512_permutexvar_ps(idx, gsv);
                    *acc_hp = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(prod), *acc_hp);
                }
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }

    /// SAFETY: the CPU has AVX-512 F/BW/VNNI and AVX2; w holds nb/8 super-blocks of ty
    /// (Q4_K, Q5_K or Q6_K) and a nb activation blocks (nb a multiple of 8).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(crate) unsafe fn dot_avx512(ty: QType, w: &[u8], ksm: &[u8], a: &ActRow, nb: usize) -> f32 {
        if ty == QType::Q6K {
            // SAFETY: the caller's guarantees.
            return unsafe { dot_q6k_avx512(w, a, nb) };
        }
        assert!(
            ksm.len() >= nb / 8 * 16,
            "k-quant dot: scale table too short"
        );
        let bb = ty.block_bytes();
        let m4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        let zero = _mm512_setzero_si512();
        let mut acc = [_mm512_setzero_ps(); 2];
        let mut side8 = _mm256_setzero_ps();
        // Lanes 0–7 take sub-block 2c's factor, 8–15 sub-block 2c+1's.
        let pick = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        for s in 0..nb / 8 {
            let blk = &w[s * bb..(s + 1) * bb];
            let d = super::f16_at(blk, 0);
            let dmin = super::f16_at(blk, 2);
            let (qh, qs) = planes(ty, blk);
            // Per sub-block: the integer dot's factor d·sc·dx, and the minimum's term
            // −dmin·m·(dx·Σq), 8 at a time from the unpacked table.
            // SAFETY: 16 table bytes per super-block and 8 activation blocks per
            // super-block are in bounds (asserted above / by the caller).
            let dsc = unsafe {
                let t = ksm.as_ptr().add(16 * s);
                let sc =
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(t as *const __m128i)));
                let m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                    t.add(8) as *const __m128i
                )));
                let dx = _mm256_loadu_ps(a.d.as_ptr().add(8 * s));
                let dsum = _mm256_loadu_ps(a.dsum.as_ptr().add(8 * s));
                side8 = _mm256_fmadd_ps(_mm256_mul_ps(m, _mm256_set1_ps(dmin)), dsum, side8);
                _mm512_zextps256_ps512(_mm256_mul_ps(_mm256_mul_ps(sc, _mm256_set1_ps(d)), dx))
            };
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
                let idx = _mm512_add_epi32(pick, _mm512_set1_epi32(2 * c as i32));
                let scale = _mm512_permutexvar_ps(idx, dsc);
                acc[c & 1] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(prod), acc[c & 1]);
            }
        }
        // The minimums' terms are subtracted: x = d·sc·q − dmin·m.
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
            - _mm512_reduce_add_ps(_mm512_zextps256_ps512(side8))
    }
}
