//! Weights kept in their GGUF block layout (Q8_0, Q4_0, Q4_1) and the matmul that reads them
//! without an f32 copy: activations are quantised to 8-bit blocks once per op, and every
//! output is a sum of per-block integer dot products scaled in f32.
//!
//! Layout of the modules: [`QuantMatrix`] (the stored rows), [`acts`] (activation
//! quantisation), [`dot`] (the per-type dot kernels at each SIMD level, with a portable
//! reference), [`matmul`] (rows over threads; the dequantised-tile GEMM for prefill).
pub mod acts;
pub mod bf16;
pub mod dot;
pub mod kquant;
pub mod matmul;
pub mod packed;

use crate::gguf::{dequantize, GgmlType};
use half::f16;
use memmap2::Mmap;
use std::ops::Range;
use std::sync::Arc;

/// Elements per quantisation block (all kept types use 32).
pub const BLOCK: usize = 32;
/// Readable entries past the end of each scale/minimum table (see [`QuantMatrix::row`]).
pub const TABLE_PAD: usize = 16;

/// The block types kept quantised; every other GGUF type is dequantised at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    /// f16 scale d, 32 × i8: x = d·q.
    Q8_0,
    /// f16 scale d, 16 bytes of nibbles: x = d·(q − 8).
    Q4_0,
    /// f16 scale d, f16 minimum m, 16 bytes of nibbles: x = d·q + m.
    Q4_1,
    /// f16 scale d, 32 fifth bits, 16 bytes of nibbles: x = d·(q − 16). Packed kernel only.
    Q5_0,
    /// f16 scale d, f16 minimum m, 32 fifth bits, 16 bytes of nibbles: x = d·q + m. Packed
    /// kernel only.
    Q5_1,
    /// 256-element super-blocks, 8 sub-blocks with 6-bit scales/minimums ([`kquant`]).
    Q4K,
    /// Q4K plus a fifth bit per element.
    Q5K,
    /// 256-element super-blocks of 6-bit values, 16 i8 group scales ([`kquant`]).
    Q6K,
}

impl QType {
    /// The kept type of a GGUF type on this CPU: Q8_0/Q4_0/Q4_1 everywhere; Q5_0, Q5_1 and
    /// the k-quants where a packed kernel runs (AVX2 or AVX-512 VNNI). Elsewhere they load
    /// as f32 (the portable kernels are slower than it).
    pub fn from_ggml(t: GgmlType) -> Option<QType> {
        let level = dot::DotKernel::best().level();
        // Only the packed kernels (AVX-512 VNNI, AVX2) read these well; the portable row
        // kernels of the k-quants are slower than the f32 path.
        Self::from_ggml_any_cpu(t)
            .filter(|q| !(q.packed_only() || q.is_k()) || level != dot::SimdLevel::Portable)
    }

    /// Whether only the packed kernels read this type (no row kernel).
    pub fn packed_only(self) -> bool {
        matches!(self, QType::Q5_0 | QType::Q5_1)
    }

    /// The kept type of a GGUF type, whatever this CPU runs (tests of the portable kernels).
    pub fn from_ggml_any_cpu(t: GgmlType) -> Option<QType> {
        match t {
            GgmlType::Q8_0 => Some(QType::Q8_0),
            GgmlType::Q4_0 => Some(QType::Q4_0),
            GgmlType::Q4_1 => Some(QType::Q4_1),
            GgmlType::Q5_0 => Some(QType::Q5_0),
            GgmlType::Q5_1 => Some(QType::Q5_1),
            GgmlType::Q4K => Some(QType::Q4K),
            GgmlType::Q5K => Some(QType::Q5K),
            GgmlType::Q6K => Some(QType::Q6K),
            _ => None,
        }
    }

    /// Whether this is a 256-element k-quant.
    pub fn is_k(self) -> bool {
        matches!(self, QType::Q4K | QType::Q5K | QType::Q6K)
    }

    /// Elements per (super-)block of the weights.
    pub fn block_elems(self) -> usize {
        if self.is_k() {
            256
        } else {
            BLOCK
        }
    }
    pub fn ggml(self) -> GgmlType {
        match self {
            QType::Q8_0 => GgmlType::Q8_0,
            QType::Q4_0 => GgmlType::Q4_0,
            QType::Q4_1 => GgmlType::Q4_1,
            QType::Q5_0 => GgmlType::Q5_0,
            QType::Q5_1 => GgmlType::Q5_1,
            QType::Q4K => GgmlType::Q4K,
            QType::Q5K => GgmlType::Q5K,
            QType::Q6K => GgmlType::Q6K,
        }
    }
    /// Bytes per block of [`Self::block_elems`] elements.
    pub fn block_bytes(self) -> usize {
        self.ggml().block().1
    }
}

/// A [rows, cols] weight (HF layout: a row is one output feature) stored as GGUF blocks,
/// row after row; cols is a whole number of blocks.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    pub ty: QType,
    pub rows: usize,
    pub cols: usize,
    data: Blocks,
    /// Every block's scale d, [rows × cols/32], copied out of the blocks at load so that
    /// the AVX-512 kernel converts 16 of them with one instruction instead of one at a
    /// time from 20-byte strides (2 bytes per block beside the file's 18–34).
    scales: Vec<f16>,
    /// Every block's minimum m (Q4_1 only; empty otherwise).
    mins: Vec<f16>,
    /// Q4_K / Q5_K: every super-block's 8 six-bit scales then 8 six-bit minimums, unpacked
    /// to bytes at load (16 bytes beside the block's 144/176) so the AVX-512 kernel widens
    /// them 8 at a time instead of decoding the packed 12 bytes in scalar code.
    ksm: Vec<u8>,
    /// Activation planes the int8 matmul quantises x into for this matrix (1 or 2; see
    /// [`acts::QuantActs::quantize_planes`]).
    pub act_planes: usize,
    /// Every kept type wherever a SIMD level runs: the rows again in [`packed`]'s 16-row groups, which every
    /// matmul of this matrix then reads instead of the blocks (set by [`QuantMatrix::pack`]).
    pub packed: Option<Arc<packed::Packed>>,
}

/// One row of a [`QuantMatrix`], as the dot kernels read it.
#[derive(Debug, Clone, Copy)]
pub struct WeightRow<'a> {
    pub ty: QType,
    /// The row's blocks in the GGUF layout.
    pub blocks: &'a [u8],
    /// Its blocks' scales (the same values the blocks hold), then at least [`TABLE_PAD`]
    /// more readable entries (the next rows', or padding).
    pub scales: &'a [f16],
    /// Its blocks' minimums (Q4_1; empty otherwise), padded like `scales`.
    pub mins: &'a [f16],
    /// Q4_K / Q5_K: 16 bytes per super-block (8 scales, 8 minimums); empty otherwise.
    pub ksm: &'a [u8],
}

/// Where the blocks live: in the model file's memory map (no copy; the pages are the page
/// cache's), or owned (rows a loader had to reorder, tests).
#[derive(Debug, Clone)]
enum Blocks {
    Owned(Vec<u8>),
    Mapped(Arc<Mmap>, Range<usize>),
}

impl Blocks {
    fn as_slice(&self) -> &[u8] {
        match self {
            Blocks::Owned(v) => v,
            Blocks::Mapped(m, r) => &m[r.clone()],
        }
    }
}

impl QuantMatrix {
    /// `data` must hold exactly rows × cols elements of `ty`, row-major.
    pub fn new(ty: QType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, String> {
        Self::checked(ty, rows, cols, Blocks::Owned(data))
    }

    /// The blocks at `range` of a memory-mapped file, read in place.
    pub fn mapped(
        ty: QType,
        rows: usize,
        cols: usize,
        map: Arc<Mmap>,
        range: Range<usize>,
    ) -> Result<Self, String> {
        if range.end > map.len() || range.start > range.end {
            return Err(format!(
                "bytes {range:?} are outside the {}-byte file",
                map.len()
            ));
        }
        Self::checked(ty, rows, cols, Blocks::Mapped(map, range))
    }

    fn checked(ty: QType, rows: usize, cols: usize, data: Blocks) -> Result<Self, String> {
        let be = ty.block_elems();
        if !cols.is_multiple_of(be) {
            return Err(format!(
                "{cols} columns are not a whole number of {be}-element {ty:?} blocks"
            ));
        }
        let want = rows * (cols / be) * ty.block_bytes();
        let have = data.as_slice().len();
        if have != want {
            return Err(format!(
                "{have} bytes, expected {want} for [{rows}, {cols}] of {ty:?}"
            ));
        }
        let bb = ty.block_bytes();
        let field = |at: usize| -> Vec<f16> {
            data.as_slice()
                .chunks_exact(bb)
                .map(|b| f16::from_le_bytes([b[at], b[at + 1]]))
                .collect()
        };
        // TABLE_PAD zeros after the last row: the AVX-512 kernel loads 16 entries at a time
        // without a mask, and the last row's last chunk may read past its end.
        let padded = |mut v: Vec<f16>| {
            v.extend([f16::ZERO; TABLE_PAD]);
            v
        };
        // The k-quant kernels decode their packed scales per super-block: no table.
        let scales = padded(if ty.is_k() { Vec::new() } else { field(0) });
        let mins = if ty == QType::Q4_1 {
            padded(field(2))
        } else {
            Vec::new()
        };
        let ksm = if ty == QType::Q4K || ty == QType::Q5K {
            data.as_slice()
                .chunks_exact(bb)
                .flat_map(|b| {
                    let mut t = [0u8; 16];
                    for j in 0..8 {
                        let (sc, m) = crate::gguf::quant_k::scale_min_k4(j, &b[4..16]);
                        (t[j], t[8 + j]) = (sc as u8, m as u8);
                    }
                    t
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(QuantMatrix {
            ty,
            rows,
            cols,
            data,
            scales,
            mins,
            ksm,
            act_planes: 1,
            packed: None,
        })
    }

    /// Adds the packed copy the 16-bit-activation kernels read, where this CPU runs one (a
    /// SIMD level); returns whether it did.
    pub fn pack(&mut self) -> bool {
        if dot::DotKernel::best().level() == dot::SimdLevel::Portable {
            return false;
        }
        self.packed = Some(Arc::new(packed::Packed::new(self)));
        // Only the row kernels read these tables, and a packed matrix never reaches them.
        self.scales = Vec::new();
        self.mins = Vec::new();
        self.ksm = Vec::new();
        #[cfg(unix)]
        if let Blocks::Mapped(map, range) = &self.data {
            // Packing read every page of the blocks; from now on only embedding lookups (a
            // few rows a step) and, on AVX2 CPUs, prefill's dequantised tiles read them, so
            // hand the pages back instead of holding two copies in the resident set. Advice
            // only: an error changes nothing.
            // SAFETY: `map` is a read-only file mapping (`Mmap`, never written): a dropped
            // page is read from the file again on its next access, so every borrow of the map
            // keeps seeing the same bytes.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.len(),
                )
            };
        }
        true
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elems() * self.ty.block_bytes()
    }

    /// The blocks of row `r`.
    pub fn row_blocks(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data.as_slice()[r * rb..(r + 1) * rb]
    }

    /// Row `r` with its scale (and minimum) tables, for the row kernels (not for a packed
    /// matrix: packing drops the tables; its matmuls read the packed copy).
    #[inline]
    pub fn row(&self, r: usize) -> WeightRow<'_> {
        assert!(
            self.packed.is_none(),
            "row kernels called on a packed matrix"
        );
        let nb = self.cols / BLOCK;
        let tb = if self.ty.is_k() { 0 } else { nb };
        WeightRow {
            ty: self.ty,
            blocks: self.row_blocks(r),
            scales: &self.scales[r * tb..(r + 1) * tb + TABLE_PAD],
            ksm: if self.ksm.is_empty() {
                &[]
            } else {
                let sb = self.cols / 256 * 16;
                &self.ksm[r * sb..(r + 1) * sb]
            },
            mins: if self.mins.is_empty() {
                &[]
            } else {
                &self.mins[r * nb..(r + 1) * nb + TABLE_PAD]
            },
        }
    }

    /// Row `r` as f32 (the exact values the f32 path loads).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize(self.ty.ggml(), self.row_blocks(r), &mut out[..self.cols])
            .expect("row length checked at construction");
    }

    /// Rows `r0..r1` as f32, row-major into `out`.
    pub fn dequantize_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        dequantize(
            self.ty.ggml(),
            &self.data.as_slice()[r0 * rb..r1 * rb],
            &mut out[..(r1 - r0) * self.cols],
        )
        .expect("row lengths checked at construction");
    }

    /// The blocks, row after row, as the file stores them.
    pub fn blocks(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// Bytes of blocks (what decode reads once per token, with [`Self::table_bytes`]).
    pub fn bytes(&self) -> usize {
        self.data.as_slice().len()
    }

    /// Bytes of the scale and minimum tables.
    pub fn table_bytes(&self) -> usize {
        2 * (self.scales.len() + self.mins.len()) + self.ksm.len()
    }

    /// Whether the blocks are read in place from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, Blocks::Mapped(..))
    }
}
