//! The scan kernels: dot products of a group of questions with blocks of 16 keys (panel
//! layout, see `keys`), filtered against each question's running k-th best score.
//!
//! Every kernel computes the raw score of a (question, key) pair the same way, so results are
//! bitwise identical whatever the kernel, the tile shape, the thread split or the shard:
//! `s = fma(q[r-1], k[r-1], … fma(q[1], k[1], fma(q[0], k[0], 0)))` in f32, dimension by
//! dimension in increasing order. The brute-force reference (`slow`) uses the same fold.
//!
//! AVX-512F is chosen at run time; the portable kernel (written with `f32::mul_add` so it
//! gives the same bits) is compiled twice, plain and under AVX2+FMA. bf16 keys are widened
//! exactly (a 16-bit shift) right after the load, in registers: same fold on the widened
//! values, half the bytes read.
use super::heap::TopKHeap;
use super::Candidate;
use crate::keys::{KeyDtype, KeyMatrix, Lanes, LanesBf16, GROUP, LANES};

/// A panel vector (one dimension of 16 keys) in either storage type.
pub(crate) trait Panel: Copy {
    /// bf16 bits (32-byte vectors) rather than f32 (64-byte vectors).
    const BF16: bool;
    fn widen(&self) -> [f32; LANES];
}

impl Panel for Lanes {
    const BF16: bool = false;
    #[inline(always)]
    fn widen(&self) -> [f32; LANES] {
        self.0
    }
}

impl Panel for LanesBf16 {
    const BF16: bool = true;
    #[inline(always)]
    fn widen(&self) -> [f32; LANES] {
        self.0.map(|h| f32::from_bits(u32::from(h) << 16))
    }
}

/// Which scan kernel to run. `Auto` is the default; `Portable` is for tests and comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kernel {
    #[default]
    Auto,
    Portable,
}

/// Scans blocks `b0..b1` of `keys` for questions `qs` (nq × r, row-major), offering every
/// live key whose score reaches a question's threshold to that question's heap.
pub(crate) fn scan_blocks(
    keys: &KeyMatrix,
    b0: usize,
    b1: usize,
    qs: &[f32],
    heaps: &mut [TopKHeap],
    kernel: Kernel,
) {
    match keys.dtype() {
        KeyDtype::F32 => scan_typed(keys, keys.panels(), b0, b1, qs, heaps, kernel),
        KeyDtype::Bf16 => scan_typed(keys, keys.panels_bf16(), b0, b1, qs, heaps, kernel),
    }
}

/// `panels` are `keys`' panels of type `P`.
fn scan_typed<P: Panel>(
    keys: &KeyMatrix,
    panels: &[P],
    b0: usize,
    b1: usize,
    qs: &[f32],
    heaps: &mut [TopKHeap],
    kernel: Kernel,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if kernel == Kernel::Auto && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { avx512::scan(keys, panels, b0, b1, qs, heaps) };
        }
        if kernel == Kernel::Auto
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { scan_avx2(keys, panels, b0, b1, qs, heaps) };
        }
    }
    scan_portable(keys, panels, b0, b1, qs, heaps)
}

/// Offers lanes of `scores` (block `b`) that reach the threshold to `heap`.
#[inline(always)]
fn offer(keys: &KeyMatrix, b: usize, scores: &[f32; LANES], heap: &mut TopKHeap) {
    let ids = keys.ids();
    for (lane, &s) in scores.iter().enumerate() {
        let row = b * LANES + lane;
        if s >= heap.threshold() && keys.is_live(row) {
            heap.push(Candidate {
                score: s,
                id: ids[row],
            });
        }
    }
}

#[inline(always)]
fn scan_portable<P: Panel>(
    keys: &KeyMatrix,
    panels: &[P],
    b0: usize,
    b1: usize,
    qs: &[f32],
    heaps: &mut [TopKHeap],
) {
    let r = keys.r();
    for b in b0..b1 {
        for (q, heap) in qs.chunks_exact(r).zip(heaps.iter_mut()) {
            let mut acc = [0.0f32; LANES];
            for (j, qj) in q.iter().enumerate() {
                let kj = panels[keys.vec_index(b, j)].widen();
                for (a, &k) in acc.iter_mut().zip(&kj) {
                    *a = qj.mul_add(k, *a);
                }
            }
            offer(keys, b, &acc, heap);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_avx2<P: Panel>(
    keys: &KeyMatrix,
    panels: &[P],
    b0: usize,
    b1: usize,
    qs: &[f32],
    heaps: &mut [TopKHeap],
) {
    scan_portable(keys, panels, b0, b1, qs, heaps)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{offer, Panel, TopKHeap, GROUP, LANES};
    use crate::keys::KeyMatrix;
    use std::arch::x86_64::*;

    /// Blocks per tile and questions per group: one question streams a whole group of 8
    /// blocks (8 independent accumulator chains over 512 contiguous bytes per dimension);
    /// several questions use tiles of 4 blocks × 6 questions: 24 accumulators, 4 key loads
    /// and 6 broadcasts per 24 FMAs, a 32 KiB key tile (r = 128) that stays in L1 while
    /// the groups of questions pass over it. (Measured on the 1M × 128 bench with 32
    /// questions: 4×6 and 8×3 ≈ 32 ms, 2×12 ≈ 38 ms.)
    const TILE_NB: usize = 4;
    const TILE_NQ: usize = 6;

    pub(super) unsafe fn scan<P: Panel>(
        keys: &KeyMatrix,
        panels: &[P],
        b0: usize,
        b1: usize,
        qs: &[f32],
        heaps: &mut [TopKHeap],
    ) {
        let r = keys.r();
        let nq = heaps.len();
        if nq == 1 {
            return tiles::<8, 1, P>(keys, panels, b0, b1, qs, heaps);
        }
        // Key tile outer, question groups inner: a tile (NB blocks, NB·8 KiB at r=128) stays
        // in L1 while every group of questions passes over it.
        const NB: usize = TILE_NB;
        let mut b = b0;
        while b < b1 {
            let bn = (b + NB).min(b1);
            let mut q0 = 0;
            while q0 < nq {
                let g = (nq - q0).min(TILE_NQ);
                let qg = &qs[q0 * r..(q0 + g) * r];
                let hg = &mut heaps[q0..q0 + g];
                match g {
                    12 => tiles::<NB, 12, P>(keys, panels, b, bn, qg, hg),
                    11 => tiles::<NB, 11, P>(keys, panels, b, bn, qg, hg),
                    10 => tiles::<NB, 10, P>(keys, panels, b, bn, qg, hg),
                    9 => tiles::<NB, 9, P>(keys, panels, b, bn, qg, hg),
                    8 => tiles::<NB, 8, P>(keys, panels, b, bn, qg, hg),
                    7 => tiles::<NB, 7, P>(keys, panels, b, bn, qg, hg),
                    6 => tiles::<NB, 6, P>(keys, panels, b, bn, qg, hg),
                    5 => tiles::<NB, 5, P>(keys, panels, b, bn, qg, hg),
                    4 => tiles::<NB, 4, P>(keys, panels, b, bn, qg, hg),
                    3 => tiles::<NB, 3, P>(keys, panels, b, bn, qg, hg),
                    2 => tiles::<NB, 2, P>(keys, panels, b, bn, qg, hg),
                    _ => tiles::<NB, 1, P>(keys, panels, b, bn, qg, hg),
                }
                q0 += g;
            }
            b = bn;
        }
    }

    /// Blocks `b0..b1` against `NQ` questions, `NB` blocks at a time where a whole tile fits
    /// in one group of blocks, else one at a time.
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles<const NB: usize, const NQ: usize, P: Panel>(
        keys: &KeyMatrix,
        panels: &[P],
        b0: usize,
        b1: usize,
        qs: &[f32],
        heaps: &mut [TopKHeap],
    ) {
        let mut b = b0;
        while b < b1 {
            if b % GROUP + NB <= GROUP && b + NB <= b1 {
                tile::<NB, NQ, P>(keys, panels, b, qs, heaps);
                b += NB;
            } else {
                tile::<1, NQ, P>(keys, panels, b, qs, heaps);
                b += 1;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const NB: usize, const NQ: usize, P: Panel>(
        keys: &KeyMatrix,
        panels: &[P],
        b: usize,
        qs: &[f32],
        heaps: &mut [TopKHeap],
    ) {
        let r = keys.r();
        assert!(qs.len() >= NQ * r && heaps.len() >= NQ && b % GROUP + NB <= GROUP);
        assert!(keys.vec_index(b, r - 1) + NB <= panels.len());
        // Vector (b+i, j) is at vec_index(b, 0) + GROUP·j + i (same group, asserted above).
        let panel = panels.as_ptr().add(keys.vec_index(b, 0));
        let q = qs.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); NB]; NQ];
        for j in 0..r {
            let mut kv = [_mm512_setzero_ps(); NB];
            for (i, kv) in kv.iter_mut().enumerate() {
                let v = panel.add(j * GROUP + i);
                // SAFETY: vector (b+i, j) is inside `panels` (asserted above); `Lanes` is 16
                // f32 aligned to 64 bytes, `LanesBf16` 16 bf16 aligned to 32 bytes (`P::BF16`
                // says which, a constant, so only one branch is compiled).
                *kv = if P::BF16 {
                    let h = _mm256_load_si256(v as *const __m256i);
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                } else {
                    _mm512_load_ps(v as *const f32)
                };
            }
            for (qi, acc) in acc.iter_mut().enumerate() {
                // SAFETY: qi < NQ and j < r, inside qs (asserted above).
                let qb = _mm512_set1_ps(*q.add(qi * r + j));
                for i in 0..NB {
                    acc[i] = _mm512_fmadd_ps(qb, kv[i], acc[i]);
                }
            }
        }
        for (qi, acc) in acc.iter().enumerate() {
            let heap = &mut heaps[qi];
            for (i, &a) in acc.iter().enumerate() {
                let thr = _mm512_set1_ps(heap.threshold());
                if _mm512_cmp_ps_mask::<_CMP_GE_OQ>(a, thr) != 0 {
                    let mut s = [0.0f32; LANES];
                    _mm512_storeu_ps(s.as_mut_ptr(), a);
                    offer(keys, b + i, &s, heap);
                }
            }
        }
    }
}
