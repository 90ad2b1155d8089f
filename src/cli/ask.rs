//! `cmt ask`: questions answered from the bank's memories.
use super::cmt_arg::CmtArgs;
use anyhow::{Context, Result};
use clap::Args;
use cmt_core::data::parse_timestamp;
use cmt_core::AskOptions;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Args)]
pub struct AskArgs {
    /// The bank directory.
    #[arg(long)]
    bank: PathBuf,
    #[command(flatten)]
    cmt: CmtArgs,
    /// Memories aggregated per question (default: the checkpoint's k).
    #[arg(long)]
    k: Option<usize>,
    /// One JSON object per question on stdout: answer, memories (id, title, score,
    /// weight) and the seconds of each stage.
    #[arg(long)]
    json: bool,
    /// Only memories of documents timestamped at or after T (RFC 3339 or Unix seconds).
    #[arg(long)]
    since: Option<String>,
    /// Only memories of documents timestamped at or before T.
    #[arg(long)]
    until: Option<String>,
    /// Questions from a JSONL file (`{"question": ...}` per line, optional "id"),
    /// answered in batches.
    #[arg(long)]
    questions: Option<PathBuf>,
    /// Questions answered together.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// The question (unless --questions is given).
    question: Option<String>,
}

fn time_arg(name: &str, v: &Option<String>) -> Result<Option<u64>> {
    v.as_deref()
        .map(|s| parse_timestamp(s).map_err(|e| anyhow::anyhow!("--{name} {s}: {e}")))
        .transpose()
}

/// (id, question) pairs from a JSONL file; errors name the file and line.
fn read_questions(path: &PathBuf) -> Result<Vec<(Option<String>, String)>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        let q = v
            .get("question")
            .and_then(|q| q.as_str())
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}:{}: field \"question\" missing or not a non-empty string",
                    path.display(),
                    i + 1
                )
            })?;
        let id = v
            .get("id")
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string));
        out.push((id, q.to_string()));
    }
    Ok(out)
}

pub fn run<B: cmt_core::search::SearchWith>(a: AskArgs, backend: B) -> Result<()> {
    let qs: Vec<(Option<String>, String)> = match (&a.questions, &a.question) {
        (Some(f), None) => read_questions(f)?,
        (None, Some(q)) if !q.trim().is_empty() => vec![(None, q.clone())],
        (None, Some(_)) => anyhow::bail!("the question is empty"),
        (Some(_), Some(_)) => anyhow::bail!("give a QUESTION or --questions FILE, not both"),
        (None, None) => anyhow::bail!("give a QUESTION or --questions FILE"),
    };
    let opts = AskOptions {
        k: a.k,
        since: time_arg("since", &a.since)?,
        until: time_arg("until", &a.until)?,
        batch: a.batch,
        ..Default::default()
    };
    let cmt = a.cmt.open_on(backend)?;
    let bank = cmt
        .open_bank_reader(&a.bank)
        .with_context(|| format!("opening bank {}", a.bank.display()))?;
    if bank.live_count() == 0 {
        eprintln!(
            "note: the bank {} is empty: answering without memory",
            a.bank.display()
        );
    }
    let texts: Vec<String> = qs.iter().map(|(_, q)| q.clone()).collect();
    let answers = cmt.ask(Some(&bank), &texts, &opts)?;
    if bank.live_count() > 0 && answers.iter().any(|x| !x.with_memory) {
        eprintln!("note: no memory fell in the time window: answered without memory");
    }
    for ((id, _), ans) in qs.iter().zip(&answers) {
        if a.json {
            let mut v = serde_json::to_value(ans)?;
            if let Some(id) = id {
                v["id"] = serde_json::Value::String(id.clone());
            }
            println!("{v}");
        } else {
            println!("{}", ans.answer);
        }
    }
    Ok(())
}
