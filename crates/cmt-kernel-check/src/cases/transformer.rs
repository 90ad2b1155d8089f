//! Checks of kernels/matmul.cu and kernels/attention.cu. Matmul against a plain f64 loop;
//! kv_write and attention against the CPU backend's ops (themselves checked against HF's
//! golden fixtures), on the values as the kernel sees them (bf16 caches/weights rounded).
//! Outputs are f32, so the bounds are f32 ones:
//! - matmul: |got − ref| ≤ 1e-5 + 1e-5·Σ_j |x_j·w_j| (f32 accumulation in another order: the
//!   error of a sum grows with the sum of magnitudes, not with the result, which can cancel);
//! - attention: the f32 bound of the other kernels (atol 1e-5, rtol 1e-4) on out.
use super::{compare, Bufs, Outcome, Rng};
use crate::exec::{CheckError, Exec};
use cmt_runtime::backend::{AttnShape, Backend, CpuBackend, SeqSpan};
use cmt_runtime::cuda::launch::transformer::{
    self, attention_part_len, AttnDims, MatmulKernel, RowTables, WeightType,
};
use cmt_runtime::cuda::DType;
use cmt_runtime::quant::{QType, QuantMatrix};

/// Random GGUF blocks of `ty` (random quant bytes, small finite f16 scale and minimum) and
/// the f32 values the CPU dequantises them to.
pub fn random_blocks(ty: QType, rows: usize, cols: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
    let (bb, be) = (ty.block_bytes(), ty.block_elems());
    let mut data = Vec::with_capacity(rows * cols / be * bb);
    for _ in 0..rows * cols / be {
        let mut b: Vec<u8> = (0..bb).map(|_| rng.below(256) as u8).collect();
        let scale = rng.vec(2, -1.0, 1.0);
        b[..2].copy_from_slice(&half::f16::from_f32(0.05 * scale[0]).to_le_bytes());
        if ty == QType::Q4_1 {
            b[2..4].copy_from_slice(&half::f16::from_f32(0.2 * scale[1]).to_le_bytes());
        }
        data.extend(b);
    }
    let q = QuantMatrix::new(ty, rows, cols, data.clone()).expect("whole blocks");
    let mut values = vec![0.0; rows * cols];
    q.dequantize_rows(0, rows, &mut values);
    (data, values)
}

fn qtype(wt: WeightType) -> Option<QType> {
    match wt {
        WeightType::Q8_0 => Some(QType::Q8_0),
        WeightType::Q4_0 => Some(QType::Q4_0),
        WeightType::Q4_1 => Some(QType::Q4_1),
        WeightType::F32 | WeightType::Bf16 => None,
    }
}

/// The weight type of a dense storage type.
pub fn dense(dt: DType) -> WeightType {
    match dt {
        DType::F32 => WeightType::F32,
        DType::Bf16 => WeightType::Bf16,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn matmul<E: Exec>(
    e: &E,
    wt: WeightType,
    kernel: MatmulKernel,
    m: usize,
    n: usize,
    k: usize,
    with_bias: bool,
    seed: u64,
) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let (x, mut xv) = b.input(DType::F32, &rng.vec(m * k, -1.0, 1.0))?;
    if kernel == MatmulKernel::TensorCore {
        // The tensor cores multiply x rounded to bf16 (round to nearest even, as
        // __float2bfloat16 does).
        for v in &mut xv {
            *v = half::bf16::from_f32(*v).to_f32();
        }
    }
    let (w, wv) = match (wt, qtype(wt)) {
        (WeightType::F32, _) => b.input(DType::F32, &rng.vec(n * k, -1.0, 1.0))?,
        (WeightType::Bf16, _) => b.input(DType::Bf16, &rng.vec(n * k, -1.0, 1.0))?,
        (_, Some(ty)) => {
            let (bytes, values) = random_blocks(ty, n, k, &mut rng);
            (b.raw(bytes, 1)?, values)
        }
        (_, None) => unreachable!("every block type has a QType"),
    };
    let bias = with_bias.then(|| rng.vec(n, -1.0, 1.0));
    let bias_h = match &bias {
        Some(v) => Some(b.input(DType::F32, v)?.0),
        None => None,
    };
    let out = b.output(DType::F32, m * n)?;
    let l = transformer::matmul_nt(
        wt,
        kernel,
        b.ptr(out),
        b.ptr(x),
        b.ptr(w),
        bias_h.map_or(0, |h| b.ptr(h)),
        m,
        n,
        k,
    )?;
    b.run(&l)?;
    let mut fails = Vec::new();
    let got = b.read(out, DType::F32, &mut fails)?;
    let mut max_err: f64 = 0.0;
    for r in 0..m {
        for c in 0..n {
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for j in 0..k {
                let p = f64::from(xv[r * k + j]) * f64::from(wv[c * k + j]);
                want += p;
                mag += p.abs();
            }
            if let Some(bv) = &bias {
                want += f64::from(bv[c]);
                mag += f64::from(bv[c]).abs();
            }
            let g = f64::from(got[r * n + c]);
            let err = (g - want).abs();
            if err.is_nan() || err > 1e-5 + 1e-5 * mag {
                if fails.len() < 5 {
                    fails.push(format!("out[{r}, {c}]: got {g}, want {want}"));
                }
            } else {
                max_err = max_err.max(err);
            }
        }
    }
    let bytes = (m * k + m * n) * 4 + wt.bytes(n, k);
    // SAFETY: the launch only holds pointers into this case's live buffers.
    let time_ms = unsafe { e.time(std::slice::from_ref(&l)) }?;
    Ok(Outcome {
        kernel: l.entry.clone(),
        shape: format!("m={m} n={n} k={k} bias={with_bias}"),
        max_err,
        failures: fails,
        bytes,
        time_ms,
    })
}

/// Rows of a GGUF-block table gathered to f32 (the token embedding kept as blocks): every
/// value must equal the CPU's dequantisation exactly.
pub fn embedding_blocks<E: Exec>(
    e: &E,
    wt: WeightType,
    n: usize,
    d: usize,
    vocab: usize,
    seed: u64,
) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let ty = qtype(wt).ok_or_else(|| CheckError::Emu(format!("{wt:?} is not a block type")))?;
    let (bytes, values) = random_blocks(ty, vocab, d, &mut rng);
    let table = b.raw(bytes, 1)?;
    let ids: Vec<i32> = (0..n).map(|_| rng.below(vocab) as i32).collect();
    let idb = b.ints(&ids)?;
    let out = b.output(DType::F32, n * d)?;
    let l = transformer::embedding_blocks(wt, b.ptr(out), b.ptr(table), b.ptr(idb), n, d, vocab)?;
    b.run(&l)?;
    let mut fails = Vec::new();
    let got = b.read(out, DType::F32, &mut fails)?;
    for (i, &id) in ids.iter().enumerate() {
        let want = &values[id as usize * d..(id as usize + 1) * d];
        let have = &got[i * d..(i + 1) * d];
        if let Some(j) = (0..d).find(|&j| want[j].to_bits() != have[j].to_bits()) {
            fails.push(format!(
                "row {i} (id {id}) col {j}: got {}, want {}",
                have[j], want[j]
            ));
        }
    }
    // SAFETY: as in `matmul`.
    let time_ms = unsafe { e.time(std::slice::from_ref(&l)) }?;
    Ok(Outcome {
        kernel: l.entry.clone(),
        shape: format!("n={n} d={d} V={vocab}"),
        max_err: 0.0,
        failures: fails,
        bytes: n * d * 4 + n * wt.bytes(1, d),
        time_ms,
    })
}

/// A batch of sequences over a cache: spans with distinct slots, rows laid out in order.
#[derive(Debug, Clone)]
pub struct Batch {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub capacity: usize,
    pub slots: usize,
    pub spans: Vec<SeqSpan>,
}

impl Batch {
    /// `seqs` = (slot, cached positions before this step, new rows).
    pub fn new(
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        slots: usize,
        seqs: &[(usize, usize, usize)],
    ) -> Self {
        let mut spans = Vec::new();
        let mut row = 0;
        for &(slot, pos, rows) in seqs {
            spans.push(SeqSpan {
                row_start: row,
                rows,
                slot,
                pos,
            });
            row += rows;
        }
        Batch {
            heads,
            kv_heads,
            head_dim,
            capacity,
            slots,
            spans,
        }
    }
    pub fn rows(&self) -> usize {
        self.spans.iter().map(|s| s.rows).sum()
    }
    fn shape(&self) -> AttnShape {
        AttnShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            capacity: self.capacity,
        }
    }
    fn cache_len(&self) -> usize {
        self.slots * self.kv_heads * self.capacity * self.head_dim
    }
    fn describe(&self) -> String {
        let seqs: Vec<String> = self
            .spans
            .iter()
            .map(|s| format!("{}@{}+{}", s.slot, s.pos, s.rows))
            .collect();
        format!(
            "h={}/{} hd={} cap={} [{}]",
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.capacity,
            seqs.join(" ")
        )
    }
}

/// Writes this step's keys/values into random caches; every cache value is compared, so a
/// write to the wrong slot, position or head shows up.
pub fn kv_write<E: Exec>(e: &E, dt: DType, bt: &Batch, seed: u64) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let rows = bt.rows();
    let kvd = bt.kv_heads * bt.head_dim;
    let (ck, mut ckv) = b.input(dt, &rng.vec(bt.cache_len(), -1.0, 1.0))?;
    let (cv, mut cvv) = b.input(dt, &rng.vec(bt.cache_len(), -1.0, 1.0))?;
    let (k, kv) = b.input(DType::F32, &rng.vec(rows * kvd, -2.0, 2.0))?;
    let (v, vv) = b.input(DType::F32, &rng.vec(rows * kvd, -2.0, 2.0))?;
    let t = RowTables::of(&bt.spans, rows, bt.slots, bt.capacity)?;
    let (slot, pos) = (b.ints(&t.slot)?, b.ints(&t.pos)?);
    let l = transformer::kv_write(
        dt,
        b.ptr(ck),
        b.ptr(cv),
        b.ptr(k),
        b.ptr(v),
        b.ptr(slot),
        b.ptr(pos),
        rows,
        bt.kv_heads,
        bt.head_dim,
        bt.capacity,
    )?;
    b.run(&l)?;
    CpuBackend.kv_write(&kv, &vv, &mut ckv, &mut cvv, &bt.spans, bt.shape())?;
    // The kernel stores k and v in the cache's type: round the reference the same way.
    let round = |v: &mut Vec<f32>| {
        if dt == DType::Bf16 {
            for x in v.iter_mut() {
                *x = half::bf16::from_f32(*x).to_f32();
            }
        }
    };
    round(&mut ckv);
    round(&mut cvv);
    let (mut err, mut fails) = (0.0, Vec::new());
    let got_k = b.read(ck, dt, &mut fails)?;
    let got_v = b.read(cv, dt, &mut fails)?;
    compare("cache_k", dt, &got_k, &ckv, &mut err, &mut fails);
    compare("cache_v", dt, &got_v, &cvv, &mut err, &mut fails);
    b.outcome(
        "kv_write",
        dt,
        bt.describe(),
        err,
        fails,
        2 * rows * kvd * (4 + dt.size()),
        vec![l],
    )
}

/// Attention of random queries over random caches, with `splits` chunks per row (1 = the
/// prefill kernel alone, more = partials + combine).
pub fn attention<E: Exec>(
    e: &E,
    dt: DType,
    bt: &Batch,
    splits: usize,
    seed: u64,
) -> Result<Outcome, CheckError> {
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let rows = bt.rows();
    let qd = bt.heads * bt.head_dim;
    let (ck, ckv) = b.input(dt, &rng.vec(bt.cache_len(), -1.0, 1.0))?;
    let (cv, cvv) = b.input(dt, &rng.vec(bt.cache_len(), -1.0, 1.0))?;
    let (q, qv) = b.input(DType::F32, &rng.vec(rows * qd, -2.0, 2.0))?;
    let t = RowTables::of(&bt.spans, rows, bt.slots, bt.capacity)?;
    let (slot, pos) = (b.ints(&t.slot)?, b.ints(&t.pos)?);
    let n_part = attention_part_len(rows, bt.heads, bt.head_dim, splits);
    let part = b.output(DType::F32, n_part.max(1))?;
    let out = b.output(DType::F32, rows * qd)?;
    let dims = AttnDims {
        rows,
        heads: bt.heads,
        kv_heads: bt.kv_heads,
        head_dim: bt.head_dim,
        capacity: bt.capacity,
        splits,
    };
    let ls = transformer::attention_forward(
        dt,
        b.ptr(out),
        if n_part > 0 { b.ptr(part) } else { 0 },
        b.ptr(q),
        b.ptr(ck),
        b.ptr(cv),
        b.ptr(slot),
        b.ptr(pos),
        dims,
    )?;
    for l in &ls {
        b.run(l)?;
    }
    let mut want = vec![0.0; rows * qd];
    CpuBackend.attention(&qv, &ckv, &cvv, &bt.spans, bt.shape(), &mut want)?;
    let (mut err, mut fails) = (0.0, Vec::new());
    let got = b.read(out, DType::F32, &mut fails)?;
    compare("out", DType::F32, &got, &want, &mut err, &mut fails);
    // Bytes: q and out, plus every key and value row each row reads once.
    let kv_rows: usize = bt
        .spans
        .iter()
        .map(|s| (0..s.rows).map(|i| s.pos + i + 1).sum::<usize>())
        .sum();
    let bytes = 2 * rows * qd * 4 + 2 * kv_rows * bt.kv_heads * bt.head_dim * dt.size();
    b.outcome(
        &format!("attention_s{splits}"),
        dt,
        bt.describe(),
        err,
        fails,
        bytes,
        ls,
    )
}

/// The attention backward against the CPU backward (`train::ops::attention_backward_group`,
/// checked against finite differences and HF's prefix gradients), composed over every
/// sequence and key/value head of the batch. dq, dk and dv are f32 and compared with the f32
/// bound; dk/dv start from zero and must stay zero where no row attends.
pub fn attention_backward<E: Exec>(
    e: &E,
    dt: DType,
    bt: &Batch,
    seed: u64,
) -> Result<Outcome, CheckError> {
    use cmt_runtime::train::ops::{attention_backward_group, AttnSeq};
    let mut rng = Rng::new(seed);
    let mut b = Bufs::new(e);
    let rows = bt.rows();
    let (hd, heads, kvh, cap) = (bt.head_dim, bt.heads, bt.kv_heads, bt.capacity);
    let qd = heads * hd;
    let (ck, ckv) = b.input(dt, &rng.vec(bt.cache_len(), -1.0, 1.0))?;
    let (cv, cvv) = b.input(dt, &rng.vec(bt.cache_len(), -1.0, 1.0))?;
    let (q, qv) = b.input(DType::F32, &rng.vec(rows * qd, -2.0, 2.0))?;
    let (dout, dov) = b.input(DType::F32, &rng.vec(rows * qd, -1.0, 1.0))?;
    let t = RowTables::of(&bt.spans, rows, bt.slots, cap)?;
    let (slot, pos) = (b.ints(&t.slot)?, b.ints(&t.pos)?);
    let dq = b.output(DType::F32, rows * qd)?;
    let zeros = vec![0.0f32; bt.cache_len()];
    let (dk, _) = b.input(DType::F32, &zeros)?;
    let (dv, _) = b.input(DType::F32, &zeros)?;
    let dims = AttnDims {
        rows,
        heads,
        kv_heads: kvh,
        head_dim: hd,
        capacity: cap,
        splits: 1,
    };
    let l = transformer::attention_backward(
        dt,
        b.ptr(dq),
        b.ptr(dk),
        b.ptr(dv),
        b.ptr(q),
        b.ptr(dout),
        b.ptr(ck),
        b.ptr(cv),
        b.ptr(slot),
        b.ptr(pos),
        dims,
    )?;
    b.run(&l)?;
    // Reference: per sequence and kv head, on [capacity, hd] blocks of the caches.
    let group = heads / kvh;
    let (mut want_dq, mut want_dk, mut want_dv) =
        (vec![0.0f32; rows * qd], zeros.clone(), zeros.clone());
    let mut scratch = Vec::new();
    for sp in &bt.spans {
        for g in 0..kvh {
            let blk = (sp.slot * kvh + g) * cap * hd..(sp.slot * kvh + g + 1) * cap * hd;
            let mut dq_blk = vec![0.0f32; sp.rows * group * hd];
            let (mut dk_blk, mut dv_blk) =
                (want_dk[blk.clone()].to_vec(), want_dv[blk.clone()].to_vec());
            attention_backward_group(
                &qv,
                &dov,
                &mut dq_blk,
                &ckv[blk.clone()],
                &cvv[blk.clone()],
                &mut dk_blk,
                &mut dv_blk,
                AttnSeq {
                    row_start: sp.row_start,
                    rows: sp.rows,
                    pos: sp.pos,
                },
                g,
                heads,
                kvh,
                hd,
                &mut scratch,
            );
            want_dk[blk.clone()].copy_from_slice(&dk_blk);
            want_dv[blk].copy_from_slice(&dv_blk);
            for r in 0..sp.rows {
                for hh in 0..group {
                    let src = (r * group + hh) * hd;
                    let dst = (sp.row_start + r) * qd + (g * group + hh) * hd;
                    want_dq[dst..dst + hd].copy_from_slice(&dq_blk[src..src + hd]);
                }
            }
        }
    }
    let (mut err, mut fails) = (0.0, Vec::new());
    let got_dq = b.read(dq, DType::F32, &mut fails)?;
    let got_dk = b.read(dk, DType::F32, &mut fails)?;
    let got_dv = b.read(dv, DType::F32, &mut fails)?;
    compare("dq", DType::F32, &got_dq, &want_dq, &mut err, &mut fails);
    compare("dk", DType::F32, &got_dk, &want_dk, &mut err, &mut fails);
    compare("dv", DType::F32, &got_dv, &want_dv, &mut err, &mut fails);
    let kv_rows: usize = bt
        .spans
        .iter()
        .map(|s| (0..s.rows).map(|i| s.pos + i + 1).sum::<usize>())
        .sum();
    let bytes = 3 * rows * qd * 4 + 2 * kv_rows * kvh * hd * (dt.size() + 4);
    b.outcome(
        "attention_backward",
        dt,
        bt.describe(),
        err,
        fails,
        bytes,
        vec![l],
    )
}
