//! `cmt ingest`: documents into a bank.
use super::cmt_arg::CmtArgs;
use anyhow::{Context, Result};
use clap::Args;
use cmt_core::data::read_documents;
use cmt_core::IngestOptions;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct IngestArgs {
    /// The bank directory (created if it holds no bank).
    #[arg(long)]
    bank: PathBuf,
    #[command(flatten)]
    cmt: CmtArgs,
    /// Replace a document already in the bank whose text changed (its old memories are
    /// deleted); without it such a document is reported and left as it is.
    #[arg(long)]
    replace: bool,
    /// Stop at the first bad record (empty text, not UTF-8, not JSON) instead of reporting
    /// it and going on.
    #[arg(long)]
    strict: bool,
    /// Documents per batch (encoded together and appended with one durable write).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// JSONL (`{"id","text"}` + optional "title", "timestamp", "source") or SQuAD v1.1
    /// JSON files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run<B: cmt_core::search::SearchWith>(a: IngestArgs, backend: B) -> Result<()> {
    let mut docs = Vec::new();
    let mut bad = 0;
    for f in &a.files {
        let read = read_documents(f, a.strict)?;
        for b in &read.bad {
            eprintln!("skipped: {b}");
        }
        bad += read.bad.len();
        docs.extend(read.documents);
    }
    let cmt = a.cmt.open_on(backend)?;
    let mut bank = cmt
        .open_bank_writer(&a.bank)
        .with_context(|| format!("opening bank {}", a.bank.display()))?;
    let bar = ProgressBar::new(docs.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "ingest {bar:30} {pos}/{len} docs  {per_sec}  ETA {eta}  {msg}",
    )?);
    let t0 = Instant::now();
    let opts = IngestOptions {
        replace: a.replace,
        batch_docs: a.batch,
    };
    let report = cmt.ingest(&mut bank, &docs, &opts, |p| {
        bar.set_position(p.done as u64);
        bar.set_message(format!("{} entries", p.entries));
    })?;
    bar.finish_and_clear();
    for id in &report.conflicts {
        eprintln!(
            "conflict: document {id} is already in the bank with another text (not replaced; \
             use --replace)"
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "ingested {} documents ({} entries, {} tokens) in {:.1} s ({:.2} docs/s); skipped {} \
         already present, {} replaced, {} conflicts, {} bad records; bank now {} live entries",
        report.added,
        report.entries,
        report.tokens,
        secs,
        report.added as f64 / secs.max(1e-9),
        report.skipped,
        report.replaced,
        report.conflicts.len(),
        bad,
        bank.live_count()
    );
    Ok(())
}
