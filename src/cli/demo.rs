//! `cmt demo`: the whole job in one command. A dozen short documents about invented facts
//! (bundled, so no pretrained model can know them) go into a fresh memory bank; then each
//! bundled question is answered closed-book and with memory, side by side, and the run
//! ends with a count of correct answers for both. It prints what the model says.
use super::model_arg::{self, WeightsArg};
use anyhow::{Context, Result};
use clap::Args;
use cmt_core::data::{read_documents_from, Question};
use cmt_core::metrics::normalize_answer;
use cmt_core::{AskOptions, Cmt, IngestOptions};
use std::path::PathBuf;

const DOCUMENTS: &str = include_str!("../../assets/demo/documents.jsonl");
const QUESTIONS: &str = include_str!("../../assets/demo/questions.jsonl");

#[derive(Args)]
pub struct DemoArgs {
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The CMT checkpoint (default: the trained default checkpoint or $CMT_CHECKPOINT).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Keep the demo's bank in DIR (default: a temporary directory, removed at the end).
    #[arg(long)]
    bank: Option<PathBuf>,
    #[command(flatten)]
    weights: WeightsArg,
}

/// An answer counts as correct when it contains a gold answer (both SQuAD-normalised:
/// lowercase, no punctuation or articles, single spaces).
fn correct(answer: &str, golds: &[String]) -> bool {
    let a = format!(" {} ", normalize_answer(answer));
    golds
        .iter()
        .any(|g| a.contains(&format!(" {} ", normalize_answer(g))))
}

pub fn run<B: cmt_core::search::SearchWith>(a: DemoArgs, backend: B) -> Result<()> {
    let path = model_arg::resolve(a.model)?;
    let cmt = match &a.checkpoint {
        Some(c) => Cmt::open_on(&path, c, backend, a.weights.format)?,
        None => Cmt::open_default_checkpoint_on(&path, backend, a.weights.format)?,
    };
    let read = read_documents_from(DOCUMENTS.as_bytes(), "bundled demo documents", true)?;
    let questions: Vec<Question> = QUESTIONS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("bundled demo questions, line {}", i + 1))
        })
        .collect::<Result<_>>()?;
    let tmp = tempfile_dir()?;
    let dir = a.bank.clone().unwrap_or_else(|| tmp.clone());
    let mut bank = cmt.open_bank_writer(&dir)?;
    eprintln!(
        "ingesting {} bundled documents about invented facts into {}",
        read.documents.len(),
        dir.display()
    );
    let rep = cmt.ingest(
        &mut bank,
        &read.documents,
        &IngestOptions::default(),
        |_| {},
    )?;
    eprintln!(
        "{} memories stored; asking {} questions",
        rep.entries,
        questions.len()
    );
    let texts: Vec<String> = questions.iter().map(|q| q.question.clone()).collect();
    let opts = AskOptions::default();
    let closed = cmt.ask(None, &texts, &opts)?;
    let with = cmt.ask(Some(&bank), &texts, &opts)?;
    let titles: std::collections::HashMap<&str, &str> = read
        .documents
        .iter()
        .map(|d| (d.id.as_str(), d.title.as_deref().unwrap_or(d.id.as_str())))
        .collect();
    let (mut n_with, mut n_closed) = (0, 0);
    for ((q, c), w) in questions.iter().zip(&closed).zip(&with) {
        let (ok_c, ok_w) = (
            correct(&c.answer, &q.answers),
            correct(&w.answer, &q.answers),
        );
        n_closed += ok_c as usize;
        n_with += ok_w as usize;
        let mark = |ok: bool| if ok { "✓" } else { "✗" };
        println!("Q: {}", q.question);
        println!("   gold:         {}", q.answers.join(" | "));
        println!("   closed-book:  {} {}", mark(ok_c), c.answer);
        println!("   with memory:  {} {}", mark(ok_w), w.answer);
        let used: Vec<String> = w
            .memories
            .iter()
            .map(|m| {
                let t = titles.get(m.id.as_str()).copied().unwrap_or(m.id.as_str());
                format!("{t} ({:.2})", m.weight)
            })
            .collect();
        println!("   memories:     {}", used.join(", "));
        println!();
    }
    if a.bank.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    println!(
        "with memory: {n_with}/{n} correct, closed-book: {n_closed}/{n} correct",
        n = questions.len()
    );
    Ok(())
}

/// A fresh directory under the system temp dir for the demo's bank.
fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("cmt-demo-{}", std::process::id()));
    if d.exists() {
        std::fs::remove_dir_all(&d).with_context(|| format!("clearing {}", d.display()))?;
    }
    Ok(d)
}
