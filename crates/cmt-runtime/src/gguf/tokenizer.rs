//! Tokenizers rebuilt from `tokenizer.ggml.*` metadata, the way HF transformers converts a
//! GGUF tokenizer:
//! - `gpt2`: BPE over the vocab and merges, byte-level pre-tokenizer and decoder without a
//!   prefix space;
//! - `llama` (SentencePiece BPE: Llama 2, Mistral v0.1): BPE whose merges are derived from
//!   the pieces' scores (a merge a+b ranks by the score of the piece ab), byte fallback to
//!   the `<0xXX>` pieces, spaces written as `▁` with one prepended when
//!   `tokenizer.ggml.add_space_prefix` (default true), and the inverse decoder.
//!
//! Both: control tokens (and SentencePiece's unknown piece) as special tokens, BOS added as
//! `tokenizer.ggml.add_bos_token` says.
use super::GgufFile;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

/// `tokenizer.ggml.token_type` value of control tokens (llama.cpp `LLAMA_TOKEN_TYPE_CONTROL`).
const TOKEN_TYPE_UNKNOWN: u64 = 2;
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

fn strings(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    let arr = f
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::config(&f.path, key, "missing or not an array"))?;
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::config(&f.path, key, format!("item {i} is not a string")))
        })
        .collect()
}

pub(super) fn build(f: &GgufFile) -> Result<Tokenizer> {
    let model = f
        .get("tokenizer.ggml.model")
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::config(&f.path, "tokenizer.ggml.model", "missing"))?;
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let tk = match model {
        "gpt2" => byte_level_bpe(f, &tokens)?,
        "llama" => sentencepiece_bpe(f, &tokens)?,
        other => {
            return Err(Error::config(
                &f.path,
                "tokenizer.ggml.model",
                format!(
                    "`{other}` tokenizers are not supported (byte-level BPE `gpt2` and \
                     SentencePiece `llama` are)"
                ),
            ))
        }
    };
    finish(f, tk, &tokens, model == "llama")
}

fn bpe_error(f: &GgufFile, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{}: building BPE: {e}", f.path.display()))
}

fn vocab_of(tokens: &[String]) -> tokenizers::models::bpe::Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

fn byte_level_bpe(f: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer> {
    let merges_raw = strings(f, "tokenizer.ggml.merges")?;
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            Error::config(
                &f.path,
                "tokenizer.ggml.merges",
                format!("item {i} `{m}` is not `a b`"),
            )
        })?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges)
        .build()
        .map_err(|e| bpe_error(f, e))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, false, true);
    tk.with_pre_tokenizer(Some(byte_level));
    tk.with_decoder(Some(byte_level));
    Ok(tk)
}

/// The merges a SentencePiece BPE vocabulary implies (HF's `generate_merges`): every split
/// of every piece into two pieces of the vocab, ordered by the whole piece's score (highest
/// first), then by the lengths of the left and right parts; within one piece, by the
/// parts' ids.
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let id: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(usize, usize, f32)> = Vec::new();
    for (piece, &score) in tokens.iter().zip(scores) {
        let mut local: Vec<(usize, usize, f32)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = piece.split_at(at);
                Some((*id.get(l)?, *id.get(r)?, score))
            })
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    // A stable sort, descending by score, then by part lengths (as HF's reverse sort).
    merges.sort_by(|a, b| {
        let key = |m: &(usize, usize, f32)| (m.2, tokens[m.0].len(), tokens[m.1].len());
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (tokens[l].clone(), tokens[r].clone()))
        .collect()
}

fn sentencepiece_bpe(f: &GgufFile, tokens: &[String]) -> Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::{
        byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as DecSeq, strip::Strip,
        DecoderWrapper,
    };
    use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSeq};
    let scores: Vec<f32> = f
        .get("tokenizer.ggml.scores")
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::config(&f.path, "tokenizer.ggml.scores", "missing or not an array"))?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64().map(|x| x as f32).ok_or_else(|| {
                Error::config(
                    &f.path,
                    "tokenizer.ggml.scores",
                    format!("item {i} is not a number"),
                )
            })
        })
        .collect::<Result<_>>()?;
    if scores.len() != tokens.len() {
        return Err(Error::config(
            &f.path,
            "tokenizer.ggml.scores",
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let unk = f
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.as_u64())
        .and_then(|i| tokens.get(i as usize))
        .cloned()
        .unwrap_or_else(|| "<unk>".to_string());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_of(tokens), merges_from_scores(tokens, &scores))
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| bpe_error(f, e))?;
    let prefix = f
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let space = Replace::new(" ", "\u{2581}").map_err(|e| bpe_error(f, e))?;
    let mut norm = vec![space.into()];
    if prefix {
        norm.insert(0, Prepend::new("\u{2581}".to_string()).into());
    }
    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_normalizer(Some(NormSeq::new(norm)))
        .map_err(|e| bpe_error(f, e))?;
    let unspace = Replace::new("\u{2581}", " ").map_err(|e| bpe_error(f, e))?;
    let mut dec: Vec<DecoderWrapper> = vec![
        DecoderWrapper::Replace(unspace),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecSeq::new(dec)));
    Ok(tk)
}

/// Special tokens and the BOS post-processor, for either model.
fn finish(
    f: &GgufFile,
    mut tk: tokenizers::Tokenizer,
    tokens: &[String],
    sentencepiece: bool,
) -> Result<Tokenizer> {
    let types: Vec<u64> = match f
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| {
            t == TOKEN_TYPE_CONTROL
                || t == TOKEN_TYPE_USER_DEFINED
                || (sentencepiece && t == TOKEN_TYPE_UNKNOWN)
        })
        .map(|(tok, &t)| AddedToken::from(tok.clone(), t != TOKEN_TYPE_USER_DEFINED))
        .collect();
    tk.add_special_tokens(special).map_err(|e| {
        Error::Tokenizer(format!("{}: adding special tokens: {e}", f.path.display()))
    })?;
    let add_bos = f
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let bos = f
        .get("tokenizer.ggml.bos_token_id")
        .and_then(|v| v.as_u64())
        .map(|x| x as u32);
    if let (true, Some(bos)) = (add_bos, bos) {
        let bos_str = tokens.get(bos as usize).ok_or_else(|| {
            Error::config(
                &f.path,
                "tokenizer.ggml.bos_token_id",
                format!("{bos} is out of the vocab"),
            )
        })?;
        let post = TemplateProcessing::builder()
            .try_single(format!("{bos_str} $A"))
            .and_then(|b| b.try_pair(format!("{bos_str} $A {bos_str} $B")))
            .map_err(|e| Error::Tokenizer(format!("{}: BOS template: {e}", f.path.display())))?
            .special_tokens(vec![(bos_str.clone(), bos)])
            .build()
            .map_err(|e| Error::Tokenizer(format!("{}: BOS template: {e}", f.path.display())))?;
        tk.with_post_processor(Some(post));
    }
    Ok(Tokenizer::from_inner(tk))
}
