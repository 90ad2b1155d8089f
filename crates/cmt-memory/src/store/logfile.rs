//! Append-only files of fixed-size records (segments and the tombstone file) and their
//! commit protocol.
//!
//! Every such file starts with a 64-byte header:
//! ```text
//! off size field
//!   0    8 magic "CMTSEG\0\0" (segment) or "CMTTOMB\0" (tombstones)
//!   8    4 version (1)
//!  12    4 reserved (0)
//!  16    8 bank nonce (must equal the HEADER's: a file of another bank is refused)
//!  24    8 generation (must equal the HEADER's)
//!  32    8 file index within the generation (segments 0, 1, …; tombstones 0)
//!  40    8 record size
//!  48    8 committed record count
//!  56    4 reserved (0)
//!  60    4 CRC-32 of bytes [0, 60)
//! ```
//! followed by records. **The committed count is the truth**: an append writes its records
//! after the last committed one, `fdatasync`s, then rewrites the count and `fdatasync`s
//! again, and only then returns. Bytes past `64 + committed·size` are an append that was
//! never acknowledged (a kill -9 or a full disk in the middle): readers ignore them and a
//! writer truncates them away on open. A file shorter than its committed count was truncated
//! after the fact: an error, since acknowledged records would be missing.
use crate::error::{Error, Result};
use memmap2::{Mmap, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(crate) const LOG_HEADER: usize = 64;
const VERSION: u32 = 1;
const COUNT_OFF: u64 = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Segment,
    Tombstones,
}

impl Kind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            Kind::Segment => b"CMTSEG\0\0",
            Kind::Tombstones => b"CMTTOMB\0",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogHeader {
    pub kind: Kind,
    pub nonce: u64,
    pub generation: u64,
    pub index: u64,
    pub record_size: u64,
    pub committed: u64,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl LogHeader {
    pub(crate) fn encode(&self) -> [u8; LOG_HEADER] {
        let mut b = [0u8; LOG_HEADER];
        b[0..8].copy_from_slice(self.kind.magic());
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.nonce.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32..40].copy_from_slice(&self.index.to_le_bytes());
        b[40..48].copy_from_slice(&self.record_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.committed.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses `b` and checks it against `want` (all fields but `committed`).
    pub(crate) fn decode(path: &Path, b: &[u8], want: &LogHeader) -> Result<LogHeader> {
        let bad = |off: u64, msg: String| Error::corrupt(path, off, msg);
        if b.len() < LOG_HEADER {
            return Err(bad(
                b.len() as u64,
                format!("file header truncated ({} of {LOG_HEADER} bytes)", b.len()),
            ));
        }
        if &b[0..8] != want.kind.magic() {
            return Err(bad(
                0,
                format!("bad magic: not a {:?} file of a cmt bank", want.kind),
            ));
        }
        let crc = u32::from_le_bytes([b[60], b[61], b[62], b[63]]);
        if crc != crc32fast::hash(&b[..60]) {
            return Err(bad(60, "file header checksum mismatch".into()));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != VERSION {
            return Err(bad(8, format!("unsupported file version {version}")));
        }
        let h = LogHeader {
            kind: want.kind,
            nonce: u64_at(b, 16),
            generation: u64_at(b, 24),
            index: u64_at(b, 32),
            record_size: u64_at(b, 40),
            committed: u64_at(b, 48),
        };
        let checks = [
            (
                16,
                "bank nonce (file belongs to another bank)",
                h.nonce,
                want.nonce,
            ),
            (24, "generation", h.generation, want.generation),
            (32, "file index", h.index, want.index),
            (40, "record size", h.record_size, want.record_size),
        ];
        for (off, what, got, exp) in checks {
            if got != exp {
                return Err(bad(
                    off,
                    format!("{what}: found {got:#x}, expected {exp:#x}"),
                ));
            }
        }
        Ok(h)
    }

    fn committed_len(&self) -> u64 {
        LOG_HEADER as u64 + self.committed * self.record_size
    }
}

/// Reads and checks the header of the file at `path`, and its length against the count.
/// Returns the header, the open file and its length.
pub(crate) fn open_checked(path: &Path, want: &LogHeader) -> Result<(LogHeader, File, u64)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut b = Vec::with_capacity(LOG_HEADER);
    (&mut file)
        .take(LOG_HEADER as u64)
        .read_to_end(&mut b)
        .map_err(|e| Error::io_at(path, 0, e))?;
    let h = LogHeader::decode(path, &b, want)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let need = h
        .committed
        .checked_mul(h.record_size)
        .and_then(|x| x.checked_add(LOG_HEADER as u64))
        .ok_or_else(|| Error::corrupt(path, COUNT_OFF, "committed count overflows"))?;
    if len < need {
        return Err(Error::corrupt(
            path,
            len,
            format!(
                "file truncated: its header commits {} records ({need} bytes) but it ends at \
                 byte {len}; acknowledged records are missing",
                h.committed
            ),
        ));
    }
    Ok((h, file, len))
}

/// Maps the committed prefix of `file` (header and committed records).
pub(crate) fn map_committed(path: &Path, file: &File, h: &LogHeader) -> Result<Mmap> {
    let len = h.committed_len() as usize;
    // SAFETY: the mapped range is the header plus committed records. Committed records are
    // never rewritten or truncated by this crate (appends go past them, compaction writes new
    // files and unlinks old ones, which keeps existing mappings valid). The only bytes in the
    // range that a writer rewrites are the 64-byte file header, which this crate reads with
    // `read`, never through the map. A truncation by some other program would fault, which is
    // the documented hazard of memory-mapping a file.
    unsafe { MmapOptions::new().len(len).map(file) }.map_err(|e| Error::io(path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The writer side of one log file.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    path: PathBuf,
    pub header: LogHeader,
}

impl LogWriter {
    /// Creates the file with an empty committed header, atomically (tmp, fsync, rename,
    /// fsync of the directory): the file either exists complete or not at all.
    pub(crate) fn create(path: &Path, header: LogHeader) -> Result<Self> {
        let tmp = path.with_extension("tmp");
        let b = header.encode();
        let write = || -> std::io::Result<()> {
            let f = File::create(&tmp)?;
            f.write_all_at(&b, 0)?;
            f.sync_all()
        };
        write().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Self::open(path, header)
    }

    /// Opens a checked file for appending and drops any unacknowledged tail.
    pub(crate) fn open(path: &Path, header: LogHeader) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let end = header.committed_len();
        if len > end {
            file.set_len(end).map_err(|e| Error::io_at(path, end, e))?;
            file.sync_all().map_err(|e| Error::io(path, e))?;
        }
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            header,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Appends `n` records (`bytes` = n·record_size) and commits them; durable on return.
    /// On `Err(_, false)` the file is back to its previous committed state and the writer
    /// may go on; on `Err(_, true)` the state is unknown and the writer must not be used.
    pub(crate) fn append(&mut self, bytes: &[u8], n: u64) -> Result<(), (Error, bool)> {
        debug_assert_eq!(bytes.len() as u64, n * self.header.record_size);
        let at = self.header.committed_len();
        let path = &self.path;
        if let Err(e) = self.file.write_all_at(bytes, at) {
            // A short write (full disk, file size limit) leaves a partial tail: cut it off.
            let clean = self.file.set_len(at).is_ok();
            return Err((Error::io_at(path, at, e), !clean));
        }
        if let Err(e) = self.file.sync_data() {
            let _ = self.file.set_len(at);
            return Err((Error::io_at(path, at, e), true));
        }
        let mut h = self.header;
        h.committed += n;
        let hb = h.encode();
        if let Err(e) = self.file.write_all_at(&hb, 0) {
            return Err((Error::io_at(path, 0, e), true));
        }
        if let Err(e) = self.file.sync_data() {
            return Err((Error::io_at(path, 0, e), true));
        }
        self.header = h;
        Ok(())
    }
}
