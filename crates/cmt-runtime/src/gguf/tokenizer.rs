//! The byte-level BPE tokenizer rebuilt from `tokenizer.ggml.*` metadata, the way HF
//! transformers converts a GGUF tokenizer: BPE over the vocab and merges, byte-level
//! pre-tokenizer and decoder without a prefix space, control tokens as special tokens.
use super::GgufFile;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

/// `tokenizer.ggml.token_type` value of control tokens (llama.cpp `LLAMA_TOKEN_TYPE_CONTROL`).
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
    if model != "gpt2" {
        return Err(Error::config(
            &f.path,
            "tokenizer.ggml.model",
            format!("`{model}` tokenizers are not supported yet (byte-level BPE `gpt2` is)"),
        ));
    }
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
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
    let types: Vec<u64> = match f
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("{}: building BPE: {e}", f.path.display())))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, false, true);
    tk.with_pre_tokenizer(Some(byte_level));
    tk.with_decoder(Some(byte_level));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .map(|(tok, &t)| AddedToken::from(tok.clone(), t == TOKEN_TYPE_CONTROL))
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
