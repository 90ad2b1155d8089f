//! The key matrix the scan reads: all keys of a bank (or of one shard) in RAM, in panels of
//! 16 keys, plus their ids and a live bit each.
//!
//! Panel layout: keys are grouped in blocks of 16 consecutive rows, and blocks in groups of
//! 8 (128 rows). Vector (b, j) — 16 lanes holding dimension `j` of rows `16b … 16b+15` —
//! lies at index `(b / 8)·8r + 8j + b % 8`. One 64-byte load thus gives one dimension of 16
//! keys, and the dot products of a query with 16 keys are 16 lanes of one accumulator
//! (`acc += broadcast(q[j]) · vector(b, j)`): no horizontal sums, no transposes. A scan of
//! the 8 blocks of a group for one question reads the group's 8r vectors in address order,
//! one sequential stream like a plain memory read. Rows past the last key are zero and not
//! live. Vectors are 64-byte aligned.
//!
//! Keys are stored in f32 or in bf16 ([`KeyDtype`]): a bf16 matrix has the same layout with
//! 32-byte vectors, half the bytes a scan reads; keys are rounded to nearest even when
//! pushed and widened exactly (a 16-bit shift) when scanned, so a bf16 bank scores exactly
//! like an f32 bank holding the rounded keys.
use crate::error::{Error, Result};
use half::bf16;

pub const LANES: usize = 16;
/// Blocks per group (see the module docs).
pub(crate) const GROUP: usize = 8;

/// One dimension of 16 keys.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Lanes(pub [f32; LANES]);

/// One dimension of 16 keys in bf16 (raw bits).
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LanesBf16(pub [u16; LANES]);

/// The element type of a key matrix (and of a bank's keys, see the store's header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KeyDtype {
    #[default]
    F32,
    Bf16,
}

impl KeyDtype {
    pub(crate) fn code(self) -> u8 {
        match self {
            KeyDtype::F32 => 0,
            KeyDtype::Bf16 => 1,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(KeyDtype::F32),
            1 => Some(KeyDtype::Bf16),
            _ => None,
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KeyDtype::F32 => 4,
            KeyDtype::Bf16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KeyDtype::F32 => "f32",
            KeyDtype::Bf16 => "bf16",
        }
    }
    /// `x` as a key of this dtype holds it (bf16: rounded to nearest even), widened to f32.
    pub fn round(self, x: f32) -> f32 {
        match self {
            KeyDtype::F32 => x,
            KeyDtype::Bf16 => bf16::from_f32(x).to_f32(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct KeyMatrix {
    r: usize,
    n: usize,
    dtype: KeyDtype,
    /// Whole groups: `blocks().div_ceil(GROUP) * GROUP * r` vectors, in `panels` (f32) or
    /// `panels_bf16`; the other stays empty.
    panels: Vec<Lanes>,
    panels_bf16: Vec<LanesBf16>,
    ids: Vec<u64>,
    live: Vec<u64>,
    live_count: usize,
}

impl KeyMatrix {
    pub fn new(r: usize) -> Self {
        Self::with_capacity(r, 0)
    }

    pub fn with_capacity(r: usize, n: usize) -> Self {
        Self::with_dtype(r, n, KeyDtype::F32)
    }

    /// An empty matrix of keys of width `r` stored in `dtype`, room for `n` keys.
    pub fn with_dtype(r: usize, n: usize, dtype: KeyDtype) -> Self {
        let vecs = n.div_ceil(LANES * GROUP) * GROUP * r;
        let (f, h) = match dtype {
            KeyDtype::F32 => (vecs, 0),
            KeyDtype::Bf16 => (0, vecs),
        };
        KeyMatrix {
            r,
            n: 0,
            dtype,
            panels: Vec::with_capacity(f),
            panels_bf16: Vec::with_capacity(h),
            ids: Vec::with_capacity(n),
            live: Vec::with_capacity(n.div_ceil(64)),
            live_count: 0,
        }
    }

    pub fn dtype(&self) -> KeyDtype {
        self.dtype
    }
    /// Key width.
    pub fn r(&self) -> usize {
        self.r
    }
    /// Rows, live or deleted.
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn live_count(&self) -> usize {
        self.live_count
    }
    /// Ids by row, strictly increasing.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }
    pub(crate) fn blocks(&self) -> usize {
        self.n.div_ceil(LANES)
    }
    /// Index in `panels()` of vector (block `b`, dimension `j`); vector (b+i, j) follows at
    /// +i while b+i stays in b's group.
    #[inline(always)]
    pub(crate) fn vec_index(&self, b: usize, j: usize) -> usize {
        (b / GROUP) * GROUP * self.r + j * GROUP + b % GROUP
    }
    /// The f32 panels (empty for a bf16 matrix).
    pub(crate) fn panels(&self) -> &[Lanes] {
        &self.panels
    }
    /// The bf16 panels (empty for an f32 matrix).
    pub(crate) fn panels_bf16(&self) -> &[LanesBf16] {
        &self.panels_bf16
    }

    #[inline]
    pub fn is_live(&self, row: usize) -> bool {
        row < self.n && self.live[row / 64] >> (row % 64) & 1 == 1
    }

    /// The row of `id`, if present (live or not).
    pub fn row_of(&self, id: u64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    /// Appends a live key. Ids must be strictly increasing and keys finite (also once rounded
    /// to the matrix's dtype: an f32 beyond bf16's range does not fit a bf16 matrix).
    pub fn push(&mut self, id: u64, key: &[f32]) -> Result<()> {
        if key.len() != self.r {
            return Err(Error::Invalid(format!(
                "key of length {}, the bank's key width r is {}",
                key.len(),
                self.r
            )));
        }
        if let Some(&last) = self.ids.last() {
            if id <= last {
                return Err(Error::Invalid(format!(
                    "key id {id} is not greater than the previous id {last}"
                )));
            }
        }
        if let Some(i) = key.iter().position(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "key of id {id}: element {i} is not finite"
            )));
        }
        if let Some(i) = key.iter().position(|&x| !self.dtype.round(x).is_finite()) {
            return Err(Error::Invalid(format!(
                "key of id {id}: element {i} = {} overflows {}",
                key[i],
                self.dtype.name()
            )));
        }
        let row = self.n;
        let grow = row.is_multiple_of(LANES * GROUP);
        match self.dtype {
            KeyDtype::F32 => {
                if grow {
                    let len = self.panels.len() + GROUP * self.r;
                    self.panels.resize(len, Lanes::default());
                }
                for (j, &x) in key.iter().enumerate() {
                    let v = self.vec_index(row / LANES, j);
                    self.panels[v].0[row % LANES] = x;
                }
            }
            KeyDtype::Bf16 => {
                if grow {
                    let len = self.panels_bf16.len() + GROUP * self.r;
                    self.panels_bf16.resize(len, LanesBf16::default());
                }
                for (j, &x) in key.iter().enumerate() {
                    let v = self.vec_index(row / LANES, j);
                    self.panels_bf16[v].0[row % LANES] = bf16::from_f32(x).to_bits();
                }
            }
        }
        if row.is_multiple_of(64) {
            self.live.push(0);
        }
        self.live[row / 64] |= 1 << (row % 64);
        self.live_count += 1;
        self.ids.push(id);
        self.n += 1;
        Ok(())
    }

    /// Marks `id` deleted; false if it is absent or already deleted.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.row_of(id) {
            Some(row) if self.is_live(row) => {
                self.live[row / 64] &= !(1 << (row % 64));
                self.live_count -= 1;
                true
            }
            _ => false,
        }
    }

    /// Copies the key of `row` into `out` (length r), widened to f32.
    pub fn key_into(&self, row: usize, out: &mut [f32]) {
        for (j, o) in out.iter_mut().enumerate().take(self.r) {
            let v = self.vec_index(row / LANES, j);
            *o = match self.dtype {
                KeyDtype::F32 => self.panels[v].0[row % LANES],
                KeyDtype::Bf16 => bf16::from_bits(self.panels_bf16[v].0[row % LANES]).to_f32(),
            };
        }
    }

    /// The key of `row` as a new vector.
    pub fn key(&self, row: usize) -> Vec<f32> {
        let mut v = vec![0.0; self.r];
        self.key_into(row, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_remove_and_read_back() {
        let mut m = KeyMatrix::new(3);
        for i in 0..40u64 {
            let k = [i as f32, -(i as f32), 0.5];
            m.push(i * 2 + 1, &k).unwrap();
        }
        assert_eq!(m.blocks(), 3);
        assert_eq!(m.panels().len(), GROUP * 3);
        assert_eq!(m.key(17), vec![17.0, -17.0, 0.5]);
        assert_eq!(m.panels()[m.vec_index(1, 1)].0[1], -17.0);
        assert!(m.remove(35));
        assert!(!m.remove(35));
        assert!(!m.remove(36));
        assert_eq!(m.live_count(), 39);
        assert!(!m.is_live(17) && m.is_live(16) && !m.is_live(40));
        assert!(m.push(79, &[0.0; 3]).is_err());
        assert!(m.push(100, &[f32::NAN, 0.0, 0.0]).is_err());
        assert!(m.push(100, &[0.0; 2]).is_err());
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_widens_back() {
        let mut m = KeyMatrix::with_dtype(2, 0, KeyDtype::Bf16);
        // 1 + 2^-8 is halfway between two bf16 values: ties to even (1.0); 1 + 3·2^-8 rounds up.
        for i in 0..130u64 {
            m.push(i, &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]).unwrap();
        }
        assert_eq!(m.key(129), vec![1.0, 1.0 + 4.0 / 256.0]);
        assert_eq!(m.panels_bf16().len(), 2 * GROUP * 2);
        assert!(m.panels().is_empty());
        assert!(
            m.push(200, &[f32::MAX, 0.0]).is_err(),
            "rounds to inf in bf16"
        );
        assert_eq!(m.len(), 130);
    }
}
