//! Value types shared by the store and the top-k kernel: memory dtypes, borrowed views of
//! memories, entries to append and entries read back.
use half::bf16;

/// The element type of the stored memories M_d (keys: `KeyDtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemDtype {
    F32,
    Bf16,
}

impl MemDtype {
    pub(crate) fn code(self) -> u8 {
        match self {
            MemDtype::F32 => 0,
            MemDtype::Bf16 => 1,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(MemDtype::F32),
            1 => Some(MemDtype::Bf16),
            _ => None,
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            MemDtype::F32 => 4,
            MemDtype::Bf16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            MemDtype::F32 => "f32",
            MemDtype::Bf16 => "bf16",
        }
    }
}

/// A borrowed memory M_d (T×D values, row-major) in either dtype.
#[derive(Clone, Copy, Debug)]
pub enum MemView<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
}

impl MemView<'_> {
    pub fn len(&self) -> usize {
        match self {
            MemView::F32(v) => v.len(),
            MemView::Bf16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> MemDtype {
        match self {
            MemView::F32(_) => MemDtype::F32,
            MemView::Bf16(_) => MemDtype::Bf16,
        }
    }
    /// Element `i` widened to f32.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            MemView::F32(v) => v[i],
            MemView::Bf16(v) => v[i].to_f32(),
        }
    }
    /// All elements widened to f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            MemView::F32(v) => v.to_vec(),
            MemView::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
    pub(crate) fn all_finite(&self) -> bool {
        match self {
            MemView::F32(v) => v.iter().all(|x| x.is_finite()),
            MemView::Bf16(v) => v.iter().all(|x| x.is_finite()),
        }
    }
}

/// The SHA-256 (or any 32-byte digest) of a document's text, chosen by the caller.
pub type TextHash = [u8; 32];

/// An entry to append. The store assigns the id. `source` and `title` longer than the bank's
/// fixed widths are cut at the last UTF-8 character boundary that fits.
#[derive(Clone, Copy, Debug)]
pub struct NewEntry<'a> {
    /// The matching key k_d, length r.
    pub key: &'a [f32],
    /// The memory M_d, T×D values; converted to the bank's dtype when they differ (f32 →
    /// bf16 rounds to nearest even).
    pub memory: MemView<'a>,
    pub source: &'a str,
    pub title: &'a str,
    /// Caller's timestamp (for example Unix seconds of ingestion).
    pub timestamp: u64,
    pub text_hash: TextHash,
}

/// An entry read back from the bank, borrowing the mapped segment file.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub id: u64,
    pub key: &'a [f32],
    pub memory: MemView<'a>,
    pub source: &'a str,
    pub title: &'a str,
    pub timestamp: u64,
    pub text_hash: TextHash,
}
