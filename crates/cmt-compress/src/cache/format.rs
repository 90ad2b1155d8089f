//! The on-disk layout of `hidden.cmtc` (all integers little-endian; see the module docs of
//! [`super`] for the overall design).
//!
//! ```text
//! 0      header (512 bytes)
//!          0  magic "CMTHCACH"
//!          8  version u32 (= VERSION)
//!         12  d u32 · 16 layer u32 (u32::MAX = final norm) · 20 max_doc_tokens u32
//!         24  overlap u32 · 28 model-hash length u32 · 32 model hash (MAX_HASH_LEN bytes)
//!        288  crc32 of bytes 0..288
//! 512    commit slot A, 544 commit slot B: seq u64, committed length u64, crc32 of those
//!        16 bytes u32, pad u32. The valid slot with the larger seq is current.
//! 1024   records, back to back, up to the committed length:
//!          0  magic "HREC" · 4 rows n u32 · 8 sha256 of the chunk's token ids (32 bytes)
//!         40  crc32 of bytes 4..40 and the payload · 44 pad u32
//!         48  payload: n·d f32
//! ```
use super::CacheKey;
use crate::error::{Error, Result};
use std::path::Path;

pub(crate) const MAGIC: &[u8; 8] = b"CMTHCACH";
pub(crate) const VERSION: u32 = 1;
pub(crate) const MAX_HASH_LEN: usize = 256;
const HEADER_CRC_AT: usize = 288;
pub(crate) const SLOT_AT: [usize; 2] = [512, 544];
pub(crate) const DATA_START: u64 = 1024;
pub(crate) const REC_MAGIC: &[u8; 4] = b"HREC";
pub(crate) const REC_HEADER: usize = 48;

pub(crate) fn damaged(path: &Path, offset: u64, msg: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.into(),
        msg: format!("damaged hidden-state cache at offset {offset}: {msg}"),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn layer_code(key: &CacheKey) -> u32 {
    match key.layer {
        cmt_runtime::HiddenLayer::Residual(n) => n as u32,
        cmt_runtime::HiddenLayer::FinalNorm => u32::MAX,
    }
}

/// The header plus two empty commit slots (seq 0 in A), `DATA_START` bytes in all.
pub(crate) fn new_file_prefix(key: &CacheKey) -> Vec<u8> {
    let mut b = vec![0u8; DATA_START as usize];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(key.d as u32).to_le_bytes());
    b[16..20].copy_from_slice(&layer_code(key).to_le_bytes());
    b[20..24].copy_from_slice(&(key.chunking.max_doc_tokens() as u32).to_le_bytes());
    b[24..28].copy_from_slice(&(key.chunking.overlap() as u32).to_le_bytes());
    let h = key.model_hash.as_bytes();
    b[28..32].copy_from_slice(&(h.len() as u32).to_le_bytes());
    b[32..32 + h.len()].copy_from_slice(h);
    let crc = crc32fast::hash(&b[..HEADER_CRC_AT]);
    b[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    b[SLOT_AT[0]..SLOT_AT[0] + 24].copy_from_slice(&slot_bytes(0, DATA_START));
    b
}

/// Checks magic, version, checksum, and that the file was built for `key`.
pub(crate) fn check_header(path: &Path, b: &[u8], key: &CacheKey) -> Result<()> {
    if b.len() < DATA_START as usize {
        return Err(damaged(
            path,
            b.len() as u64,
            format!("truncated: the header needs {DATA_START} bytes"),
        ));
    }
    if &b[0..8] != MAGIC {
        return Err(damaged(path, 0, "bad magic: not a cmt hidden-state cache"));
    }
    let version = u32_at(b, 8);
    if version != VERSION {
        return Err(damaged(
            path,
            8,
            format!("format version {version}, this build reads version {VERSION}"),
        ));
    }
    if crc32fast::hash(&b[..HEADER_CRC_AT]) != u32_at(b, HEADER_CRC_AT) {
        return Err(damaged(
            path,
            HEADER_CRC_AT as u64,
            "header checksum mismatch",
        ));
    }
    let hash_len = (u32_at(b, 28) as usize).min(MAX_HASH_LEN);
    let found_hash = String::from_utf8_lossy(&b[32..32 + hash_len]);
    let fields = [
        (
            "base-model hash",
            found_hash.to_string(),
            key.model_hash.clone(),
        ),
        ("hidden size", u32_at(b, 12).to_string(), key.d.to_string()),
        (
            "layer",
            u32_at(b, 16).to_string(),
            layer_code(key).to_string(),
        ),
        (
            "max_doc_tokens",
            u32_at(b, 20).to_string(),
            key.chunking.max_doc_tokens().to_string(),
        ),
        (
            "overlap",
            u32_at(b, 24).to_string(),
            key.chunking.overlap().to_string(),
        ),
    ];
    for (field, found, want) in fields {
        if found != want {
            return Err(Error::Format {
                path: path.into(),
                msg: format!(
                    "hidden-state cache built for another configuration: {field} is {found}, expected {want}; refusing to reuse it"
                ),
            });
        }
    }
    Ok(())
}

pub(crate) fn slot_bytes(seq: u64, len: u64) -> [u8; 24] {
    let mut s = [0u8; 24];
    s[0..8].copy_from_slice(&seq.to_le_bytes());
    s[8..16].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&s[..16]);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    s
}

/// The current commit: (slot index, seq, committed length).
pub(crate) fn current_commit(path: &Path, b: &[u8]) -> Result<(usize, u64, u64)> {
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, &at) in SLOT_AT.iter().enumerate() {
        let s = &b[at..at + 24];
        if crc32fast::hash(&s[..16]) != u32_at(s, 16) {
            continue;
        }
        let (seq, len) = (u64_at(s, 0), u64_at(s, 8));
        if best.is_none_or(|(_, bs, _)| seq > bs) {
            best = Some((i, seq, len));
        }
    }
    let (i, seq, len) =
        best.ok_or_else(|| damaged(path, SLOT_AT[0] as u64, "both commit slots are damaged"))?;
    if len < DATA_START {
        return Err(damaged(
            path,
            SLOT_AT[i] as u64,
            format!("committed length {len} is inside the header"),
        ));
    }
    Ok((i, seq, len))
}

/// A record header: bytes 0..48 of a record.
pub(crate) fn record_header(n: u32, key: &[u8; 32], payload: &[u8]) -> [u8; REC_HEADER] {
    let mut h = [0u8; REC_HEADER];
    h[0..4].copy_from_slice(REC_MAGIC);
    h[4..8].copy_from_slice(&n.to_le_bytes());
    h[8..40].copy_from_slice(key);
    let crc = record_crc(&h, payload);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(crate) fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&header[4..40]);
    c.update(payload);
    c.finalize()
}

/// Parses the record header at `off` of the committed bytes `b`: (rows, token hash).
pub(crate) fn parse_record(path: &Path, b: &[u8], off: u64, d: usize) -> Result<(u32, [u8; 32])> {
    let o = off as usize;
    if o + REC_HEADER > b.len() {
        return Err(damaged(
            path,
            off,
            format!("record header runs past the committed end {}", b.len()),
        ));
    }
    if &b[o..o + 4] != REC_MAGIC {
        return Err(damaged(path, off, "bad record magic"));
    }
    let n = u32_at(b, o + 4);
    let end = o as u64 + REC_HEADER as u64 + n as u64 * d as u64 * 4;
    if n == 0 || end > b.len() as u64 {
        return Err(damaged(
            path,
            off,
            format!(
                "record of {n} rows does not fit before the committed end {}",
                b.len()
            ),
        ));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&b[o + 8..o + 40]);
    Ok((n, key))
}

pub(crate) fn record_stored_crc(b: &[u8], off: usize) -> u32 {
    u32_at(b, off + 40)
}
