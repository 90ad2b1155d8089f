//! The bank header file `<bank>/HEADER`: 512 bytes, little-endian, CRC-32 protected.
//!
//! ```text
//! off  size  field
//!   0     8  magic "CMTBANK\0"
//!   8     4  format version (1)
//!  12     4  header size (512)
//!  16     4  T (memory tokens per entry)
//!  20     4  D (memory width)
//!  24     4  r (key width)
//!  28     1  memory dtype (0 = f32, 1 = bf16)
//!  29     1  key dtype (0 = f32, 1 = bf16: keys rounded to bf16 at append, stored widened
//!            in the records' f32 key field, scanned from a bf16 key matrix)
//!  30     2  reserved (0)
//!  32     4  source field width in bytes
//!  36     4  title field width in bytes
//!  40     8  record size in bytes (derived from the above; checked)
//!  48     8  created, Unix seconds
//!  56     8  generation (bumped by every compaction; names the live files)
//!  64     8  next id floor (ids are never reused, even after compaction)
//!  72     8  segment capacity in records
//!  80     8  bank nonce (random at creation; every other file of the bank repeats it)
//!  88     8  number of segment files of this generation
//!  96     2  length of the base-model hash string
//!  98   128  base-model hash string (UTF-8, zero padded)
//! 226   282  reserved (0)
//! 508     4  CRC-32 of bytes [0, 508)
//! ```
//!
//! The header changes only at creation, at a segment roll-over and at compaction, and always
//! by writing `HEADER.tmp`, fsync, rename over `HEADER`, fsync of the directory: a reader or
//! a crash sees either the old or the new header, never a mix.
use super::record::Layout;
use crate::error::{Error, Result};
use crate::keys::KeyDtype;
use crate::types::MemDtype;
use std::path::Path;

pub(crate) const HEADER_FILE: &str = "HEADER";
pub(crate) const HEADER_SIZE: usize = 512;
const MAGIC: &[u8; 8] = b"CMTBANK\0";
const VERSION: u32 = 1;
pub(crate) const MAX_HASH_LEN: usize = 128;
const CRC_OFF: usize = 508;

/// Byte offsets of the fields, used in mismatch errors.
pub(crate) mod off {
    pub const T: u64 = 16;
    pub const D: u64 = 20;
    pub const R: u64 = 24;
    pub const HASH: u64 = 96;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BankHeader {
    pub t: u32,
    pub d: u32,
    pub r: u32,
    pub mem_dtype: MemDtype,
    pub key_dtype: KeyDtype,
    pub source_max: u32,
    pub title_max: u32,
    pub record_size: u64,
    pub created: u64,
    pub generation: u64,
    pub next_id: u64,
    pub segment_capacity: u64,
    pub nonce: u64,
    pub segments: u64,
    pub base_model_hash: String,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl BankHeader {
    pub(crate) fn layout(&self) -> Layout {
        Layout::new(
            self.t as usize,
            self.d as usize,
            self.r as usize,
            self.mem_dtype,
            self.source_max as usize,
            self.title_max as usize,
        )
        .with_key_dtype(self.key_dtype)
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.t.to_le_bytes());
        b[20..24].copy_from_slice(&self.d.to_le_bytes());
        b[24..28].copy_from_slice(&self.r.to_le_bytes());
        b[28] = self.mem_dtype.code();
        b[29] = self.key_dtype.code();
        b[32..36].copy_from_slice(&self.source_max.to_le_bytes());
        b[36..40].copy_from_slice(&self.title_max.to_le_bytes());
        b[40..48].copy_from_slice(&self.record_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.created.to_le_bytes());
        b[56..64].copy_from_slice(&self.generation.to_le_bytes());
        b[64..72].copy_from_slice(&self.next_id.to_le_bytes());
        b[72..80].copy_from_slice(&self.segment_capacity.to_le_bytes());
        b[80..88].copy_from_slice(&self.nonce.to_le_bytes());
        b[88..96].copy_from_slice(&self.segments.to_le_bytes());
        let h = self.base_model_hash.as_bytes();
        debug_assert!(h.len() <= MAX_HASH_LEN);
        let n = h.len().min(MAX_HASH_LEN);
        b[96..98].copy_from_slice(&(n as u16).to_le_bytes());
        b[98..98 + n].copy_from_slice(&h[..n]);
        let crc = crc32fast::hash(&b[..CRC_OFF]);
        b[CRC_OFF..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header read from `path`; every failure names the field's offset.
    pub(crate) fn decode(path: &Path, b: &[u8]) -> Result<Self> {
        let bad = |off: usize, msg: String| Error::corrupt(path, off as u64, msg);
        if b.len() < HEADER_SIZE {
            return Err(bad(
                b.len(),
                format!(
                    "header truncated: {} bytes, a bank header has {HEADER_SIZE}",
                    b.len()
                ),
            ));
        }
        if &b[0..8] != MAGIC {
            return Err(bad(0, "not a cmt memory bank header (bad magic)".into()));
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            return Err(bad(
                8,
                format!("unsupported bank format version {version} (this build reads {VERSION})"),
            ));
        }
        let crc = u32_at(b, CRC_OFF);
        let want = crc32fast::hash(&b[..CRC_OFF]);
        if crc != want {
            return Err(bad(
                CRC_OFF,
                format!("header checksum mismatch (stored {crc:#010x}, computed {want:#010x})"),
            ));
        }
        if u32_at(b, 12) as usize != HEADER_SIZE {
            return Err(bad(
                12,
                format!("header size {} != {HEADER_SIZE}", u32_at(b, 12)),
            ));
        }
        let mem_dtype = MemDtype::from_code(b[28])
            .ok_or_else(|| bad(28, format!("unknown memory dtype code {}", b[28])))?;
        let key_dtype = KeyDtype::from_code(b[29])
            .ok_or_else(|| bad(29, format!("unknown key dtype code {}", b[29])))?;
        let hash_len = u16::from_le_bytes([b[96], b[97]]) as usize;
        if hash_len > MAX_HASH_LEN {
            return Err(bad(
                96,
                format!("base-model hash length {hash_len} > {MAX_HASH_LEN}"),
            ));
        }
        let base_model_hash = std::str::from_utf8(&b[98..98 + hash_len])
            .map_err(|e| bad(98, format!("base-model hash is not UTF-8: {e}")))?
            .to_string();
        let h = BankHeader {
            t: u32_at(b, 16),
            d: u32_at(b, 20),
            r: u32_at(b, 24),
            mem_dtype,
            key_dtype,
            source_max: u32_at(b, 32),
            title_max: u32_at(b, 36),
            record_size: u64_at(b, 40),
            created: u64_at(b, 48),
            generation: u64_at(b, 56),
            next_id: u64_at(b, 64),
            segment_capacity: u64_at(b, 72),
            nonce: u64_at(b, 80),
            segments: u64_at(b, 88),
            base_model_hash,
        };
        for (v, o, name) in [(h.t, 16, "T"), (h.d, 20, "D"), (h.r, 24, "r")] {
            if v == 0 || v > MAX_DIM {
                return Err(bad(
                    o,
                    format!("{name} = {v} is out of range 1..={MAX_DIM}"),
                ));
            }
        }
        if h.source_max > MAX_TEXT_FIELD || h.title_max > MAX_TEXT_FIELD {
            return Err(bad(32, "source/title field width out of range".into()));
        }
        let want_size = h.layout().size as u64;
        if h.record_size != want_size {
            return Err(bad(
                40,
                format!(
                    "record size {} does not match the dimensions (expected {want_size})",
                    h.record_size
                ),
            ));
        }
        if h.segment_capacity == 0 {
            return Err(bad(72, "segment capacity is 0".into()));
        }
        Ok(h)
    }
}

/// Bounds on dimensions, so that a damaged header cannot ask for absurd allocations.
pub(crate) const MAX_DIM: u32 = 1 << 16;
pub(crate) const MAX_TEXT_FIELD: u32 = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BankHeader {
        let mut h = BankHeader {
            t: 4,
            d: 8,
            r: 16,
            mem_dtype: MemDtype::Bf16,
            key_dtype: KeyDtype::Bf16,
            source_max: 32,
            title_max: 64,
            record_size: 0,
            created: 1_700_000_000,
            generation: 3,
            next_id: 42,
            segment_capacity: 100,
            nonce: 0xdead_beef,
            segments: 2,
            base_model_hash: "b179c952".into(),
        };
        h.record_size = h.layout().size as u64;
        h
    }

    #[test]
    fn roundtrip_and_every_byte_flip_is_caught() {
        let h = sample();
        let b = h.encode();
        assert_eq!(BankHeader::decode(Path::new("HEADER"), &b).unwrap(), h);
        for i in 0..HEADER_SIZE {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(
                BankHeader::decode(Path::new("HEADER"), &c).is_err(),
                "flip at {i}"
            );
        }
        let e = BankHeader::decode(Path::new("x/HEADER"), &b[..100]).unwrap_err();
        assert!(
            e.to_string().contains("x/HEADER: at byte offset 100"),
            "{e}"
        );
    }
}
