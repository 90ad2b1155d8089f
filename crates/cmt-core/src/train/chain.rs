//! The differentiable QA path (DESIGN §1.8, L_qa), CPU: the answer loss given the prefix
//! built by top-k aggregation over a training bank, and its gradient with respect to every
//! trainable tensor —
//! answer loss → prefix → G_ω → ψ → (w, A) → scores → (k_x, k_d) → C_φ — with the top-k
//! selection held fixed (straight-through, as in MoE routing).
//!
//! The training bank holds the batch's documents (their memories and keys carry gradient)
//! followed by an optional queue of earlier memories (constants).
use crate::aggregator::{self, AggInput};
use crate::config::CmtConfig;
use crate::error::{Error, Result};
use crate::params::{prefix_dims, BaseDims, CmtParams};
use crate::prefix;
use cmt_compress::attention::DocBatch;
use cmt_memory::topk::{self, MemorySource};
use cmt_memory::{KeyMatrix, MemView, TopK, MAX_K};
use cmt_runtime::train::{Tape, TrainSeq};
use cmt_runtime::{CpuBackend, Model};

/// Memories with no gradient (a queue of recent batches' memories).
pub struct Queue<'a> {
    /// `[n, r]`.
    pub keys: &'a [f32],
    /// `[n, T, D]`.
    pub memories: &'a [f32],
}

/// One QA batch.
pub struct QaBatch<'a> {
    /// θ's hidden states of the batch's documents (the training bank's gradient part).
    pub docs: DocBatch<'a>,
    /// θ's hidden states of the questions (matching inputs).
    pub questions: DocBatch<'a>,
    /// Per question: the token ids θ reads after the prefix (prompt then answer) and a
    /// label per id (−100 = no loss; as in HF, row t is scored against labels[t + 1]).
    pub seqs: &'a [(Vec<u32>, Vec<i32>)],
    /// Earlier memories with no gradient, appended to the training bank.
    pub queue: Option<Queue<'a>>,
}

/// The loss and what was selected.
pub struct QaOut {
    /// Mean cross-entropy over the labelled tokens of the batch.
    pub loss: f64,
    /// Per question: the selected training-bank rows (documents first, then the queue).
    pub selections: Vec<TopK>,
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

/// L_qa of `batch`; with `grads`, also accumulates dL_qa/dθ_trainable into it.
pub fn qa_loss(
    theta: &Model<CpuBackend>,
    cfg: &CmtConfig,
    params: &CmtParams,
    batch: &QaBatch,
    grads: Option<&mut CmtParams>,
) -> Result<QaOut> {
    let base = BaseDims::of(&theta.cfg);
    let (t, d, r) = (cfg.t(), base.hidden, cfg.r());
    let td = t * d;
    let nq = batch.questions.docs();
    if batch.seqs.len() != nq {
        return Err(Error::Shape(format!(
            "{} QA sequences for {nq} questions",
            batch.seqs.len()
        )));
    }
    let comp = &params.compressor;
    let (cd, tape_d) = comp.forward_train(&batch.docs)?;
    let (cx, tape_x) = comp.forward_train(&batch.questions)?;
    let nd = batch.docs.docs();
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
        let (out, tape) = aggregator::forward(&agg_cfg, &params.aggregator, &input)?;
        (out, Some(tape))
    } else {
        (a.clone(), None)
    };
    let pdims = prefix_dims(cfg, &base);
    let (prefixes, ptape) = prefix::forward(&pdims, &params.prefix, &a_prime)?;
    let longest = batch
        .seqs
        .iter()
        .map(|(ids, _)| ids.len())
        .max()
        .unwrap_or(0);
    let mut sess = theta.session(nq, pdims.p + longest)?;
    let seqs: Vec<TrainSeq> = batch
        .seqs
        .iter()
        .zip(&prefixes)
        .map(|((ids, labels), p)| TrainSeq {
            prefix: Some(p),
            soft: &[],
            ids,
            labels,
        })
        .collect();
    let mut tape = Tape::default();
    let loss = theta.forward_train(&mut sess, &seqs, &mut tape)?;
    let Some(grads) = grads else {
        return Ok(QaOut {
            loss,
            selections: sel,
        });
    };
    let sg = theta.backward(&sess, &tape)?;
    let dpre: Vec<(&[f32], &[f32])> = sg
        .iter()
        .map(|g| (g.prefix_k.as_slice(), g.prefix_v.as_slice()))
        .collect();
    let d_ap = prefix::backward(&pdims, &params.prefix, &ptape, &dpre, &mut grads.prefix)?;
    let (d_mx, d_sel, d_a) = match &agg_tape {
        Some(tape) => {
            let g = aggregator::backward(
                &agg_cfg,
                &params.aggregator,
                tape,
                &d_ap,
                &mut grads.aggregator,
            )?;
            (g.d_mx, Some(g.d_selected), g.d_a)
        }
        None => (vec![0.0; nq * td], None, d_ap),
    };
    let mut d_mem_d = vec![0.0; nd * td];
    let mut d_key_d = vec![0.0; nd * r];
    let mut d_key_x = vec![0.0; nq * r];
    let mut d_tau = 0.0f32;
    for (q, s) in sel.iter().enumerate() {
        let keys: Vec<Vec<f32>> = s.ids.iter().map(|&id| km.key(id as usize)).collect();
        let key_refs: Vec<&[f32]> = keys.iter().map(Vec::as_slice).collect();
        let mviews: Vec<MemView> = selected[q].iter().map(|m| MemView::F32(m)).collect();
        let g = topk::backward(
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
            .zip(&g.d_query)
            .for_each(|(a, b)| *a += b);
        d_tau += g.d_tau;
        for (i, &id) in s.ids.iter().enumerate() {
            let id = id as usize;
            if id >= nd {
                continue; // the queue is constant
            }
            d_key_d[id * r..(id + 1) * r]
                .iter_mut()
                .zip(&g.d_keys[i])
                .for_each(|(a, b)| *a += b);
            let dm = &mut d_mem_d[id * td..(id + 1) * td];
            dm.iter_mut()
                .zip(&g.d_memories[i])
                .for_each(|(a, b)| *a += b);
            if let Some(ds) = &d_sel {
                dm.iter_mut().zip(&ds[q][i]).for_each(|(a, b)| *a += b);
            }
        }
    }
    grads.log_tau[0] += d_tau * params.dtau_dlog(cfg);
    comp.backward(
        &batch.docs,
        &tape_d,
        Some(&d_mem_d),
        Some(&d_key_d),
        &mut grads.compressor.params,
        None,
    )?;
    comp.backward(
        &batch.questions,
        &tape_x,
        Some(&d_mx),
        Some(&d_key_x),
        &mut grads.compressor.params,
        None,
    )?;
    Ok(QaOut {
        loss,
        selections: sel,
    })
}
