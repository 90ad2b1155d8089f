//! One check per kernel family: random inputs, poisoned outputs with a guard zone past the
//! end, launch through `cmt_runtime::cuda::launch`, compare with `cuda::reference` under
//! |got − ref| ≤ atol + rtol·|ref| (NaN fails), and verify no guard was overwritten.
use crate::exec::{CheckError, Exec};
use cmt_runtime::backend::{CpuBackend, RopeTable};
use cmt_runtime::cuda::{launch, reference, DType, Launch};

pub mod topk;
pub mod transformer;

/// Elements past every buffer's end that must stay poisoned.
const GUARD: usize = 16;
/// All-ones bytes: NaN both as f32 and as bf16.
const POISON: u8 = 0xff;

/// The result of one kernel check.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kernel: String,
    pub shape: String,
    /// max |got − ref| over every output of the kernel.
    pub max_err: f64,
    /// Mismatches (first few), guard overwrites; empty when the kernel passed.
    pub failures: Vec<String>,
    /// Bytes the kernel must read + write at least (for GB/s).
    pub bytes: usize,
    /// Mean milliseconds per run, when the executor times (a GPU).
    pub time_ms: Option<f64>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// `Err("<kernel> <shape>: <failures>")` when the kernel failed.
    pub fn check(&self) -> Result<(), String> {
        if self.passed() {
            Ok(())
        } else {
            Err(format!(
                "{} {}: {:?}",
                self.kernel, self.shape, self.failures
            ))
        }
    }

    /// The status column of a report: `ok` or `FAIL [failures]`.
    pub fn status(&self) -> String {
        if self.passed() {
            "ok".to_string()
        } else {
            format!("FAIL {:?}", self.failures)
        }
    }
}

/// SplitMix64: tiny, deterministic, no dependency.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tolerance(dt: DType) -> (f64, f64) {
    match dt {
        // FMA contraction and the GPU's expf differ from the host in the last bits.
        DType::F32 => (1e-5, 1e-4),
        // One rounding of the f32 result to 8 mantissa bits, plus f32 noise around it.
        DType::Bf16 => (1e-5, 1.0 / 128.0),
    }
}

fn encode(dt: DType, v: &[f32]) -> Vec<u8> {
    match dt {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::Bf16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

fn decode(dt: DType, b: &[u8]) -> Vec<f32> {
    match dt {
        DType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::Bf16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// Buffers of one check, each with a poisoned guard zone.
struct Bufs<'e, E: Exec> {
    e: &'e E,
    bufs: Vec<(E::Buf, usize, usize)>, // (buffer, payload bytes, element size)
    bytes: usize,
}

impl<'e, E: Exec> Bufs<'e, E> {
    fn new(e: &'e E) -> Self {
        Bufs {
            e,
            bufs: Vec::new(),
            bytes: 0,
        }
    }
    pub(crate) fn raw(&mut self, mut payload: Vec<u8>, elem: usize) -> Result<usize, CheckError> {
        let n = payload.len();
        self.bytes += n;
        payload.resize(n + GUARD * elem, POISON);
        self.bufs.push((self.e.upload(&payload)?, n, elem));
        Ok(self.bufs.len() - 1)
    }
    /// Uploads `v` in `dt`; returns the handle and the values as the kernel sees them.
    fn input(&mut self, dt: DType, v: &[f32]) -> Result<(usize, Vec<f32>), CheckError> {
        let bytes = encode(dt, v);
        let seen = decode(dt, &bytes);
        Ok((self.raw(bytes, dt.size())?, seen))
    }
    fn ints(&mut self, v: &[i32]) -> Result<usize, CheckError> {
        self.raw(v.iter().flat_map(|x| x.to_le_bytes()).collect(), 4)
    }
    fn output(&mut self, dt: DType, n: usize) -> Result<usize, CheckError> {
        self.raw(vec![POISON; n * dt.size()], dt.size())
    }
    fn ptr(&self, h: usize) -> u64 {
        self.e.ptr(&self.bufs[h].0)
    }
    /// Payload values, plus a failure if the guard zone was written.
    fn read(&self, h: usize, dt: DType, fails: &mut Vec<String>) -> Result<Vec<f32>, CheckError> {
        let (buf, n, _) = &self.bufs[h];
        let all = self.e.download(buf)?;
        if all[*n..].iter().any(|&b| b != POISON) {
            fails.push(format!("buffer {h}: written past its end"));
        }
        Ok(decode(dt, &all[..*n]))
    }
    /// Builds the outcome while the buffers are alive, timing the launches if the executor
    /// can (re-running them on the same buffers; in-place kernels keep mutating their data).
    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &self,
        kernel: &str,
        dt: DType,
        shape: String,
        max_err: f64,
        failures: Vec<String>,
        bytes: usize,
        launches: Vec<Launch>,
    ) -> Result<Outcome, CheckError> {
        // SAFETY: as in `run`: the launches only hold pointers into this set's buffers.
        let time_ms = unsafe { self.e.time(&launches) }?;
        Ok(Outcome {
            kernel: format!("{kernel}_{}", dt.suffix()),
            shape,
            max_err,
            failures,
            bytes,
            time_ms,
        })
    }
    fn run(&self, l: &Launch) -> Result<(), CheckError> {
        // SAFETY: every pointer in the launches built below comes from `ptr` of a buffer of
        // this set, sized for the shapes passed to the same launch builder.
        Ok(unsafe { self.e.launch(l) }?)
    }
}

fn compare(
    what: &str,
    dt: DType,
    got: &[f32],
    want: &[f32],
    max_err: &mut f64,
    fails: &mut Vec<String>,
) {
    let (atol, rtol) = tolerance(dt);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - f64::from(w)).abs();
        if err.is_nan() || err > atol + rtol * f64::from(w).abs() {
            if fails.len() < 5 {
                fails.push(format!("{what}[{i}]: got {g}, want {w}"));
            }
        } else {
            *max_err = max_err.max(err);
        }
    }
    if got.len() != want.len() {
        fails.push(format!("{what}: {} values, want {}", got.len(), want.len()));
    }
}

pub fn embedding<E: Exec>(
    e: &E,
    dt: DType,
    n: usize,
    d: usize,
    vocab: usize,
    seed: u64,
) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let (table, tv) = b.input(dt, &rng.vec(vocab * d, -2.0, 2.0))?;
    let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
    let idb = b.ints(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>())?;
    let out = b.output(dt, n * d)?;
    let l = launch::embedding_forward(dt, b.ptr(out), b.ptr(table), b.ptr(idb), n, d, vocab)?;
    b.run(&l)?;
    let (mut err, mut fails) = (0.0, Vec::new());
    let got = b.read(out, dt, &mut fails)?;
    compare(
        "out",
        dt,
        &got,
        &reference::embedding_forward(&tv, &ids, d)?,
        &mut err,
        &mut fails,
    );
    let bytes = 2 * n * d * dt.size() + n * 4;
    b.outcome(
        "embedding_forward",
        dt,
        format!("n={n} d={d} V={vocab}"),
        err,
        fails,
        bytes,
        vec![l],
    )
}

/// Forward, backward (dx) and weight gradient, each its own outcome.
pub fn rmsnorm<E: Exec>(
    e: &E,
    dt: DType,
    rows: usize,
    d: usize,
    seed: u64,
) -> Result<Vec<Outcome>, CheckError> {
    let mut rng = Rng::new(seed);
    let eps = 1e-5;
    let mut b = Bufs::new(e);
    let (x, xv) = b.input(dt, &rng.vec(rows * d, -2.0, 2.0))?;
    let (w, wv) = b.input(dt, &rng.vec(d, 0.5, 1.5))?;
    let (dy, dyv) = b.input(dt, &rng.vec(rows * d, -1.0, 1.0))?;
    let (y, rstd) = (b.output(dt, rows * d)?, b.output(DType::F32, rows)?);
    let (dx, dw) = (b.output(dt, rows * d)?, b.output(DType::F32, d)?);
    let shape = format!("rows={rows} d={d}");
    let fwd = launch::rmsnorm_forward(dt, b.ptr(y), b.ptr(rstd), b.ptr(x), b.ptr(w), rows, d, eps)?;
    let bwd = launch::rmsnorm_backward(
        dt,
        b.ptr(dx),
        b.ptr(dy),
        b.ptr(x),
        b.ptr(w),
        b.ptr(rstd),
        rows,
        d,
    )?;
    let bww = launch::rmsnorm_backward_weight(
        dt,
        b.ptr(dw),
        b.ptr(dy),
        b.ptr(x),
        b.ptr(rstd),
        rows,
        d,
        false,
    )?;
    for l in [&fwd, &bwd, &bww] {
        b.run(l)?;
    }
    let (ry, rr) = reference::rmsnorm_forward(&xv, &wv, rows, eps)?;
    let (rdx, rdw) = reference::rmsnorm_backward(&dyv, &xv, &wv, rows, eps);
    let (mut out, mut err, mut fails) = (Vec::new(), 0.0, Vec::new());
    compare(
        "y",
        dt,
        &b.read(y, dt, &mut fails)?,
        &ry,
        &mut err,
        &mut fails,
    );
    compare(
        "rstd",
        DType::F32,
        &b.read(rstd, DType::F32, &mut fails)?,
        &rr,
        &mut err,
        &mut fails,
    );
    let (act, f32s) = (rows * d * dt.size(), 4 * rows);
    out.push(b.outcome(
        "rmsnorm_forward",
        dt,
        shape.clone(),
        err,
        std::mem::take(&mut fails),
        2 * act + f32s,
        vec![fwd],
    )?);
    err = 0.0;
    compare(
        "dx",
        dt,
        &b.read(dx, dt, &mut fails)?,
        &rdx,
        &mut err,
        &mut fails,
    );
    out.push(b.outcome(
        "rmsnorm_backward",
        dt,
        shape.clone(),
        err,
        std::mem::take(&mut fails),
        3 * act + f32s,
        vec![bwd],
    )?);
    err = 0.0;
    compare(
        "dw",
        DType::F32,
        &b.read(dw, DType::F32, &mut fails)?,
        &rdw,
        &mut err,
        &mut fails,
    );
    out.push(b.outcome(
        "rmsnorm_backward_weight",
        dt,
        shape,
        err,
        fails,
        2 * act + f32s + 4 * d,
        vec![bww],
    )?);
    Ok(out)
}

/// Forward and backward, in place; positions are random within the table.
pub fn rope<E: Exec>(
    e: &E,
    dt: DType,
    rows: usize,
    heads: usize,
    hd: usize,
    backward: bool,
    seed: u64,
) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let max_pos = 64;
    let table = RopeTable::new(&CpuBackend, hd, 10_000.0, max_pos)?;
    let pos: Vec<u32> = (0..rows).map(|_| rng.below(max_pos) as u32).collect();
    let mut b = Bufs::new(e);
    let (x, mut want) = b.input(dt, &rng.vec(rows * heads * hd, -2.0, 2.0))?;
    let pb = b.ints(&pos.iter().map(|&p| p as i32).collect::<Vec<_>>())?;
    let (cos, _) = b.input(DType::F32, &table.cos)?;
    let (sin, _) = b.input(DType::F32, &table.sin)?;
    let l = launch::rope(
        dt,
        backward,
        b.ptr(x),
        b.ptr(pb),
        b.ptr(cos),
        b.ptr(sin),
        rows,
        heads,
        hd,
        max_pos,
    )?;
    b.run(&l)?;
    if backward {
        reference::rope_backward(&mut want, &pos, heads, hd, &table);
    } else {
        reference::rope_forward(&mut want, &pos, heads, hd, &table)?;
    }
    let (mut err, mut fails) = (0.0, Vec::new());
    compare(
        "x",
        dt,
        &b.read(x, dt, &mut fails)?,
        &want,
        &mut err,
        &mut fails,
    );
    let name = if backward {
        "rope_backward"
    } else {
        "rope_forward"
    };
    let bytes = 2 * rows * heads * hd * dt.size() + 4 * rows + 4 * rows * hd;
    b.outcome(
        name,
        dt,
        format!("rows={rows} heads={heads} hd={hd}"),
        err,
        fails,
        bytes,
        vec![l],
    )
}

pub fn swiglu<E: Exec>(e: &E, dt: DType, n: usize, seed: u64) -> Result<Vec<Outcome>, CheckError> {
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let (g, gv) = b.input(dt, &rng.vec(n, -6.0, 6.0))?;
    let (u, uv) = b.input(dt, &rng.vec(n, -2.0, 2.0))?;
    let (dout, dv) = b.input(dt, &rng.vec(n, -1.0, 1.0))?;
    let (out, dg, du) = (b.output(dt, n)?, b.output(dt, n)?, b.output(dt, n)?);
    let fwd = launch::swiglu_forward(dt, b.ptr(out), b.ptr(g), b.ptr(u), n)?;
    let bwd =
        launch::swiglu_backward(dt, b.ptr(dg), b.ptr(du), b.ptr(dout), b.ptr(g), b.ptr(u), n)?;
    b.run(&fwd)?;
    b.run(&bwd)?;
    let (mut err, mut fails) = (0.0, Vec::new());
    compare(
        "out",
        dt,
        &b.read(out, dt, &mut fails)?,
        &reference::swiglu_forward(&gv, &uv)?,
        &mut err,
        &mut fails,
    );
    let first = b.outcome(
        "swiglu_forward",
        dt,
        format!("n={n}"),
        err,
        std::mem::take(&mut fails),
        3 * n * dt.size(),
        vec![fwd],
    )?;
    let (rdg, rdu) = reference::swiglu_backward(&dv, &gv, &uv);
    err = 0.0;
    compare(
        "dgate",
        dt,
        &b.read(dg, dt, &mut fails)?,
        &rdg,
        &mut err,
        &mut fails,
    );
    compare(
        "dup",
        dt,
        &b.read(du, dt, &mut fails)?,
        &rdu,
        &mut err,
        &mut fails,
    );
    Ok(vec![
        first,
        b.outcome(
            "swiglu_backward",
            dt,
            format!("n={n}"),
            err,
            fails,
            5 * n * dt.size(),
            vec![bwd],
        )?,
    ])
}

pub fn residual<E: Exec>(e: &E, dt: DType, n: usize, seed: u64) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let (a, av) = b.input(dt, &rng.vec(n, -2.0, 2.0))?;
    let (c, cv) = b.input(dt, &rng.vec(n, -2.0, 2.0))?;
    let out = b.output(dt, n)?;
    let l = launch::residual_forward(dt, b.ptr(out), b.ptr(a), b.ptr(c), n)?;
    b.run(&l)?;
    let (mut err, mut fails) = (0.0, Vec::new());
    compare(
        "out",
        dt,
        &b.read(out, dt, &mut fails)?,
        &reference::residual_forward(&av, &cv)?,
        &mut err,
        &mut fails,
    );
    b.outcome(
        "residual_forward",
        dt,
        format!("n={n}"),
        err,
        fails,
        3 * n * dt.size(),
        vec![l],
    )
}

/// Loss and dlogits in one launch; about one row in five is ignored (target −1).
pub fn cross_entropy<E: Exec>(
    e: &E,
    dt: DType,
    rows: usize,
    vocab: usize,
    seed: u64,
) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let dscale = 1.0 / rows.max(1) as f32;
    let targets: Vec<i32> = (0..rows)
        .map(|_| {
            if rng.below(5) == 0 {
                -1
            } else {
                rng.below(vocab) as i32
            }
        })
        .collect();
    let mut b = Bufs::new(e);
    let (logits, lv) = b.input(dt, &rng.vec(rows * vocab, -8.0, 8.0))?;
    let tb = b.ints(&targets)?;
    let (losses, dl) = (b.output(DType::F32, rows)?, b.output(dt, rows * vocab)?);
    let l = launch::cross_entropy_fused(
        dt,
        b.ptr(losses),
        b.ptr(dl),
        b.ptr(logits),
        b.ptr(tb),
        rows,
        vocab,
        dscale,
    )?;
    b.run(&l)?;
    let (rl, rdl) = reference::cross_entropy(&lv, &targets, vocab, dscale);
    let (mut err, mut fails) = (0.0, Vec::new());
    compare(
        "loss",
        DType::F32,
        &b.read(losses, DType::F32, &mut fails)?,
        &rl,
        &mut err,
        &mut fails,
    );
    compare(
        "dlogits",
        dt,
        &b.read(dl, dt, &mut fails)?,
        &rdl,
        &mut err,
        &mut fails,
    );
    let bytes = 2 * rows * vocab * dt.size() + 8 * rows;
    b.outcome(
        "cross_entropy_fused",
        dt,
        format!("rows={rows} V={vocab}"),
        err,
        fails,
        bytes,
        vec![l],
    )
}
