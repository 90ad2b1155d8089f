//! The writer's operations: append (single and batch), delete, segment roll-over.
use super::logfile::{map_committed, LogWriter};
use super::open::{now_secs, seg_header, write_header};
use super::{seg_name, tombstone, Bank, Seg, Writer};
use crate::error::{Error, Result};
use crate::types::NewEntry;

/// Records per write call in a large batch (about 32 MiB), so the encode buffer stays small.
const BATCH_BYTES: usize = 32 << 20;

impl Bank {
    pub(super) fn writer_mut(&mut self) -> Result<&mut Writer> {
        let dir = self.dir.clone();
        match self.writer.as_mut() {
            None => Err(Error::ReadOnly { path: dir }),
            Some(w) if w.poisoned => Err(Error::Poisoned { path: dir }),
            Some(w) => Ok(w),
        }
    }

    fn check_entry(&self, i: usize, e: &NewEntry<'_>) -> Result<()> {
        let l = &self.layout;
        let bad = |m: String| Err(Error::Invalid(format!("entry {i} of the batch: {m}")));
        if e.key.len() != l.r {
            return bad(format!(
                "key of length {}, the bank's r is {}",
                e.key.len(),
                l.r
            ));
        }
        if e.memory.len() != l.mem_len {
            return bad(format!(
                "memory of {} values, the bank's T·D is {}",
                e.memory.len(),
                l.mem_len
            ));
        }
        if !e.key.iter().all(|x| x.is_finite()) || !e.memory.all_finite() {
            return bad("key or memory holds a non-finite value".into());
        }
        if let Some(j) = e
            .key
            .iter()
            .position(|&x| !l.key_dtype.round(x).is_finite())
        {
            return bad(format!(
                "key element {j} = {} overflows the bank's {} keys",
                e.key[j],
                l.key_dtype.name()
            ));
        }
        Ok(())
    }

    /// Appends one entry; durable when it returns. Returns the new id.
    pub fn append(&mut self, e: &NewEntry<'_>) -> Result<u64> {
        let ids = self.append_batch(std::slice::from_ref(e))?;
        Ok(ids[0])
    }

    /// Appends entries with one commit (two fsyncs) per segment touched (per 32 MiB); all are
    /// durable when it returns, with consecutive ids. A call that fails may have committed a
    /// prefix of the batch (those entries are then in the bank), never part of a record.
    pub fn append_batch(&mut self, entries: &[NewEntry<'_>]) -> Result<Vec<u64>> {
        self.writer_mut()?;
        for (i, e) in entries.iter().enumerate() {
            self.check_entry(i, e)?;
        }
        let rs = self.layout.size;
        let per_write = (BATCH_BYTES / rs).max(1);
        let mut ids = Vec::with_capacity(entries.len());
        let mut rest = entries;
        while !rest.is_empty() {
            let room = self.header.segment_capacity - self.segs[self.segs.len() - 1].committed;
            if room == 0 {
                self.roll_over()?;
                continue;
            }
            let m = rest.len().min(room as usize).min(per_write);
            let (now, later) = rest.split_at(m);
            let first = self.next_id;
            let layout = self.layout;
            let w = self.writer_mut()?;
            let mut buf = std::mem::take(&mut w.buf);
            buf.resize(m * rs, 0);
            for (j, (e, out)) in now.iter().zip(buf.chunks_exact_mut(rs)).enumerate() {
                layout.encode(first + j as u64, e, out);
            }
            let res = w.seg.append(&buf, m as u64);
            w.buf = buf;
            if let Err((e, poisoned)) = res {
                w.poisoned = poisoned;
                return Err(e);
            }
            self.after_commit()?;
            for (j, e) in now.iter().enumerate() {
                let id = first + j as u64;
                self.keys.push(id, e.key)?;
                ids.push(id);
            }
            self.next_id = first + m as u64;
            rest = later;
        }
        Ok(ids)
    }

    /// Remaps the last segment after its writer committed more records.
    fn after_commit(&mut self) -> Result<()> {
        let Some(w) = self.writer.as_ref() else {
            return Ok(());
        };
        let sh = w.seg.header;
        let map = map_committed(w.seg.path(), w.seg.file(), &sh)?;
        let last = self.segs.len() - 1;
        self.segs[last].map = map;
        self.segs[last].committed = sh.committed;
        Ok(())
    }

    /// Starts a new segment: create it (atomically), then list it in HEADER.
    fn roll_over(&mut self) -> Result<()> {
        self.writer_mut()?;
        let idx = self.header.segments;
        let path = self.dir.join(seg_name(self.header.generation, idx));
        let seg = LogWriter::create(&path, seg_header(&self.header, idx))?;
        let mut h = self.header.clone();
        h.segments += 1;
        h.next_id = self.next_id;
        write_header(&self.dir, &h)?;
        self.header = h;
        let map = map_committed(&path, seg.file(), &seg.header)?;
        self.index.push_segment(self.keys.len());
        self.segs.push(Seg {
            path,
            map,
            committed: 0,
        });
        if let Some(w) = self.writer.as_mut() {
            w.seg = seg;
        }
        Ok(())
    }

    /// Deletes a live entry (a durable tombstone); false if `id` is absent or already deleted.
    pub fn delete(&mut self, id: u64) -> Result<bool> {
        Ok(self.delete_batch(&[id])? == 1)
    }

    /// Deletes several entries with one commit; returns how many were live.
    pub fn delete_batch(&mut self, ids: &[u64]) -> Result<usize> {
        self.writer_mut()?;
        let mut todo: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| self.keys.row_of(id).is_some_and(|r| self.keys.is_live(r)))
            .collect();
        todo.sort_unstable();
        todo.dedup();
        if todo.is_empty() {
            return Ok(0);
        }
        let now = now_secs();
        let buf: Vec<u8> = todo
            .iter()
            .flat_map(|&id| tombstone::encode(id, now))
            .collect();
        let w = self.writer_mut()?;
        if let Err((e, poisoned)) = w.tomb.append(&buf, todo.len() as u64) {
            w.poisoned = poisoned;
            return Err(e);
        }
        for &id in &todo {
            self.keys.remove(id);
        }
        self.deleted += todo.len() as u64;
        self.tomb_records += todo.len() as u64;
        Ok(todo.len())
    }

    /// The path of the writer lock file (for messages).
    pub fn lock_path(&self) -> Option<&std::path::Path> {
        self.writer.as_ref().map(|w| w.lock.path())
    }
}
