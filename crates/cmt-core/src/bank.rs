//! The memory bank as CMT uses it: a `cmt-memory` bank bound to one checkpoint, whose
//! entries are the chunks of documents.
//!
//! Binding: the bank's base-model field holds `cmt-ckpt:<sha256 of the checkpoint file>`
//! (a checkpoint in turn names its base model), so a bank is never read or extended with
//! memories of another compressor or another θ.
//!
//! Entry metadata: the record's title is the document's title; its source field holds
//! `<document id> US <chunk> US <source>` (US = U+001F, the unit separator, which a
//! document id may not contain); the timestamp is the document's (Unix seconds, or the
//! ingestion time when it has none); the text hash is the sha256 of the document's text.
use crate::error::{Error, Result};
use crate::model::CmtModel;
use cmt_memory::{Bank, BankConfig, EntryMeta, Expect, KeyDtype, MemDtype, OpenOptions, Verify};
use cmt_runtime::Backend;
use std::path::Path;

/// Separates the fields packed in an entry's source.
pub const SEP: char = '\u{1f}';
/// Widths of the bank's metadata fields (bytes).
pub const SOURCE_MAX: usize = 512;
/// Width of the title field (bytes).
pub const TITLE_MAX: usize = 256;
/// Longest document id accepted (bytes).
pub const MAX_ID_LEN: usize = 256;

/// What CMT stores about a document in each of its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryDoc {
    /// The document's id (as given at ingest).
    pub doc_id: String,
    /// Which chunk of the document this entry holds (0 for the first).
    pub chunk: usize,
    /// The document's source, as given at ingest (cut to the field's width).
    pub source: String,
}

/// Packs a document id, chunk number and source into an entry's source field.
pub fn encode_source(doc_id: &str, chunk: usize, source: &str) -> Result<String> {
    if doc_id.is_empty() || doc_id.len() > MAX_ID_LEN || doc_id.contains(SEP) {
        return Err(Error::Invalid(format!(
            "document id {doc_id:?}: must be 1..={MAX_ID_LEN} bytes without U+001F"
        )));
    }
    let head = format!("{doc_id}{SEP}{chunk}{SEP}");
    // The source is what gets cut when the field is full (at a character boundary).
    let room = SOURCE_MAX - head.len();
    let mut end = source.len().min(room);
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    Ok(format!("{head}{}", &source[..end]))
}

/// The document fields of an entry's source (an entry written by something else than
/// CMT reads as its whole source for the id, chunk 0).
pub fn decode_source(s: &str) -> EntryDoc {
    let mut it = s.splitn(3, SEP);
    let (id, chunk, source) = (it.next(), it.next(), it.next());
    match (id, chunk.and_then(|c| c.parse().ok()), source) {
        (Some(id), Some(chunk), Some(source)) => EntryDoc {
            doc_id: id.to_string(),
            chunk,
            source: source.to_string(),
        },
        _ => EntryDoc {
            doc_id: s.to_string(),
            chunk: 0,
            source: String::new(),
        },
    }
}

/// What a bank made for `model` must hold in its base-model field.
pub fn binding<B: Backend>(model: &CmtModel<B>) -> String {
    format!("cmt-ckpt:{}", model.ckpt.sha256)
}

/// The bank configuration for `model`'s memories (bf16 memories, f32 keys).
pub fn bank_config<B: Backend>(model: &CmtModel<B>) -> BankConfig {
    let c = model.cfg();
    let mut cfg = BankConfig::new(
        c.t(),
        model.base.dims().hidden,
        c.r(),
        MemDtype::Bf16,
        &binding(model),
    );
    cfg.key_dtype = KeyDtype::F32;
    cfg.source_max = SOURCE_MAX;
    cfg.title_max = TITLE_MAX;
    cfg
}

fn expect<B: Backend>(model: &CmtModel<B>) -> Expect {
    let c = bank_config(model);
    Expect {
        t: c.t,
        d: c.d,
        r: c.r,
        base_model_hash: c.base_model_hash,
    }
}

/// Explains a refused bank in the model's terms (which checkpoint made it).
fn explain<B: Backend>(dir: &Path, model: &CmtModel<B>, e: cmt_memory::Error) -> Error {
    match e {
        cmt_memory::Error::Mismatch {
            field: "base-model hash",
            found,
            ..
        } => Error::BankMismatch {
            path: dir.to_owned(),
            msg: format!(
                "this bank belongs to {found}, but the checkpoint in use is {} ({}): memories \
                 of one checkpoint mean nothing to another; use its checkpoint or a new bank",
                binding(model),
                model.ckpt.path.display()
            ),
        },
        e => e.into(),
    }
}

/// Opens `dir` for reading (a snapshot), refusing a bank of another checkpoint.
pub fn open_reader<B: Backend>(dir: &Path, model: &CmtModel<B>) -> Result<Bank> {
    let opts = OpenOptions {
        write: false,
        verify: Verify::Heads,
        expect: Some(expect(model)),
    };
    Bank::open(dir, &opts).map_err(|e| explain(dir, model, e))
}

/// Opens `dir` as the writer, creating the bank when the directory has none.
pub fn open_writer<B: Backend>(dir: &Path, model: &CmtModel<B>) -> Result<Bank> {
    if !dir.join("HEADER").exists() {
        return Ok(Bank::create(dir, &bank_config(model))?);
    }
    let opts = OpenOptions {
        write: true,
        verify: Verify::Heads,
        expect: Some(expect(model)),
    };
    Bank::open(dir, &opts).map_err(|e| explain(dir, model, e))
}

/// A live entry with its document fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocEntry {
    /// The record's metadata.
    pub meta: EntryMeta,
    /// The document fields packed in it.
    pub doc: EntryDoc,
}

/// Every live entry, by ascending entry id.
pub fn doc_entries(bank: &Bank) -> Result<Vec<DocEntry>> {
    Ok(bank
        .live_metas()?
        .into_iter()
        .map(|meta| DocEntry {
            doc: decode_source(&meta.source),
            meta,
        })
        .collect())
}
