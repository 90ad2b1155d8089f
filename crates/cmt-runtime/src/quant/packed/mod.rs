//! Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K weights repacked 16 rows at a time
//! for an int16 × int8 matmul: AVX-512 VNNI (`vpdpwssd`, [`avx512`]), AVX2 (`vpmaddwd`,
//! [`avx2`]) and a portable reference, all giving the same bits.
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
//! f32 tables since d·sc_j is not always an f16; Q6_K's 16-element groups give each block two
//! scales, one per half (the kernels keep the halves' integer sums apart).
//!
//! Activations are quantised per 32-element block to **16 bits** (d = max|x| / 32767,
//! error ≤ d/2 per element): the accuracy of the row kernels' two 8-bit planes
//! (d₁/508 with d₁ = max|x|/127, i.e. max|x|/64516) in one operand. A block's integer sum
//! is at most 32 · 128 · 32767 < 2³¹: no overflow.
use super::acts::quantize_block;
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

/// A quantised matrix in 16-row interleaved groups (rows padded to a multiple of 16 with
/// zeros).
#[derive(Debug, Clone)]
pub struct Packed {
    pub rows: usize,
    pub cols: usize,
    /// Nibbles (Q4_0/Q4_1/Q4_K) rather than bytes (the rest).
    nibbles: bool,
    /// A scale per 16-element half of each block (Q6_K's groups) rather than one.
    split: bool,
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

/// Block `j` of a (super-)block of `ty`: the scales of its two 16-element halves (equal but
/// for Q6_K), its offset (0 where the type has none) and its 32 integer values as stored,
/// so that element c is scale[c / 16]·q[c] + offset.
fn block_values(ty: QType, blk: &[u8], j: usize) -> ([f32; 2], f32, [i32; BLOCK]) {
    let f16_at = |at: usize| f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32();
    // Element c of Q4-style nibbles: c < 16 in the low nibble of byte c, else the high
    // nibble of byte c − 16.
    let nib = |qb: &[u8], c: usize| (if c < 16 { qb[c] & 15 } else { qb[c - 16] >> 4 }) as i32;
    let mut q = [0i32; BLOCK];
    let (scale, off) = match ty {
        QType::Q8_0 => {
            for (c, v) in q.iter_mut().enumerate() {
                *v = blk[2 + c] as i8 as i32;
            }
            (f16_at(0), 0.0)
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
            (d, off)
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
            (f16_at(0), off)
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
            (d * sc, -(dmin * m))
        }
        QType::Q6K => return q6k_block(blk, j),
    };
    ([scale; 2], off, q)
}

/// Q6_K's block j (0..8) of 32: elements 32j..32j + 32 of the super-block, q − 32 from the
/// low 4 bits in ql and 2 high bits in qh, the 16-element groups' scales d·sc[2j], d·sc[2j+1]
/// (the dequantiser's layout, `gguf::quant_k::q6_k`).
fn q6k_block(blk: &[u8], j: usize) -> ([f32; 2], f32, [i32; BLOCK]) {
    let d = f16::from_le_bytes([blk[208], blk[209]]).to_f32();
    let (h, k) = (j / 4, j % 4);
    let (ql, qh) = (
        &blk[64 * h..64 * h + 64],
        &blk[128 + 32 * h..128 + 32 * h + 32],
    );
    let mut q = [0i32; BLOCK];
    for (l, v) in q.iter_mut().enumerate() {
        // k = 0..4: (ql[l], low nibble), (ql[l + 32], low), (ql[l], high), (ql[l + 32], high),
        // with qh[l]'s bit pairs 0–1, 2–3, 4–5, 6–7.
        let byte = ql[l + 32 * (k % 2)];
        let low = if k < 2 { byte & 15 } else { byte >> 4 };
        *v = (low | ((qh[l] >> (2 * k)) & 3) << 4) as i32 - 32;
    }
    let sc = |i: usize| d * blk[192 + i] as i8 as f32;
    ([sc(2 * j), sc(2 * j + 1)], 0.0, q)
}

/// See [`Packed::layout`].
type Layout = (bool, bool, bool, bool);

/// `$tile!(nibbles, offset, single, split)` with `$w`'s layout as literals, so that each
/// SIMD tile is instantiated per layout: the six that [`Packed::new`] makes.
macro_rules! for_layout {
    ($w:expr, $tile:ident) => {
        match $w.layout() {
            (false, false, false, false) => $tile!(false, false, false, false),
            (false, true, false, false) => $tile!(false, true, false, false),
            (true, true, false, false) => $tile!(true, true, false, false),
            (true, true, true, false) => $tile!(true, true, true, false),
            (false, true, true, false) => $tile!(false, true, true, false),
            (false, false, true, true) => $tile!(false, false, true, true),
            other => unreachable!("no packed type has the layout {other:?}"),
        }
    };
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
    /// Repacks a matrix (every kept type has a packed form).
    pub fn new(w: &QuantMatrix) -> Packed {
        // (nibble layout, offset, single-precision tables, a scale per 16-element half)
        let (nibbles, offset, single, split) = match w.ty {
            QType::Q8_0 | QType::Q5_0 => (false, false, false, false),
            QType::Q5_1 => (false, true, false, false),
            QType::Q4_0 | QType::Q4_1 => (true, true, false, false),
            QType::Q4K => (true, true, true, false),
            QType::Q5K => (false, true, true, false),
            QType::Q6K => (false, false, true, true),
        };
        let halves = if split { 2 } else { 1 };
        let (rows, cols) = (w.rows, w.cols);
        let (groups, nb, gbb) = (
            rows.div_ceil(GROUP),
            cols / BLOCK,
            group_block_bytes(nibbles),
        );
        let mut qs = vec![0u8; groups * nb * gbb];
        // Split: [groups][blocks][2 halves][16 rows].
        let mut d = Table::zeros(single, groups * nb * GROUP * halves);
        let mut m = offset.then(|| Table::zeros(single, groups * nb * GROUP));
        let (bb, per) = (w.ty.block_bytes(), w.ty.block_elems() / BLOCK);
        for r in 0..rows {
            let (g, lane) = (r / GROUP, r % GROUP);
            for (sb, blk) in w.row_blocks(r).chunks_exact(bb).enumerate() {
                for j in 0..per {
                    let (scale, off, q) = block_values(w.ty, blk, j);
                    let gb = g * nb + sb * per + j;
                    for (half, &sc) in scale.iter().enumerate().take(halves) {
                        d.set((gb * halves + half) * GROUP + lane, sc);
                    }
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
        Packed {
            rows,
            cols,
            nibbles,
            split,
            qs,
            d,
            m,
        }
    }

    /// (nibbles, offset, single-precision tables, split scales): what the SIMD tiles are
    /// instantiated on ([`for_layout`]).
    fn layout(&self) -> Layout {
        (self.nibbles, self.m.is_some(), self.d.single(), self.split)
    }

    /// Whether a SIMD tile built for `layout` may read group `g` and activation rows
    /// i0..i0 + rows of `a`: the layout is this matrix's and every table, weight and
    /// activation index it forms is in range (the tiles assert this before any load).
    fn tile_fits(&self, layout: Layout, g: usize, a: &Acts16, i0: usize, rows: usize) -> bool {
        let (nb, k) = (self.blocks(), a.k);
        let halves = if self.split { 2 } else { 1 };
        layout == self.layout()
            && (g + 1) * nb * group_block_bytes(self.nibbles) <= self.qs.len()
            && (g + 1) * nb * GROUP * halves <= self.d.len()
            && self
                .m
                .as_ref()
                .is_none_or(|m| (g + 1) * nb * GROUP <= m.len())
            && (i0 + rows) * k <= a.qs.len()
            && (i0 + rows) * nb <= a.d.len()
            && (i0 + rows) * nb <= a.dsum.len()
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

/// One task's rows: (x, quantised values), (block scales, d·Σq).
type QuantChunk<'a> = ((&'a [f32], &'a mut [i16]), (&'a mut [f32], &'a mut [f32]));

/// Activation rows quantised per rayon task in prefill (one task below this many rows).
const QUANTIZE_ROWS_PER_TASK: usize = 16;

impl Acts16 {
    /// m rows of x, quantised with the best SIMD level this CPU runs (every level gives the
    /// same bits).
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Acts16 {
        Self::quantize_with(DotKernel::best().level(), x, m, k)
    }

    /// The same with the quantiser of `level` (AVX-512 where it is asked for and runs; the
    /// scalar [`quantize_block`] otherwise). Rows are split over threads in prefill: the
    /// quantiser ran serially before, ~10 % of a Q8_0 prefill on two cores.
    pub fn quantize_with(level: SimdLevel, x: &[f32], m: usize, k: usize) -> Acts16 {
        assert!(
            k.is_multiple_of(BLOCK),
            "activation width {k} is not whole blocks"
        );
        let nb = k / BLOCK;
        let mut a = Acts16 {
            k,
            qs: vec![0; m * k],
            d: vec![0.0; m * nb],
            dsum: vec![0.0; m * nb],
        };
        let rows = QUANTIZE_ROWS_PER_TASK;
        let simd = level == SimdLevel::Avx512Vnni && level.supported();
        let task = |((xs, qs), (d, dsum)): QuantChunk| {
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: the level's features (AVX-512 F and BW among them) were checked
                // just above; the four slices hold the same whole number of blocks.
                return unsafe { avx512::quantize_blocks16(xs, qs, d, dsum) };
            }
            let _ = simd;
            quantize_blocks16_scalar(xs, qs, d, dsum)
        };
        let chunks = x[..m * k]
            .par_chunks(rows * k)
            .zip(a.qs.par_chunks_mut(rows * k))
            .zip(
                a.d.par_chunks_mut(rows * nb)
                    .zip(a.dsum.par_chunks_mut(rows * nb)),
            );
        if m > rows {
            chunks.for_each(task);
        } else {
            // One chunk: no fork-join in decode.
            task((
                (&x[..m * k], &mut a.qs[..]),
                (&mut a.d[..], &mut a.dsum[..]),
            ));
        }
        a
    }

    /// Per block, the largest error of a dequantised element (d/2).
    pub fn max_error(&self, block: usize) -> f32 {
        0.5 * self.d[block]
    }
}

/// Whole 32-element blocks of `xs` to i16 with [`quantize_block`] (the reference the SIMD
/// quantiser matches bit for bit).
fn quantize_blocks16_scalar(xs: &[f32], qs: &mut [i16], d: &mut [f32], dsum: &mut [f32]) {
    for (b, (xs, qs)) in xs
        .chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        let (db, sum) = quantize_block(xs, 32767, |i, q| qs[i] = q as i16);
        d[b] = db;
        dsum[b] = db * sum as f32;
    }
}

/// out[m, n] = x[m, k] · wᵀ (+ bias) through the packed layout, with the kernel of
/// `kernel`'s level (AVX-512 VNNI, AVX2, or the portable reference, which the loader never
/// picks: it packs only where a SIMD level runs).
pub fn packed_matmul_nt(
    x: &[f32],
    w: &Packed,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    kernel: DotKernel,
) {
    let level = kernel.level();
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
                    match level {
                        // SAFETY: a DotKernel of a level exists only where the CPU has that
                        // level's features (AVX-512 F/BW/VNNI; AVX2/FMA/F16C); the tiles
                        // check their ranges.
                        #[cfg(target_arch = "x86_64")]
                        SimdLevel::Avx512Vnni => unsafe {
                            avx512::group_tile(w, g, &acts, i0, rows, &mut acc)
                        },
                        #[cfg(target_arch = "x86_64")]
                        SimdLevel::Avx2 => unsafe {
                            avx2::group_tile(w, g, &acts, i0, rows, &mut acc)
                        },
                        _ => group_tile_portable(w, g, &acts, i0, rows, &mut acc),
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
                // The sums of the two 16-element halves (pairs 0..8 and 8..16).
                let mut s = [0i32; 2];
                for p in 0..16 {
                    let (q0, q1) = pair(wq, p, r);
                    s[p / 8] += q0 * xq[2 * p] as i32 + q1 * xq[2 * p + 1] as i32;
                }
                if w.split {
                    for (half, &sh) in s.iter().enumerate() {
                        let dw = w.d.get((gb * 2 + half) * GROUP + r);
                        *v = (sh as f32).mul_add(dw * da, *v);
                    }
                } else {
                    *v = ((s[0] + s[1]) as f32).mul_add(w.d.get(gb * GROUP + r) * da, *v);
                }
                if let Some(m) = &w.m {
                    *v = m.get(gb * GROUP + r).mul_add(a.dsum[i * nb + b], *v);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
