//! Dot products of one quantised weight row with one quantised activation row, per block
//! type, at three SIMD levels chosen at run time: AVX-512 VNNI (two blocks per 512-bit
//! `vpdpbusd`, scales from the row's f16 tables 16 at a time), AVX2 (`vpmaddubsw` +
//! `vpmaddwd`, one block per 256-bit op) and a portable scalar reference. The integer sum of a block is exact at every level; only the order in
//! which the f32 block terms are added differs.
//!
//! Per block b (weight scale dw, activation scale dx, activation sum Σq):
//!   Q8_0: dw·dx·Σ w_i q_i
//!   Q4_0: dw·dx·(Σ n_i q_i − 8·Σq)       (n the stored nibble)
//!   Q4_1: dw·dx·Σ n_i q_i + m·dx·Σq
use super::acts::ActRow;
use super::{QType, WeightRow, BLOCK, TABLE_PAD};
use crate::gguf::quant::f16_at;

/// A SIMD level of the quantised dot kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    Portable,
    Avx2,
    Avx512Vnni,
}

impl SimdLevel {
    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            SimdLevel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every level this CPU runs, fastest last.
    pub fn available() -> Vec<SimdLevel> {
        [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512Vnni]
            .into_iter()
            .filter(|l| l.supported())
            .collect()
    }
}

/// A dot kernel for a level this CPU supports (the only way to get one is to check).
#[derive(Debug, Clone, Copy)]
pub struct DotKernel {
    level: SimdLevel,
}

impl DotKernel {
    /// The kernel of `level`, or None where this CPU lacks it.
    pub fn new(level: SimdLevel) -> Option<Self> {
        level.supported().then_some(DotKernel { level })
    }

    /// The fastest level this CPU has (detected once).
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
        let level = *BEST.get_or_init(|| {
            *SimdLevel::available()
                .last()
                .expect("the portable level is always available")
        });
        DotKernel { level }
    }

    pub fn level(self) -> SimdLevel {
        self.level
    }

    /// Σ over blocks of (weight row `w`) · (activation row `a`).
    pub fn dot(self, w: &WeightRow, a: &ActRow) -> f32 {
        self.dot_planes(w, a, None)
    }

    /// w · (a + r): the dot with an activation row and, if given, its second plane.
    #[inline]
    pub fn dot_planes(self, w: &WeightRow, a: &ActRow, r: Option<&ActRow>) -> f32 {
        let nb = a.qs.len() / BLOCK;
        assert!(
            !w.ty.packed_only(),
            "{:?} has no row kernel (the loader keeps it only with a packed copy)",
            w.ty
        );
        if w.ty.is_k() {
            return self.dot_k(w, a, r, nb);
        }
        assert!(
            w.blocks.len() >= nb * w.ty.block_bytes()
                && w.scales.len() >= nb + TABLE_PAD
                && (w.ty != QType::Q4_1 || w.mins.len() >= nb + TABLE_PAD)
                && a.d.len() >= nb
                && a.sum.len() >= nb
                && a.dsum.len() >= nb,
            "quantised dot: row of {} bytes / {} scales for {nb} blocks",
            w.blocks.len(),
            a.d.len()
        );
        if let Some(r) = r {
            assert!(
                r.qs.len() >= nb * BLOCK
                    && r.d.len() >= nb
                    && r.sum.len() >= nb
                    && r.dsum.len() >= nb,
                "quantised dot: second activation plane shorter than the first"
            );
        }
        let (ty, wb) = (w.ty, w.blocks);
        let one = |a: &ActRow| match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a DotKernel of this level exists only where `supported()` said the CPU
            // has its features; the lengths were checked above for nb blocks.
            SimdLevel::Avx2 => unsafe { x86::dot_avx2(ty, wb, a.qs, a.d, a.sum, nb) },
            _ => portable(ty, wb, a.qs, a.d, a.sum, 0, nb),
        };
        match (self.level, r) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above (the AVX-512 level's features; lengths of both planes).
            (SimdLevel::Avx512Vnni, None) => unsafe { x86::dot_avx512::<false>(w, a, a, nb) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (SimdLevel::Avx512Vnni, Some(r)) => unsafe { x86::dot_avx512::<true>(w, a, r, nb) },
            (_, None) => one(a),
            (_, Some(r)) => one(a) + one(r),
        }
    }
}

impl DotKernel {
    /// The k-quant kernels (super-blocks of 8 activation blocks).
    fn dot_k(self, w: &WeightRow, a: &ActRow, r: Option<&ActRow>, nb: usize) -> f32 {
        assert!(
            nb.is_multiple_of(8) && w.blocks.len() >= nb / 8 * w.ty.block_bytes(),
            "k-quant dot: {} bytes for {nb} activation blocks",
            w.blocks.len()
        );
        let one = |a: &ActRow| {
            assert!(
                a.d.len() >= nb && a.dsum.len() >= nb,
                "k-quant dot: short activations"
            );
            match self.level {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: this level's features were checked by `supported()`; the lengths
                // just above.
                SimdLevel::Avx512Vnni => unsafe {
                    super::kquant::x86::dot_avx512(w.ty, w.blocks, w.ksm, a, nb)
                },
                _ => super::kquant::portable(w.ty, w.blocks, a, nb),
            }
        };
        one(a) + r.map_or(0.0, one)
    }
}

/// The reference: blocks `b0..b1` one at a time, integer sums in i32, f32 terms in order.
pub(crate) fn portable(
    ty: QType,
    w: &[u8],
    qs: &[i8],
    d: &[f32],
    sum: &[i32],
    b0: usize,
    b1: usize,
) -> f32 {
    let bb = ty.block_bytes();
    let mut acc = 0.0f32;
    for b in b0..b1 {
        let blk = &w[b * bb..(b + 1) * bb];
        let x = &qs[b * BLOCK..(b + 1) * BLOCK];
        let dw = f16_at(blk, 0);
        match ty {
            QType::Q8_0 => {
                let s: i32 = blk[2..34]
                    .iter()
                    .zip(x)
                    .map(|(&q, &v)| q as i8 as i32 * v as i32)
                    .sum();
                acc += dw * d[b] * s as f32;
            }
            QType::Q4K | QType::Q5K | QType::Q6K => unreachable!("k-quants go through dot_k"),
            QType::Q5_0 | QType::Q5_1 => unreachable!("Q5_0/Q5_1 have no row kernel"),
            QType::Q4_0 | QType::Q4_1 => {
                let off = if ty == QType::Q4_0 { 2 } else { 4 };
                let mut s = 0i32;
                for (j, &q) in blk[off..off + 16].iter().enumerate() {
                    s += (q & 0x0f) as i32 * x[j] as i32 + (q >> 4) as i32 * x[j + 16] as i32;
                }
                if ty == QType::Q4_0 {
                    acc += dw * d[b] * (s - 8 * sum[b]) as f32;
                } else {
                    acc += dw * d[b] * s as f32 + f16_at(blk, 2) * d[b] * sum[b] as f32;
                }
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{portable, ActRow, QType, WeightRow, BLOCK};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "f16c")]
    fn f16_bits_to_f32(bits: u16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The f16 at byte `i` of the row starting at `p`.
    ///
    /// SAFETY (callers): p + i + 1 is inside the row.
    #[inline]
    #[target_feature(enable = "f16c")]
    unsafe fn f16_at(p: *const u8, i: usize) -> f32 {
        f16_bits_to_f32(unsafe { (p.add(i) as *const u16).read_unaligned() })
    }

    /// Where Q4 types keep their nibbles, and the f32 term each block adds beside the
    /// integer dot: Q4_0 −8·dw·dx·Σq, Q4_1 m·dx·Σq.
    ///
    /// SAFETY (callers): blk points at a whole block of `ty`.
    #[inline]
    #[target_feature(enable = "f16c")]
    unsafe fn q4_side(ty: QType, blk: *const u8, dw: f32, dx: f32, sum: i32) -> (usize, f32) {
        match ty {
            QType::Q4_0 => (2, -8.0 * dw * dx * sum as f32),
            _ => (4, unsafe { f16_at(blk, 2) } * dx * sum as f32),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// SAFETY: the CPU has AVX2, FMA and F16C; w holds nb blocks of ty, qs nb·32 values,
    /// d and sum nb each.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_avx2(
        ty: QType,
        w: &[u8],
        qs: &[i8],
        d: &[f32],
        sum: &[i32],
        nb: usize,
    ) -> f32 {
        let bb = ty.block_bytes();
        let ones = _mm256_set1_epi16(1);
        let m4 = _mm_set1_epi8(0x0f);
        // Two accumulators so consecutive blocks' FMAs do not wait on each other.
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut side = 0.0f32;
        for b in 0..nb {
            // SAFETY: b < nb, so the block and its 32 activations are in bounds (caller).
            unsafe {
                let blk = w.as_ptr().add(b * bb);
                let xv = _mm256_loadu_si256(qs.as_ptr().add(b * BLOCK) as *const __m256i);
                let dw = f16_at(blk, 0);
                let prod = match ty {
                    QType::Q8_0 => {
                        let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                        // u8 × i8 only: move w's sign onto x. |w| ≤ 128 and |x| ≤ 127, so a
                        // pair sum is at most 2·128·127 = 32,512 and cannot saturate i16.
                        let aw = _mm256_sign_epi8(wv, wv);
                        let sx = _mm256_sign_epi8(xv, wv);
                        _mm256_maddubs_epi16(aw, sx)
                    }
                    _ => {
                        let (off, s) = q4_side(ty, blk, dw, d[b], sum[b]);
                        side += s;
                        let q = _mm_loadu_si128(blk.add(off) as *const __m128i);
                        let lo = _mm_and_si128(q, m4);
                        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                        // Nibbles ≤ 15: pair sums ≤ 2·15·127, far from saturating.
                        _mm256_maddubs_epi16(_mm256_set_m128i(hi, lo), xv)
                    }
                };
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                acc[b & 1] = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[b]), p, acc[b & 1]);
            }
        }
        hsum256(_mm256_add_ps(acc[0], acc[1])) + side
    }

    /// SAFETY: the CPU has AVX-512 F/BW/VL/VNNI, FMA and F16C; w holds nb blocks (and
    /// their scales, and minimums for Q4_1), a and r nb blocks of activations each (r is
    /// read only when TWO: the second activation plane, dotted with the same unpacked
    /// weights, so the plane costs two `vpdpbusd` and no second unpacking).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn dot_avx512<const TWO: bool>(
        w: &WeightRow,
        a: &ActRow,
        r: &ActRow,
        nb: usize,
    ) -> f32 {
        let ty = w.ty;
        let bb = ty.block_bytes();
        let base = w.blocks.as_ptr();
        let m4 = _mm256_set1_epi8(0x0f);
        let zero = _mm512_setzero_si512();
        let two = _mm512_set1_epi32(2);
        // Two accumulators per plane so consecutive pairs' FMAs do not wait on each other.
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut side = _mm512_setzero_ps();
        let paired = nb & !1;
        // Chunks of up to 16 blocks: their scale products dw·dx in one vector, from which
        // each pair's two scales are broadcast to its halves by one permute.
        let mut c0 = 0;
        while c0 < paired {
            let len = (paired - c0).min(16);
            let mask: __mmask16 = if len == 16 { 0xffff } else { (1u16 << len) - 1 };
            // SAFETY: c0 + len <= nb, so the masked loads stay inside the activation rows;
            // the tables are read 16 entries at a time unmasked (masked 16-bit loads cost
            // a third of this kernel's time on Zen 4), which stays inside the table because
            // every table ends with TABLE_PAD readable entries; lanes past len are zeroed.
            let (dw, dwx, dwx2, dsum) = unsafe {
                let dw = _mm512_maskz_mov_ps(
                    mask,
                    _mm512_cvtph_ps(_mm256_loadu_si256(
                        w.scales.as_ptr().add(c0) as *const __m256i
                    )),
                );
                let dx = _mm512_maskz_loadu_ps(mask, a.d.as_ptr().add(c0));
                let mut dsum = _mm512_maskz_loadu_ps(mask, a.dsum.as_ptr().add(c0));
                let mut dwx2 = _mm512_setzero_ps();
                if TWO {
                    dwx2 = _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(mask, r.d.as_ptr().add(c0)));
                    dsum =
                        _mm512_add_ps(dsum, _mm512_maskz_loadu_ps(mask, r.dsum.as_ptr().add(c0)));
                }
                (dw, _mm512_mul_ps(dw, dx), dwx2, dsum)
            };
            // The side terms are linear in d·Σq, so both planes' add before one FMA.
            match ty {
                QType::Q8_0 | QType::Q4K | QType::Q5K | QType::Q6K | QType::Q5_0 | QType::Q5_1 => {}
                QType::Q4_0 => {
                    side = _mm512_fmadd_ps(dw, _mm512_mul_ps(dsum, _mm512_set1_ps(-8.0)), side)
                }
                QType::Q4_1 => {
                    // SAFETY: as above; Q4_1 rows carry nb minimums and the padding.
                    let m = unsafe {
                        _mm512_maskz_mov_ps(
                            mask,
                            _mm512_cvtph_ps(_mm256_loadu_si256(
                                w.mins.as_ptr().add(c0) as *const __m256i
                            )),
                        )
                    };
                    side = _mm512_fmadd_ps(m, dsum, side);
                }
            }
            // Lanes 0–7 take the pair's first block's scale, 8–15 its second's.
            let mut idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            for p in 0..len / 2 {
                let ba = c0 + 2 * p;
                // SAFETY: ba + 1 < nb, so both blocks and their 64 activations (of each
                // plane) are in bounds.
                let (prod, prod2) = unsafe {
                    let (wa, wb) = (base.add(ba * bb), base.add((ba + 1) * bb));
                    let xv = _mm512_loadu_si512(a.qs.as_ptr().add(ba * BLOCK) as *const _);
                    let xv2 = if TWO {
                        _mm512_loadu_si512(r.qs.as_ptr().add(ba * BLOCK) as *const _)
                    } else {
                        zero
                    };
                    match ty {
                        QType::Q8_0 => {
                            let va = _mm256_loadu_si256(wa.add(2) as *const __m256i);
                            let vb = _mm256_loadu_si256(wb.add(2) as *const __m256i);
                            let wv = _mm512_inserti64x4(_mm512_castsi256_si512(va), vb, 1);
                            // Move w's sign onto x so the u8 × i8 instruction applies;
                            // |−128| reads as the unsigned 128, which is right.
                            let neg = _mm512_movepi8_mask(wv);
                            let aw = _mm512_abs_epi8(wv);
                            let sx = _mm512_mask_sub_epi8(xv, neg, zero, xv);
                            let p1 = _mm512_dpbusd_epi32(zero, aw, sx);
                            let p2 = if TWO {
                                _mm512_dpbusd_epi32(
                                    zero,
                                    aw,
                                    _mm512_mask_sub_epi8(xv2, neg, zero, xv2),
                                )
                            } else {
                                zero
                            };
                            (p1, p2)
                        }
                        _ => {
                            let off = if ty == QType::Q4_0 { 2 } else { 4 };
                            let qa = _mm_loadu_si128(wa.add(off) as *const __m128i);
                            let qb = _mm_loadu_si128(wb.add(off) as *const __m128i);
                            let q = _mm256_set_m128i(qb, qa);
                            let lo = _mm256_and_si256(q, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                            // 128-bit lanes [lo a, lo b, hi a, hi b] reordered to x's
                            // [a 0–15, a 16–31, b 0–15, b 16–31]: lanes 0, 2, 1, 3.
                            let wv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                            let wv = _mm512_shuffle_i64x2(wv, wv, 0b11_01_10_00);
                            let p2 = if TWO {
                                _mm512_dpbusd_epi32(zero, wv, xv2)
                            } else {
                                zero
                            };
                            (_mm512_dpbusd_epi32(zero, wv, xv), p2)
                        }
                    }
                };
                let scale = _mm512_permutexvar_ps(idx, dwx);
                acc[p & 1] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(prod), acc[p & 1]);
                if TWO {
                    let scale2 = _mm512_permutexvar_ps(idx, dwx2);
                    acc[2 + (p & 1)] =
                        _mm512_fmadd_ps(scale2, _mm512_cvtepi32_ps(prod2), acc[2 + (p & 1)]);
                }
                idx = _mm512_add_epi32(idx, two);
            }
            c0 += len;
        }
        let all = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let mut total = _mm512_reduce_add_ps(_mm512_add_ps(all, side));
        if paired < nb {
            total += portable(ty, w.blocks, a.qs, a.d, a.sum, paired, nb);
            if TWO {
                total += portable(ty, w.blocks, r.qs, r.d, r.sum, paired, nb);
            }
        }
        total
    }
}
