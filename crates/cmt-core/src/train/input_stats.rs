//! The compressor's input statistics for a fresh checkpoint (`cmt train
//! --standardize-input`): θ's hidden states of the first training documents, at the
//! config's ℓ_enc and chunking, through the hidden-state cache when there is one.
use crate::config::CmtConfig;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{encode_options, BaseLm};
use cmt_compress::cache::{CacheKey, HiddenCache};
use cmt_compress::encode::{Encoder, Progress};
use cmt_compress::InputStats;
use std::path::Path;

/// Documents encoded per batch while measuring.
const BATCH: usize = 16;

/// Mean and scale of θ's hidden states over the first `max_docs` documents of `data`
/// (each cut to one chunk, as training does).
pub fn measure_input_stats(
    base: &BaseLm,
    cfg: &CmtConfig,
    data: &Dataset,
    max_docs: usize,
    cache: Option<&Path>,
) -> Result<InputStats> {
    let opts = encode_options(cfg, cfg.max_doc_tokens, cfg.chunk_overlap, Progress::Never)?;
    let enc = Encoder::new(&base.model, opts)?;
    let mut ids = Vec::new();
    for d in data.documents.iter().take(max_docs) {
        let mut t = base.tok.encode(&d.text, false)?;
        t.truncate(cfg.max_doc_tokens);
        if t.len() >= 2 {
            ids.push(t);
        }
    }
    if ids.is_empty() {
        return Err(Error::Invalid(
            "--standardize-input: no training document has two tokens to measure".into(),
        ));
    }
    let mut cache = match cache {
        Some(root) => {
            let key = CacheKey::for_encoder(base.sha256.clone(), &enc);
            Some(HiddenCache::open_writer(root, &key)?)
        }
        None => None,
    };
    let mut batches = Vec::new();
    for chunk in ids.chunks(BATCH) {
        batches.push(match &mut cache {
            Some(c) => enc.encode_cached(chunk, c)?.0,
            None => enc.encode(chunk)?,
        });
    }
    Ok(InputStats::measure(
        batches.iter().map(|b| b.doc_batch()),
        base.model.cfg.hidden,
    )?)
}
