//! `cmt train`: the memory-aware objective on a training set, with checkpoints that resume
//! exactly, a JSONL log of every step, a progress bar, and periodic dev evaluation.
use super::checkpoint::ArchArgs;
use super::model_arg;
use anyhow::{Context, Result};
use clap::Args;
use cmt_core::checkpoint;
use cmt_core::data::read_dataset_auto;
use cmt_core::model::{BaseLm, CmtModel};
use cmt_core::train::{self, Ended, RunOptions, TermsConf, TrainEvent, Trajectory};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args)]
pub struct TrainArgs {
    /// Training set (SQuAD v1.1 JSON, or the other formats `cmt eval --data` reads).
    #[arg(long)]
    data: PathBuf,
    /// The checkpoint to write (f32 while training; its state goes to `<out>.state`).
    #[arg(long)]
    out: PathBuf,
    /// Train on the first N documents only (and their questions).
    #[arg(long)]
    limit_docs: Option<usize>,
    /// Dev set for periodic evaluation (model selection only; never trained on).
    #[arg(long)]
    dev: Option<PathBuf>,
    /// GGUF file or HF model directory (default: the default model, fetched if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Start from this checkpoint's parameters and architecture instead of a fresh one.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Continue the run saved in --out (same settings; bit-identical to an uninterrupted run).
    #[arg(long)]
    resume: bool,
    /// Question template: plain or chat (default: chat when the model has one).
    #[arg(long)]
    template: Option<String>,
    #[command(flatten)]
    arch: ArchArgs,
    /// Fresh runs: standardise θ's hidden states per dimension before the compressor, with
    /// the mean and standard deviation measured on the first N training documents and then
    /// fixed in the checkpoint (0: off, the states are read raw).
    #[arg(long, default_value_t = 0, value_name = "N")]
    standardize_input: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1500)]
    steps: u64,
    /// Documents per micro-batch (the training bank's gradient part).
    #[arg(long, default_value_t = 4)]
    batch_docs: usize,
    /// Questions per document per micro-batch (a random subset).
    #[arg(long, default_value_t = 2)]
    questions_per_doc: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Earlier memories kept as constant distractors in the training bank.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 50)]
    warmup: u64,
    /// Final learning rate of the cosine decay.
    #[arg(long, default_value_t = 1e-5)]
    min_lr: f32,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// AdamW weight decay (not on norm gains, biases or τ).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f32,
    /// Weight of L_rec.
    #[arg(long, default_value_t = 1.0)]
    lambda_rec: f32,
    /// Weight of L_match.
    #[arg(long, default_value_t = 1.0)]
    lambda_match: f32,
    /// Switch L_rec off (λ_rec = 0).
    #[arg(long)]
    no_rec: bool,
    /// Switch L_match off (λ_match = 0).
    #[arg(long)]
    no_match: bool,
    /// Longest L_rec window of a document (tokens, at a random offset).
    #[arg(long, default_value_t = 128)]
    rec_tokens: usize,
    /// First steps with L_qa off: reconstruction pretraining of the compressor and G_ω.
    #[arg(long, default_value_t = 0)]
    pretrain_steps: u64,
    /// Seed of the data order, the question subsets and the windows (and of a fresh init).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save every N steps (0: at the end only; Ctrl-C always saves).
    #[arg(long, default_value_t = 100)]
    save_every: u64,
    /// Evaluate on --dev every N steps (0: never).
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    /// Dev documents in the evaluation subset (the first N, with their questions).
    #[arg(long, default_value_t = 20)]
    eval_docs: usize,
    /// Stop with a checkpoint after this step (as Ctrl-C would).
    #[arg(long)]
    stop_at: Option<u64>,
    /// Hidden-state cache root (default $CMT_HOME/hidden-cache; `none` to disable).
    #[arg(long)]
    cache: Option<String>,
    /// JSONL log of every step and dev evaluation (default `<out>.log.jsonl`).
    #[arg(long)]
    log: Option<PathBuf>,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let path = model_arg::resolve(a.model.clone())?;
    let base = BaseLm::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut given = a.arch.given();
    if a.standardize_input > 0 {
        given.push("--standardize-input");
    }
    if !given.is_empty() && (a.resume || a.init.is_some()) {
        let from = if a.resume { "--resume" } else { "--init" };
        anyhow::bail!(
            "{}: the architecture comes from the checkpoint of {from}; \
             these flags only shape a fresh one",
            given.join(", ")
        );
    }
    let cache = match a.cache.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(cmt_runtime::fetch::cmt_home().join("hidden-cache")),
    };
    // A fresh run or one from --init writes into a folder that may not exist yet.
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Read once: the input statistics of a fresh run measure it too.
    let data = read_dataset_auto(&a.data)?;
    let ckpt = if a.resume {
        checkpoint::load(&a.out)
            .with_context(|| format!("--resume: reading {}", a.out.display()))?
    } else if let Some(init) = &a.init {
        checkpoint::load(init)?
    } else {
        let mut cfg = a.arch.config(&base.model)?;
        if a.standardize_input > 0 {
            let stats = train::measure_input_stats(
                &base,
                &cfg,
                &data,
                a.standardize_input,
                cache.as_deref(),
            )
            .context("--standardize-input: measuring θ's hidden states")?;
            eprintln!(
                "input statistics from {} rows of the first {} training documents",
                stats.rows,
                a.standardize_input.min(data.documents.len())
            );
            cfg.compressor.input_stats = Some(stats);
        }
        let template = match &a.template {
            Some(t) => t.clone(),
            None => cmt_core::default_template(&path)?.to_string(),
        };
        cmt_core::init_checkpoint(&base, &cfg, &template, a.seed, &command, &a.out)?;
        checkpoint::load(&a.out)?
    };
    let mut model = CmtModel::new(base, ckpt)?;
    let mut train_set = data;
    if let Some(n) = a.limit_docs {
        train_set = train_set.limit_docs(n);
    }
    let dev = a.dev.as_deref().map(read_dataset_auto).transpose()?;
    let traj = Trajectory {
        steps: a.steps,
        batch_docs: a.batch_docs,
        questions_per_doc: a.questions_per_doc,
        accum: a.accum,
        queue: a.queue,
        lr: a.lr,
        warmup: a.warmup,
        min_lr: a.min_lr,
        clip: a.clip,
        weight_decay: a.weight_decay,
        terms: TermsConf {
            lambda_rec: if a.no_rec { 0.0 } else { a.lambda_rec },
            lambda_match: if a.no_match { 0.0 } else { a.lambda_match },
        },
        rec_tokens: a.rec_tokens,
        pretrain_steps: a.pretrain_steps,
        seed: a.seed,
    };
    let log_path = a.log.clone().unwrap_or_else(|| {
        let mut s = a.out.as_os_str().to_owned();
        s.push(".log.jsonl");
        PathBuf::from(s)
    });
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening the log {}", log_path.display()))?;
    let run = RunOptions {
        out: a.out.clone(),
        save_every: a.save_every,
        eval_every: a.eval_every,
        eval_docs: a.eval_docs,
        stop_at: a.stop_at,
        cache,
        resume: a.resume,
        command,
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit now)"
            );
        })
        .context("installing the Ctrl-C handler")?;
    }
    let bar = ProgressBar::new(traj.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // A hidden bar (stderr not a terminal) drops `println`: say it on stderr then.
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut write_err: Option<std::io::Error> = None;
    let mut record = |v: serde_json::Value| {
        if write_err.is_none() {
            if let Err(e) = writeln!(log, "{v}") {
                write_err = Some(e);
            }
        }
    };
    let ended = train::train(
        &mut model,
        &train_set,
        dev.as_ref(),
        &traj,
        &run,
        &interrupt,
        |ev| match ev {
            TrainEvent::Prepared(p) => {
                say(format!(
                    "training on {} documents, {} questions ({} documents without questions, {} cut to one chunk)",
                    p.docs, p.questions, p.docs_without_questions, p.docs_cut
                ));
            }
            TrainEvent::Resumed(s) => {
                bar.set_position(s);
                bar.reset_eta();
                say(format!("resumed at step {s}"));
            }
            TrainEvent::Step(s) => {
                bar.set_position(s.step);
                bar.set_message(format!(
                    "loss {:.3} (qa {:.3} rec {:.3} match {:.3}) recall {:.2} τ {:.3}  {:.0} θ tok/s",
                    s.loss,
                    s.qa,
                    s.rec,
                    s.matching,
                    s.recall,
                    s.tau,
                    s.theta_tokens as f64 / s.seconds.max(1e-9)
                ));
                record(serde_json::json!({ "kind": "step", "step": s }));
            }
            TrainEvent::Dev(d) => {
                let rec = format!(
                    "L_rec {:.3} (other memories {:.3}, θ alone {:.3})",
                    d.rec, d.rec_shuffled, d.rec_no_memory
                );
                say(match (d.f1, d.em, d.shuffled_f1) {
                    (Some(f1), Some(em), Some(sh)) => format!(
                        "step {}: dev ({} questions) F1 {f1:.2} EM {em:.2} recall@k {:.3}; \
                         shuffled F1 {sh:.2}; {rec}  ({:.0} s)",
                        d.step,
                        d.questions,
                        d.recall_at_k.unwrap_or(f64::NAN),
                        d.seconds
                    ),
                    _ => format!("step {}: dev {rec}  ({:.0} s)", d.step, d.seconds),
                });
                record(serde_json::json!({ "kind": "dev", "dev": d }));
            }
            TrainEvent::Saved(s) => {
                record(serde_json::json!({ "kind": "saved", "step": s }));
            }
        },
    )?;
    bar.finish_and_clear();
    if let Some(e) = write_err {
        anyhow::bail!("writing the log {}: {e}", log_path.display());
    }
    match ended {
        Ended::Finished => eprintln!("finished {} steps: {}", traj.steps, a.out.display()),
        Ended::Stopped(s) => eprintln!(
            "stopped after step {s}: {} (continue with the same command and --resume)",
            a.out.display()
        ),
    }
    Ok(())
}
