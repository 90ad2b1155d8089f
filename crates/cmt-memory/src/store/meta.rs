//! Entry metadata without the memory, and searches restricted by it (a time window, a
//! source): what an orchestrator needs to resume an ingest or answer "what happened in
//! 2020" from 2020's memories only.
use super::Bank;
use crate::error::{Error, Result};
use crate::topk::{self, TopK};
use crate::types::TextHash;

/// A live entry's metadata (the record head, checked at open; the memory is not read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub id: u64,
    pub timestamp: u64,
    pub source: String,
    pub title: String,
    pub text_hash: TextHash,
}

impl Bank {
    /// The metadata of the entry in key-matrix `row` (live or not).
    fn meta_at(&self, row: usize) -> Result<EntryMeta> {
        let (s, slot) = self.index.locate(row);
        let (rec, off) = self.record(s, slot);
        let path = &self.segs[s].path;
        let e = self
            .layout
            .entry(rec)
            .map_err(|(o, m)| Error::corrupt(path, off + o as u64, m))?;
        Ok(EntryMeta {
            id: e.id,
            timestamp: e.timestamp,
            source: e.source.to_string(),
            title: e.title.to_string(),
            text_hash: e.text_hash,
        })
    }

    /// The metadata of a live entry by id; None if absent or deleted.
    pub fn meta(&self, id: u64) -> Result<Option<EntryMeta>> {
        match self.keys.row_of(id) {
            Some(row) if self.keys.is_live(row) => self.meta_at(row).map(Some),
            _ => Ok(None),
        }
    }

    /// The metadata of every live entry, by ascending id (reads one record head each).
    pub fn live_metas(&self) -> Result<Vec<EntryMeta>> {
        (0..self.keys.len())
            .filter(|&r| self.keys.is_live(r))
            .map(|r| self.meta_at(r))
            .collect()
    }

    /// [`Bank::search`] over the live entries for which `keep` holds (the others are
    /// treated as deleted for this search only). Errors with [`Error::Empty`] when none
    /// is kept.
    pub fn search_where(
        &self,
        queries: &[f32],
        k: usize,
        tau: f32,
        keep: impl Fn(&EntryMeta) -> bool,
    ) -> Result<Vec<TopK>> {
        topk::combine::check_tau(tau)?;
        let mut drop = Vec::new();
        for r in 0..self.keys.len() {
            if self.keys.is_live(r) && !keep(&self.meta_at(r)?) {
                drop.push(self.keys.ids()[r]);
            }
        }
        if drop.is_empty() {
            return self.search(queries, k, tau);
        }
        let mut keys = self.keys.clone();
        for id in drop {
            keys.remove(id);
        }
        let c = topk::scan(&keys, queries, k, &self.name())?;
        topk::combine(&c, tau, self)
    }
}
