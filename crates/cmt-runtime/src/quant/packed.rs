//! Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K weights repacked 16 rows at a time for an int16 × int8 matmul
//! (AVX-512 VNNI `vpdpwssd`), every m.
//!
//! The row-layout kernels of [`super::dot`] dot one weight row with one activation row, so
//! each integer block sum ends in a horizontal reduction and an f32 step per (row, row,
//! block): fine for decode, 6.7× slower than the f32 GEMM at m = 128 (`docs/perf.md`).
//! Here one 512-bit lane holds one output row: a group of 16 weight rows is stored
//! interleaved by column pairs, `[block][pair p][row r][2]`, so one 32-byte load widened to
//! 16-bit is columns (2p, 2p + 1) of all 16 rows, and one `vpdpwssd` with a broadcast
//! activation pair adds 32 products into 16 per-row sums. After each 32-column block the
//! 16 sums are scaled (weight scale per lane × activation scale) into f32 accumulators.
//! Nothing is reduced horizontally; an activation tile of up to [`TILE_M`] rows shares
//! every widened weight load.
//!
//! Q4_0/Q4_1 keep their nibbles (16 bytes per pair of columns of 16 rows: byte r holds
//! column 2p of row r in its low nibble, 2p + 1 in its high one), widened in registers to
//! the same 16-bit pairs; their offset enters per block as m_r · d_a·Σq_a (Q4_1's minimum m;
//! Q4_0's x = d·(q − 8) is m = −8d), so every type shares one kernel. Q5_0 and Q5_1 are
//! stored as bytes like Q8_0 (Q5_0 as q − 16, Q5_1 as q with its minimum as the offset):
//! one byte per weight against the file's 0.69–0.75, for a kernel that exists. Q4_K and
//! Q5_K are the same forms per 32-element sub-block (scale d·sc_j, offset −dmin·m_j), with
//! f32 tables since d·sc_j is not always an f16; Q6_K's 16-element groups (two scales per 32
//! columns) keep their own kernel ([`super::kquant`]).
//!
//! Activations are quantised per 32-element block to **16 bits** (d = max|x| / 32767,
//! error ≤ d/2 per element): the accuracy of the row kernels' two 8-bit planes
//! (d₁/508 with d₁ = max|x|/127, i.e. max|x|/64516) in one operand. A block's integer sum
//! is at most 32 · 128 · 32767 < 2³¹: no overflow.
use super::dot::{DotKernel, SimdLevel};
use super::{QType, QuantMatrix, BLOCK};
use crate::backend::cpu::matmul::SendPtr;
use half::f16;
use rayon::prelude::*;

/// Weight rows per group (one 512-bit lane each).
pub const GROUP: usize = 16;
/// Activation rows sharing each weight load (16 i32 + 16 f32 accumulators would spill:
/// 8 + 8 of the 32 zmm registers leave room for the weights and broadcasts).
pub const TILE_M: usize = 8;
/// Weight groups per rayon task.
const GROUPS_PER_TASK: usize = 4;

/// A Q8_0, Q4_0 or Q4_1 matrix in 16-row interleaved groups (rows padded to a multiple of
/// 16 with zeros).
#[derive(Debug, Clone)]
pub struct Packed {
    pub rows: usize,
    pub cols: usize,
    /// Nibbles (Q4_0/Q4_1) rather than bytes (Q8_0, Q5_0, Q5_1).
    nibbles: bool,
    /// Bytes: [groups][blocks][16 pairs][16 rows][2] i8. Nibbles: [groups][blocks][16
    /// pairs][16 rows] bytes of two nibbles.
    qs: Vec<u8>,
    /// [groups][blocks][16 rows] weight scales.
    d: Table,
    /// [groups][blocks][16 rows] offsets m (x = d·q + m: Q4_0's −8d, Q4_1's and Q5_1's
    /// minimum, the k-quants' −dmin·m_j); None for Q8_0 and Q5_0.
    m: Option<Table>,
}

/// Per (block, row) scales or offsets: f16 as the Q8_0/Q4/Q5 files hold them (16 convert in
/// one instruction), f32 for the k-quants, whose d·sc (an f16 times a 6-bit scale) is not
/// always an f16. Either way the values are exactly those the dequantiser uses.
#[derive(Debug, Clone)]
enum Table {
    Half(Vec<f16>),
    Single(Vec<f32>),
}

impl Table {
    fn zeros(single: bool, n: usize) -> Table {
        if single {
            Table::Single(vec![0.0; n])
        } else {
            Table::Half(vec![f16::ZERO; n])
        }
    }
    /// `v` must be exact in the table's type (it comes from the file's f16 fields, or from
    /// f32 products for a single-precision table).
    fn set(&mut self, i: usize, v: f32) {
        match self {
            Table::Half(t) => t[i] = f16::from_f32(v),
            Table::Single(t) => t[i] = v,
        }
    }
    fn get(&self, i: usize) -> f32 {
        match self {
            Table::Half(t) => t[i].to_f32(),
            Table::Single(t) => t[i],
        }
    }
    fn len(&self) -> usize {
        match self {
            Table::Half(t) => t.len(),
            Table::Single(t) => t.len(),
        }
    }
    fn bytes(&self) -> usize {
        match self {
            Table::Half(t) => 2 * t.len(),
            Table::Single(t) => 4 * t.len(),
        }
    }
    fn single(&self) -> bool {
        matches!(self, Table::Single(_))
    }
    fn as_ptr(&self) -> *const u8 {
        match self {
            Table::Half(t) => t.as_ptr() as *const u8,
            Table::Single(t) => t.as_ptr() as *const u8,
        }
    }
}

/// Block `j` of a (super-)block of `ty`: its scale, its offset (0 where the type has none)
/// and its 32 integer values as stored, so that element c is scale·q[c] + offset.
fn block_values(ty: QType, blk: &[u8], j: usize) -> (f32, f32, [i32; BLOCK]) {
    let f16_at = |at: usize| f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
    // Element c of Q4-style nibbles: c < 16 in the low nibble of byte c, else the high
    // nibble of byte c − 16.
    let nib = |qb: &[u8], c: usize| (if c < 16 { qb[c] & 15 } else { qb[c - 16] >> 4 }) as i32;
    let mut q = [0i32; BLOCK];
    match ty {
        QType::Q8_0 => {
            for (c, v) in q.iter_mut().enumerate() {
                *v = blk[2 + c] as i8 as i32;
            }
            (f16_at(0), 0.0, q)
        }
        QType::Q4_0 | QType::Q4_1 => {
            let (qb, d) = (&blk[if ty == QType::Q4_1 { 4 } else { 2 }..], f16_at(0));
            for (c, v) in q.iter_mut().enumerate() {
                *v = nib(qb, c);
            }
            let off = if ty == QType::Q4_1 {
                f16_at(2)
            } else {
                -8.0 * d
            };
            (d, off, q)
        }
        // 32 fifth bits (bit c: element c), then the low nibbles as Q4's.
        QType::Q5_0 | QType::Q5_1 => {
            let o = if ty == QType::Q5_1 { 4 } else { 2 };
            let qh = u32::from_le_bytes([blk[o], blk[o + 1], blk[o + 2], blk[o + 3]]);
            let bias = if ty == QType::Q5_1 { 0 } else { 16 };
            for (c, v) in q.iter_mut().enumerate() {
                *v = (nib(&blk[o + 4..], c) | (((qh >> c) & 1) as i32) << 4) - bias;
            }
            let off = if ty == QType::Q5_1 { f16_at(2) } else { 0.0 };
            (f16_at(0), off, q)
        }
        // Sub-block j of a 256-element super-block: d·sc_j·q − dmin·m_j, the low nibbles of
        // bytes 32·(j/2).. for even j, the high ones for odd j (Q5_K: plus bit j of qh[l]).
        QType::Q4K | QType::Q5K => {
            let (sc, m) = crate::gguf::quant_k::scale_min_k4(j, &blk[4..16]);
            let (d, dmin) = (f16_at(0), f16_at(2));
            let qs = if ty == QType::Q5K {
                &blk[48..176]
            } else {
                &blk[16..144]
            };
            let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            for (l, v) in q.iter_mut().enumerate() {
                let low = if j.is_multiple_of(2) {
                    chunk[l] & 15
                } else {
                    chunk[l] >> 4
                } as i32;
                let high = if ty == QType::Q5K {
                    ((blk[16 + l] >> j) & 1) as i32
                } else {
                    0
                };
                *v = low | high << 4;
            }
            (d * sc, -(dmin * m), q)
        }
        QType::Q6K => unreachable!("Q6_K has no packed layout"),
    }
}

/// Bytes of one group's block in the packed layout.
fn group_block_bytes(nibbles: bool) -> usize {
    if nibbles {
        GROUP * BLOCK / 2
    } else {
        GROUP * BLOCK
    }
}

impl Packed {
    /// Repacks a Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K or Q5_K matrix (None for Q6_K, whose
    /// 16-element groups have two scales per 32 columns).
    pub fn new(w: &QuantMatrix) -> Option<Packed> {
        // (nibble layout, offset, single-precision tables)
        let (nibbles, offset, single) = match w.ty {
            QType::Q8_0 | QType::Q5_0 => (false, false, false),
            QType::Q5_1 => (false, true, false),
            QType::Q4_0 | QType::Q4_1 => (true, true, false),
            QType::Q4K => (true, true, true),
            QType::Q5K => (false, true, true),
            QType::Q6K => return None,
        };
        let (rows, cols) = (w.rows, w.cols);
        let (groups, nb, gbb) = (
            rows.div_ceil(GROUP),
            cols / BLOCK,
            group_block_bytes(nibbles),
        );
        let mut qs = vec![0u8; groups * nb * gbb];
        let mut d = Table::zeros(single, groups * nb * GROUP);
        let mut m = offset.then(|| Table::zeros(single, groups * nb * GROUP));
        let (bb, per) = (w.ty.block_bytes(), w.ty.block_elems() / BLOCK);
        for r in 0..rows {
            let (g, lane) = (r / GROUP, r % GROUP);
            for (sb, blk) in w.row_blocks(r).chunks_exact(bb).enumerate() {
                for j in 0..per {
                    let (scale, off, q) = block_values(w.ty, blk, j);
                    let gb = g * nb + sb * per + j;
                    d.set(gb * GROUP + lane, scale);
                    if let Some(m) = &mut m {
                        m.set(gb * GROUP + lane, off);
                    }
                    let dst = &mut qs[gb * gbb..(gb + 1) * gbb];
                    for p in 0..BLOCK / 2 {
                        let (q0, q1) = (q[2 * p], q[2 * p + 1]);
                        if nibbles {
                            dst[p * GROUP + lane] = (q0 | q1 << 4) as u8;
                        } else {
                            dst[(p * GROUP + lane) * 2] = q0 as i8 as u8;
                            dst[(p * GROUP + lane) * 2 + 1] = q1 as i8 as u8;
                        }
                    }
                }
            }
        }
        Some(Packed {
            rows,
            cols,
            nibbles,
            qs,
            d,
            m,
        })
    }

    pub fn bytes(&self) -> usize {
        self.qs.len() + self.d.bytes() + self.m.as_ref().map_or(0, Table::bytes)
    }

    fn blocks(&self) -> usize {
        self.cols / BLOCK
    }
}

/// m rows of activations quantised per 32-element block to i16.
#[derive(Debug, Clone)]
pub struct Acts16 {
    pub k: usize,
    /// [m · k].
    pub qs: Vec<i16>,
    /// [m · k/32] block scales.
    pub d: Vec<f32>,
    /// [m · k/32] d · Σq of each block (what a Q4 block's offset multiplies).
    pub dsum: Vec<f32>,
}

impl Acts16 {
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Acts16 {
        assert!(
            k.is_multiple_of(BLOCK),
            "activation width {k} is not whole blocks"
        );
        let mut a = Acts16 {
            k,
            qs: vec![0; m * k],
            d: vec![0.0; m * k / BLOCK],
            dsum: vec![0.0; m * k / BLOCK],
        };
        for (b, (xs, qs)) in x[..m * k]
            .chunks_exact(BLOCK)
            .zip(a.qs.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 32767.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                // Half away from zero, inline (see `QuantActs::quantize`); the clamp keeps a
                // rounding of id upwards from wrapping.
                let t = v * id;
                *q = ((t + 0.5f32.copysign(t)) as i32).clamp(-32767, 32767) as i16;
                sum += *q as i32;
            }
            a.d[b] = d;
            a.dsum[b] = d * sum as f32;
        }
        a
    }

    /// Per block, the largest error of a dequantised element (d/2).
    pub fn max_error(&self, block: usize) -> f32 {
        0.5 * self.d[block]
    }
}

/// out[m, n] = x[m, k] · wᵀ (+ bias) through the packed layout: the AVX-512 VNNI kernel
/// when `kernel` is that level, else the portable one (tests; the loader packs only on
/// VNNI CPUs).
pub fn packed_matmul_nt(
    x: &[f32],
    w: &Packed,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    kernel: DotKernel,
) {
    let vnni = kernel.level() == SimdLevel::Avx512Vnni;
    let (n, k) = (w.rows, w.cols);
    assert!(
        x.len() >= m * k && out.len() >= m * n && bias.is_none_or(|b| b.len() >= n),
        "packed matmul: buffers too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    let acts = Acts16::quantize(x, m, k);
    let groups = n.div_ceil(GROUP);
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..groups.div_ceil(GROUPS_PER_TASK))
        .into_par_iter()
        .for_each(|t| {
            let optr = out_ptr;
            for g in t * GROUPS_PER_TASK..((t + 1) * GROUPS_PER_TASK).min(groups) {
                for i0 in (0..m).step_by(TILE_M) {
                    let rows = TILE_M.min(m - i0);
                    let mut acc = [[0f32; GROUP]; TILE_M];
                    #[cfg(target_arch = "x86_64")]
                    if vnni {
                        // SAFETY: a DotKernel of level Avx512Vnni exists only where the CPU
                        // has AVX-512 F/BW/VNNI; the tile checks its ranges.
                        unsafe { avx512::group_tile(w, g, &acts, i0, rows, &mut acc) };
                    } else {
                        group_tile_portable(w, g, &acts, i0, rows, &mut acc);
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    {
                        let _ = vnni;
                        group_tile_portable(w, g, &acts, i0, rows, &mut acc);
                    }
                    let lanes = GROUP.min(n - g * GROUP);
                    for (j, a) in acc.iter().enumerate().take(rows) {
                        for (r, &v) in a.iter().enumerate().take(lanes) {
                            let col = g * GROUP + r;
                            let b = bias.map_or(0.0, |b| b[col]);
                            // SAFETY: (i0 + j, col) is inside out (checked: i0 + j < m,
                            // col < n), and columns of group g belong to this task only.
                            unsafe { *optr.0.add((i0 + j) * n + col) = v + b };
                        }
                    }
                }
            }
        });
}

/// The reference: the same integer block sums and the same f32 steps, in scalar code.
fn group_tile_portable(
    w: &Packed,
    g: usize,
    a: &Acts16,
    i0: usize,
    rows: usize,
    acc: &mut [[f32; GROUP]; TILE_M],
) {
    let (nb, k, gbb) = (w.blocks(), a.k, group_block_bytes(w.nibbles));
    // Columns (2p, 2p + 1) of lane r in a group's block.
    let pair = |wq: &[u8], p: usize, r: usize| -> (i32, i32) {
        if w.nibbles {
            let v = wq[p * GROUP + r];
            ((v & 15) as i32, (v >> 4) as i32)
        } else {
            let at = (p * GROUP + r) * 2;
            (wq[at] as i8 as i32, wq[at + 1] as i8 as i32)
        }
    };
    for b in 0..nb {
        let gb = g * nb + b;
        let wq = &w.qs[gb * gbb..(gb + 1) * gbb];
        for (j, accj) in acc.iter_mut().enumerate().take(rows) {
            let i = i0 + j;
            let xq = &a.qs[i * k + b * BLOCK..i * k + (b + 1) * BLOCK];
            let da = a.d[i * nb + b];
            for (r, v) in accj.iter_mut().enumerate() {
                let mut s = 0i32;
                for p in 0..16 {
                    let (q0, q1) = pair(wq, p, r);
                    s += q0 * xq[2 * p] as i32 + q1 * xq[2 * p + 1] as i32;
                }
                *v = (s as f32).mul_add(w.d.get(gb * GROUP + r) * da, *v);
                if let Some(m) = &w.m {
                    *v = m.get(gb * GROUP + r).mul_add(a.dsum[i * nb + b], *v);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
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
        // One instance per tile height, so the accumulator arrays live in registers.
        // One instance per tile height and weight format, so the accumulator arrays live
        // in registers.
        macro_rules! heights {
            ($nib:literal, $off:literal, $w32:literal) => {
                match rows {
                    8 => tile::<8, $nib, $off, $w32>(w, g, a, i0, acc),
                    7 => tile::<7, $nib, $off, $w32>(w, g, a, i0, acc),
                    6 => tile::<6, $nib, $off, $w32>(w, g, a, i0, acc),
                    5 => tile::<5, $nib, $off, $w32>(w, g, a, i0, acc),
                    4 => tile::<4, $nib, $off, $w32>(w, g, a, i0, acc),
                    3 => tile::<3, $nib, $off, $w32>(w, g, a, i0, acc),
                    2 => tile::<2, $nib, $off, $w32>(w, g, a, i0, acc),
                    1 => tile::<1, $nib, $off, $w32>(w, g, a, i0, acc),
                    _ => unreachable!("tile heights are 1..=TILE_M"),
                }
            };
        }
        // The five layouts Packed::new makes.
        match (w.nibbles, w.m.is_some(), w.d.single()) {
            (false, false, false) => heights!(false, false, false),
            (false, true, false) => heights!(false, true, false),
            (true, true, false) => heights!(true, true, false),
            (true, true, true) => heights!(true, true, true),
            (false, true, true) => heights!(false, true, true),
            other => unreachable!("no packed type has the layout {other:?}"),
        }
    }

    /// The `bytes`-long pair vector number `at` of a group's blocks.
    #[inline(always)]
    fn wb_ptr(wq: *const u8, at: usize, bytes: usize) -> *const u8 {
        wq.wrapping_add(at * bytes)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile<const R: usize, const NIB: bool, const OFF: bool, const W32: bool>(
        w: &Packed,
        g: usize,
        a: &Acts16,
        i0: usize,
        acc: &mut [[f32; GROUP]; TILE_M],
    ) {
        let (nb, k, gbb) = (w.blocks(), a.k, group_block_bytes(NIB));
        let m_len = w.m.as_ref().map(|m| (m.len(), m.single()));
        assert!(
            NIB == w.nibbles
                && W32 == w.d.single()
                && (g + 1) * nb * gbb <= w.qs.len()
                && (g + 1) * nb * GROUP <= w.d.len()
                && match m_len {
                    Some((n, single)) => OFF && single == W32 && (g + 1) * nb * GROUP <= n,
                    None => !OFF,
                }
                && (i0 + R) * k <= a.qs.len()
                && (i0 + R) * nb <= a.d.len(),
            "packed tile out of range"
        );
        let wq = w.qs.as_ptr().add(g * nb * gbb);
        // Entry i of a table: 16 f32, or 16 f16 widened by one instruction.
        let esz = if W32 { 4 } else { 2 };
        let wd = w.d.as_ptr().add(g * nb * GROUP * esz);
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
        // Two i32 sums per row (even and odd column pairs): each `vpdpwssd` chain is 8 long
        // per block instead of 16, so 2R independent chains hide its latency; with the R
        // f32 sums that is 3R ≤ 24 of the 32 zmm registers.
        let mut f = [_mm512_setzero_ps(); R];
        for b in 0..nb {
            let (mut s0, mut s1) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
            for p in (0..16).step_by(2) {
                // SAFETY (all loads): inside the ranges asserted above.
                let (w0, w1) = (load_pair(b * 16 + p), load_pair(b * 16 + p + 1));
                for j in 0..R {
                    // Columns (b·32 + 2p, +1) of activation row i0 + j as one i32, then the
                    // next pair.
                    let at = xq.add(j * k + b * BLOCK + 2 * p) as *const i32;
                    s0[j] = _mm512_dpwssd_epi32(s0[j], w0, _mm512_set1_epi32(at.read_unaligned()));
                    s1[j] = _mm512_dpwssd_epi32(
                        s1[j],
                        w1,
                        _mm512_set1_epi32(at.add(1).read_unaligned()),
                    );
                }
            }
            let dw = table16(wd, b * GROUP);
            for j in 0..R {
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*xd.add(j * nb + b)));
                let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[j], s1[j]));
                f[j] = _mm512_fmadd_ps(sum, scale, f[j]);
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
}
