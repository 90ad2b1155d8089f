//! The memory-aware objective (DESIGN §1.8), CPU: `L = L_qa + λ_rec·L_rec + λ_match·L_match`
//! and its gradient with respect to every trainable tensor. θ stays frozen; gradients stop
//! at its inputs (the key/value prefix).
//!
//! - L_qa: the answer tokens given the question and the prefix built by top-k aggregation
//!   over a training bank — answer loss → prefix → G_ω → ψ → (w, A) → scores → (k_x, k_d)
//!   → C_φ — with the top-k selection held fixed (straight-through, as in MoE routing).
//! - L_rec: the document's own tokens given only the prefix G_ω(M_d) of its own memory
//!   (no question, no aggregation): the memory must carry the document.
//! - L_match: InfoNCE of each question key k_x against every training-bank key (the batch's
//!   documents and the queue), the gold document positive, at the matching temperature τ.
//!
//! The training bank holds the batch's documents (their memories and keys carry gradient)
//! followed by an optional queue of earlier memories (constants).
use crate::aggregator::{self, AggInput};
use crate::config::{CmtConfig, PrefixMode};
use crate::error::{Error, Result};
use crate::params::{prefix_dims, BaseDims, CmtParams};
use crate::prefix::{self, PrefixDims, PrefixParams};
use crate::soft_prefix;
use cmt_compress::attention::DocBatch;
use cmt_memory::topk::{self, MemorySource};
use cmt_memory::{KeyMatrix, MemView, TopK, MAX_K};
use cmt_runtime::score::IGNORE;
use cmt_runtime::train::{Tape, TrainSeq};
use cmt_runtime::{CpuBackend, KvPrefix, Model};

/// Memories with no gradient (a queue of recent batches' memories).
pub struct Queue<'a> {
    /// `[n, r]`.
    pub keys: &'a [f32],
    /// `[n, T, D]`.
    pub memories: &'a [f32],
}

/// Which terms of the objective are on, and their weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    /// L_qa on (always, except for reconstruction pretraining).
    pub qa: bool,
    /// λ_rec; 0 switches L_rec off (it is then not computed).
    pub lambda_rec: f32,
    /// λ_match; 0 switches L_match off.
    pub lambda_match: f32,
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            qa: true,
            lambda_rec: 1.0,
            lambda_match: 1.0,
        }
    }
}

/// A labelled token sequence θ reads after a prefix: ids and a label per id (−100 = no
/// loss; as in HF, row t is scored against labels[t + 1]).
pub type Labelled = (Vec<u32>, Vec<i32>);

/// One training batch.
pub struct TrainBatch<'a> {
    /// θ's hidden states of the batch's documents (the training bank's gradient part).
    pub docs: DocBatch<'a>,
    /// θ's hidden states of the questions (matching inputs).
    pub questions: DocBatch<'a>,
    /// Per question: the prompt then the answer, answer tokens labelled.
    pub qa: &'a [Labelled],
    /// Per question: the row of its document in `docs` (L_match's positive, and recall).
    pub gold: &'a [usize],
    /// Per document: the tokens L_rec scores (may be empty when L_rec is off).
    pub rec: &'a [Labelled],
    /// Earlier memories with no gradient, appended to the training bank.
    pub queue: Option<Queue<'a>>,
}

/// The loss terms and what was selected.
#[derive(Clone, Debug)]
pub struct LossOut {
    /// L_qa + λ_rec·L_rec + λ_match·L_match over the terms that are on.
    pub total: f64,
    /// Mean cross-entropy of the answer tokens (0 when off).
    pub qa: f64,
    /// Mean cross-entropy of the reconstructed document tokens (0 when off).
    pub rec: f64,
    /// Mean InfoNCE over the questions (0 when off).
    pub matching: f64,
    /// Fraction of questions whose gold document is among the selected memories.
    pub recall: f64,
    /// Per question: the selected training-bank rows (documents first, then the queue).
    pub selections: Vec<TopK>,
    /// Rows θ ran forward (and backward, with gradients) for this batch: tokens, and in
    /// soft mode the soft rows.
    pub theta_tokens: usize,
    /// Wall seconds inside θ's forward and backward.
    pub theta_seconds: f64,
}

struct Mems<'a> {
    td: usize,
    docs: &'a [f32],
    queue: &'a [f32],
}

impl Mems<'_> {
    fn row(&self, id: u64) -> &[f32] {
        let (i, nd) = (id as usize, self.docs.len() / self.td);
        if i < nd {
            &self.docs[i * self.td..(i + 1) * self.td]
        } else {
            &self.queue[(i - nd) * self.td..(i - nd + 1) * self.td]
        }
    }
}

impl MemorySource for Mems<'_> {
    fn memory_len(&self) -> usize {
        self.td
    }
    fn memory(&self, id: u64) -> cmt_memory::Result<MemView<'_>> {
        Ok(MemView::F32(self.row(id)))
    }
}

/// The objective of `batch`; with `grads`, also accumulates dL/dθ_trainable into it.
pub fn loss(
    theta: &Model<CpuBackend>,
    cfg: &CmtConfig,
    params: &CmtParams,
    batch: &TrainBatch,
    terms: &Terms,
    mut grads: Option<&mut CmtParams>,
) -> Result<LossOut> {
    let base = BaseDims::of(&theta.cfg);
    let (t, d, r) = (cfg.t(), base.hidden, cfg.r());
    let td = t * d;
    let nq = batch.questions.docs();
    let nd = batch.docs.docs();
    if batch.qa.len() != nq || batch.gold.len() != nq {
        return Err(Error::Shape(format!(
            "{} QA sequences and {} gold rows for {nq} questions",
            batch.qa.len(),
            batch.gold.len()
        )));
    }
    if let Some(&g) = batch.gold.iter().find(|&&g| g >= nd) {
        return Err(Error::Shape(format!(
            "gold document row {g} in a batch of {nd} documents"
        )));
    }
    let rec_on = terms.lambda_rec != 0.0;
    if rec_on && batch.rec.len() != nd {
        return Err(Error::Shape(format!(
            "{} reconstruction sequences for {nd} documents",
            batch.rec.len()
        )));
    }
    let comp = &params.compressor;
    let (cd, tape_d) = comp.forward_train(&batch.docs)?;
    let (cx, tape_x) = comp.forward_train(&batch.questions)?;
    let (qkeys, qmems) = batch
        .queue
        .as_ref()
        .map_or((&[][..], &[][..]), |q| (q.keys, q.memories));
    let n = nd + qkeys.len() / r;
    let mut km = KeyMatrix::with_capacity(r, n);
    for (i, k) in cd
        .keys
        .chunks_exact(r)
        .chain(qkeys.chunks_exact(r))
        .enumerate()
    {
        km.push(i as u64, k)?;
    }
    let k = if cfg.topk { cfg.k.min(n) } else { n };
    if k > MAX_K {
        return Err(Error::Invalid(format!(
            "aggregating {n} training-bank entries: at most {MAX_K} (a smaller batch or queue)"
        )));
    }
    let tau = params.tau(cfg);
    let mems = Mems {
        td,
        docs: &cd.memories,
        queue: qmems,
    };
    let cands = topk::scan(&km, &cx.keys, k, "training bank")?;
    let sel = topk::combine(&cands, tau, &mems)?;
    let recall = sel
        .iter()
        .zip(batch.gold)
        .filter(|(s, &g)| s.ids.contains(&(g as u64)))
        .count() as f64
        / nq.max(1) as f64;

    // Gradient accumulators of the compressor outputs.
    let mut d_mem_d = vec![0.0; nd * td];
    let mut d_key_d = vec![0.0; nd * r];
    let mut d_key_x = vec![0.0; nq * r];
    let mut d_mx = vec![0.0; nq * td];
    let mut d_tau = 0.0f32;
    let mut out = LossOut {
        total: 0.0,
        qa: 0.0,
        rec: 0.0,
        matching: 0.0,
        recall,
        selections: Vec::new(),
        theta_tokens: 0,
        theta_seconds: 0.0,
    };
    let pdims = prefix_dims(cfg, &base);

    if terms.lambda_match != 0.0 {
        let (l, g, logits) = info_nce(&km, &cx.keys, batch.gold, tau, r)?;
        out.matching = l;
        if grads.is_some() {
            let lam = terms.lambda_match;
            for q in 0..nq {
                let kx = &cx.keys[q * r..(q + 1) * r];
                for (j, (&dl, &logit)) in g[q].iter().zip(&logits[q]).enumerate() {
                    let dl = lam * dl;
                    let kj = km.key(j);
                    // logit = kx·kj / τ
                    for (a, b) in d_key_x[q * r..(q + 1) * r].iter_mut().zip(&kj) {
                        *a += dl * b / tau;
                    }
                    if j < nd {
                        for (a, b) in d_key_d[j * r..(j + 1) * r].iter_mut().zip(kx) {
                            *a += dl * b / tau;
                        }
                    }
                    // logit = s / τ, so d logit / dτ = −s / τ² = −logit / τ.
                    d_tau -= dl * logit / tau;
                }
            }
        }
    }

    if rec_on {
        let inj = Injected::forward(&pdims, &params.prefix, &cd.memories)?;
        let t0 = std::time::Instant::now();
        let (l, dth, toks) = theta_pass(theta, &pdims, batch.rec, &inj, grads.is_some())?;
        out.theta_seconds += t0.elapsed().as_secs_f64();
        out.rec = l;
        out.theta_tokens += toks;
        if let Some(g) = grads.as_deref_mut() {
            let dm = inj.backward(&pdims, &params.prefix, dth, terms.lambda_rec, &mut g.prefix)?;
            d_mem_d.iter_mut().zip(&dm).for_each(|(a, b)| *a += b);
        }
    }

    if terms.qa {
        let selected: Vec<Vec<&[f32]>> = sel
            .iter()
            .map(|s| s.ids.iter().map(|&id| mems.row(id)).collect())
            .collect();
        let a: Vec<f32> = sel
            .iter()
            .flat_map(|s| s.aggregate.iter().copied())
            .collect();
        let agg_cfg = cfg.aggregator_blocks_config();
        let (a_prime, agg_tape) = if cfg.aggregator {
            let input = AggInput {
                m_x: &cx.memories,
                selected: &selected,
                a: &a,
            };
            let (o, tape) = aggregator::forward(&agg_cfg, &params.aggregator, &input)?;
            (o, Some(tape))
        } else {
            (a.clone(), None)
        };
        let inj = Injected::forward(&pdims, &params.prefix, &a_prime)?;
        let t0 = std::time::Instant::now();
        let (l, dth, toks) = theta_pass(theta, &pdims, batch.qa, &inj, grads.is_some())?;
        out.theta_seconds += t0.elapsed().as_secs_f64();
        out.qa = l;
        out.theta_tokens += toks;
        if let Some(g) = grads.as_deref_mut() {
            let d_ap = inj.backward(&pdims, &params.prefix, dth, 1.0, &mut g.prefix)?;
            let (d_sel, d_a) = match &agg_tape {
                Some(tape) => {
                    let ga = aggregator::backward(
                        &agg_cfg,
                        &params.aggregator,
                        tape,
                        &d_ap,
                        &mut g.aggregator,
                    )?;
                    d_mx.iter_mut().zip(&ga.d_mx).for_each(|(a, b)| *a += b);
                    (Some(ga.d_selected), ga.d_a)
                }
                None => (None, d_ap),
            };
            for (q, s) in sel.iter().enumerate() {
                let keys: Vec<Vec<f32>> = s.ids.iter().map(|&id| km.key(id as usize)).collect();
                let key_refs: Vec<&[f32]> = keys.iter().map(Vec::as_slice).collect();
                let mviews: Vec<MemView> = selected[q].iter().map(|m| MemView::F32(m)).collect();
                let gk = topk::backward(
                    &cx.keys[q * r..(q + 1) * r],
                    &key_refs,
                    &mviews,
                    &s.scores,
                    &s.weights,
                    tau,
                    &d_a[q * td..(q + 1) * td],
                )?;
                d_key_x[q * r..(q + 1) * r]
                    .iter_mut()
                    .zip(&gk.d_query)
                    .for_each(|(a, b)| *a += b);
                d_tau += gk.d_tau;
                for (i, &id) in s.ids.iter().enumerate() {
                    let id = id as usize;
                    if id >= nd {
                        continue; // the queue is constant
                    }
                    d_key_d[id * r..(id + 1) * r]
                        .iter_mut()
                        .zip(&gk.d_keys[i])
                        .for_each(|(a, b)| *a += b);
                    let dm = &mut d_mem_d[id * td..(id + 1) * td];
                    dm.iter_mut()
                        .zip(&gk.d_memories[i])
                        .for_each(|(a, b)| *a += b);
                    if let Some(ds) = &d_sel {
                        dm.iter_mut().zip(&ds[q][i]).for_each(|(a, b)| *a += b);
                    }
                }
            }
        }
    }
    out.total =
        out.qa + terms.lambda_rec as f64 * out.rec + terms.lambda_match as f64 * out.matching;
    out.selections = sel;
    let Some(g) = grads else {
        return Ok(out);
    };
    g.log_tau[0] += d_tau * params.dtau_dlog(cfg);
    comp.backward(
        &batch.docs,
        &tape_d,
        Some(&d_mem_d),
        Some(&d_key_d),
        &mut g.compressor.params,
        None,
    )?;
    comp.backward(
        &batch.questions,
        &tape_x,
        Some(&d_mx),
        Some(&d_key_x),
        &mut g.compressor.params,
        None,
    )?;
    Ok(out)
}

/// L_rec without gradients, for evaluation: window `rec[i]` given only the prefix made from
/// memory `memories[i]` (`[n, T, D]`), the mean over labelled tokens as in training.
pub fn reconstruction_loss(
    theta: &Model<CpuBackend>,
    cfg: &CmtConfig,
    params: &CmtParams,
    memories: &[f32],
    rec: &[Labelled],
) -> Result<f64> {
    let pdims = prefix_dims(cfg, &BaseDims::of(&theta.cfg));
    let inj = Injected::forward(&pdims, &params.prefix, memories)?;
    let (l, _, _) = theta_pass(theta, &pdims, rec, &inj, false)?;
    Ok(l)
}

/// θ alone on the same windows (no prefix, no soft rows): what L_rec is measured against.
pub fn no_memory_loss(theta: &Model<CpuBackend>, rec: &[Labelled]) -> Result<f64> {
    let longest = rec.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let mut sess = theta.session(rec.len(), longest)?;
    let ts: Vec<TrainSeq> = rec
        .iter()
        .map(|(ids, labels)| TrainSeq {
            prefix: None,
            soft: &[],
            ids,
            labels,
        })
        .collect();
    let mut tape = Tape::default();
    Ok(theta.forward_train(&mut sess, &ts, &mut tape)?)
}

/// G_ω's output for θ, with its tape: per-layer prefixes, or soft rows θ reads first.
enum Injected {
    Kv(Vec<KvPrefix>, prefix::PrefixTape),
    Soft(Vec<f32>, soft_prefix::SoftTape),
}

/// Per sequence, d loss / d what θ was given: (prefix keys, prefix values), or soft rows.
enum ThetaGrads {
    Kv(Vec<(Vec<f32>, Vec<f32>)>),
    Soft(Vec<Vec<f32>>),
}

impl Injected {
    /// G_ω over aggregates `a` (`[n, p, D]`) in the config's mode.
    fn forward(pdims: &PrefixDims, w: &PrefixParams, a: &[f32]) -> Result<Self> {
        Ok(match pdims.mode {
            PrefixMode::Kv => {
                let (pre, tape) = prefix::forward(pdims, w, a)?;
                Injected::Kv(pre, tape)
            }
            PrefixMode::Soft => {
                let (e, tape) = soft_prefix::forward(pdims, w, a)?;
                Injected::Soft(e, tape)
            }
        })
    }

    /// dL/dA′ from θ's input gradients scaled by `lam`, accumulating dL/dω into `grads`.
    fn backward(
        &self,
        pdims: &PrefixDims,
        w: &PrefixParams,
        d: ThetaGrads,
        lam: f32,
        grads: &mut PrefixParams,
    ) -> Result<Vec<f32>> {
        // The gradients are owned: scale them in place.
        let scale = |v: &mut [f32]| v.iter_mut().for_each(|x| *x *= lam);
        match (self, d) {
            (Injected::Kv(_, tape), ThetaGrads::Kv(mut dk)) => {
                for (k, v) in &mut dk {
                    scale(k);
                    scale(v);
                }
                let refs: Vec<(&[f32], &[f32])> = dk
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                prefix::backward(pdims, w, tape, &refs, grads)
            }
            (Injected::Soft(_, tape), ThetaGrads::Soft(ds)) => {
                let mut flat = ds.concat();
                scale(&mut flat);
                soft_prefix::backward(pdims, w, tape, &flat, grads)
            }
            _ => Err(Error::Invalid(
                "θ's gradients do not match the prefix mode".into(),
            )),
        }
    }
}

/// θ over `seqs`, sequence i after what `inj` gives it (its prefix, or its p soft rows):
/// the mean labelled cross-entropy, with the input gradients when `backward`, and the
/// tokens run.
fn theta_pass(
    theta: &Model<CpuBackend>,
    pdims: &PrefixDims,
    seqs: &[Labelled],
    inj: &Injected,
    backward: bool,
) -> Result<(f64, ThetaGrads, usize)> {
    let longest = seqs.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let (p, d) = (pdims.p, pdims.d);
    // Rows θ runs: the tokens, plus the soft rows in soft mode.
    let soft_rows = if matches!(inj, Injected::Soft(..)) {
        p
    } else {
        0
    };
    let tokens = seqs.iter().map(|(ids, _)| ids.len() + soft_rows).sum();
    let mut sess = theta.session(seqs.len(), pdims.p + longest)?;
    // Soft rows carry no label; labels[t] belongs to row t.
    let soft_labels: Vec<Vec<i32>> = match inj {
        Injected::Soft(..) => seqs
            .iter()
            .map(|(_, l)| {
                std::iter::repeat_n(IGNORE, p)
                    .chain(l.iter().copied())
                    .collect()
            })
            .collect(),
        Injected::Kv(..) => Vec::new(),
    };
    let ts: Vec<TrainSeq> = match inj {
        Injected::Kv(prefixes, _) => seqs
            .iter()
            .zip(prefixes)
            .map(|((ids, labels), pre)| TrainSeq {
                prefix: Some(pre),
                soft: &[],
                ids,
                labels,
            })
            .collect(),
        Injected::Soft(e, _) => seqs
            .iter()
            .zip(e.chunks_exact(p * d))
            .zip(&soft_labels)
            .map(|(((ids, _), rows), labels)| TrainSeq {
                prefix: None,
                soft: rows,
                ids,
                labels,
            })
            .collect(),
    };
    let mut tape = Tape::default();
    let l = theta.forward_train(&mut sess, &ts, &mut tape)?;
    let sg = if backward {
        theta.backward(&sess, &tape)?
    } else {
        Vec::new()
    };
    let grads = match inj {
        Injected::Kv(..) => {
            ThetaGrads::Kv(sg.into_iter().map(|g| (g.prefix_k, g.prefix_v)).collect())
        }
        Injected::Soft(..) => ThetaGrads::Soft(sg.into_iter().map(|g| g.soft).collect()),
    };
    Ok((l, grads, tokens))
}

/// One row of values per question.
type PerQuestion = Vec<Vec<f32>>;

/// Mean over questions of −log softmax(k_x·K / τ)[gold]; per question the gradient with
/// respect to each logit (already divided by the number of questions), and the logits.
fn info_nce(
    km: &KeyMatrix,
    qkeys: &[f32],
    gold: &[usize],
    tau: f32,
    r: usize,
) -> Result<(f64, PerQuestion, PerQuestion)> {
    let n = km.len();
    let nq = gold.len();
    let mut total = 0.0f64;
    let mut grads = Vec::with_capacity(nq);
    let mut all = Vec::with_capacity(nq);
    for (q, &g) in gold.iter().enumerate() {
        let kx = &qkeys[q * r..(q + 1) * r];
        let logits: Vec<f32> = (0..n)
            .map(|j| km.key(j).iter().zip(kx).map(|(a, b)| a * b).sum::<f32>() / tau)
            .collect();
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = logits.iter().map(|&l| ((l - m) as f64).exp()).sum();
        let lse = m as f64 + z.ln();
        total += lse - logits[g] as f64;
        let gq: Vec<f32> = logits
            .iter()
            .enumerate()
            .map(|(j, &l)| {
                let p = ((l as f64 - lse).exp()) as f32;
                (p - if j == g { 1.0 } else { 0.0 }) / nq as f32
            })
            .collect();
        grads.push(gq);
        all.push(logits);
    }
    Ok((total / nq.max(1) as f64, grads, all))
}
