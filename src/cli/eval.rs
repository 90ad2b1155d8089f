//! `cmt eval`: the online adaptation protocol and its baselines on a dataset.
use super::model_arg::{self, WeightsArg};
use anyhow::{Context, Result};
use clap::Args;
use cmt_core::data::{read_dataset_auto, read_documents, read_jsonl_dataset, Document};
use cmt_core::eval::{self, Engine, EvalOptions, EvalProgress, Method, Pass};
use cmt_core::model::BaseLm;
use cmt_core::template::Template;
use cmt_core::Cmt;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// The evaluation set: SQuAD v1.1 JSON, StreamingQA / ArchivalQA CSV (or TSV), or with
    /// --questions a JSONL documents file.
    #[arg(long)]
    data: PathBuf,
    /// Questions JSONL (`{"id","question","answers":[..],"doc_id"}`) when --data holds
    /// JSONL documents.
    #[arg(long)]
    questions: Option<PathBuf>,
    /// cmt, closed-book, oracle, rag, cmt-keys-rag or cmt-shuffled.
    #[arg(long)]
    method: Method,
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The CMT checkpoint (cmt methods; default: the trained default checkpoint or
    /// $CMT_CHECKPOINT). The baselines run without one.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Question template of the baselines: plain or chat (default: the checkpoint's when
    /// --checkpoint is given, else chat when the model has a chat template). The cmt
    /// methods always use their checkpoint's.
    #[arg(long)]
    template: Option<String>,
    #[command(flatten)]
    weights: WeightsArg,
    /// Keep the first N documents and only their questions.
    #[arg(long)]
    limit_docs: Option<usize>,
    /// Documents (JSONL or SQuAD JSON) streamed after the data's own; their questions are
    /// not asked.
    #[arg(long, num_args = 1..)]
    distractors: Vec<PathBuf>,
    /// At most N questions of the first block of documents in the retention sample.
    #[arg(long, default_value_t = 200)]
    retention_sample: usize,
    /// A retention point after every N streamed documents.
    #[arg(long, default_value_t = 200)]
    retention_every: usize,
    /// Memories per question (cmt methods) and the k of recall@k (default: the
    /// checkpoint's k, else 4).
    #[arg(long)]
    k: Option<usize>,
    /// Seed of the retention sample and of cmt-shuffled's random memories.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Questions answered together.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Print the summary as one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write predictions.jsonl (every question), retention.jsonl (the retention
    /// sample at every point) and summary.json into DIR.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw the retention curve (and recall vs bank size) into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn read_distractors(files: &[PathBuf]) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for f in files {
        let read = read_documents(f, false)?;
        for b in &read.bad {
            eprintln!("skipped distractor: {b}");
        }
        docs.extend(read.documents);
    }
    Ok(docs)
}

fn bar_for(bar: &ProgressBar, p: EvalProgress) {
    let (msg, done, total) = match p {
        EvalProgress::Stream { done, total } => ("stream".to_string(), done, total),
        EvalProgress::Answer {
            pass: Pass::Retention { docs },
            done,
            total,
        } => (format!("retention @{docs}"), done, total),
        EvalProgress::Answer {
            pass: Pass::Final,
            done,
            total,
        } => ("answer".to_string(), done, total),
    };
    if bar.length() != Some(total as u64) || bar.message() != msg {
        bar.set_length(total as u64);
        bar.set_message(msg);
        bar.reset_eta();
    }
    bar.set_position(done as u64);
}

pub fn run<B: cmt_core::search::SearchWith>(a: EvalArgs, backend: B) -> Result<()> {
    // Exactly one of the branches below loads θ, on this backend.
    let mut backend = Some(backend);
    let mut take = || {
        backend
            .take()
            .ok_or_else(|| anyhow::anyhow!("θ loaded twice"))
    };
    if a.plot.is_some() && !a.method.streams() {
        anyhow::bail!(
            "--plot: {} streams nothing and has no retention curve to draw",
            a.method
        );
    }
    if a.template.is_some() && a.method.needs_checkpoint() {
        anyhow::bail!(
            "--template is for the baselines: {} uses its checkpoint's template",
            a.method
        );
    }
    let mut data = match &a.questions {
        Some(q) => read_jsonl_dataset(&a.data, q)?,
        None => read_dataset_auto(&a.data)?,
    };
    if let Some(n) = a.limit_docs {
        data = data.limit_docs(n);
    }
    let distractors = read_distractors(&a.distractors)?;
    let model_path = model_arg::resolve(a.model.clone())?;
    let opts = EvalOptions {
        method: a.method,
        k: a.k,
        retention_every: a.retention_every,
        retention_sample: a.retention_sample,
        seed: a.seed,
        batch: a.batch,
        ..Default::default()
    };
    // The cmt methods need the checkpoint; the baselines only θ and a template.
    let cmt = if a.method.needs_checkpoint() || a.checkpoint.is_some() {
        let ckpt = match &a.checkpoint {
            Some(c) => c.clone(),
            None => cmt_core::default_checkpoint_path().ok_or_else(|| {
                anyhow::anyhow!(
                    "method {} needs a CMT checkpoint: pass --checkpoint (there is no \
                     default checkpoint yet, and CMT_CHECKPOINT is unset)",
                    a.method
                )
            })?,
        };
        if !ckpt.exists() {
            anyhow::bail!("checkpoint {}: no such file", ckpt.display());
        }
        let c = Cmt::open_on(&model_path, &ckpt, take()?, a.weights.format);
        Some(c.with_context(|| format!("loading {}", model_path.display()))?)
    } else {
        None
    };
    let base;
    let engine = match &cmt {
        Some(c) if a.method.needs_checkpoint() => Engine::Cmt(&c.model),
        Some(c) => Engine::Base {
            lm: &c.model.base,
            template: match &a.template {
                Some(t) => Template::for_model(t, &model_path)?,
                None => c.model.template.clone(),
            },
        },
        None => {
            base = BaseLm::load_on(&model_path, take()?, a.weights.format)
                .with_context(|| format!("loading {}", model_path.display()))?;
            let name = match &a.template {
                Some(t) => t.as_str(),
                None => cmt_core::default_template(&model_path)?,
            };
            Engine::Base {
                lm: &base,
                template: Template::for_model(name, &model_path)?,
            }
        }
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{msg:>14} {bar:30} {pos}/{len}  {per_sec}  ETA {eta}",
    )?);
    let out = eval::evaluate(&engine, &data, &distractors, &opts, |p| bar_for(&bar, p))?;
    bar.finish_and_clear();
    if let Some(dir) = &a.out {
        eval::write_outputs(dir, &out)?;
    }
    if let Some(path) = &a.plot {
        eval::plot_png(&out.summary, path)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&out.summary)?);
    } else {
        print!("{}", out.summary.table());
    }
    Ok(())
}
