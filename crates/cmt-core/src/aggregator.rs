//! ψ, the aggregator (DESIGN §1 step 6): refines the softmax-weighted aggregate A of the
//! selected memories into A′, reading the question.
//!
//! Per question: the queries start from the question's own memory M_x (T rows); the
//! keys/values are the k·T selected memory tokens followed by the T rows of A; the blocks
//! are the compressor's (`cmt_compress::blocks`, pre-norm cross-attention + MLP), and
//! ```text
//! A′ = A + (ψ(M_x; [M_1 … M_k, A]) − M_x)
//! ```
//! i.e. A′ is A plus what the blocks wrote into the residual stream. A fresh ψ writes little
//! (its output projections start small), so A′ ≈ A, and "aggregator off" is A′ = A exactly.
//! The softmax weights w reach the loss through A, both directly and as keys/values.
//! Questions with fewer than k selected memories (a small bank) are padded and masked.
use crate::error::{Error, Result};
use cmt_compress::attention::DocBatch;
use cmt_compress::blocks::{self, StackTape};
use cmt_compress::{BlockParams, CompressorConfig};

/// ψ's inputs for a batch of questions.
pub struct AggInput<'a> {
    /// `[nq, T, D]`: each question's memory M_x.
    pub m_x: &'a [f32],
    /// Per question, the selected memories (each T·D values), best first.
    pub selected: &'a [Vec<&'a [f32]>],
    /// `[nq, T, D]`: the aggregates A.
    pub a: &'a [f32],
}

/// What [`backward`] needs.
pub struct AggTape {
    kv: Vec<f32>,
    lens: Vec<usize>,
    n_max: usize,
    counts: Vec<usize>,
    stack: StackTape,
}

/// Gradients of ψ's inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct AggGrads {
    /// `[nq, T, D]`.
    pub d_mx: Vec<f32>,
    /// Per question and selected memory, T·D values.
    pub d_selected: Vec<Vec<Vec<f32>>>,
    /// `[nq, T, D]`.
    pub d_a: Vec<f32>,
}

fn check(cfg: &CompressorConfig, x: &AggInput) -> Result<usize> {
    let td = cfg.mem_tokens * cfg.d;
    let nq = x.selected.len();
    if nq == 0 || x.m_x.len() != nq * td || x.a.len() != nq * td {
        return Err(Error::Shape(format!(
            "aggregator: {nq} questions, M_x of {} and A of {} values (T·D = {td})",
            x.m_x.len(),
            x.a.len()
        )));
    }
    if let Some(m) = x.selected.iter().flatten().find(|m| m.len() != td) {
        return Err(Error::Shape(format!(
            "aggregator: a selected memory of {} values, T·D = {td}",
            m.len()
        )));
    }
    Ok(nq)
}

/// A′ (`[nq, T, D]`) and the tape.
pub fn forward(
    cfg: &CompressorConfig,
    params: &[BlockParams],
    x: &AggInput,
) -> Result<(Vec<f32>, AggTape)> {
    let nq = check(cfg, x)?;
    let (t, d) = (cfg.mem_tokens, cfg.d);
    let td = t * d;
    let counts: Vec<usize> = x.selected.iter().map(Vec::len).collect();
    let n_max = (counts.iter().copied().max().unwrap_or(0) + 1) * t;
    let mut kv = vec![0.0; nq * n_max * d];
    let mut lens = Vec::with_capacity(nq);
    for (q, sel) in x.selected.iter().enumerate() {
        let base = q * n_max * d;
        for (i, m) in sel.iter().enumerate() {
            kv[base + i * td..base + (i + 1) * td].copy_from_slice(m);
        }
        let off = base + sel.len() * td;
        kv[off..off + td].copy_from_slice(&x.a[q * td..(q + 1) * td]);
        lens.push((sel.len() + 1) * t);
    }
    let mut out = x.m_x.to_vec();
    let docs = DocBatch {
        h: &kv,
        n_max,
        lens: &lens,
    };
    let stack = blocks::forward(cfg, params, &docs, &mut out)?;
    // A′ = A + out − M_x.
    for ((o, &a), &m) in out.iter_mut().zip(x.a).zip(x.m_x) {
        *o += a - m;
    }
    let tape = AggTape {
        kv,
        lens,
        n_max,
        counts,
        stack,
    };
    Ok((out, tape))
}

/// Backward of [`forward`] given dL/dA′; ψ's parameter gradients accumulate into `grads`.
pub fn backward(
    cfg: &CompressorConfig,
    params: &[BlockParams],
    tape: &AggTape,
    d_out: &[f32],
    grads: &mut [BlockParams],
) -> Result<AggGrads> {
    let (t, d) = (cfg.mem_tokens, cfg.d);
    let td = t * d;
    let nq = tape.lens.len();
    if d_out.len() != nq * td {
        return Err(Error::Shape(format!(
            "aggregator backward: dA′ holds {} values, expected {}",
            d_out.len(),
            nq * td
        )));
    }
    let docs = DocBatch {
        h: &tape.kv,
        n_max: tape.n_max,
        lens: &tape.lens,
    };
    let mut dx = d_out.to_vec();
    let mut d_kv = vec![0.0; tape.kv.len()];
    blocks::backward(cfg, params, &docs, &tape.stack, &mut dx, grads, &mut d_kv)?;
    // dM_x = dX₀ − dA′; dA = dA′ + the rows of A among the keys/values.
    let d_mx: Vec<f32> = dx.iter().zip(d_out).map(|(g, o)| g - o).collect();
    let mut d_a = d_out.to_vec();
    let mut d_selected = Vec::with_capacity(nq);
    for (q, &c) in tape.counts.iter().enumerate() {
        let base = q * tape.n_max * d;
        d_selected.push(
            (0..c)
                .map(|i| d_kv[base + i * td..base + (i + 1) * td].to_vec())
                .collect(),
        );
        let off = base + c * td;
        d_a[q * td..(q + 1) * td]
            .iter_mut()
            .zip(&d_kv[off..off + td])
            .for_each(|(g, &v)| *g += v);
    }
    Ok(AggGrads {
        d_mx,
        d_selected,
        d_a,
    })
}
