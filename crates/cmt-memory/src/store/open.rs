//! Creating and opening a bank: header checks, writer clean-up of leftovers, the checking
//! scan that loads keys and the index, tombstones, and the retry loop for readers racing a
//! writer.
use super::header::{self, off, BankHeader, HEADER_FILE, HEADER_SIZE, MAX_DIM, MAX_HASH_LEN};
use super::logfile::{self, open_checked, sync_dir, Kind, LogHeader, LogWriter, LOG_HEADER};
use super::{seg_name, tomb_name, tombstone, Bank, BankConfig, Expect, OpenOptions, Seg, Verify};
use super::{SegIndex, Writer};
use crate::error::{Error, Result};
use crate::keys::KeyMatrix;
use crate::lock::WriterLock;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::Path;

const READER_ATTEMPTS: usize = 5;

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes HEADER atomically: tmp, fsync, rename, fsync of the directory.
pub(super) fn write_header(dir: &Path, h: &BankHeader) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let tmp = dir.join("HEADER.tmp");
    let b = h.encode();
    let write = || -> std::io::Result<()> {
        let f = std::fs::File::create(&tmp)?;
        f.write_all_at(&b, 0)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io(&tmp, e))?;
    let path = dir.join(HEADER_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

fn read_header(dir: &Path) -> Result<BankHeader> {
    let path = dir.join(HEADER_FILE);
    let mut b = Vec::with_capacity(HEADER_SIZE);
    std::fs::File::open(&path)
        .and_then(|f| f.take(HEADER_SIZE as u64 + 1).read_to_end(&mut b))
        .map_err(|e| Error::io(&path, e))?;
    BankHeader::decode(&path, &b)
}

fn check_expect(dir: &Path, h: &BankHeader, e: &Expect) -> Result<()> {
    let path = dir.join(HEADER_FILE);
    let dims = [
        (off::T, "T", h.t as usize, e.t),
        (off::D, "D", h.d as usize, e.d),
        (off::R, "r", h.r as usize, e.r),
    ];
    for (offset, field, found, expected) in dims {
        if found != expected {
            return Err(Error::Mismatch {
                path,
                offset,
                field,
                expected: expected.to_string(),
                found: found.to_string(),
            });
        }
    }
    if h.base_model_hash != e.base_model_hash {
        return Err(Error::Mismatch {
            path,
            offset: off::HASH,
            field: "base-model hash",
            expected: format!("{:?}", e.base_model_hash),
            found: format!("{:?}", h.base_model_hash),
        });
    }
    Ok(())
}

fn log_header(h: &BankHeader, kind: Kind, index: u64) -> LogHeader {
    LogHeader {
        kind,
        nonce: h.nonce,
        generation: h.generation,
        index,
        record_size: match kind {
            Kind::Segment => h.record_size,
            Kind::Tombstones => tombstone::TOMB_SIZE as u64,
        },
        committed: 0,
    }
}

pub(super) fn seg_header(h: &BankHeader, index: u64) -> LogHeader {
    log_header(h, Kind::Segment, index)
}
pub(super) fn tomb_header(h: &BankHeader) -> LogHeader {
    log_header(h, Kind::Tombstones, 0)
}

impl Bank {
    /// Creates a new, empty bank in `dir` (created if needed) and opens it as the writer.
    pub fn create(dir: &Path, cfg: &BankConfig) -> Result<Bank> {
        let bad = |m: String| Err(Error::Invalid(format!("{}: {m}", dir.display())));
        for (v, name) in [(cfg.t, "T"), (cfg.d, "D"), (cfg.r, "r")] {
            if v == 0 || v > MAX_DIM as usize {
                return bad(format!("{name} = {v} is out of range 1..={MAX_DIM}"));
            }
        }
        if cfg.base_model_hash.len() > MAX_HASH_LEN {
            return bad(format!("base-model hash longer than {MAX_HASH_LEN} bytes"));
        }
        let max_text = header::MAX_TEXT_FIELD as usize;
        if cfg.source_max > max_text || cfg.title_max > max_text {
            return bad(format!(
                "source/title widths must be at most {max_text} bytes"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = WriterLock::acquire(dir)?;
        let hp = dir.join(HEADER_FILE);
        if hp.exists() {
            return Err(Error::Invalid(format!(
                "{}: a bank already exists here",
                hp.display()
            )));
        }
        let mut h = BankHeader {
            t: cfg.t as u32,
            d: cfg.d as u32,
            r: cfg.r as u32,
            mem_dtype: cfg.mem_dtype,
            key_dtype: cfg.key_dtype,
            source_max: cfg.source_max as u32,
            title_max: cfg.title_max as u32,
            record_size: 0,
            created: now_secs(),
            generation: 1,
            next_id: 1,
            segment_capacity: 0,
            nonce: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            segments: 1,
            base_model_hash: cfg.base_model_hash.clone(),
        };
        h.record_size = h.layout().size as u64;
        h.segment_capacity = match cfg.segment_capacity {
            0 => ((1u64 << 30) / h.record_size).max(1),
            c => c,
        };
        LogWriter::create(&dir.join(seg_name(1, 0)), seg_header(&h, 0))?;
        LogWriter::create(&dir.join(tomb_name(1)), tomb_header(&h))?;
        write_header(dir, &h)?;
        load(dir, Verify::Full, None, Some(lock))
    }

    /// Opens an existing bank as a reader (a snapshot; see [`Bank::refresh`]).
    pub fn open_reader(dir: &Path) -> Result<Bank> {
        Self::open(dir, &OpenOptions::default())
    }

    /// Opens an existing bank as its single writer.
    pub fn open_writer(dir: &Path) -> Result<Bank> {
        Self::open(
            dir,
            &OpenOptions {
                write: true,
                ..Default::default()
            },
        )
    }

    pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Bank> {
        if opts.write {
            let lock = WriterLock::acquire(dir)?;
            return load(dir, opts.verify, opts.expect.as_ref(), Some(lock));
        }
        let mut attempt = 0;
        loop {
            match load(dir, opts.verify, opts.expect.as_ref(), None) {
                Err(e) if e.is_transient_for_reader() && attempt + 1 < READER_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
                }
                r => return r,
            }
        }
    }

    /// A reader re-reads the bank to see appends, deletes and compactions made since it
    /// was opened; for the writer, whose view is always current, this does nothing.
    pub fn refresh(&mut self) -> Result<()> {
        if self.writer.is_none() {
            let opts = OpenOptions {
                write: false,
                verify: self.verify,
                expect: self.expect.clone(),
            };
            *self = Self::open(&self.dir, &opts)?;
        }
        Ok(())
    }
}

/// Parses `seg-<gen>-<idx>.dat` / `tomb-<gen>.dat`.
pub(super) fn parse_name(name: &str) -> Option<(u64, Option<u64>)> {
    if let Some(rest) = name
        .strip_prefix("seg-")
        .and_then(|s| s.strip_suffix(".dat"))
    {
        let (g, i) = rest.split_once('-')?;
        return Some((g.parse().ok()?, Some(i.parse().ok()?)));
    }
    let g = name.strip_prefix("tomb-")?.strip_suffix(".dat")?;
    Some((g.parse().ok()?, None))
}

/// Writer only: removes temporaries, files of other generations (an interrupted or finished
/// compaction) and empty segments created past the HEADER's count (an interrupted roll-over).
fn clean_up(dir: &Path, h: &BankHeader) -> Result<()> {
    let mut removed = false;
    for ent in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let path = ent.path();
        let stale = if name.ends_with(".tmp") {
            true
        } else {
            match parse_name(&name) {
                Some((g, _)) if g != h.generation => true,
                Some((_, Some(i))) if i >= h.segments => {
                    let (sh, _, _) = open_checked(&path, &seg_header(h, i))?;
                    if sh.committed != 0 {
                        return Err(Error::corrupt(
                            &path,
                            48,
                            format!(
                                "segment {i} holds {} committed records but the bank header \
                                 lists only {} segments",
                                sh.committed, h.segments
                            ),
                        ));
                    }
                    true
                }
                _ => false,
            }
        };
        if stale {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads the whole bank: header, every committed record (checked), tombstones.
pub(super) fn load(
    dir: &Path,
    verify: Verify,
    expect: Option<&Expect>,
    lock: Option<WriterLock>,
) -> Result<Bank> {
    let h = read_header(dir)?;
    if let Some(e) = expect {
        check_expect(dir, &h, e)?;
    }
    if h.segments == 0 {
        return Err(Error::corrupt(
            &dir.join(HEADER_FILE),
            88,
            "bank lists no segment",
        ));
    }
    if lock.is_some() {
        clean_up(dir, &h)?;
    }
    let layout = h.layout();
    let rs = layout.size;
    let mut segs = Vec::with_capacity(h.segments as usize);
    let mut seg_headers = Vec::with_capacity(h.segments as usize);
    let mut index = SegIndex::default();
    let mut keys = KeyMatrix::with_dtype(layout.r, 0, h.key_dtype);
    for i in 0..h.segments {
        let path = dir.join(seg_name(h.generation, i));
        let (sh, file, _) = open_checked(&path, &seg_header(&h, i))?;
        if sh.committed > h.segment_capacity {
            return Err(Error::corrupt(
                &path,
                48,
                "more records than a segment holds",
            ));
        }
        let map = logfile::map_committed(&path, &file, &sh)?;
        index.push_segment(keys.len());
        for slot in 0..sh.committed as usize {
            let off = LOG_HEADER + slot * rs;
            let rec = &map[off..off + rs];
            let bad = |(o, m): (usize, String)| {
                Error::corrupt(&path, (off + o) as u64, format!("record {slot}: {m}"))
            };
            layout.check_head(rec).map_err(bad)?;
            if verify == Verify::Full {
                layout.check_mem(rec).map_err(bad)?;
            }
            let id = layout.id(rec);
            let key = layout.key(rec).map_err(bad)?;
            keys.push(id, key)
                .map_err(|e| bad((layout.key_off, e.to_string())))?;
        }
        seg_headers.push(sh);
        segs.push(Seg {
            path,
            map,
            committed: sh.committed,
        });
    }
    let tomb_path = dir.join(tomb_name(h.generation));
    let (th, deleted_ids) = tombstone::read(&tomb_path, &tomb_header(&h))?;
    let mut deleted = 0;
    for id in &deleted_ids {
        deleted += keys.remove(*id) as u64;
    }
    let next_id = h.next_id.max(keys.ids().last().map_or(0, |&l| l + 1));
    let writer = match lock {
        Some(lock) => {
            let last = segs.len() - 1;
            let seg = LogWriter::open(&segs[last].path, seg_headers[last])?;
            let tomb = LogWriter::open(&tomb_path, th)?;
            Some(Writer {
                lock,
                seg,
                tomb,
                poisoned: false,
                buf: Vec::new(),
            })
        }
        None => None,
    };
    Ok(Bank {
        dir: dir.to_path_buf(),
        layout,
        header: h,
        segs,
        index,
        keys,
        deleted,
        tomb_records: th.committed,
        next_id,
        verify,
        expect: expect.cloned(),
        writer,
    })
}
