//! Ingest (DESIGN §2): documents → θ → C_φ → (M, k) → bank append, in batches, resumable.
//!
//! Each batch of documents is appended with one `append_batch`, which the bank makes
//! durable and atomic (an interrupted call loses only its own records), so a document's
//! chunks are all in the bank or none are. Resume: a document whose id is already in the
//! bank with the same text hash is skipped; with another text it is reported as a
//! conflict and left alone, unless `replace` is set, in which case its old entries are
//! tombstoned first and the new text is ingested (a crash between the two leaves the
//! document absent, and the next run adds it).
use crate::bank::{doc_entries, encode_source};
use crate::data::Document;
use crate::error::{Error, Result};
use crate::model::CmtModel;
use cmt_memory::{Bank, MemView, NewEntry};
use cmt_runtime::Backend;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Options of [`ingest`].
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Tombstone an existing document whose text changed and ingest the new text.
    pub replace: bool,
    /// Documents per append (and per encoder call).
    pub batch_docs: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            replace: false,
            batch_docs: 16,
        }
    }
}

/// Progress of an ingest, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct IngestProgress {
    /// Documents handled so far (added or skipped), of `total`.
    pub done: usize,
    /// Documents in the call.
    pub total: usize,
    /// Entries appended so far.
    pub entries: usize,
}

/// What an ingest did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Documents appended (one or more entries each).
    pub added: usize,
    /// Entries appended (a long document gives several).
    pub entries: usize,
    /// Already in the bank with the same text.
    pub skipped: usize,
    /// Already in the bank (or earlier in the input) with another text: not ingested.
    pub conflicts: Vec<String>,
    /// Replaced (old entries tombstoned, new text ingested).
    pub replaced: usize,
    /// Tokens encoded.
    pub tokens: usize,
}

/// sha256 of a document's text, as stored in its entries.
pub fn text_hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Ingests `docs` into `bank` (which must be open as the writer).
pub fn ingest<B: Backend>(
    model: &CmtModel<B>,
    bank: &mut Bank,
    docs: &[Document],
    opts: &IngestOptions,
    mut progress: impl FnMut(IngestProgress),
) -> Result<IngestReport> {
    if !bank.is_writer() {
        return Err(Error::Invalid(format!(
            "{}: opened read-only; ingest needs the writer",
            bank.dir().display()
        )));
    }
    // Documents already present: id → (text hash, entry ids).
    let mut present: HashMap<String, ([u8; 32], Vec<u64>)> = HashMap::new();
    for e in doc_entries(bank)? {
        let slot = present
            .entry(e.doc.doc_id.clone())
            .or_insert((e.meta.text_hash, vec![]));
        slot.1.push(e.meta.id);
    }
    let mut report = IngestReport::default();
    let mut todo: Vec<(&Document, [u8; 32])> = Vec::new();
    let mut done = 0;
    let total = docs.len();
    let mut in_input: HashMap<&str, [u8; 32]> = HashMap::new();
    for doc in docs {
        encode_source(&doc.id, 0, "")?;
        let h = text_hash(&doc.text);
        // A second occurrence in this input: the same text is a no-op, another a conflict.
        if let Some(first) = in_input.get(doc.id.as_str()) {
            if *first == h {
                report.skipped += 1;
            } else {
                report.conflicts.push(doc.id.clone());
            }
            done += 1;
            continue;
        }
        in_input.insert(&doc.id, h);
        match present.get(&doc.id) {
            Some((old, _)) if *old == h => {
                report.skipped += 1;
                done += 1;
                continue;
            }
            Some((_, ids)) if opts.replace => {
                bank.delete_batch(ids)?;
                report.replaced += 1;
            }
            Some(_) => {
                report.conflicts.push(doc.id.clone());
                done += 1;
                continue;
            }
            None => {}
        }
        todo.push((doc, h));
    }
    progress(IngestProgress {
        done,
        total,
        entries: 0,
    });
    let stamp = now();
    for group in todo.chunks(opts.batch_docs.max(1)) {
        let ids: Vec<Vec<u32>> = group
            .iter()
            .map(|(d, _)| {
                let ids = model.base.tok.encode(&d.text, false)?;
                if ids.is_empty() {
                    return Err(Error::Invalid(format!(
                        "document {}: no tokens in its text",
                        d.id
                    )));
                }
                Ok(ids)
            })
            .collect::<Result<_>>()?;
        report.tokens += ids.iter().map(Vec::len).sum::<usize>();
        let mem = model.memorize(&ids)?;
        let td = model.cfg().t() * model.base.dims().hidden;
        let r = model.cfg().r();
        let sources: Vec<String> = mem
            .origin
            .iter()
            .map(|&(i, c)| {
                let d = group[i].0;
                encode_source(&d.id, c, d.source.as_deref().unwrap_or(""))
            })
            .collect::<Result<_>>()?;
        let entries: Vec<NewEntry> = mem
            .origin
            .iter()
            .enumerate()
            .map(|(e, &(i, _))| {
                let (d, h) = group[i];
                NewEntry {
                    key: &mem.keys[e * r..(e + 1) * r],
                    memory: MemView::F32(&mem.memories[e * td..(e + 1) * td]),
                    source: &sources[e],
                    title: d.title.as_deref().unwrap_or(""),
                    timestamp: d.timestamp.unwrap_or(stamp),
                    text_hash: h,
                }
            })
            .collect();
        bank.append_batch(&entries)?;
        report.added += group.len();
        report.entries += entries.len();
        done += group.len();
        progress(IngestProgress {
            done,
            total,
            entries: report.entries,
        });
    }
    Ok(report)
}

/// Tombstones every entry of the documents `doc_ids`; returns the entries deleted and the
/// ids that were not in the bank.
pub fn delete_documents(bank: &mut Bank, doc_ids: &[String]) -> Result<(usize, Vec<String>)> {
    let mut by_doc: HashMap<String, Vec<u64>> = HashMap::new();
    for e in doc_entries(bank)? {
        by_doc.entry(e.doc.doc_id).or_default().push(e.meta.id);
    }
    let mut ids = Vec::new();
    let mut missing = Vec::new();
    for d in doc_ids {
        match by_doc.get(d) {
            Some(v) => ids.extend_from_slice(v),
            None => missing.push(d.clone()),
        }
    }
    let n = bank.delete_batch(&ids)?;
    Ok((n, missing))
}
