//! End-to-end document throughput on the default model, one stage per measurement so
//! that later stages (the compressor) slot in: 16 documents of 256 tokens, 2 threads.
//!
//! - `theta`: encoding through the frozen model θ (final-norm hidden states), the
//!   default bit-reproducible grouping (each 256-token chunk is its own forward step);
//! - `theta_packed`: the same, chunks packed into steps by the token budget alone;
//! - `cache_hit`: the same documents served by the hidden-state cache (open a reader,
//!   look every chunk up, check its crc, copy it into the padded batch);
//! - `compress`: the compressor C_φ alone (default config for the model, fresh init) on
//!   the encoded hidden states of the 16 documents;
//! - `theta_compress`: end to end, tokens → θ → C_φ → memories and keys.
//!
//! Throughput is reported in documents; tokens/s = documents/s × 256. Skips with a message
//! when the default model cannot be had.
use cmt_compress::cache::{CacheKey, HiddenCache};
use cmt_compress::compressor::Compressor;
use cmt_compress::config::CompressorConfig;
use cmt_compress::encode::{Chunking, EncodeOptions, Encoder, Progress};
use cmt_runtime::{CpuBackend, Model};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::path::Path;

const DOCS: usize = 16;
const TOKENS: usize = 256;
const THREADS: usize = 2;

/// What every stage gets: the model, the documents, a scratch directory.
struct Ctx<'a> {
    model: &'a Model<CpuBackend>,
    docs: &'a [Vec<u32>],
    tmp: &'a Path,
}

type Stage = fn(&mut Criterion, &Ctx);

/// The stages, in order. Add new ones here.
const STAGES: &[(&str, Stage)] = &[
    ("theta", theta),
    ("theta_packed", theta_packed),
    ("cache_hit", cache_hit),
    ("compress", compress),
    ("theta_compress", theta_compress),
];

fn options(batch_invariant: bool) -> EncodeOptions {
    EncodeOptions {
        chunking: Chunking::new(TOKENS, 0).expect("valid chunking"),
        max_batch_tokens: 4096,
        batch_invariant,
        progress: Progress::Never,
        ..EncodeOptions::default()
    }
}

/// Every stage's group: 10 samples, throughput in documents.
fn docs_group(c: &mut Criterion) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group("encode");
    g.sample_size(10);
    g.throughput(Throughput::Elements(DOCS as u64));
    g
}

fn encode_stage(c: &mut Criterion, ctx: &Ctx, name: &str, batch_invariant: bool) {
    let enc = Encoder::new(ctx.model, options(batch_invariant)).expect("encoder");
    let mut g = docs_group(c);
    g.bench_function(name, |b| {
        b.iter(|| enc.encode(ctx.docs).expect("encode"));
    });
    g.finish();
}

fn theta(c: &mut Criterion, ctx: &Ctx) {
    encode_stage(c, ctx, "theta", true);
}

fn theta_packed(c: &mut Criterion, ctx: &Ctx) {
    encode_stage(c, ctx, "theta_packed", false);
}

fn cache_hit(c: &mut Criterion, ctx: &Ctx) {
    let enc = Encoder::new(ctx.model, options(true)).expect("encoder");
    let key = CacheKey::for_encoder(cmt_runtime::fetch::DEFAULT_SHA256, &enc);
    {
        let mut w = HiddenCache::open_writer(ctx.tmp, &key).expect("cache writer");
        enc.encode_cached(ctx.docs, &mut w).expect("fill cache");
    }
    let mut g = docs_group(c);
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            let mut r = HiddenCache::open_reader(ctx.tmp, &key).expect("cache reader");
            let (out, stats) = enc.encode_cached(ctx.docs, &mut r).expect("cached encode");
            assert_eq!(stats.misses, 0);
            out
        });
    });
    g.finish();
}

fn compressor(ctx: &Ctx) -> Compressor {
    let cfg = CompressorConfig::for_hidden(ctx.model.cfg.hidden);
    Compressor::init(cfg, 7).expect("compressor")
}

fn compress(c: &mut Criterion, ctx: &Ctx) {
    let enc = Encoder::new(ctx.model, options(true)).expect("encoder");
    let encoded = enc.encode(ctx.docs).expect("encode");
    let comp = compressor(ctx);
    let mut g = docs_group(c);
    g.bench_function("compress", |b| {
        b.iter(|| comp.forward(&encoded.doc_batch()).expect("compress"));
    });
    g.finish();
}

fn theta_compress(c: &mut Criterion, ctx: &Ctx) {
    let enc = Encoder::new(ctx.model, options(true)).expect("encoder");
    let comp = compressor(ctx);
    let mut g = docs_group(c);
    g.bench_function("theta_compress", |b| {
        b.iter(|| {
            let encoded = enc.encode(ctx.docs).expect("encode");
            comp.forward(&encoded.doc_batch()).expect("compress")
        });
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .ok();
    let path = match cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}")) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED encode bench: the default model is not available ({e})");
            return;
        }
    };
    let (model, _tok) = cmt_runtime::load_model(&path, CpuBackend).expect("model loads");
    let vocab = model.cfg.vocab as u64;
    let docs: Vec<Vec<u32>> = (0..DOCS as u64)
        .map(|d| {
            (0..TOKENS as u64)
                .map(|t| ((d * 7919 + t * 104_729 + t * t * 31) % (vocab - 100) + 100) as u32)
                .collect()
        })
        .collect();
    let tmp = tempfile::tempdir().expect("temp dir");
    let ctx = Ctx {
        model: &model,
        docs: &docs,
        tmp: tmp.path(),
    };
    eprintln!("encode bench: {DOCS} documents × {TOKENS} tokens, {THREADS} threads");
    for (name, stage) in STAGES {
        if let Ok(filter) = std::env::var("CMT_BENCH_STAGES") {
            if !filter.split(',').any(|s| s == *name) {
                continue;
            }
        }
        stage(c, &ctx);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
