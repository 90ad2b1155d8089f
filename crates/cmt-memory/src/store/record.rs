//! The fixed-size record of one entry, little-endian, read in place from the mapped segment.
//!
//! ```text
//! off                size        field
//!   0                4           magic "CREC"
//!   4                4           flags (0)
//!   8                8           id
//!  16                8           timestamp
//!  24               32           text hash
//!  56                2           source length (≤ source width)
//!  58                2           title length (≤ title width)
//!  60                4           reserved (0)
//!  64                source_max  source, UTF-8, zero padded
//!  64+source_max     title_max   title, UTF-8, zero padded
//!  key_off (64-al.)  4·r         key k_d, f32
//!  mem_off (64-al.)  T·D·size    memory M_d, f32 or bf16; then zero padding
//!  size-8            4           mem CRC-32: over [mem_off, size-8)
//!  size-4            4           head CRC-32: over [0, mem_off) followed by the mem CRC
//! ```
//! `size` is a multiple of 64 and segments start records at offset 64, so the key and the
//! memory of every record are 64-byte aligned in the (page-aligned) mapping. Every byte of a
//! record is covered by one of the two checksums; the head CRC also binds the mem CRC, so
//! checking the head alone (keys, ids, metadata) is cheap and the memory can be checked
//! separately when it is read.
use crate::keys::KeyDtype;
use crate::types::{EntryRef, MemDtype, MemView, NewEntry};
use half::bf16;

const MAGIC: u32 = u32::from_le_bytes(*b"CREC");
pub(crate) const FIXED: usize = 64;

fn align64(x: usize) -> usize {
    x.div_ceil(64) * 64
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

/// Where each field of a record lies, for one bank's dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub r: usize,
    pub mem_len: usize,
    pub dtype: MemDtype,
    /// Keys are rounded to this dtype when encoded (the field stays f32).
    pub key_dtype: KeyDtype,
    pub source_max: usize,
    pub title_max: usize,
    pub key_off: usize,
    pub mem_off: usize,
    pub size: usize,
}

/// A record that failed a check: the offset of the problem within the record and what.
pub(crate) type Bad = (usize, String);

impl Layout {
    pub(crate) fn new(
        t: usize,
        d: usize,
        r: usize,
        dtype: MemDtype,
        source_max: usize,
        title_max: usize,
    ) -> Self {
        let mem_len = t * d;
        let key_off = align64(FIXED + source_max + title_max);
        let mem_off = align64(key_off + 4 * r);
        let size = align64(mem_off + mem_len * dtype.size() + 8);
        Layout {
            r,
            mem_len,
            dtype,
            key_dtype: KeyDtype::F32,
            source_max,
            title_max,
            key_off,
            mem_off,
            size,
        }
    }

    pub(crate) fn with_key_dtype(self, key_dtype: KeyDtype) -> Self {
        Layout { key_dtype, ..self }
    }

    fn mem_end(&self) -> usize {
        self.size - 8
    }

    /// Writes entry `e` with `id` into `out` (exactly `size` bytes, any prior content).
    /// The caller has checked lengths and finiteness.
    pub(crate) fn encode(&self, id: u64, e: &NewEntry<'_>, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.size);
        out.fill(0);
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[8..16].copy_from_slice(&id.to_le_bytes());
        out[16..24].copy_from_slice(&e.timestamp.to_le_bytes());
        out[24..56].copy_from_slice(&e.text_hash);
        let source = truncate_utf8(e.source, self.source_max);
        let title = truncate_utf8(e.title, self.title_max);
        out[56..58].copy_from_slice(&(source.len() as u16).to_le_bytes());
        out[58..60].copy_from_slice(&(title.len() as u16).to_le_bytes());
        out[FIXED..FIXED + source.len()].copy_from_slice(source.as_bytes());
        let t0 = FIXED + self.source_max;
        out[t0..t0 + title.len()].copy_from_slice(title.as_bytes());
        for (i, k) in e.key.iter().enumerate() {
            let o = self.key_off + 4 * i;
            out[o..o + 4].copy_from_slice(&self.key_dtype.round(*k).to_le_bytes());
        }
        let m = &mut out[self.mem_off..self.mem_off + self.mem_len * self.dtype.size()];
        match (self.dtype, e.memory) {
            (MemDtype::F32, mem) => {
                for (i, c) in m.chunks_exact_mut(4).enumerate() {
                    c.copy_from_slice(&mem.get(i).to_le_bytes());
                }
            }
            (MemDtype::Bf16, MemView::Bf16(v)) => {
                for (c, x) in m.chunks_exact_mut(2).zip(v) {
                    c.copy_from_slice(&x.to_bits().to_le_bytes());
                }
            }
            (MemDtype::Bf16, MemView::F32(v)) => {
                for (c, x) in m.chunks_exact_mut(2).zip(v) {
                    c.copy_from_slice(&bf16::from_f32(*x).to_bits().to_le_bytes());
                }
            }
        }
        let mem_crc = crc32fast::hash(&out[self.mem_off..self.mem_end()]);
        let head_crc = self.head_crc(out, mem_crc);
        let e = self.mem_end();
        out[e..e + 4].copy_from_slice(&mem_crc.to_le_bytes());
        out[e + 4..e + 8].copy_from_slice(&head_crc.to_le_bytes());
    }

    fn head_crc(&self, rec: &[u8], mem_crc: u32) -> u32 {
        let mut h = crc32fast::Hasher::new();
        h.update(&rec[..self.mem_off]);
        h.update(&mem_crc.to_le_bytes());
        h.finalize()
    }

    /// Checks magic and head CRC (ids, metadata, key and the stored mem CRC).
    pub(crate) fn check_head(&self, rec: &[u8]) -> Result<(), Bad> {
        if rec.len() != self.size {
            return Err((
                0,
                format!("record of {} bytes, expected {}", rec.len(), self.size),
            ));
        }
        if u32_at(rec, 0) != MAGIC {
            return Err((0, "bad record magic (not a record, or a torn write)".into()));
        }
        let e = self.mem_end();
        let stored = u32_at(rec, e + 4);
        let want = self.head_crc(rec, u32_at(rec, e));
        if stored != want {
            return Err((
                e + 4,
                format!(
                    "record head checksum mismatch (stored {stored:#010x}, computed {want:#010x})"
                ),
            ));
        }
        Ok(())
    }

    /// Checks the memory bytes against the mem CRC (which `check_head` vouches for).
    pub(crate) fn check_mem(&self, rec: &[u8]) -> Result<(), Bad> {
        let e = self.mem_end();
        let stored = u32_at(rec, e);
        let want = crc32fast::hash(&rec[self.mem_off..e]);
        if stored != want {
            return Err((
                self.mem_off,
                format!("memory checksum mismatch (stored {stored:#010x}, computed {want:#010x})"),
            ));
        }
        Ok(())
    }

    pub(crate) fn id(&self, rec: &[u8]) -> u64 {
        u64_at(rec, 8)
    }

    /// The key of a checked record, in place.
    pub(crate) fn key<'a>(&self, rec: &'a [u8]) -> Result<&'a [f32], Bad> {
        bytemuck::try_cast_slice(&rec[self.key_off..self.key_off + 4 * self.r])
            .map_err(|e| (self.key_off, format!("key not readable in place: {e:?}")))
    }

    /// The memory of a record, in place (the caller checks the mem CRC first).
    pub(crate) fn memory<'a>(&self, rec: &'a [u8]) -> Result<MemView<'a>, Bad> {
        let bytes = &rec[self.mem_off..self.mem_off + self.mem_len * self.dtype.size()];
        let err = |e| (self.mem_off, format!("memory not readable in place: {e:?}"));
        Ok(match self.dtype {
            MemDtype::F32 => MemView::F32(bytemuck::try_cast_slice(bytes).map_err(err)?),
            MemDtype::Bf16 => MemView::Bf16(bytemuck::try_cast_slice(bytes).map_err(err)?),
        })
    }

    /// The whole entry of a checked record (the caller checks the mem CRC first).
    pub(crate) fn entry<'a>(&self, rec: &'a [u8]) -> Result<EntryRef<'a>, Bad> {
        let sl = u16::from_le_bytes([rec[56], rec[57]]) as usize;
        let tl = u16::from_le_bytes([rec[58], rec[59]]) as usize;
        if sl > self.source_max {
            return Err((
                56,
                format!("source length {sl} > width {}", self.source_max),
            ));
        }
        if tl > self.title_max {
            return Err((58, format!("title length {tl} > width {}", self.title_max)));
        }
        let t0 = FIXED + self.source_max;
        let source = std::str::from_utf8(&rec[FIXED..FIXED + sl])
            .map_err(|e| (FIXED, format!("source is not UTF-8: {e}")))?;
        let title = std::str::from_utf8(&rec[t0..t0 + tl])
            .map_err(|e| (t0, format!("title is not UTF-8: {e}")))?;
        let mut text_hash = [0u8; 32];
        text_hash.copy_from_slice(&rec[24..56]);
        Ok(EntryRef {
            id: self.id(rec),
            key: self.key(rec)?,
            memory: self.memory(rec)?,
            source,
            title,
            timestamp: u64_at(rec, 16),
            text_hash,
        })
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Buf([u8; 1024]);

    #[test]
    fn encode_check_decode_and_flip_detection() {
        let l = Layout::new(2, 3, 5, MemDtype::Bf16, 8, 8);
        assert_eq!(l.size % 64, 0);
        let key = [1.0f32, -2.0, 3.5, 0.0, 0.25];
        let mem = [0.5f32, 1.0, -1.5, 2.0, 3.0, -4.0];
        let e = NewEntry {
            key: &key,
            memory: MemView::F32(&mem),
            source: "wikipédia-long-source",
            title: "t",
            timestamp: 7,
            text_hash: [9; 32],
        };
        let mut buf = Buf([0; 1024]);
        let rec = &mut buf.0[..l.size];
        l.encode(11, &e, rec);
        l.check_head(rec).unwrap();
        l.check_mem(rec).unwrap();
        let got = l.entry(rec).unwrap();
        assert_eq!(got.id, 11);
        assert_eq!(got.key, &key);
        assert_eq!(got.memory.to_f32_vec(), mem.to_vec());
        assert_eq!(got.source, "wikipéd"); // cut at a char boundary within 8 bytes
        for i in 0..l.size {
            let mut c = rec.to_vec();
            c[i] ^= 1;
            let bad = l.check_head(&c).is_err() || l.check_mem(&c).is_err();
            assert!(bad, "flip at {i} not detected");
        }
    }
}
