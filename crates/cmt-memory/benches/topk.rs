//! Top-k search over a bank of N = 1,000,000 keys of r = 128 f32 (512 MB), k = 16, for 1 and
//! for 32 questions, with 2 threads, side by side in one run with:
//!
//! - faiss `IndexFlatIP` (PyPI `faiss-cpu`) on the same keys and questions, driven by
//!   `benches/faiss_peer.py` and timed inside that script (perf_counter around the search
//!   loop, so the pipe is not timed). The script runs from a venv at
//!   `$CMT_HOME/bench/faiss-venv` (default `~/.cache/cmt/bench/faiss-venv`), created with
//!   `pip install faiss-cpu numpy` when missing; without Python or network faiss is skipped.
//! - a plain memory-read baseline: summing the same 512 MB of keys (copied to 64-byte
//!   aligned memory) with the same 2 threads (AVX-512 aligned loads, 8 accumulators) — the
//!   floor the single-question scan can approach.
//!
//! Rows: `cmt_scan/q1`, `cmt_scan/q32` (ids + raw scores: what faiss returns),
//! `cmt_scan_bf16keys/q1`, `/q32` (the same keys rounded to bf16: 256 MB, widened in
//! registers),
//! `cmt_search/q1` (scan + softmax + weighted sum of 16 bf16 memories of 16×576),
//! `faiss/q1`, `faiss/q32`, `read_512MB` (aligned copy) and `read_512MB_rowmajor` (the
//! keys as allocated). After criterion, 15 interleaved rounds of every row give medians and
//! the ratios (cmt vs faiss; single-question scan vs the faster of the two reads).
//! `CMT_BENCH_NO_FAISS=1` leaves faiss out.
//!
//! Run: `cargo bench -p cmt-memory --bench topk`.
use cmt_memory::topk::{self, MemorySource};
use cmt_memory::{KeyDtype, KeyMatrix, MemView};
use criterion::{Criterion, Throughput};
use half::bf16;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const N: usize = 1_000_000;
const R: usize = 128;
const K: usize = 16;
const THREADS: usize = 2;
const BYTES: u64 = (N * R * 4) as u64;

struct Rng(u64);
impl Rng {
    fn normal_ish(&mut self) -> f32 {
        // Sum of 4 uniforms: cheap and bell-shaped enough for random directions.
        (0..4)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .sum()
    }
    fn unit_vectors(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * R).map(|_| self.normal_ish()).collect();
        for row in v.chunks_exact_mut(R) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

/// Memories for `cmt_search`: 64 distinct bf16 memories of 16×576, entry id → id % 64.
struct Pool(Vec<Vec<bf16>>);
impl MemorySource for Pool {
    fn memory_len(&self) -> usize {
        16 * 576
    }
    fn memory(&self, id: u64) -> cmt_memory::Result<MemView<'_>> {
        Ok(MemView::Bf16(&self.0[id as usize % self.0.len()]))
    }
}

/// 16 f32 on a cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

/// Σ of a large array with the rayon pool: the memory-read baseline.
fn read_sum(v: &[Line]) -> f32 {
    use rayon::prelude::*;
    v.par_chunks(v.len().div_ceil(THREADS * 8))
        .map(|c| sum_chunk(flat(c)))
        .sum()
}

/// The same over the row-major keys as allocated (not 64-byte aligned).
fn read_sum_rows(v: &[f32]) -> f32 {
    use rayon::prelude::*;
    v.par_chunks(v.len().div_ceil(THREADS * 8))
        .map(sum_chunk)
        .sum()
}

fn flat(v: &[Line]) -> &[f32] {
    // SAFETY: `Line` is 16 f32 without padding (repr(C), 64 bytes), so `v` is v.len()·16
    // initialised, 64-byte aligned f32.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const f32, v.len() * 16) }
}

fn sum_chunk(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { sum_avx512(v) };
        }
    }
    let mut acc = [0.0f32; 16];
    let mut it = v.chunks_exact(16);
    for c in &mut it {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_avx512(v: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let p = v.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 8];
    let mut i = 0;
    // SAFETY: i + 128 <= len for every load in the loop.
    while i + 128 <= v.len() {
        for (u, a) in acc.iter_mut().enumerate() {
            *a = _mm512_add_ps(*a, _mm512_loadu_ps(p.add(i + 16 * u)));
        }
        i += 128;
    }
    let s = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a));
    _mm512_reduce_add_ps(s) + v[i..].iter().sum::<f32>()
}

struct Faiss {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
}

fn cmt_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CMT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("cmt")
}

/// The venv's python with faiss importable, creating the venv if needed.
fn faiss_python() -> Result<PathBuf, String> {
    let venv = cmt_home().join("bench").join("faiss-venv");
    let py = venv.join("bin").join("python");
    let ok = |py: &PathBuf| {
        Command::new(py)
            .args(["-c", "import faiss, numpy"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&py) {
        return Ok(py);
    }
    eprintln!("installing faiss-cpu into {} ...", venv.display());
    let run = |cmd: &mut Command| match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{cmd:?} exited with {s}")),
        Err(e) => Err(format!("{cmd:?}: {e}")),
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip")).args(["install", "-q", "faiss-cpu", "numpy"]))?;
    if ok(&py) {
        Ok(py)
    } else {
        Err("faiss still not importable after pip install".into())
    }
}

impl Faiss {
    fn start(keys: &[f32]) -> Result<Faiss, String> {
        let py = faiss_python()?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/faiss_peer.py");
        let mut child = Command::new(py)
            .arg(script)
            .env("OMP_NUM_THREADS", THREADS.to_string())
            .env("OPENBLAS_NUM_THREADS", THREADS.to_string())
            .env("MKL_NUM_THREADS", THREADS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting faiss_peer.py: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let io = |e: std::io::Error| format!("faiss peer: {e}");
        writeln!(stdin, "{N} {R} {K} {THREADS}").map_err(io)?;
        stdin.write_all(bytemuck::cast_slice(keys)).map_err(io)?;
        stdin.flush().map_err(io)?;
        let mut f = Faiss {
            child,
            stdin,
            stdout,
            version: String::new(),
        };
        let ready = f.line()?;
        f.version = ready
            .strip_prefix("ready ")
            .ok_or(format!("peer said {ready:?}"))?
            .into();
        Ok(f)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut s = String::new();
        match self.stdout.read_line(&mut s) {
            Ok(0) => Err("faiss peer exited".into()),
            Ok(_) => Ok(s.trim_end().to_string()),
            Err(e) => Err(format!("faiss peer: {e}")),
        }
    }

    /// Time of `iters` searches of `queries`, measured by the script; and question 0's ids.
    fn search(&mut self, queries: &[f32], iters: u64) -> (Duration, Vec<u64>) {
        let nq = queries.len() / R;
        writeln!(self.stdin, "search {nq} {iters}").expect("faiss peer stdin");
        self.stdin
            .write_all(bytemuck::cast_slice(queries))
            .expect("faiss peer stdin");
        self.stdin.flush().expect("faiss peer stdin");
        let t = self.line().expect("faiss peer time");
        let secs: f64 = t
            .strip_prefix("time ")
            .and_then(|s| s.parse().ok())
            .expect("time line");
        let ids = self.line().expect("faiss peer ids");
        let ids = ids
            .split_whitespace()
            .skip(1)
            .filter_map(|s| s.parse().ok())
            .collect();
        (Duration::from_secs_f64(secs), ids)
    }
}

impl Drop for Faiss {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .expect("rayon pool");
    let mut rng = Rng(0x1234_5678_9abc_def1);
    eprintln!("building {N} keys of r = {R} ...");
    let rows = rng.unit_vectors(N);
    let mut km = KeyMatrix::with_capacity(R, N);
    for (i, k) in rows.chunks_exact(R).enumerate() {
        km.push(i as u64, k).expect("push");
    }
    let mut km16 = KeyMatrix::with_dtype(R, N, KeyDtype::Bf16);
    for (i, k) in rows.chunks_exact(R).enumerate() {
        km16.push(i as u64, k).expect("push");
    }
    // The read baseline sums the same 512 MB of keys, copied to 64-byte aligned lines.
    let lines: Vec<Line> = rows
        .chunks_exact(16)
        .map(|c| {
            let mut l = Line([0.0; 16]);
            l.0.copy_from_slice(c);
            l
        })
        .collect();
    let q32 = rng.unit_vectors(32);
    let q1 = &q32[..R];
    let mems = Pool(
        (0..64)
            .map(|i| {
                (0..16 * 576)
                    .map(|j| bf16::from_f32(((i * j) % 13) as f32 * 0.1))
                    .collect()
            })
            .collect(),
    );
    let faiss = if std::env::var_os("CMT_BENCH_NO_FAISS").is_some() {
        Err("CMT_BENCH_NO_FAISS is set".to_string())
    } else {
        Faiss::start(&rows)
    };
    let mut faiss = match faiss {
        Ok(f) => {
            eprintln!("faiss {} ready", f.version);
            Some(f)
        }
        Err(e) => {
            eprintln!("faiss unavailable, its rows are skipped: {e}");
            None
        }
    };
    let scan = |q: &[f32]| pool.install(|| topk::scan(&km, q, K, "bench").expect("scan"));
    let scan16 = |q: &[f32]| pool.install(|| topk::scan(&km16, q, K, "bench").expect("scan"));
    {
        let a: Vec<u64> = scan(q1).per_query[0].iter().map(|c| c.id).collect();
        let b: Vec<u64> = scan16(q1).per_query[0].iter().map(|c| c.id).collect();
        let same = a.iter().filter(|id| b.contains(id)).count();
        eprintln!("bf16 keys: {same} of the f32 keys' top-{K} ids");
    }
    if let Some(f) = faiss.as_mut() {
        let ours: Vec<u64> = scan(q1).per_query[0].iter().map(|c| c.id).collect();
        let (_, theirs) = f.search(q1, 1);
        eprintln!("top-{K} ids identical to faiss: {}", ours == theirs);
    }

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("topk_1M_r128_k16");
        g.throughput(Throughput::Bytes(BYTES));
        g.bench_function("cmt_scan/q1", |b| b.iter(|| black_box(scan(q1))));
        g.bench_function("cmt_scan/q32", |b| b.iter(|| black_box(scan(&q32))));
        g.bench_function("cmt_search/q1", |b| {
            b.iter(|| black_box(topk::combine(&scan(q1), 0.1, &mems).expect("combine")))
        });
        if let Some(f) = faiss.as_mut() {
            g.bench_function("faiss/q1", |b| b.iter_custom(|n| f.search(q1, n).0));
            g.bench_function("faiss/q32", |b| b.iter_custom(|n| f.search(&q32, n).0));
        }
        g.bench_function("read_512MB", |b| {
            b.iter(|| black_box(pool.install(|| read_sum(&lines))))
        });
        g.bench_function("read_512MB_rowmajor", |b| {
            b.iter(|| black_box(pool.install(|| read_sum_rows(&rows))))
        });
        g.finish();
        let mut g = c.benchmark_group("topk_1M_r128_k16_bf16keys");
        g.throughput(Throughput::Bytes(BYTES / 2));
        g.bench_function("cmt_scan_bf16keys/q1", |b| b.iter(|| black_box(scan16(q1))));
        g.bench_function("cmt_scan_bf16keys/q32", |b| {
            b.iter(|| black_box(scan16(&q32)))
        });
        g.finish();
    }
    c.final_summary();

    // Interleaved rounds, so that drift in the machine's load hits every row alike.
    const RUNS: usize = 15;
    let mut t = vec![Vec::new(); 8];
    for _ in 0..RUNS {
        t[0].push(timed(|| drop(black_box(scan(q1)))).as_secs_f64());
        t[1].push(timed(|| drop(black_box(scan(&q32)))).as_secs_f64());
        t[2].push(timed(|| _ = black_box(pool.install(|| read_sum(&lines)))).as_secs_f64());
        t[3].push(timed(|| _ = black_box(pool.install(|| read_sum_rows(&rows)))).as_secs_f64());
        t[6].push(timed(|| drop(black_box(scan16(q1)))).as_secs_f64());
        t[7].push(timed(|| drop(black_box(scan16(&q32)))).as_secs_f64());
        if let Some(f) = faiss.as_mut() {
            t[4].push(f.search(q1, 1).0.as_secs_f64());
            t[5].push(f.search(&q32, 1).0.as_secs_f64());
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let m: Vec<f64> = t.iter_mut().map(med).collect();
    let (s1, s32, rd_al, rd_rows) = (m[0], m[1], m[2], m[3]);
    let rd = rd_al.min(rd_rows);
    let gbs = |t: f64| BYTES as f64 / t / 1e9;
    println!("\nsummary (medians of {RUNS} interleaved runs, N = {N}, r = {R}, k = {K}, {THREADS} threads):");
    println!(
        "  read 512 MB, aligned     {:8.2} ms  {:6.1} GB/s",
        rd_al * 1e3,
        gbs(rd_al)
    );
    println!(
        "  read 512 MB, row-major   {:8.2} ms  {:6.1} GB/s",
        rd_rows * 1e3,
        gbs(rd_rows)
    );
    println!(
        "  cmt scan q1              {:8.2} ms  {:6.1} GB/s  = {:.0}% of the faster read",
        s1 * 1e3,
        gbs(s1),
        100.0 * rd / s1
    );
    println!(
        "  cmt scan q32             {:8.2} ms  {:6.1} GB/s",
        s32 * 1e3,
        gbs(s32)
    );
    let (h1, h32) = (m[6], m[7]);
    println!(
        "  cmt scan q1, bf16 keys   {:8.2} ms  {:6.1} GB/s  = {:.2}x the f32 scan, {:.0}% of half the faster read",
        h1 * 1e3,
        gbs(h1) / 2.0,
        s1 / h1,
        100.0 * rd / 2.0 / h1
    );
    println!(
        "  cmt scan q32, bf16 keys  {:8.2} ms  {:6.1} GB/s  = {:.2}x the f32 scan",
        h32 * 1e3,
        gbs(h32) / 2.0,
        s32 / h32
    );
    if let Some(f) = faiss.as_ref() {
        let (f1, f32_) = (m[4], m[5]);
        println!(
            "  faiss {} q1         {:8.2} ms  -> cmt is {:.2}x faiss",
            f.version,
            f1 * 1e3,
            f1 / s1
        );
        println!(
            "  faiss {} q32        {:8.2} ms  -> cmt is {:.2}x faiss",
            f.version,
            f32_ * 1e3,
            f32_ / s32
        );
    }
}
