//! kernels/topk_aggregate.cu (scan → candidates, combine → top-k, weights, aggregate) against
//! the CPU brute force `cmt_memory::topk::slow::search_slow`: ids and scores exactly (both
//! sides fold q·k with f32 fused multiply-adds in dimension order), weights and the
//! aggregated memory within the f32 tolerance; slots past the selected entries must be
//! row −1 / 0 / 0, and no buffer may be written past its end.
use super::{compare, Bufs, Outcome, Rng};
use crate::exec::{CheckError, Exec};
use cmt_memory::topk::launch::{self as geo, ScanSplit};
use cmt_memory::topk::slow::search_slow;
use cmt_memory::{MemView, MemorySource};
use cmt_runtime::cuda::DType;
use half::bf16;

/// One random bank and batch of questions.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Rows (live or deleted).
    pub n: usize,
    pub r: usize,
    pub nq: usize,
    pub k: usize,
    /// Values per memory (T·D).
    pub td: usize,
    pub key_dt: DType,
    pub mem_dt: DType,
    /// Each row is deleted with this probability (1.0: an all-deleted bank).
    pub deleted: f64,
    /// Keys and questions drawn from a few small integers, so many scores tie exactly.
    pub ties: bool,
    /// Tiles per scan block (None: the production split).
    pub tiles_per_block: Option<usize>,
    pub seed: u64,
}

/// Memories of the reference, by id: row-major, `td` values per row, in the kernel's dtype.
struct Mems<'a> {
    ids: &'a [u64],
    td: usize,
    f32s: Vec<f32>,
    bf16s: Vec<bf16>,
}

impl Mems<'_> {
    fn bytes(&self) -> Vec<u8> {
        if self.bf16s.is_empty() {
            bytemuck::cast_slice(&self.f32s).to_vec()
        } else {
            bytemuck::cast_slice(&self.bf16s).to_vec()
        }
    }
}

/// Memories of `n` rows: row i is a window of one random pool at a row-dependent offset, so
/// rows differ (a wrong row shows in the aggregate) while a 1M-row bank of T·D = 9216 is
/// built by copies rather than 10^10 random draws.
fn memories<'a>(rng: &mut Rng, ids: &'a [u64], td: usize, dt: DType) -> Mems<'a> {
    let n = ids.len();
    let pool = rng.vec((4 * td).max(1 << 16), -2.0, 2.0);
    let span = pool.len() - td + 1;
    let offs = (0..n).map(|i| (i * 7919) % span);
    let mut m = Mems {
        ids,
        td,
        f32s: Vec::new(),
        bf16s: Vec::new(),
    };
    match dt {
        DType::F32 => {
            m.f32s.reserve_exact(n * td);
            offs.for_each(|o| m.f32s.extend_from_slice(&pool[o..o + td]));
        }
        DType::Bf16 => {
            let pool: Vec<bf16> = pool.iter().map(|&x| bf16::from_f32(x)).collect();
            m.bf16s.reserve_exact(n * td);
            offs.for_each(|o| m.bf16s.extend_from_slice(&pool[o..o + td]));
        }
    }
    m
}

impl MemorySource for Mems<'_> {
    fn memory_len(&self) -> usize {
        self.td
    }
    fn memory(&self, id: u64) -> cmt_memory::Result<MemView<'_>> {
        let row = self
            .ids
            .binary_search(&id)
            .map_err(|_| cmt_memory::Error::Invalid(format!("no id {id}")))?;
        let span = row * self.td..(row + 1) * self.td;
        Ok(if self.bf16s.is_empty() {
            MemView::F32(&self.f32s[span])
        } else {
            MemView::Bf16(&self.bf16s[span])
        })
    }
}

/// Raw bytes of buffer `h`, plus a failure if its guard zone was written.
fn read_raw<E: Exec>(
    b: &Bufs<'_, E>,
    h: usize,
    fails: &mut Vec<String>,
) -> Result<Vec<u8>, CheckError> {
    let (buf, n, _) = &b.bufs[h];
    let all = b.e.download(buf)?;
    if all[*n..].iter().any(|&x| x != super::POISON) {
        fails.push(format!("buffer {h}: written past its end"));
    }
    Ok(all[..*n].to_vec())
}

fn words(b: &[u8]) -> impl Iterator<Item = [u8; 4]> + '_ {
    b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]])
}

/// Scan and combine outcomes (the scan's output is only checked for its guard; the combine's
/// outcome carries every comparison).
pub fn topk_aggregate<E: Exec>(e: &E, s: &Spec) -> Result<Vec<Outcome>, CheckError> {
    let mut rng = Rng::new(s.seed);
    let (n, r, nq, k, td) = (s.n, s.r, s.nq, s.k, s.td);
    let draw = |rng: &mut Rng, len: usize| -> Vec<f32> {
        if s.ties {
            (0..len).map(|_| rng.below(5) as f32 - 2.0).collect()
        } else {
            rng.vec(len, -1.0, 1.0)
        }
    };
    let keys = draw(&mut rng, n * r);
    let queries = draw(&mut rng, nq * r);
    let mut ids = Vec::with_capacity(n);
    let mut id = 0u64;
    for _ in 0..n {
        id += 1 + rng.below(3) as u64;
        ids.push(id);
    }
    let live: Vec<bool> = (0..n)
        .map(|_| (rng.below(1 << 20) as f64) >= s.deleted * f64::from(1u32 << 20))
        .collect();
    let tau = 0.05 + rng.vec(1, 0.0, 2.0)[0];
    let ld = n + rng.below(4);

    let mut b = Bufs::new(e);
    // Column-major keys; the padding columns [n, ld) are poison the kernel must never read.
    let mut colmajor = vec![f32::NAN; r * ld];
    for i in 0..n {
        for j in 0..r {
            colmajor[j * ld + i] = keys[i * r + j];
        }
    }
    let (kb, seen) = b.input(s.key_dt, &colmajor)?;
    let keys_seen: Vec<f32> = (0..n * r).map(|x| seen[(x % r) * ld + x / r]).collect();
    let mut live_words = vec![0i32; n.div_ceil(32)];
    for (i, _) in live.iter().enumerate().filter(|(_, &l)| l) {
        live_words[i / 32] |= 1 << (i % 32);
    }
    let lb = b.ints(&live_words)?;
    let (qb, _) = b.input(DType::F32, &queries)?;
    let mems = memories(&mut rng, &ids, td, s.mem_dt);
    let mb = b.raw(mems.bytes(), s.mem_dt.size())?;
    let split = s
        .tiles_per_block
        .map_or_else(|| ScanSplit::new(n), |t| ScanSplit::with_tiles(n, t));
    let ncand = split.candidates(k);
    let (cs, cr) = (
        b.output(DType::F32, nq * ncand)?,
        b.output(DType::F32, nq * ncand)?,
    );
    let scan = geo::scan_split(
        s.key_dt,
        b.ptr(cs),
        b.ptr(cr),
        b.ptr(kb),
        ld,
        b.ptr(lb),
        n,
        b.ptr(qb),
        nq,
        r,
        k,
        split,
    )?;
    let (orows, oscores) = (b.output(DType::F32, nq * k)?, b.output(DType::F32, nq * k)?);
    let (ow, oa) = (
        b.output(DType::F32, nq * k)?,
        b.output(DType::F32, nq * td)?,
    );
    let comb = geo::combine(
        s.mem_dt,
        b.ptr(orows),
        b.ptr(oscores),
        b.ptr(ow),
        b.ptr(oa),
        b.ptr(cs),
        b.ptr(cr),
        ncand,
        nq,
        k,
        tau,
        b.ptr(mb),
        td,
    )?;
    b.run(&scan)?;
    b.run(&comb)?;

    let mut scan_fails = Vec::new();
    read_raw(&b, cs, &mut scan_fails)?;
    read_raw(&b, cr, &mut scan_fails)?;
    let mut fails = Vec::new();
    let rows: Vec<i32> = words(&read_raw(&b, orows, &mut fails)?)
        .map(i32::from_le_bytes)
        .collect();
    let scores: Vec<f32> = words(&read_raw(&b, oscores, &mut fails)?)
        .map(f32::from_le_bytes)
        .collect();
    let weights = b.read(ow, DType::F32, &mut fails)?;
    let agg = b.read(oa, DType::F32, &mut fails)?;

    let mut err = 0.0;
    match search_slow(&keys_seen, r, &ids, &live, &queries, k, tau, &mems) {
        Ok(want) => {
            for (q, w) in want.iter().enumerate() {
                let got_ids: Vec<Option<u64>> = rows[q * k..(q + 1) * k]
                    .iter()
                    .map(|&row| {
                        usize::try_from(row)
                            .ok()
                            .and_then(|row| ids.get(row).copied())
                    })
                    .collect();
                let want_ids: Vec<Option<u64>> = (0..k).map(|i| w.ids.get(i).copied()).collect();
                if got_ids != want_ids && fails.len() < 5 {
                    fails.push(format!("question {q}: ids {got_ids:?}, want {want_ids:?}"));
                }
                let pad = |v: &[f32]| -> Vec<f32> {
                    (0..k).map(|i| v.get(i).copied().unwrap_or(0.0)).collect()
                };
                let got_s = &scores[q * k..(q + 1) * k];
                if got_s != pad(&w.scores).as_slice() && fails.len() < 5 {
                    fails.push(format!(
                        "question {q}: scores {got_s:?}, want {:?}",
                        w.scores
                    ));
                }
                compare(
                    &format!("weights[q{q}]"),
                    DType::F32,
                    &weights[q * k..(q + 1) * k],
                    &pad(&w.weights),
                    &mut err,
                    &mut fails,
                );
                compare(
                    &format!("aggregate[q{q}]"),
                    DType::F32,
                    &agg[q * td..(q + 1) * td],
                    &w.aggregate,
                    &mut err,
                    &mut fails,
                );
            }
        }
        Err(cmt_memory::Error::Empty { .. }) => {
            // Nothing live: every slot empty, A = 0.
            if rows.iter().any(|&r| r != -1)
                || scores.iter().chain(&weights).chain(&agg).any(|&x| x != 0.0)
            {
                fails.push("empty bank: outputs are not all empty / zero".into());
            }
        }
        Err(e) => return Err(CheckError::Emu(format!("reference: {e}"))),
    }
    let shape = format!(
        "n={n} r={r} nq={nq} k={k} td={td} keys={} mem={}",
        s.key_dt.suffix(),
        s.mem_dt.suffix()
    );
    // Minimum bytes: every key once per group of 32 questions, the live bits, the questions,
    // the candidates written; the combine reads the candidates and k memories per question.
    let groups = nq.div_ceil(geo::QUESTIONS_PER_BLOCK);
    let scan_bytes = groups * n * r * s.key_dt.size() + n / 8 + nq * r * 4 + nq * ncand * 8;
    let comb_bytes = nq * (ncand * 8 + k * td * s.mem_dt.size() + k * 12 + td * 4);
    let time = |l: &cmt_runtime::cuda::Launch| -> Result<Option<f64>, CheckError> {
        // SAFETY: the launch only holds pointers into this case's live buffers.
        Ok(unsafe { e.time(std::slice::from_ref(l)) }?)
    };
    Ok(vec![
        Outcome {
            kernel: format!("topk_scan_{}", s.key_dt.suffix()),
            shape: shape.clone(),
            max_err: 0.0,
            failures: scan_fails,
            bytes: scan_bytes,
            time_ms: time(&scan)?,
        },
        Outcome {
            kernel: format!("topk_combine_{}", s.mem_dt.suffix()),
            shape,
            max_err: err,
            failures: fails,
            bytes: comb_bytes,
            time_ms: time(&comb)?,
        },
    ])
}

/// HBM bandwidth the report divides by: H100 SXM5 (HBM3), the GPU DESIGN §3 names.
pub const HBM_PEAK_GBS: f64 = 3350.0;

/// The bank search as `ask` runs it (DESIGN §1 steps 5–6, §6): r = 128 keys in f32 and bf16,
/// 1 and 32 questions, k = 16, memories T·D = 16·576 in bf16, 1% of the rows deleted, over
/// 1,000,000 rows (`quick`: 65,536). Every case is also checked against the brute force.
pub fn gpu_suite<E: Exec>(e: &E, quick: bool) -> Result<Vec<Outcome>, CheckError> {
    let n = if quick { 1 << 16 } else { 1_000_000 };
    gpu_suite_n(e, n)
}

/// [`gpu_suite`] over `n` rows (the emulated test runs it on a small bank).
pub fn gpu_suite_n<E: Exec>(e: &E, n: usize) -> Result<Vec<Outcome>, CheckError> {
    let mut v = Vec::new();
    for (i, key_dt) in DType::ALL.into_iter().enumerate() {
        for nq in [1, 32] {
            let s = Spec {
                n,
                r: 128,
                nq,
                k: 16,
                td: 16 * 576,
                key_dt,
                mem_dt: DType::Bf16,
                deleted: 0.01,
                ties: false,
                tiles_per_block: None,
                seed: 100 + i as u64 * 10 + nq as u64,
            };
            v.extend(topk_aggregate(e, &s)?);
        }
    }
    Ok(v)
}

/// Prints one line per outcome (achieved GB/s over the minimum bytes, fraction of
/// [`HBM_PEAK_GBS`]) and the scan + combine total per search; returns the failed count.
pub fn print_report(outs: &[Outcome]) -> usize {
    println!(
        "{:<20} {:<52} {:>9} {:>10} {:>7} {:>6}  status",
        "kernel", "shape", "max err", "time µs", "GB/s", "%HBM"
    );
    let mut failed = 0;
    let cols = |bytes: usize, ms: Option<f64>| match ms {
        Some(ms) => {
            let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
            format!(
                "{:>10.1} {:>7.0} {:>5.1}%",
                ms * 1e3,
                gbs,
                100.0 * gbs / HBM_PEAK_GBS
            )
        }
        None => format!("{:>10} {:>7} {:>6}", "-", "-", "-"),
    };
    for o in outs {
        failed += usize::from(!o.passed());
        let status = o.status();
        let c = cols(o.bytes, o.time_ms);
        println!(
            "{:<20} {:<52} {:>9.2e} {c}  {status}",
            o.kernel, o.shape, o.max_err
        );
    }
    // Outcomes come in (scan, combine) pairs of one search.
    for p in outs.chunks_exact(2) {
        let ms = p[0].time_ms.zip(p[1].time_ms).map(|(a, b)| a + b);
        let c = cols(p[0].bytes + p[1].bytes, ms);
        println!("{:<20} {:<52} {:>9} {c}", "  search total", p[0].shape, "");
    }
    println!(
        "topk_aggregate: GB/s over the minimum bytes (keys once per 32 questions, live bits, \
         questions, candidates; k memories per question); %HBM of an assumed H100 SXM5 peak \
         of {HBM_PEAK_GBS:.0} GB/s."
    );
    failed
}
