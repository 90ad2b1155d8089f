//! On-disk cache of document hidden states, so that training epochs do not run θ again
//! over the same chunks.
//!
//! **Key.** An entry is found by (base-model hash, layer ℓ_enc, chunking, D) — the
//! [`CacheKey`] — and the sha256 of the chunk's token ids. The [`CacheKey`] selects a
//! directory `<root>/<CacheKey::dir_name>`, and the header of that directory's data file
//! records the full key again: a file built for another model, layer, chunking or width
//! is refused with an error naming the field, never read. (A chunk's hidden states depend
//! only on its own tokens, since every chunk is encoded from position 0, but keeping the
//! chunking in the key costs nothing and keeps caches of different settings apart.)
//!
//! **Files.** `<dir>/hidden.cmtc`: a versioned, checksummed header; two commit slots
//! (sequence number + committed length + crc, written alternately, so a torn slot write
//! leaves the other one current); then append-only records (token hash, row count, crc32
//! of header and rows, then the `[n, d]` f32 rows), layout in [`format`]. There is no
//! separate index file: opening scans the record headers of the committed region (one
//! small read per record) into an in-memory index, so index and data can never disagree.
//! `<dir>/LOCK`: the writer's `flock`.
//!
//! **Readers and the writer.** Readers map the committed prefix of the file with memmap2
//! and take no lock; any number may run, also while a writer appends. One writer at a
//! time holds an exclusive `flock` on `LOCK` (a second one is refused at once). The
//! writer appends records past the committed length and publishes them with
//! [`HiddenCache::commit`] (data `fsync`ed, then the other commit slot written), so
//! readers never see a partial record; [`HiddenCache::refresh`] picks up new commits.
//! On open, a writer cuts off an uncommitted tail (an append interrupted by a crash).
//!
//! **Damage.** A header with a bad magic, another version or a wrong checksum, both commit
//! slots bad, a file shorter than its committed length (truncation), a bad record header,
//! or a record whose crc does not match (checked on every read) gives
//! [`Error::Format`](crate::Error::Format) naming the file and the byte offset.
//! Rows are stored as little-endian f32 and read in place (little-endian targets only).
mod format;
mod lock;
mod store;

use crate::encode::{Chunking, Encoder, HiddenLayer};
use cmt_runtime::Backend;
use sha2::{Digest, Sha256};

pub use store::{CacheStats, HiddenCache};

#[cfg(target_endian = "big")]
compile_error!("the hidden-state cache reads little-endian f32 in place");

pub const DATA_FILE: &str = "hidden.cmtc";

/// What a cache's hidden states were computed with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Identifies the frozen model's weights, e.g. the sha256 of the GGUF file (at most
    /// 256 bytes).
    pub model_hash: String,
    pub layer: HiddenLayer,
    pub chunking: Chunking,
    /// Hidden size D.
    pub d: usize,
}

impl CacheKey {
    /// The key of `encoder`'s settings for the model identified by `model_hash`.
    pub fn for_encoder<B: Backend>(model_hash: impl Into<String>, encoder: &Encoder<B>) -> Self {
        let o = encoder.options();
        CacheKey {
            model_hash: model_hash.into(),
            layer: o.layer,
            chunking: o.chunking,
            d: encoder.dim(),
        }
    }

    /// The subdirectory of a cache root that holds this key's entries: readable settings
    /// plus 16 hex digits of the sha256 of the whole key.
    pub fn dir_name(&self) -> String {
        let layer = match self.layer {
            HiddenLayer::FinalNorm => "final".to_string(),
            HiddenLayer::Residual(n) => format!("l{n}"),
        };
        let mut h = Sha256::new();
        h.update(self.model_hash.as_bytes());
        h.update(format_args_bytes(self));
        let hex: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "{layer}-m{}-o{}-d{}-{hex}",
            self.chunking.max_doc_tokens(),
            self.chunking.overlap(),
            self.d
        )
    }
}

fn format_args_bytes(k: &CacheKey) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&format::layer_code(k).to_le_bytes());
    v.extend_from_slice(&(k.chunking.max_doc_tokens() as u64).to_le_bytes());
    v.extend_from_slice(&(k.chunking.overlap() as u64).to_le_bytes());
    v.extend_from_slice(&(k.d as u64).to_le_bytes());
    v
}

/// sha256 of token ids (as u32 little-endian): the per-entry key.
pub fn token_hash(ids: &[u32]) -> [u8; 32] {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().into()
}

impl<B: Backend> Encoder<'_, B> {
    /// [`Encoder::encode`] through `cache`: chunks found in the cache are read from the
    /// map (bit-identical to encoding them again), the others are encoded, appended and
    /// committed. The cache must have been opened for this encoder's key (checked) and,
    /// when anything is missing, as the writer.
    pub fn encode_cached<D: AsRef<[u32]>>(
        &self,
        docs: &[D],
        cache: &mut HiddenCache,
    ) -> crate::Result<(crate::encode::EncodedBatch, CacheStats)> {
        let want = CacheKey::for_encoder(cache.key().model_hash.clone(), self);
        if &want != cache.key() {
            return Err(crate::Error::Config(format!(
                "{}: cache opened for {:?}, but the encoder produces {want:?}",
                cache.dir().display(),
                cache.key()
            )));
        }
        let chunks = self.plan(docs)?;
        let mut out = crate::encode::EncodedBatch::zeros(chunks, self.dim());
        let mut missing = Vec::new();
        for c in 0..out.num_chunks() {
            let (doc, range) = (out.chunks[c].doc, out.chunks[c].tokens.clone());
            match cache.get(&docs[doc].as_ref()[range])? {
                Some(rows) => out.rows_mut(c).copy_from_slice(rows),
                None => missing.push(c),
            }
        }
        let stats = CacheStats {
            hits: out.num_chunks() - missing.len(),
            misses: missing.len(),
        };
        if !missing.is_empty() {
            cache.require_writer()?;
            let chunks = out.chunks.clone();
            self.encode_chunks(docs, &chunks, &missing, |c, rows| {
                let ch = &chunks[c];
                cache.insert(&docs[ch.doc].as_ref()[ch.tokens.clone()], rows)?;
                out.rows_mut(c).copy_from_slice(rows);
                Ok(())
            })?;
            cache.commit()?;
        }
        Ok((out, stats))
    }
}
