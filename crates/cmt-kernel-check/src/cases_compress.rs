//! Checks of kernels/compress_attention.cu (the compressor's H pass) against a plain f64
//! reference of its equations, written here independently of cmt-compress:
//!
//! ```text
//! rinv_j = 1/sqrt(mean_c H_jc² + eps), y_j = rinv_j·H_j, s_ij = qhat_i·y_j   (j < len)
//! lse_i = log Σ_j exp(s_ij), p_ij = exp(s_ij − lse_i), u_i = Σ_j p_ij·y_j
//! δ_i = du_i·u_i, ds_ij = p_ij·(du_i·y_j − δ_i), dqhat_i = Σ_j ds_ij·y_j
//! dy_j = Σ_i p_ij·du_i + ds_ij·qhat_i, dH_j += rinv_j·(dy_j − (dy_j·y_j/d)·y_j)
//! ```
//!
//! Inputs as a kernel sees them: H's padding rows (j ≥ len) are NaN so that any read of them
//! shows up, dH starts from random values (it accumulates) and its padding rows must come
//! back unchanged, every output is poisoned and has a guard zone. All outputs are f32 (H may
//! be bf16; the reference reads the same rounded values), so one f32 tolerance applies.
use crate::cases::{Outcome, Rng};
use crate::exec::{CheckError, Exec};
use cmt_compress::attention::launch::{
    compress_attention_backward, compress_attention_forward, Dims,
};
use cmt_runtime::cuda::{DType, Launch};

/// Elements past every buffer's end that must stay poisoned.
const GUARD: usize = 16;
/// All-ones bytes: NaN as f32.
const POISON: u8 = 0xff;
/// |got − ref| ≤ ATOL + RTOL·|ref|: f32 accumulation (FMA contraction, expf/rsqrtf of the
/// GPU) against an f64 reference; the same bound as the other f32 kernels.
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;
pub const EPS: f32 = 1e-5;

/// An outcome plus the floating-point work it stands for (for GFLOP/s).
#[derive(Debug, Clone)]
pub struct Measured {
    pub outcome: Outcome,
    /// Floating-point operations of one run (see `compress_attention` for the counts).
    pub flops: f64,
}

/// Reference results in f64.
pub struct Reference {
    /// [docs, tq, d]
    pub u: Vec<f64>,
    /// [docs, tq]; −inf for a document of length 0.
    pub lse: Vec<f64>,
    /// [docs, tq, d]
    pub dq: Vec<f64>,
    /// [docs, n_max, d]: the increment of dH (zero on padding rows).
    pub dh: Vec<f64>,
}

/// The f64 reference of the forward and the backward, by the equations, with the full score
/// matrix of each document materialised. Documents run on separate threads (gpu-check sizes).
pub fn reference(
    qhat: &[f32],
    h: &[f32],
    lens: &[usize],
    du: &[f32],
    dims: Dims,
    eps: f32,
) -> Reference {
    let Dims { docs, tq, n_max, d } = dims;
    let mut r = Reference {
        u: vec![0.0; docs * tq * d],
        lse: vec![0.0; docs * tq],
        dq: vec![0.0; docs * tq * d],
        dh: vec![0.0; docs * n_max * d],
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = docs.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let chunks =
            r.u.chunks_mut(per * tq * d)
                .zip(r.lse.chunks_mut(per * tq))
                .zip(r.dq.chunks_mut(per * tq * d))
                .zip(r.dh.chunks_mut(per * n_max * d));
        for (c, (((u, lse), dq), dh)) in chunks.enumerate() {
            s.spawn(move || {
                for (k, b) in (c * per..docs.min((c + 1) * per)).enumerate() {
                    let at = |v: &[f32], rows: usize| v[b * rows * d..(b + 1) * rows * d].to_vec();
                    let out = reference_doc(
                        &at(qhat, tq),
                        &at(h, n_max),
                        lens[b],
                        &at(du, tq),
                        tq,
                        d,
                        eps,
                    );
                    u[k * tq * d..(k + 1) * tq * d].copy_from_slice(&out.u);
                    lse[k * tq..(k + 1) * tq].copy_from_slice(&out.lse);
                    dq[k * tq * d..(k + 1) * tq * d].copy_from_slice(&out.dq);
                    let rows = out.dh.len();
                    dh[k * n_max * d..k * n_max * d + rows].copy_from_slice(&out.dh);
                }
            });
        }
    });
    r
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One document: `qhat`, `du` [tq, d], `h` [≥ len, d]; returns u, lse, dq and dH [len, d].
fn reference_doc(
    qhat: &[f32],
    h: &[f32],
    len: usize,
    du: &[f32],
    tq: usize,
    d: usize,
    eps: f32,
) -> Reference {
    let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let (q, g) = (f(qhat), f(du));
    let rinv: Vec<f64> = (0..len)
        .map(|j| {
            let row = &h[j * d..(j + 1) * d];
            let ms = row.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / d as f64;
            1.0 / (ms + f64::from(eps)).sqrt()
        })
        .collect();
    let y: Vec<f64> = (0..len * d)
        .map(|e| f64::from(h[e]) * rinv[e / d])
        .collect();
    let (qi, yj) = (
        |i: usize| &q[i * d..(i + 1) * d],
        |j: usize| &y[j * d..(j + 1) * d],
    );
    let mut out = Reference {
        u: vec![0.0; tq * d],
        lse: vec![f64::NEG_INFINITY; tq],
        dq: vec![0.0; tq * d],
        dh: vec![0.0; len * d],
    };
    let mut p = vec![0.0; tq * len];
    let mut ds = vec![0.0; tq * len];
    for i in 0..tq {
        let s: Vec<f64> = (0..len).map(|j| dot(qi(i), yj(j))).collect();
        if len == 0 {
            continue;
        }
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        out.lse[i] = lse;
        for j in 0..len {
            p[i * len + j] = (s[j] - lse).exp();
            for c in 0..d {
                out.u[i * d + c] += p[i * len + j] * y[j * d + c];
            }
        }
        let gi = &g[i * d..(i + 1) * d];
        let delta = dot(gi, &out.u[i * d..(i + 1) * d]);
        for j in 0..len {
            ds[i * len + j] = p[i * len + j] * (dot(gi, yj(j)) - delta);
            for c in 0..d {
                out.dq[i * d + c] += ds[i * len + j] * y[j * d + c];
            }
        }
    }
    for j in 0..len {
        let mut dy = vec![0.0; d];
        for i in 0..tq {
            for c in 0..d {
                dy[c] += p[i * len + j] * g[i * d + c] + ds[i * len + j] * q[i * d + c];
            }
        }
        let proj = dot(&dy, yj(j)) / d as f64;
        for c in 0..d {
            out.dh[j * d + c] = rinv[j] * (dy[c] - proj * y[j * d + c]);
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Values in `dt` and what the kernel reads back from them.
fn encode(dt: DType, v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    match dt {
        DType::F32 => (f32_bytes(v), v.to_vec()),
        DType::Bf16 => {
            let b: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
            (
                b.iter().flat_map(|x| x.to_le_bytes()).collect(),
                b.iter().map(|x| x.to_f32()).collect(),
            )
        }
    }
}

/// The buffers of one check, each followed by a poisoned guard zone.
struct Bufs<'e, E: Exec> {
    e: &'e E,
    bufs: Vec<(E::Buf, usize)>, // (buffer, payload bytes)
}

impl<'e, E: Exec> Bufs<'e, E> {
    fn add(&mut self, mut payload: Vec<u8>, elem: usize) -> Result<usize, CheckError> {
        let n = payload.len();
        payload.resize(n + GUARD * elem, POISON);
        self.bufs.push((self.e.upload(&payload)?, n));
        Ok(self.bufs.len() - 1)
    }
    fn ptr(&self, h: usize) -> u64 {
        self.e.ptr(&self.bufs[h].0)
    }
    /// f32 payload, plus a failure if the guard zone was written.
    fn read(&self, h: usize, what: &str, fails: &mut Vec<String>) -> Result<Vec<f32>, CheckError> {
        let (buf, n) = &self.bufs[h];
        let all = self.e.download(buf)?;
        if all[*n..].iter().any(|&b| b != POISON) {
            fails.push(format!("{what}: written past its end"));
        }
        Ok(all[..*n]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn run(&self, l: &Launch) -> Result<(), CheckError> {
        // SAFETY: every pointer in the launches built by `compress_attention` comes from `ptr`
        // of a live buffer of this set, sized for the `Dims` passed to the same builder.
        Ok(unsafe { self.e.launch(l) }?)
    }
    fn time(&self, l: &Launch) -> Result<Option<f64>, CheckError> {
        // SAFETY: as in `run`.
        Ok(unsafe { self.e.time(std::slice::from_ref(l)) }?)
    }
}

/// Compares under ATOL + RTOL·|ref|; equal values (−inf lse of an empty document) pass, NaN
/// fails. Returns max |got − ref| over the passing values.
fn compare(what: &str, got: &[f32], want: &[f64], fails: &mut Vec<String>) -> f64 {
    let got: Vec<f64> = got.iter().map(|&g| f64::from(g)).collect();
    compare_f64(what, &got, want, fails)
}

fn compare_f64(what: &str, got: &[f64], want: &[f64], fails: &mut Vec<String>) -> f64 {
    let mut max_err = 0.0f64;
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        let err = (g - w).abs();
        if err.is_nan() || err > ATOL + RTOL * w.abs() {
            if bad < 4 {
                fails.push(format!("{what}[{i}]: got {g}, want {w}"));
            }
            bad += 1;
        } else {
            max_err = max_err.max(err);
        }
    }
    if bad >= 4 {
        fails.push(format!("{what}: {bad} mismatches in all"));
    }
    if got.len() != want.len() {
        fails.push(format!("{what}: {} values, want {}", got.len(), want.len()));
    }
    max_err
}

/// Random inputs for a batch: qhat and du with entries of size ~1/sqrt(d), so that scores and
/// du·y spread over a few units (a peaked but not one-hot softmax; in the model both carry a
/// 1/sqrt(hd) or a projection), rows of H with rms between 0.25 and 4 (rinv matters), padding
/// NaN. Larger du·y would only measure f32 cancellation: with len = 1, ds = p·(du·y − δ) is
/// exactly 0 while both terms are of the size of Σ_c |du_c·y_c|.
pub struct Inputs {
    pub qhat: Vec<f32>,
    /// As the kernel reads it (rounded to `dt`), NaN on padding rows.
    pub h: Vec<f32>,
    pub du: Vec<f32>,
    /// Initial dH (accumulated into).
    pub dh0: Vec<f32>,
    h_bytes: Vec<u8>,
}

pub fn inputs(dt: DType, dims: Dims, lens: &[usize], seed: u64) -> Inputs {
    let Dims { docs, tq, n_max, d } = dims;
    let mut rng = Rng::new(seed);
    let a = 2.0 * (3.0 / d as f32).sqrt();
    let qhat = rng.vec(docs * tq * d, -a, a);
    let mut h = rng.vec(docs * n_max * d, -1.7, 1.7);
    let scales = rng.vec(docs * n_max, 0.25, 4.0);
    for (r, row) in h.chunks_mut(d).enumerate() {
        let (b, j) = (r / n_max, r % n_max);
        for x in row {
            *x = if j < lens[b] {
                *x * scales[r]
            } else {
                f32::NAN
            };
        }
    }
    let (h_bytes, h) = encode(dt, &h);
    Inputs {
        qhat,
        h,
        du: rng.vec(docs * tq * d, -a, a),
        dh0: rng.vec(docs * n_max * d, -1.0, 1.0),
        h_bytes,
    }
}

/// Forward and backward of one batch, each its own outcome. The backward reads the
/// reference's u and lse (rounded to f32), so it is checked on its own. With `with_dh`
/// false it runs with a null dH (only the dqhat blocks).
///
/// FLOPs per document of length `len`: forward 4·len·tq·d (scores, weighted sum); backward
/// 10·len·tq·d, the algorithmic count (scores, du·y, dqhat, and dy's two terms) — the kernel
/// itself recomputes scores and du·y in both of its block kinds, 14·len·tq·d. Bytes: each
/// tensor once (H's valid rows, dH read and written).
pub fn compress_attention<E: Exec>(
    e: &E,
    dt: DType,
    dims: Dims,
    lens: &[usize],
    with_dh: bool,
    seed: u64,
) -> Result<Vec<Measured>, CheckError> {
    let Dims { docs, tq, n_max, d } = dims;
    assert_eq!(lens.len(), docs, "one length per document");
    assert!(lens.iter().all(|&l| l <= n_max), "lengths within n_max");
    let x = inputs(dt, dims, lens, seed);
    let want = reference(&x.qhat, &x.h, lens, &x.du, dims, EPS);

    let mut b = Bufs {
        e,
        bufs: Vec::new(),
    };
    let qhat = b.add(f32_bytes(&x.qhat), 4)?;
    let h = b.add(x.h_bytes.clone(), dt.size())?;
    let lens_i32: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
    let lensb = b.add(lens_i32.iter().flat_map(|v| v.to_le_bytes()).collect(), 4)?;
    let u = b.add(vec![POISON; docs * tq * d * 4], 4)?;
    let lse = b.add(vec![POISON; docs * tq * 4], 4)?;
    let fwd = compress_attention_forward(
        dt,
        b.ptr(u),
        b.ptr(lse),
        b.ptr(qhat),
        b.ptr(h),
        b.ptr(lensb),
        dims,
        EPS,
    )?;
    b.run(&fwd)?;

    let shape = format!(
        "docs={docs} tq={tq} n={n_max} d={d}{}",
        if with_dh { "" } else { " no-dH" }
    );
    let tokens: usize = lens.iter().sum();
    let work = (tokens * tq * d) as f64;
    let mut fails = Vec::new();
    let mut err = compare("u", &b.read(u, "u", &mut fails)?, &want.u, &mut fails);
    err = err.max(compare(
        "lse",
        &b.read(lse, "lse", &mut fails)?,
        &want.lse,
        &mut fails,
    ));
    let act = tq * d * 4 * docs;
    let h_valid = tokens * d * dt.size();
    let forward = Measured {
        outcome: Outcome {
            kernel: format!("compress_attention_forward_{}", dt.suffix()),
            shape: shape.clone(),
            max_err: err,
            failures: fails,
            bytes: h_valid + 2 * act + 4 * tq * docs,
            time_ms: b.time(&fwd)?,
        },
        flops: 4.0 * work,
    };

    // Backward inputs: the reference's forward results as f32 (the kernel's own are checked
    // above), dH pre-filled.
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let uref = b.add(f32_bytes(&to32(&want.u)), 4)?;
    let lseref = b.add(f32_bytes(&to32(&want.lse)), 4)?;
    let du = b.add(f32_bytes(&x.du), 4)?;
    let dq = b.add(vec![POISON; docs * tq * d * 4], 4)?;
    let dh = b.add(f32_bytes(&x.dh0), 4)?;
    let bwd = compress_attention_backward(
        dt,
        b.ptr(dq),
        if with_dh { b.ptr(dh) } else { 0 },
        b.ptr(qhat),
        b.ptr(h),
        b.ptr(lensb),
        b.ptr(uref),
        b.ptr(lseref),
        b.ptr(du),
        dims,
        EPS,
    )?;
    b.run(&bwd)?;
    let mut fails = Vec::new();
    let mut err = compare(
        "dqhat",
        &b.read(dq, "dqhat", &mut fails)?,
        &want.dq,
        &mut fails,
    );
    // dH is compared as its increment over the initial values (so that the tolerance is
    // relative to the increment, not to dh0); rows ≥ len and the no-dH run must come back
    // bit-identical (their increment is exactly 0, which `compare` checks for equality).
    let dh_got: Vec<f64> = b
        .read(dh, "dH", &mut fails)?
        .iter()
        .zip(&x.dh0)
        .map(|(&g, &a)| f64::from(g) - f64::from(a))
        .collect();
    let zero = vec![0.0; want.dh.len()];
    let dh_want = if with_dh { &want.dh } else { &zero };
    err = err.max(compare_f64("dH increment", &dh_got, dh_want, &mut fails));
    let dh_bytes = if with_dh { 2 * tokens * d * 4 } else { 0 };
    let backward = Measured {
        outcome: Outcome {
            kernel: format!("compress_attention_backward_{}", dt.suffix()),
            shape,
            max_err: err,
            failures: fails,
            bytes: h_valid + 4 * act + dh_bytes + 4 * tq * docs,
            // Re-running accumulates into dH again; the check above came first.
            time_ms: b.time(&bwd)?,
        },
        flops: 10.0 * work,
    };
    Ok(vec![forward, backward])
}

/// Peaks assumed for "fraction of peak": H100 SXM5 (80 GB HBM3), FP32 without tensor cores.
pub const PEAK_GBS: f64 = 3350.0;
pub const PEAK_FP32_GFLOPS: f64 = 66_900.0;

/// The gpu-check set: SmolLM2-135M shapes (d = 576, T·heads = 16·9 = 144), 256 documents of
/// 256 tokens, and a long case of 2048 tokens; `quick`: fewer documents.
pub fn gpu_suite<E: Exec>(e: &E, quick: bool) -> Result<Vec<Measured>, CheckError> {
    let (d, tq) = (576, 144);
    let (docs, long_docs) = if quick { (16, 2) } else { (256, 32) };
    let mut out = Vec::new();
    for dt in DType::ALL {
        let short = Dims {
            docs,
            tq,
            n_max: 256,
            d,
        };
        out.extend(compress_attention(
            e,
            dt,
            short,
            &vec![256; docs],
            true,
            11,
        )?);
        let long = Dims {
            docs: long_docs,
            tq,
            n_max: 2048,
            d,
        };
        out.extend(compress_attention(
            e,
            dt,
            long,
            &vec![2048; long_docs],
            true,
            12,
        )?);
    }
    Ok(out)
}

/// Prints the gpu-check table of `gpu_suite`; returns the number of failed kernels.
pub fn print_report(outs: &[Measured]) -> usize {
    println!(
        "{:<34} {:<28} {:>9} {:>10} {:>7} {:>8} {:>6} {:>6}  status",
        "kernel", "shape", "max err", "time µs", "GB/s", "GFLOP/s", "%BW", "%FP32"
    );
    let mut failed = 0;
    for m in outs {
        let o = &m.outcome;
        let cols = match o.time_ms {
            Some(ms) => {
                let gbs = o.bytes as f64 / (ms * 1e-3) / 1e9;
                let gfs = m.flops / (ms * 1e-3) / 1e9;
                format!(
                    "{:>10.1} {:>7.0} {:>8.0} {:>5.1}% {:>5.1}%",
                    ms * 1e3,
                    gbs,
                    gfs,
                    100.0 * gbs / PEAK_GBS,
                    100.0 * gfs / PEAK_FP32_GFLOPS
                )
            }
            None => format!("{:>10} {:>7} {:>8} {:>6} {:>6}", "-", "-", "-", "-", "-"),
        };
        failed += usize::from(!o.passed());
        let status = o.status();
        println!(
            "{:<34} {:<28} {:>9.2e} {cols}  {status}",
            o.kernel, o.shape, o.max_err
        );
    }
    println!(
        "compress_attention: peaks assumed H100 SXM5 {PEAK_GBS:.0} GB/s HBM3, {:.1} TFLOP/s FP32 \
         (no tensor cores); FLOPs forward 4·n·TQ·d, backward 10·n·TQ·d per document.",
        PEAK_FP32_GFLOPS / 1e3
    );
    failed
}
