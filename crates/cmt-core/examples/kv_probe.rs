//! What can θ read from a key/value prefix? A diagnostic, not part of CMT.
//!
//! For each document of a SQuAD-format file: run θ over the document's tokens, read its
//! key/value cache out, reduce it to a prefix by one of the rules below, and answer the
//! document's questions (chat template, the harness's greedy decoding) with that prefix
//! ("own") and with the next document's prefix ("other", in file order, cyclic: usually
//! a paragraph of the same article). Prints mean F1 of both and writes every prediction.
//!
//! Rules (`p` slots; every reduced prefix is re-positioned to rotary positions 0..p):
//! - `full`: the whole cache, unchanged (p = n);
//! - `head`: the first p tokens;
//! - `stride`: p tokens evenly spaced over the document, the first and last included;
//! - `mean`: p contiguous chunks, keys (with rotary undone) and values averaged;
//! - `sinkmean`: the first token alone, then p − 1 averaged chunks of the rest;
//! - `stride-keep`: `stride`'s tokens at their own positions (keys not moved), the question
//!   continuing at position n as after the whole document (`Session::set_position_offset`).
//! - `tail`, `tail-keep`: the last p tokens, moved to 0..p or kept at their own positions;
//! - `suffix`, `suffix-keep`: the document followed by a fixed text (the environment
//!   variable `CMT_PROBE_SUFFIX`, default below), the prefix the suffix's rows only: rows
//!   that have attended to the whole document through θ's own layers (P is ignored).
//!
//! A `p` written `/r` means n / r slots for a document of n tokens.
//!
//! ```text
//! cargo run --release -p cmt-core --example kv_probe -- MODEL DATA LIMIT_DOCS RULE P OUT.jsonl
//! ```
use cmt_core::data::read_dataset;
use cmt_core::model::{BaseLm, MAX_NEW_TOKENS};
use cmt_core::template::Template;
use cmt_core::{metrics, Error, Result};
use cmt_runtime::rope::shift_key_positions;
use cmt_runtime::{KvPrefix, Logits, ModelConfig, SeqInput};
use std::io::Write;
use std::path::Path;

/// Longest document prefix θ is run over (the rest is cut).
const MAX_DOC_TOKENS: usize = 400;

/// The text `suffix` rules append to every document.
const DEFAULT_SUFFIX: &str = "\n\nIn short, the key facts of this text are:";

/// Slot j of the result is the mean (or, with one member, the copy) of the tokens in
/// `groups[j]`, its key moved to rotary position j.
fn reduce(kv: &KvPrefix, cfg: &ModelConfig, groups: &[Vec<usize>]) -> Result<KvPrefix> {
    if groups.iter().all(|g| g.len() == 1) {
        let mut out = keep(kv, cfg, groups);
        let hd = cfg.head_dim;
        let inv = cfg.rope_scaling.inv_freq(hd, cfg.rope_theta);
        let shift: Vec<f64> = groups
            .iter()
            .enumerate()
            .map(|(j, g)| j as f64 - g[0] as f64)
            .collect();
        shift_key_positions(&mut out.k, groups.len(), hd, &inv, &shift)?;
        return Ok(out);
    }
    let (n, hd, p) = (kv.len, cfg.head_dim, groups.len());
    let inv = cfg.rope_scaling.inv_freq(hd, cfg.rope_theta);
    let mut k0 = kv.k.clone();
    let undo: Vec<f64> = (0..n).map(|t| -(t as f64)).collect();
    shift_key_positions(&mut k0, n, hd, &inv, &undo)?;
    let heads = cfg.layers * cfg.kv_heads;
    let (mut k, mut v) = (vec![0.0f32; heads * p * hd], vec![0.0f32; heads * p * hd]);
    for h in 0..heads {
        for (j, g) in groups.iter().enumerate() {
            let w = 1.0 / g.len() as f32;
            let dst = (h * p + j) * hd;
            for &t in g {
                let src = (h * n + t) * hd;
                for i in 0..hd {
                    k[dst + i] += w * k0[src + i];
                    v[dst + i] += w * kv.v[src + i];
                }
            }
        }
    }
    let to: Vec<f64> = (0..p).map(|j| j as f64).collect();
    shift_key_positions(&mut k, p, hd, &inv, &to)?;
    Ok(KvPrefix { len: p, k, v })
}

/// The entries of the single tokens of `groups`, keys left at their own positions.
fn keep(kv: &KvPrefix, cfg: &ModelConfig, groups: &[Vec<usize>]) -> KvPrefix {
    let (n, hd, p) = (kv.len, cfg.head_dim, groups.len());
    let heads = cfg.layers * cfg.kv_heads;
    let (mut k, mut v) = (
        Vec::with_capacity(heads * p * hd),
        Vec::with_capacity(heads * p * hd),
    );
    for h in 0..heads {
        for g in groups {
            let src = (h * n + g[0]) * hd;
            k.extend_from_slice(&kv.k[src..src + hd]);
            v.extend_from_slice(&kv.v[src..src + hd]);
        }
    }
    KvPrefix { len: p, k, v }
}

/// Greedy answer after `prefix` with the prompt's positions `offset` past the prefix, the
/// harness's decoding (at most 24 new tokens, stop at EOS or a newline), one at a time.
fn answer_at(lm: &BaseLm, prompt: &[u32], prefix: &KvPrefix, offset: usize) -> Result<String> {
    let cfg = &lm.model.cfg;
    let mut sess = lm
        .model
        .session(1, prefix.len + prompt.len() + MAX_NEW_TOKENS)?;
    sess.set_prefix(cfg, &lm.model.backend, 0, prefix)?;
    sess.set_position_offset(0, offset)?;
    let mut logits = lm.model.forward(
        &mut sess,
        &[SeqInput::tokens(0, prompt)],
        Logits::Last,
        None,
    )?;
    let mut out = Vec::new();
    for _ in 0..MAX_NEW_TOKENS {
        let id = cmt_runtime::generate::argmax(logits);
        if cfg.eos_tokens.contains(&id) {
            break;
        }
        out.push(id);
        if lm.tok.decode(&[id])?.contains('\n') {
            break;
        }
        logits = lm
            .model
            .forward(&mut sess, &[SeqInput::tokens(0, &[id])], Logits::Last, None)?;
    }
    let text = lm.tok.decode(&out)?;
    Ok(text.split('\n').next().unwrap_or("").trim().to_string())
}

/// Token groups of `rule` for a document of `n` tokens and `p` slots (2 ≤ p < n).
fn groups(rule: &str, n: usize, p: usize) -> Result<Vec<Vec<usize>>> {
    let chunks = |lo: usize, m: usize, c: usize| -> Vec<Vec<usize>> {
        (0..c)
            .map(|j| (lo + j * m / c..lo + (j + 1) * m / c).collect())
            .collect()
    };
    Ok(match rule {
        "head" => (0..p).map(|t| vec![t]).collect(),
        "tail" | "tail-keep" | "suffix" | "suffix-keep" => (n - p..n).map(|t| vec![t]).collect(),
        "stride" | "stride-keep" => (0..p)
            .map(|j| vec![(j * (n - 1) + (p - 1) / 2) / (p - 1)])
            .collect(),
        "mean" => chunks(0, n, p),
        "sinkmean" => std::iter::once(vec![0])
            .chain(chunks(1, n - 1, p - 1))
            .collect(),
        other => {
            return Err(Error::Invalid(format!(
                "unknown rule \"{other}\" (full, head, stride, stride-keep, tail, tail-keep, \
                 suffix, suffix-keep, mean or sinkmean)"
            )))
        }
    })
}

/// Slots for a document of `n` tokens: `P` or `/r` (n / r).
fn slots(spec: &str, n: usize) -> Result<usize> {
    let bad = || Error::Invalid(format!("P must be a count or /ratio, got \"{spec}\""));
    let p = match spec.strip_prefix('/') {
        Some(r) => n / r.parse::<usize>().map_err(|_| bad())?.max(1),
        None => spec.parse().map_err(|_| bad())?,
    };
    Ok(p.max(2))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        return Err(
            "usage: kv_probe MODEL DATA LIMIT_DOCS RULE P OUT.jsonl (see the file's header)".into(),
        );
    }
    let (model, data, rule, spec) = (Path::new(&a[1]), Path::new(&a[2]), &a[4], &a[5]);
    let limit: usize = a[3]
        .parse()
        .map_err(|_| Error::Invalid(format!("LIMIT_DOCS must be a count, got \"{}\"", a[3])))?;
    let lm = BaseLm::load(model)?;
    let template = Template::for_model("chat", model)?;
    let ds = read_dataset(data)?.limit_docs(limit);
    let cfg = &lm.model.cfg;
    let mut prefixes = Vec::new();
    // Per document: how far past its prefix length the question's positions start.
    let mut offsets = Vec::new();
    let suffix_text =
        std::env::var("CMT_PROBE_SUFFIX").unwrap_or_else(|_| DEFAULT_SUFFIX.to_string());
    let suffix = lm.tok.encode(&suffix_text, false)?;
    for d in &ds.documents {
        let mut ids = lm.tok.encode(&d.text, false)?;
        ids.truncate(MAX_DOC_TOKENS);
        if rule.starts_with("suffix") {
            ids.extend_from_slice(&suffix);
        }
        let mut sess = lm.model.session(1, ids.len().max(1))?;
        let input = [SeqInput::tokens(0, &ids)];
        lm.model.forward(&mut sess, &input, Logits::None, None)?;
        let kv = sess.read_kv(cfg, &lm.model.backend, 0)?;
        let n = kv.len;
        let p = if rule.starts_with("suffix") {
            suffix.len()
        } else {
            slots(spec, kv.len)?
        };
        if rule == "full" || p >= n {
            offsets.push(0);
            prefixes.push(kv);
        } else if rule.ends_with("-keep") {
            offsets.push(n - p);
            prefixes.push(keep(&kv, cfg, &groups(rule, n, p)?));
        } else {
            offsets.push(0);
            prefixes.push(reduce(&kv, cfg, &groups(rule, n, p)?)?);
        }
    }
    let nd = ds.documents.len();
    let pos = |id: &str| ds.documents.iter().position(|d| d.id == id).unwrap_or(0);
    let mut out = std::fs::File::create(&a[6])?;
    let (mut own, mut other, mut slots_sum) = (0.0, 0.0, 0usize);
    for group in ds.questions.chunks(8) {
        let prompts = group
            .iter()
            .map(|q| Ok(lm.tok.encode(&template.render(&q.question, None)?, false)?))
            .collect::<Result<Vec<_>>>()?;
        let pick = |off: usize| -> Vec<Option<KvPrefix>> {
            group
                .iter()
                .map(|q| Some(prefixes[(pos(&q.doc_id) + off) % nd].clone()))
                .collect()
        };
        let (with_own, with_other) = if offsets.iter().all(|&o| o == 0) {
            (
                lm.answer(&prompts, Some(&pick(0)), MAX_NEW_TOKENS)?,
                lm.answer(&prompts, Some(&pick(1)), MAX_NEW_TOKENS)?,
            )
        } else {
            let one = |off: usize| -> Result<Vec<String>> {
                group
                    .iter()
                    .zip(&prompts)
                    .map(|(q, pr)| {
                        let d = (pos(&q.doc_id) + off) % nd;
                        answer_at(&lm, pr, &prefixes[d], offsets[d])
                    })
                    .collect()
            };
            (one(0)?, one(1)?)
        };
        for ((q, x), y) in group.iter().zip(&with_own).zip(&with_other) {
            let (f_own, f_other) = (
                metrics::score(x, &q.answers).f1,
                metrics::score(y, &q.answers).f1,
            );
            own += f_own;
            other += f_other;
            slots_sum += prefixes[pos(&q.doc_id)].len;
            let line = serde_json::json!({"id": q.id, "answers": q.answers,
                "own": x, "f1_own": f_own, "other": y, "f1_other": f_other});
            writeln!(out, "{line}")?;
        }
    }
    let n = ds.questions.len().max(1) as f64;
    println!(
        "rule {rule} p {spec}: {} documents, {} questions, mean slots {:.1}, F1 own {:.2}, other {:.2}",
        nd,
        ds.questions.len(),
        slots_sum as f64 / n,
        100.0 * own / n,
        100.0 * other / n
    );
    Ok(())
}
