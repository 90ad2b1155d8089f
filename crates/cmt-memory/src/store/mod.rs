//! The memory bank on disk (DESIGN §4): a directory
//! ```text
//! HEADER                    dims, dtype, base-model hash, generation, … (`header`)
//! LOCK                      the writer's flock (`lock`)
//! seg-<gen>-<idx>.dat       append-only segments of fixed-size records (`record`, `logfile`)
//! tomb-<gen>.dat            append-only tombstones (`tombstone`)
//! ```
//! Only the files of the HEADER's generation belong to the bank; compaction writes the next
//! generation beside the current one and switches by renaming HEADER.
//!
//! Durability: an append, a batch append, a delete or a compaction is durable when it
//! returns (see `logfile` for the protocol: two `fdatasync`s per call, however many records
//! the call carries, so `append_batch` amortises them). Opening checks every committed
//! record (by default also every memory's checksum, [`Verify::Full`]); any damage is an error
//! naming the file and byte offset. The only thing recovered silently is an unacknowledged
//! tail: records written past the committed count by a call that never returned.
mod compact;
pub(crate) mod header;
mod index;
pub(crate) mod logfile;
mod meta;
mod open;
pub(crate) mod record;
pub(crate) mod tombstone;
mod write;

pub use compact::CompactStats;
pub use meta::EntryMeta;

use crate::error::{Error, Result};
use crate::keys::{KeyDtype, KeyMatrix};
use crate::lock::WriterLock;
use crate::topk::{self, MemorySource, SelectedGrads, TopK};
use crate::types::{EntryRef, MemDtype, MemView};
use header::BankHeader;
use index::SegIndex;
use logfile::{LogWriter, LOG_HEADER};
use memmap2::Mmap;
use record::Layout;
use std::path::{Path, PathBuf};

/// Dimensions and metadata widths of a new bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankConfig {
    /// Memory tokens per entry.
    pub t: usize,
    /// Memory width (the model's hidden size).
    pub d: usize,
    /// Key width.
    pub r: usize,
    pub mem_dtype: MemDtype,
    /// How keys are stored and scanned (`new` picks f32; bf16 halves the scan's bytes and
    /// rounds every key to bf16 at append, see `header`).
    pub key_dtype: KeyDtype,
    /// Identifies the frozen base model (e.g. the GGUF's sha256); at most 128 bytes.
    pub base_model_hash: String,
    /// Width in bytes of the fixed source field.
    pub source_max: usize,
    /// Width in bytes of the fixed title field.
    pub title_max: usize,
    /// Records per segment file; 0 picks about 1 GiB per segment.
    pub segment_capacity: u64,
}

impl BankConfig {
    pub fn new(t: usize, d: usize, r: usize, mem_dtype: MemDtype, base_model_hash: &str) -> Self {
        BankConfig {
            t,
            d,
            r,
            mem_dtype,
            key_dtype: KeyDtype::F32,
            base_model_hash: base_model_hash.to_string(),
            source_max: 128,
            title_max: 256,
            segment_capacity: 0,
        }
    }
}

/// How much `open` checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verify {
    /// Every checksum of every committed record, memories included (reads the whole bank).
    #[default]
    Full,
    /// Ids, keys and metadata (the head checksum) only; a memory's own checksum is then
    /// checked when it is read (`get`, `search`), so a damaged memory is still never returned.
    Heads,
}

/// What the caller's model needs the bank to be; a mismatch is [`Error::Mismatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub t: usize,
    pub d: usize,
    pub r: usize,
    pub base_model_hash: String,
}

/// Options of [`Bank::open`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Take the writer lock (one writer at a time); otherwise a read-only snapshot.
    pub write: bool,
    pub verify: Verify,
    pub expect: Option<Expect>,
}

/// Counts and sizes of a bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub t: usize,
    pub d: usize,
    pub r: usize,
    pub mem_dtype: MemDtype,
    pub key_dtype: KeyDtype,
    pub base_model_hash: String,
    pub created: u64,
    pub generation: u64,
    /// Records in the segments, live or deleted.
    pub records: u64,
    pub live: u64,
    pub deleted: u64,
    pub segments: u64,
    pub record_size: u64,
    /// Committed bytes of all files of this generation.
    pub bytes_on_disk: u64,
    /// What a compaction would free.
    pub reclaimable_bytes: u64,
    pub next_id: u64,
}

#[derive(Debug)]
pub(crate) struct Seg {
    path: PathBuf,
    map: Mmap,
    committed: u64,
}

#[derive(Debug)]
pub(crate) struct Writer {
    lock: WriterLock,
    seg: LogWriter,
    tomb: LogWriter,
    poisoned: bool,
    buf: Vec<u8>,
}

/// An open memory bank: a reader's snapshot, or the single writer.
#[derive(Debug)]
pub struct Bank {
    dir: PathBuf,
    header: BankHeader,
    layout: Layout,
    segs: Vec<Seg>,
    index: SegIndex,
    keys: KeyMatrix,
    deleted: u64,
    tomb_records: u64,
    next_id: u64,
    verify: Verify,
    expect: Option<Expect>,
    writer: Option<Writer>,
}

pub(crate) fn seg_name(generation: u64, idx: u64) -> String {
    format!("seg-{generation:08}-{idx:08}.dat")
}
pub(crate) fn tomb_name(generation: u64) -> String {
    format!("tomb-{generation:08}.dat")
}

impl Bank {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn is_writer(&self) -> bool {
        self.writer.is_some()
    }
    /// The key matrix the scan reads (all rows, with live bits).
    pub fn keys(&self) -> &KeyMatrix {
        &self.keys
    }
    /// The id the next append will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
    pub fn live_count(&self) -> usize {
        self.keys.live_count()
    }

    pub fn stats(&self) -> Stats {
        let h = &self.header;
        let rs = self.layout.size as u64;
        let records = self.keys.len() as u64;
        let seg_bytes: u64 = self.segs.iter().map(|s| s.map.len() as u64).sum();
        let tomb_bytes = (LOG_HEADER + tombstone::TOMB_SIZE * self.tomb_records as usize) as u64;
        Stats {
            t: h.t as usize,
            d: h.d as usize,
            r: h.r as usize,
            mem_dtype: h.mem_dtype,
            key_dtype: h.key_dtype,
            base_model_hash: h.base_model_hash.clone(),
            created: h.created,
            generation: h.generation,
            records,
            live: self.keys.live_count() as u64,
            deleted: self.deleted,
            segments: self.segs.len() as u64,
            record_size: rs,
            bytes_on_disk: header::HEADER_SIZE as u64 + seg_bytes + tomb_bytes,
            reclaimable_bytes: self.deleted * rs,
            next_id: self.next_id,
        }
    }

    /// The bytes of the record in segment `s`, slot `slot`, and its file offset.
    fn record(&self, s: usize, slot: usize) -> (&[u8], u64) {
        let off = LOG_HEADER + slot * self.layout.size;
        (&self.segs[s].map[off..off + self.layout.size], off as u64)
    }

    /// Checks the memory checksum of a record and returns it as an entry.
    fn checked_entry(&self, s: usize, slot: usize) -> Result<EntryRef<'_>> {
        let (rec, off) = self.record(s, slot);
        let path = &self.segs[s].path;
        let bad = |(o, m): record::Bad| Error::corrupt(path, off + o as u64, m);
        self.layout.check_mem(rec).map_err(bad)?;
        self.layout.entry(rec).map_err(bad)
    }

    /// A live entry by id (its memory checksum checked); None if absent or deleted.
    pub fn get(&self, id: u64) -> Result<Option<EntryRef<'_>>> {
        match self.index.find(&self.keys, id) {
            Some((row, s, slot)) if self.keys.is_live(row) => self.checked_entry(s, slot).map(Some),
            _ => Ok(None),
        }
    }

    /// Ids of the live entries, ascending.
    pub fn live_ids(&self) -> Vec<u64> {
        let ids = self.keys.ids();
        (0..ids.len())
            .filter(|&r| self.keys.is_live(r))
            .map(|r| ids[r])
            .collect()
    }

    pub(crate) fn name(&self) -> String {
        self.dir.display().to_string()
    }

    /// Fused top-k aggregation for `queries` (nq × r): scan → candidates → combine.
    pub fn search(&self, queries: &[f32], k: usize, tau: f32) -> Result<Vec<TopK>> {
        topk::combine::check_tau(tau)?;
        let c = topk::scan(&self.keys, queries, k, &self.name())?;
        topk::combine(&c, tau, self)
    }

    /// Backward of one question's aggregation `sel` (from [`Bank::search`]) for `query`,
    /// given dL/dA; see [`topk::backward`].
    pub fn backward(
        &self,
        query: &[f32],
        sel: &TopK,
        tau: f32,
        d_a: &[f32],
    ) -> Result<SelectedGrads> {
        let mut keys = Vec::with_capacity(sel.ids.len());
        let mut mems = Vec::with_capacity(sel.ids.len());
        for &id in &sel.ids {
            let e = self
                .get(id)?
                .ok_or_else(|| Error::Invalid(format!("entry {id} is not live in the bank")))?;
            keys.push(e.key);
            mems.push(e.memory);
        }
        topk::backward(query, &keys, &mems, &sel.scores, &sel.weights, tau, d_a)
    }
}

impl MemorySource for Bank {
    fn memory_len(&self) -> usize {
        self.layout.mem_len
    }
    fn memory(&self, id: u64) -> Result<MemView<'_>> {
        match self.get(id)? {
            Some(e) => Ok(e.memory),
            None => Err(Error::Invalid(format!(
                "{}: no live entry with id {id}",
                self.dir.display()
            ))),
        }
    }
}
