//! The quantised matmul kernels (`--weights native`) on the default model's matrix shapes,
//! one activation row (a decode step) and 128 rows (prefill), 2 threads: every SIMD level
//! this CPU runs, and the f32 matmul of the same matrix as the reference point. Throughput
//! is in weight bytes read, so a GEMV's figure compares directly with the read bandwidth.
//!
//! Run: `cargo bench -p cmt-runtime --bench quant`.
use cmt_runtime::backend::cpu::matmul_nt;
use cmt_runtime::quant::dot::{DotKernel, SimdLevel};
use cmt_runtime::quant::matmul::{matmul_dequant_gemm, matmul_int8};
use cmt_runtime::quant::packed::{packed_matmul_nt, Packed};
use cmt_runtime::quant::{QType, QuantMatrix};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use half::f16;
use std::hint::black_box;
use std::time::Duration;

fn matrix(ty: QType, rows: usize, cols: usize) -> QuantMatrix {
    let bb = ty.block_bytes();
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let per_block = ty.block_elems();
    let mut data = Vec::with_capacity(rows * cols / per_block * bb);
    for _ in 0..rows * cols / per_block {
        let mut b: Vec<u8> = (0..bb)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        let d_at = if ty == QType::Q6K { 208 } else { 0 };
        b[d_at..d_at + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        if ty == QType::Q4_1 || ty == QType::Q4K || ty == QType::Q5K {
            b[2..4].copy_from_slice(&f16::from_f32(-0.05).to_le_bytes());
        }
        data.extend(b);
    }
    QuantMatrix::new(ty, rows, cols, data).expect("sizes are whole blocks")
}

/// The packed kernel of `w` at each SIMD level this CPU runs, on m activation rows.
fn bench_packed(
    g: &mut BenchmarkGroup<WallTime>,
    name: &str,
    w: &QuantMatrix,
    x: &[f32],
    out: &mut [f32],
    m: usize,
) {
    let p = Packed::new(w);
    for level in [SimdLevel::Avx2, SimdLevel::Avx512Vnni] {
        let Some(kern) = DotKernel::new(level) else {
            continue;
        };
        let id = BenchmarkId::new(format!("{name}/packed_{level:?}"), m);
        g.bench_function(id, |b| {
            b.iter(|| packed_matmul_nt(black_box(x), &p, None, out, m, kern))
        });
    }
}

fn bench(c: &mut Criterion) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .ok();
    // (name, type, rows = output features, cols): SmolLM2-135M's Q4_1 layer matrices and
    // its Q8_0 tied embedding used as the LM head.
    let shapes = [
        ("ffn_up", QType::Q4_1, 1536, 576),
        ("ffn_down", QType::Q4_1, 576, 1536),
        ("lm_head", QType::Q8_0, 49152, 576),
        // The same layer matrices in the default model's Q8_0 copy.
        ("ffn_up_q8", QType::Q8_0, 1536, 576),
        ("ffn_down_q8", QType::Q8_0, 576, 1536),
        // A Llama-7B-sized projection in the k-quants of Q4_K_M / Q5_K_M files.
        ("q4k_4096", QType::Q4K, 4096, 4096),
        ("q5k_4096", QType::Q5K, 4096, 4096),
        ("q6k_4096", QType::Q6K, 4096, 4096),
    ];
    let mut g = c.benchmark_group("quant_gemv");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (name, ty, n, k) in shapes {
        let w = matrix(ty, n, k);
        let x: Vec<f32> = (0..128 * k)
            .map(|i| ((i % 37) as f32 - 18.0) * 0.1)
            .collect();
        let mut out = vec![0.0f32; 128 * n];
        g.throughput(Throughput::Bytes(w.bytes() as u64));
        for level in SimdLevel::available() {
            let kern = DotKernel::new(level).expect("listed as available");
            g.bench_function(BenchmarkId::new(format!("{name}/{level:?}"), 1), |b| {
                b.iter(|| matmul_int8(kern, black_box(&x), &w, None, &mut out, 1))
            });
        }
        bench_packed(&mut g, name, &w, &x, &mut out, 1);
        let mut wf = vec![0.0f32; n * k];
        w.dequantize_rows(0, n, &mut wf);
        g.throughput(Throughput::Bytes((n * k * 4) as u64));
        g.bench_function(BenchmarkId::new(format!("{name}/f32"), 1), |b| {
            b.iter(|| matmul_nt(black_box(&x), &wf, None, &mut out, 1, n, k))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("quant_prefill128");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (name, ty, n, k) in shapes.iter().filter(|s| s.0.starts_with("ffn")) {
        let (n, k) = (*n, *k);
        let w = matrix(*ty, n, k);
        let x: Vec<f32> = (0..128 * k)
            .map(|i| ((i % 37) as f32 - 18.0) * 0.1)
            .collect();
        let mut out = vec![0.0f32; 128 * n];
        let mut wf = vec![0.0f32; n * k];
        w.dequantize_rows(0, n, &mut wf);
        g.throughput(Throughput::Elements((2 * 128 * n * k) as u64));
        g.bench_function(BenchmarkId::new(format!("{name}/dequant_gemm"), 128), |b| {
            b.iter(|| matmul_dequant_gemm(black_box(&x), &w, None, &mut out, 128))
        });
        g.bench_function(
            BenchmarkId::new(format!("{name}/int8_{:?}", DotKernel::best().level()), 128),
            |b| b.iter(|| matmul_int8(DotKernel::best(), black_box(&x), &w, None, &mut out, 128)),
        );
        g.bench_function(BenchmarkId::new(format!("{name}/f32"), 128), |b| {
            b.iter(|| matmul_nt(black_box(&x), &wf, None, &mut out, 128, n, k))
        });
        bench_packed(&mut g, name, &w, &x, &mut out, 128);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
