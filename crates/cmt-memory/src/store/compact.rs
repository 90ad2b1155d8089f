//! Compaction: rewrite the live records into the next generation and switch atomically.
//!
//! 1. Write `seg-<g+1>-*.dat` with the live records (copied verbatim after checking both
//!    checksums: a damaged record stops the compaction, it is never propagated) and an
//!    empty `tomb-<g+1>.dat`, each committed and fsynced, then fsync the directory.
//! 2. Rename a new HEADER (generation g+1) into place: this is the commit point.
//! 3. Remove generation g's files.
//!
//! A crash before 2 leaves generation g intact (the writer removes the partial g+1 files on
//! its next open); a crash after 2 leaves g's files, removed likewise. Readers that have
//! generation g mapped keep their snapshot (unlinked files stay readable while mapped).
use super::logfile::{sync_dir, LogWriter};
use super::open::{load, parse_name, seg_header, tomb_header, write_header};
use super::{seg_name, tomb_name, Bank};
use crate::error::{Error, Result};

/// What a compaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactStats {
    pub live: u64,
    pub removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Bank {
    pub fn compact(&mut self) -> Result<CompactStats> {
        self.writer_mut()?;
        let before = self.stats();
        let mut h = self.header.clone();
        h.generation += 1;
        h.next_id = self.next_id;
        let written = match self.write_generation(&mut h) {
            Ok(w) => w,
            Err(e) => {
                self.remove_generation(h.generation);
                return Err(e);
            }
        };
        write_header(&self.dir, &h)?;
        let old = self.header.clone();
        self.remove_generation(old.generation);
        let Some(w) = self.writer.take() else {
            return Err(Error::ReadOnly {
                path: self.dir.clone(),
            });
        };
        *self = load(&self.dir, self.verify, self.expect.as_ref(), Some(w.lock))?;
        let after = self.stats();
        Ok(CompactStats {
            live: written,
            removed: before.records - written,
            bytes_before: before.bytes_on_disk,
            bytes_after: after.bytes_on_disk,
        })
    }

    /// Writes generation `h.generation` (segments and tombstones); sets `h.segments`.
    fn write_generation(&self, h: &mut super::header::BankHeader) -> Result<u64> {
        let rs = self.layout.size;
        let per_write = ((32usize << 20) / rs).max(1);
        let mut idx = 0u64;
        let mut seg =
            LogWriter::create(&self.dir.join(seg_name(h.generation, 0)), seg_header(h, 0))?;
        let mut buf: Vec<u8> = Vec::with_capacity(per_write.min(self.keys.live_count()) * rs);
        let mut pending = 0u64;
        let mut written = 0u64;
        let flush = |seg: &mut LogWriter, buf: &mut Vec<u8>, n: &mut u64| -> Result<()> {
            if *n > 0 {
                seg.append(buf, *n).map_err(|(e, _)| e)?;
            }
            buf.clear();
            *n = 0;
            Ok(())
        };
        for row in 0..self.keys.len() {
            if !self.keys.is_live(row) {
                continue;
            }
            if seg.header.committed + pending == h.segment_capacity {
                flush(&mut seg, &mut buf, &mut pending)?;
                idx += 1;
                let path = self.dir.join(seg_name(h.generation, idx));
                seg = LogWriter::create(&path, seg_header(h, idx))?;
            }
            let (s, slot) = self.index.locate(row);
            let (rec, off) = self.record(s, slot);
            let path = &self.segs[s].path;
            let bad = |(o, m): (usize, String)| {
                Error::corrupt(path, off + o as u64, format!("record {slot}: {m}"))
            };
            self.layout.check_head(rec).map_err(bad)?;
            self.layout.check_mem(rec).map_err(bad)?;
            buf.extend_from_slice(rec);
            pending += 1;
            written += 1;
            if pending as usize == per_write {
                flush(&mut seg, &mut buf, &mut pending)?;
            }
        }
        flush(&mut seg, &mut buf, &mut pending)?;
        LogWriter::create(&self.dir.join(tomb_name(h.generation)), tomb_header(h))?;
        sync_dir(&self.dir)?;
        h.segments = idx + 1;
        Ok(written)
    }

    /// Best-effort removal of a generation's files (a failure only leaves files that the
    /// writer's next open removes).
    fn remove_generation(&self, generation: u64) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if parse_name(&name).is_some_and(|(g, _)| g == generation) {
                let _ = std::fs::remove_file(ent.path());
            }
        }
        let _ = sync_dir(&self.dir);
    }
}
