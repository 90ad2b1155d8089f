//! Compressor cross-attention: fused vs unfused (`attention::slow`), forward and
//! forward + backward, on 256 documents × 256 tokens, D = 576, T = 16, 9 heads × 64, hidden
//! states given (random), both in the same 2-thread rayon pool. Prints the ratios at the
//! end (medians of interleaved runs). `CMT_BENCH_THREADS` overrides the thread count;
//! `CMT_BENCH_QUICK=1` skips criterion and prints only the ratios (a tuning probe).
use cmt_compress::attention::{
    fused, slow, CrossAttnDims, CrossAttnGrads, CrossAttnWeights, DocBatch,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Instant;

const DOCS: usize = 256;
const N: usize = 256;
const DIMS: CrossAttnDims = CrossAttnDims {
    t: 16,
    d: 576,
    heads: 9,
    head_dim: 64,
};

struct Data {
    h: Vec<f32>,
    lens: Vec<usize>,
    g_h: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    q: Vec<f32>,
    d_out: Vec<f32>,
}

fn random(n: usize, scale: f32, state: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn data() -> Data {
    let (d, a) = (DIMS.d, DIMS.attn_width());
    let mut s = 42u64;
    Data {
        h: random(DOCS * N * d, 1.0, &mut s),
        lens: vec![N; DOCS],
        g_h: random(d, 0.2, &mut s).iter().map(|x| 1.0 + x).collect(),
        wk: random(a * d, 1.0 / (d as f32).sqrt(), &mut s),
        wv: random(a * d, 1.0 / (d as f32).sqrt(), &mut s),
        q: random(DOCS * DIMS.t * a, 1.0, &mut s),
        d_out: random(DOCS * DIMS.t * a, 1.0, &mut s),
    }
}

struct Grads {
    dq: Vec<f32>,
    dwk: Vec<f32>,
    dwv: Vec<f32>,
    dg: Vec<f32>,
    dh: Vec<f32>,
}

impl Grads {
    fn new(x: &Data) -> Self {
        Self {
            dq: vec![0.0; x.q.len()],
            dwk: vec![0.0; x.wk.len()],
            dwv: vec![0.0; x.wv.len()],
            dg: vec![0.0; x.g_h.len()],
            dh: vec![0.0; x.h.len()],
        }
    }
    fn view(&mut self) -> CrossAttnGrads<'_> {
        CrossAttnGrads {
            dq: &mut self.dq,
            dwk: &mut self.dwk,
            dwv: &mut self.dwv,
            dg_h: &mut self.dg,
            dh: &mut self.dh,
        }
    }
}

/// The four measured operations.
#[derive(Clone, Copy)]
enum Op {
    SlowFwd,
    FusedFwd,
    SlowFwdBwd,
    FusedFwdBwd,
}

fn run(op: Op, x: &Data, out: &mut [f32], g: &mut Grads) {
    let docs = DocBatch {
        h: &x.h,
        n_max: N,
        lens: &x.lens,
    };
    let w = CrossAttnWeights {
        g_h: &x.g_h,
        wk: &x.wk,
        wv: &x.wv,
        eps: 1e-5,
    };
    match op {
        Op::SlowFwd => slow::forward(&DIMS, &docs, &w, &x.q, out).unwrap(),
        Op::FusedFwd => drop(black_box(
            fused::forward(&DIMS, &docs, &w, &x.q, out).unwrap(),
        )),
        Op::SlowFwdBwd => {
            slow::forward(&DIMS, &docs, &w, &x.q, out).unwrap();
            slow::backward(&DIMS, &docs, &w, &x.q, &x.d_out, &mut g.view()).unwrap();
        }
        Op::FusedFwdBwd => {
            let saved = fused::forward(&DIMS, &docs, &w, &x.q, out).unwrap();
            fused::backward(&DIMS, &docs, &w, &x.q, &saved, &x.d_out, &mut g.view()).unwrap();
        }
    }
    black_box(out);
}

fn threads() -> usize {
    std::env::var("CMT_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn bench(c: &mut Criterion) {
    let threads = threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let x = data();
    let mut out = vec![0.0f32; x.q.len()];
    let mut g = Grads::new(&x);
    let ops = [
        ("fwd", "slow", Op::SlowFwd),
        ("fwd", "fused", Op::FusedFwd),
        ("fwd_bwd", "slow", Op::SlowFwdBwd),
        ("fwd_bwd", "fused", Op::FusedFwdBwd),
    ];
    let quick = std::env::var("CMT_BENCH_QUICK").is_ok_and(|v| v == "1");
    for pass in ["fwd", "fwd_bwd"].into_iter().filter(|_| !quick) {
        let mut group = c.benchmark_group(format!("compress_attn_{pass}_{DOCS}x{N}_t{threads}"));
        group.sample_size(10);
        for &(p, name, op) in &ops {
            if p == pass {
                group.bench_function(name, |b| {
                    b.iter(|| pool.install(|| run(op, &x, &mut out, &mut g)))
                });
            }
        }
        group.finish();
    }
    // Ratios from interleaved runs (medians), so all sides see the same machine state.
    // "fused/gemm" is the fused path with its tile products on the `gemm` crate (the same
    // AVX2 kernel as the unfused path): the gain of the formulation alone.
    let variants: [(Op, bool); 6] = [
        (Op::SlowFwd, false),
        (Op::FusedFwd, false),
        (Op::FusedFwd, true),
        (Op::SlowFwdBwd, false),
        (Op::FusedFwdBwd, false),
        (Op::FusedFwdBwd, true),
    ];
    let mut times = [const { Vec::new() }; 6];
    let reps = if quick { 3 } else { 7 };
    for _ in 0..reps {
        for (k, &(op, portable)) in variants.iter().enumerate() {
            fused::force_portable(portable);
            let t0 = Instant::now();
            pool.install(|| run(op, &x, &mut out, &mut g));
            times[k].push(t0.elapsed().as_secs_f64());
        }
    }
    fused::force_portable(false);
    let med: Vec<f64> = times
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    println!(
        "\ncompressor cross-attention, {DOCS} docs x {N} tokens, {threads} threads \
         (medians of {reps} interleaved runs):"
    );
    for (pass, m, flops) in [
        ("forward", &med[0..3], (89.4, 27.2)),
        ("fwd+bwd", &med[3..6], (357.6, 95.1)),
    ] {
        let (s, f, fp) = (m[0], m[1], m[2]);
        println!(
            "  {pass:8} unfused {:7.1} ms ({:5.1} GFLOP/s) | fused {:7.1} ms ({:5.1} GFLOP/s) \
             speedup {:.2}x | fused/gemm {:7.1} ms ({:5.1} GFLOP/s) speedup {:.2}x",
            s * 1e3,
            flops.0 / s,
            f * 1e3,
            flops.1 / f,
            s / f,
            fp * 1e3,
            flops.1 / fp,
            s / fp
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
