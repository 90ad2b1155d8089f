//! Forward + backward to the key/value prefix on the default model (issue: gradients
//! through the frozen model): batch 8 × 64 tokens, prefix 16, every token labelled,
//! 2 threads, f32. Three measurements side by side: the inference forward alone, the
//! training forward (tape + loss), and training forward + backward. Prints the peak RSS.
use cmt_runtime::train::{Tape, TrainSeq};
use cmt_runtime::{CpuBackend, KvPrefix, Logits, SeqInput};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 8;
const TOKENS: usize = 64;
const PREFIX: usize = 16;

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn bench(c: &mut Criterion) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .ok();
    let path =
        cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}")).expect("default model");
    let (model, _tok) = cmt_runtime::load_model(&path, CpuBackend).expect("model loads");
    let cfg = model.cfg.clone();
    let n = cfg.layers * cfg.kv_heads * PREFIX * cfg.head_dim;
    let prefixes: Vec<KvPrefix> = (0..BATCH)
        .map(|b| KvPrefix {
            len: PREFIX,
            k: (0..n)
                .map(|i| (((i * 31 + b * 7) % 97) as f32 / 97.0 - 0.5) * 0.5)
                .collect(),
            v: (0..n)
                .map(|i| (((i * 17 + b * 3) % 89) as f32 / 89.0 - 0.5) * 0.5)
                .collect(),
        })
        .collect();
    let ids: Vec<Vec<u32>> = (0..BATCH)
        .map(|b| {
            (0..TOKENS)
                .map(|t| ((t * 131 + b * 977) % 40_000 + 100) as u32)
                .collect()
        })
        .collect();
    let labels: Vec<Vec<i32>> = ids
        .iter()
        .map(|s| s.iter().map(|&t| t as i32).collect())
        .collect();
    let batch: Vec<TrainSeq> = (0..BATCH)
        .map(|b| TrainSeq {
            prefix: Some(&prefixes[b]),
            soft: &[],
            ids: &ids[b],
            labels: &labels[b],
        })
        .collect();
    let mut sess = model.session(BATCH, PREFIX + TOKENS).unwrap();
    let mut tape = Tape::default();
    // Warm-up run, and the memory figures.
    model.forward_train(&mut sess, &batch, &mut tape).unwrap();
    model.backward(&sess, &tape).unwrap();
    eprintln!(
        "tape: {:.1} MiB of saved activations; peak RSS of the process: {:.0} MiB",
        tape.bytes() as f64 / (1 << 20) as f64,
        peak_rss_mib().unwrap_or(f64::NAN)
    );

    let mut g = c.benchmark_group("prefix_backward_8x64_p16");
    g.sample_size(10);
    g.throughput(Throughput::Elements((BATCH * TOKENS) as u64));
    g.bench_function("forward_inference", |bch| {
        bch.iter(|| {
            for (b, p) in prefixes.iter().enumerate() {
                sess.set_prefix(&cfg, &model.backend, b, p).unwrap();
            }
            let inputs: Vec<SeqInput> = ids
                .iter()
                .enumerate()
                .map(|(b, s)| SeqInput::tokens(b, s))
                .collect();
            model
                .forward(&mut sess, &inputs, Logits::All, None)
                .unwrap()
                .len()
        })
    });
    g.bench_function("forward_train", |bch| {
        bch.iter(|| model.forward_train(&mut sess, &batch, &mut tape).unwrap())
    });
    g.bench_function("forward_train_plus_backward", |bch| {
        bch.iter(|| {
            model.forward_train(&mut sess, &batch, &mut tape).unwrap();
            model.backward(&sess, &tape).unwrap().len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
