//! [`HiddenCache`]: opening, reading, appending, committing (design in [`super`]).
use super::format::{self, damaged, DATA_START, REC_HEADER, SLOT_AT};
use super::lock::WriterLock;
use super::{token_hash, CacheKey, DATA_FILE};
use crate::error::{Error, Result};
use memmap2::{Mmap, MmapOptions};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Hits and misses of one [`Encoder::encode_cached`](crate::encode::Encoder) call, in chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
}

struct Writer {
    _lock: WriterLock,
    /// Seq of the current commit and the slot it sits in.
    seq: u64,
    slot: usize,
    /// End of the appended (not necessarily committed) data.
    end: u64,
    /// Appended since the last commit: token hash → (record offset, rows).
    pending: HashMap<[u8; 32], (u64, u32)>,
}

/// A directory of cached hidden states for one [`CacheKey`]; see the module docs.
pub struct HiddenCache {
    key: CacheKey,
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// The committed prefix of the file.
    map: Option<Mmap>,
    committed: u64,
    /// Token hash → (record offset, rows), committed records only.
    index: HashMap<[u8; 32], (u64, u32)>,
    /// Records checked against their crc since open (each is checked once).
    verified: HashSet<u64>,
    writer: Option<Writer>,
}

impl HiddenCache {
    /// Opens `<root>/<key.dir_name()>` for reading. Errors if it does not exist.
    pub fn open_reader(root: &Path, key: &CacheKey) -> Result<HiddenCache> {
        let dir = root.join(key.dir_name());
        let path = dir.join(DATA_FILE);
        let file = File::open(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        Self::open_file(key, dir, path, file, None)
    }

    /// Opens (creating it if needed) `<root>/<key.dir_name()>` as the single writer; fails at
    /// once with [`Error::Locked`] if another writer holds it. An uncommitted tail (an
    /// interrupted append) is cut off.
    pub fn open_writer(root: &Path, key: &CacheKey) -> Result<HiddenCache> {
        if key.model_hash.len() > format::MAX_HASH_LEN {
            return Err(Error::Config(format!(
                "cache key: base-model hash longer than {} bytes",
                format::MAX_HASH_LEN
            )));
        }
        let dir = root.join(key.dir_name());
        let io = |p: &Path, e| Error::Io {
            path: p.into(),
            source: e,
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock = WriterLock::acquire(&dir)?;
        let path = dir.join(DATA_FILE);
        if !path.exists() {
            // A new file appears complete (header and empty commit) or not at all, so a
            // reader never sees a half-written header. We hold the lock: nobody else is
            // creating it.
            let tmp = dir.join(format!("{DATA_FILE}.tmp"));
            std::fs::write(&tmp, format::new_file_prefix(key))
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| io(&path, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let writer = Writer {
            _lock: lock,
            seq: 0,
            slot: 0,
            end: 0,
            pending: HashMap::new(),
        };
        Self::open_file(key, dir, path, file, Some(writer))
    }

    fn open_file(
        key: &CacheKey,
        dir: PathBuf,
        path: PathBuf,
        file: File,
        writer: Option<Writer>,
    ) -> Result<HiddenCache> {
        let mut c = HiddenCache {
            key: key.clone(),
            dir,
            path,
            file,
            map: None,
            committed: 0,
            index: HashMap::new(),
            verified: HashSet::new(),
            writer,
        };
        let mut head = vec![0u8; DATA_START as usize];
        let n = read_up_to(&c.file, &mut head, 0).map_err(|e| c.io(e))?;
        head.truncate(n);
        format::check_header(&c.path, &head, key)?;
        c.refresh()?;
        let file_len = c.file.metadata().map_err(|e| c.io(e))?.len();
        let committed = c.committed;
        if let Some(w) = c.writer.as_mut() {
            if file_len > committed {
                c.file.set_len(committed).map_err(|e| Error::Io {
                    path: c.path.clone(),
                    source: e,
                })?;
            }
            w.end = committed;
        }
        Ok(c)
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source: e,
        }
    }

    /// Re-reads the commit slots and indexes records committed since the last look.
    pub fn refresh(&mut self) -> Result<()> {
        let mut slots = vec![0u8; DATA_START as usize];
        let n = read_up_to(&self.file, &mut slots, 0).map_err(|e| self.io(e))?;
        if n < DATA_START as usize {
            return Err(damaged(&self.path, n as u64, "truncated header"));
        }
        let (slot, seq, committed) = format::current_commit(&self.path, &slots)?;
        let file_len = self.file.metadata().map_err(|e| self.io(e))?.len();
        if file_len < committed {
            return Err(damaged(
                &self.path,
                file_len,
                format!(
                    "truncated: the file ends at {file_len} but {committed} bytes are committed"
                ),
            ));
        }
        if committed < self.committed {
            return Err(damaged(
                &self.path,
                SLOT_AT[slot] as u64,
                format!(
                    "committed length went back from {} to {committed}",
                    self.committed
                ),
            ));
        }
        // SAFETY: the mapping covers only the committed prefix, which is never modified or
        // truncated afterwards: writers append past it and cut only uncommitted tails, and
        // readers of this format never write. A foreign process truncating the file would
        // break that; the cache belongs to cmt.
        let map = unsafe { MmapOptions::new().len(committed as usize).map(&self.file) }
            .map_err(|e| self.io(e))?;
        let mut off = self.committed.max(DATA_START);
        while off < committed {
            let (n, key) = format::parse_record(&self.path, &map, off, self.key.d)?;
            self.index.entry(key).or_insert((off, n));
            off += REC_HEADER as u64 + n as u64 * self.key.d as u64 * 4;
        }
        self.map = Some(map);
        self.committed = committed;
        if let Some(w) = self.writer.as_mut() {
            w.seq = seq;
            w.slot = slot;
        }
        Ok(())
    }

    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The key's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Committed entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn is_writer(&self) -> bool {
        self.writer.is_some()
    }

    pub(crate) fn require_writer(&self) -> Result<()> {
        if self.is_writer() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{}: opened read-only, cannot add entries",
                self.path.display()
            )))
        }
    }

    /// The `[n, d]` rows cached for the chunk `ids` (committed entries only), checked
    /// against the record's crc the first time they are read.
    pub fn get(&mut self, ids: &[u32]) -> Result<Option<&[f32]>> {
        let Some(&(off, n)) = self.index.get(&token_hash(ids)) else {
            return Ok(None);
        };
        let map = self.map.as_ref().expect("indexed records are mapped");
        let o = off as usize;
        let payload = &map[o + REC_HEADER..o + REC_HEADER + n as usize * self.key.d * 4];
        if n as usize != ids.len() {
            return Err(damaged(
                &self.path,
                off,
                format!("record holds {n} rows for a chunk of {} tokens", ids.len()),
            ));
        }
        if !self.verified.contains(&off) {
            if format::record_crc(&map[o..o + REC_HEADER], payload)
                != format::record_stored_crc(map, o)
            {
                return Err(damaged(&self.path, off, "record checksum mismatch"));
            }
            self.verified.insert(off);
        }
        let rows: &[f32] = bytemuck::try_cast_slice(payload)
            .map_err(|e| damaged(&self.path, off, format!("misaligned rows: {e}")))?;
        Ok(Some(rows))
    }

    /// Appends the `[ids.len(), d]` rows of chunk `ids` (visible after [`commit`]). A
    /// chunk already present or pending is skipped.
    ///
    /// [`commit`]: HiddenCache::commit
    pub fn insert(&mut self, ids: &[u32], rows: &[f32]) -> Result<()> {
        self.require_writer()?;
        if ids.is_empty() || rows.len() != ids.len() * self.key.d {
            return Err(Error::Shape(format!(
                "cache insert: {} rows values for {} tokens of width {}",
                rows.len(),
                ids.len(),
                self.key.d
            )));
        }
        let key = token_hash(ids);
        let w = self.writer.as_mut().expect("checked above");
        if self.index.contains_key(&key) || w.pending.contains_key(&key) {
            return Ok(());
        }
        let payload: &[u8] = bytemuck::cast_slice(rows);
        let n = ids.len() as u32;
        let header = format::record_header(n, &key, payload);
        let mut rec = Vec::with_capacity(REC_HEADER + payload.len());
        rec.extend_from_slice(&header);
        rec.extend_from_slice(payload);
        let at = w.end;
        self.file.write_all_at(&rec, at).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })?;
        w.end += rec.len() as u64;
        w.pending.insert(key, (at, n));
        Ok(())
    }

    /// Publishes appended entries: syncs the data, then writes the other commit slot, then
    /// maps the new records.
    pub fn commit(&mut self) -> Result<()> {
        self.require_writer()?;
        let w = self.writer.as_mut().expect("checked above");
        if w.pending.is_empty() {
            return Ok(());
        }
        let io = |e| Error::Io {
            path: self.path.clone(),
            source: e,
        };
        self.file.sync_data().map_err(io)?;
        let (slot, seq) = (1 - w.slot, w.seq + 1);
        self.file
            .write_all_at(&format::slot_bytes(seq, w.end), SLOT_AT[slot] as u64)
            .map_err(io)?;
        w.pending.clear();
        self.refresh()
    }

    /// Reads every committed record and checks its crc (open only checks headers; `get`
    /// checks the records it reads).
    pub fn verify(&mut self) -> Result<()> {
        let mut offs: Vec<u64> = self.index.values().map(|&(o, _)| o).collect();
        offs.sort_unstable();
        let map = self.map.as_ref().expect("mapped at open");
        for off in offs {
            let o = off as usize;
            let (n, _) = format::parse_record(&self.path, map, off, self.key.d)?;
            let payload = &map[o + REC_HEADER..o + REC_HEADER + n as usize * self.key.d * 4];
            if format::record_crc(&map[o..o + REC_HEADER], payload)
                != format::record_stored_crc(map, o)
            {
                return Err(damaged(&self.path, off, "record checksum mismatch"));
            }
            self.verified.insert(off);
        }
        Ok(())
    }
}

impl Drop for HiddenCache {
    /// A writer commits what it appended (best effort: on failure the entries are simply
    /// not published and the next writer cuts them off).
    fn drop(&mut self) {
        if self.writer.as_ref().is_some_and(|w| !w.pending.is_empty()) {
            let _ = self.commit();
        }
    }
}

/// Reads as much of `buf` as the file holds from `at`.
fn read_up_to(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
