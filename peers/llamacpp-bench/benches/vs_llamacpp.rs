//! cmt `--weights native` against llama.cpp in one criterion run: the same GGUF, the same 2
//! threads, the same work as `cmt bench` — the fixed prompt ids of `bench_prompt` (128)
//! prefilled in one batch, then 32 greedy one-token steps, each ending in the argmax of the
//! last logits. The two engines alternate within each group. Throughput is in tokens, so
//! criterion prints tokens/s; the ratio of the two is the figure (absolute times drift on
//! these shared machines).
//!
//! Models: `CMT_PEER_MODELS` (GGUF paths separated by `:`), else the default model.
//! Run: see `peers/llamacpp-bench/README.md`.
use cmt_runtime::bench::bench_prompt;
use cmt_runtime::generate::argmax;
use cmt_runtime::{CpuBackend, Logits, Model, SeqInput, Session, WeightFormat};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llamacpp_bench::Peer;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const THREADS: usize = 2;
const PROMPT: usize = 128;
const NEW: usize = 32;

fn models() -> Vec<PathBuf> {
    match std::env::var("CMT_PEER_MODELS") {
        Ok(v) => v
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        Err(_) => vec![
            cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}"))
                .expect("the default model (or set CMT_PEER_MODELS)"),
        ],
    }
}

fn cmt_prefill(m: &Model<CpuBackend>, s: &mut Session<CpuBackend>, ids: &[u32]) -> u32 {
    s.reset_all();
    let logits = m
        .forward(s, &[SeqInput::tokens(0, ids)], Logits::Last, None)
        .expect("cmt prefill");
    argmax(logits)
}

fn cmt_steps(m: &Model<CpuBackend>, s: &mut Session<CpuBackend>, mut next: u32) {
    for _ in 0..NEW {
        let logits = m
            .forward(s, &[SeqInput::tokens(0, &[next])], Logits::Last, None)
            .expect("cmt decode");
        next = argmax(logits);
    }
}

fn peer_steps(p: &mut Peer, mut next: u32) {
    for _ in 0..NEW {
        next = p.eval(&[next]).expect("llama.cpp decode");
    }
}

fn bench(c: &mut Criterion) {
    // llama.cpp's OpenMP threads keep their default (spinning) wait policy: with
    // OMP_WAIT_POLICY=PASSIVE its decode fell from ~100 to 28 tok/s here. They spin only
    // for a moment after llama.cpp's last call, and the engines run one after another.
    if std::env::var("OMP_WAIT_POLICY").is_ok_and(|v| v.eq_ignore_ascii_case("passive")) {
        eprintln!("warning: OMP_WAIT_POLICY=passive slows llama.cpp's decode ~4x; unset it");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .ok();
    for path in models() {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (model, _tok) = cmt_runtime::load_model_as(&path, CpuBackend, WeightFormat::Native)
            .expect("cmt loads the model");
        let mut peer = Peer::open(&path, THREADS, PROMPT + NEW + 8, PROMPT)
            .expect("llama.cpp loads the model");
        assert_eq!(peer.vocab(), model.cfg.vocab, "{name}: vocabularies differ");
        let prompt = bench_prompt(PROMPT, model.cfg.vocab);
        let mut sess = model.session(1, PROMPT + NEW).expect("a session");

        let mut g = c.benchmark_group(format!("prefill{PROMPT}/{name}"));
        g.throughput(Throughput::Elements(PROMPT as u64))
            .measurement_time(Duration::from_secs(6))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(20);
        g.bench_function(BenchmarkId::new("cmt", "native"), |b| {
            b.iter(|| cmt_prefill(&model, &mut sess, &prompt))
        });
        g.bench_function(BenchmarkId::new("llama.cpp", THREADS), |b| {
            b.iter(|| {
                peer.reset();
                peer.eval(&prompt).expect("llama.cpp prefill")
            })
        });
        g.finish();

        // Decode: NEW steps after the prompt, the prefill untimed.
        let mut g = c.benchmark_group(format!("decode{NEW}/{name}"));
        g.throughput(Throughput::Elements(NEW as u64))
            .measurement_time(Duration::from_secs(6))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(20);
        g.bench_function(BenchmarkId::new("cmt", "native"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let next = cmt_prefill(&model, &mut sess, &prompt);
                    let t0 = Instant::now();
                    cmt_steps(&model, &mut sess, next);
                    t += t0.elapsed();
                }
                t
            })
        });
        g.bench_function(BenchmarkId::new("llama.cpp", THREADS), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    peer.reset();
                    let next = peer.eval(&prompt).expect("llama.cpp prefill");
                    let t0 = Instant::now();
                    peer_steps(&mut peer, next);
                    t += t0.elapsed();
                }
                t
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
