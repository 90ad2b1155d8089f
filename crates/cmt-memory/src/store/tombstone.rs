//! The tombstone file `tomb-<gen>.dat`: a log file (see `logfile`) of 32-byte records, one
//! per deleted id.
//! ```text
//! off size field
//!   0    8 id
//!   8    8 deletion time, Unix seconds
//!  16    8 reserved (0)
//!  24    4 magic "TOMB"
//!  28    4 CRC-32 of bytes [0, 28)
//! ```
//! Deletes are rare and small, so the file is read with `read`, not mapped.
use super::logfile::{open_checked, LogHeader, LOG_HEADER};
use crate::error::{Error, Result};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub(crate) const TOMB_SIZE: usize = 32;
const MAGIC: u32 = u32::from_le_bytes(*b"TOMB");

pub(crate) fn encode(id: u64, time: u64) -> [u8; TOMB_SIZE] {
    let mut b = [0u8; TOMB_SIZE];
    b[0..8].copy_from_slice(&id.to_le_bytes());
    b[8..16].copy_from_slice(&time.to_le_bytes());
    b[24..28].copy_from_slice(&MAGIC.to_le_bytes());
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reads the committed tombstones of the file at `path`: its header and the deleted ids.
pub(crate) fn read(path: &Path, want: &LogHeader) -> Result<(LogHeader, Vec<u64>)> {
    let (h, file, _) = open_checked(path, want)?;
    let n = h.committed as usize;
    let mut buf = vec![0u8; n * TOMB_SIZE];
    file.read_exact_at(&mut buf, LOG_HEADER as u64)
        .map_err(|e| Error::io_at(path, LOG_HEADER as u64, e))?;
    let mut ids = Vec::with_capacity(n);
    for (i, rec) in buf.chunks_exact(TOMB_SIZE).enumerate() {
        let off = (LOG_HEADER + i * TOMB_SIZE) as u64;
        let magic = u32::from_le_bytes([rec[24], rec[25], rec[26], rec[27]]);
        let crc = u32::from_le_bytes([rec[28], rec[29], rec[30], rec[31]]);
        if magic != MAGIC || crc != crc32fast::hash(&rec[..28]) {
            return Err(Error::corrupt(
                path,
                off,
                format!("tombstone record {i}: bad magic or checksum mismatch"),
            ));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&rec[..8]);
        ids.push(u64::from_le_bytes(id));
    }
    Ok((h, ids))
}
