//! Gradients through the frozen model (DESIGN §1 steps 7–8): the loss of labelled tokens
//! differentiated with respect to per-sequence key/value prefixes and soft input
//! embeddings. Input gradients only — the model's weights get no gradient and no gradient
//! memory. `forward_train` runs the ordinary forward while recording a `Tape` of the
//! activations each backward function needs (keys and values stay in the session's cache;
//! attention probabilities are recomputed, FlashAttention-style); `backward` walks the
//! layers in reverse. CPU for now.
pub mod ops;
#[cfg(test)]
mod ops_tests;

use crate::backend::cpu::{matmul_nn, matmul_nt};
use crate::backend::{CpuBackend, SeqSpan};
use crate::batch::PaddedBatch;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{Capture, Logits, Model, SeqInput};
use crate::score::IGNORE;
use crate::session::{KvPrefix, Session};
use ops::AttnSeq;
use rayon::prelude::*;

/// One training sequence: an optional key/value prefix, soft embeddings [s, hidden], token
/// ids, and labels for every row (soft rows first; −100 = no loss). As in HF, the logits
/// at row t are scored against labels[t + 1].
#[derive(Debug, Clone, Copy)]
pub struct TrainSeq<'a> {
    pub prefix: Option<&'a KvPrefix>,
    pub soft: &'a [f32],
    pub ids: &'a [u32],
    pub labels: &'a [i32],
}

#[derive(Default)]
pub(crate) struct LayerTape {
    pub x_in: Vec<f32>,
    pub q: Vec<f32>,
    pub x_mid: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
}

/// Saved activations of one `forward_train`, reused across steps (buffers only grow).
#[derive(Default)]
pub struct Tape {
    pub(crate) rows: usize,
    pub(crate) spans: Vec<SeqSpan>,
    pub(crate) layers: Vec<LayerTape>,
    pub(crate) x_final: Vec<f32>,
    pub(crate) xn_final: Vec<f32>,
    /// d loss / d final-norm output, [rows, hidden]; zero on unlabelled rows.
    d_xn_final: Vec<f32>,
    positions: Vec<u32>,
    prefix_lens: Vec<usize>,
    soft_rows: Vec<usize>,
}

impl Tape {
    pub(crate) fn start(&mut self, cfg: &ModelConfig, rows: usize, spans: &[SeqSpan]) {
        let (d, qd, f) = (cfg.hidden, cfg.q_dim(), cfg.intermediate);
        self.rows = rows;
        self.spans.clear();
        self.spans.extend_from_slice(spans);
        self.positions.clear();
        for s in spans {
            self.positions
                .extend((s.pos..s.pos + s.rows).map(|p| p as u32));
        }
        self.layers.resize_with(cfg.layers, LayerTape::default);
        for l in &mut self.layers {
            l.x_in.resize(rows * d, 0.0);
            l.q.resize(rows * qd, 0.0);
            l.x_mid.resize(rows * d, 0.0);
            l.gate.resize(rows * f, 0.0);
            l.up.resize(rows * f, 0.0);
        }
        self.x_final.resize(rows * d, 0.0);
        self.xn_final.resize(rows * d, 0.0);
    }

    /// Bytes held by the saved activations.
    pub fn bytes(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| l.x_in.len() + l.q.len() + l.x_mid.len() + l.gate.len() + l.up.len())
            .sum();
        4 * (per_layer + self.x_final.len() + self.xn_final.len() + self.d_xn_final.len())
    }
}

/// Gradients of the loss for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqGrads {
    /// d loss / d prefix keys and values, [layers, kv_heads, p, head_dim] (empty without a prefix).
    pub prefix_k: Vec<f32>,
    pub prefix_v: Vec<f32>,
    /// d loss / d soft embeddings, [s, hidden].
    pub soft: Vec<f32>,
}

/// Rows of the LM head computed at once in the loss: bounds the logits buffer to
/// LOSS_CHUNK × vocab floats whatever the batch.
const LOSS_CHUNK: usize = 64;

/// The ragged (ids, labels) of each row of a padded batch; `labels` is [batch, width].
pub fn ragged_from_padded<'a>(
    b: &'a PaddedBatch,
    labels: &'a [i32],
) -> Result<Vec<(&'a [u32], &'a [i32])>> {
    if labels.len() != b.batch * b.width || b.ids.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "labels hold {} values for a {}×{} batch",
            labels.len(),
            b.batch,
            b.width
        )));
    }
    (0..b.batch)
        .map(|i| {
            let s = b.span(i)?;
            let (a, e) = (i * b.width + s.start, i * b.width + s.end);
            Ok((&b.ids[a..e], &labels[a..e]))
        })
        .collect()
}

impl Model<CpuBackend> {
    /// Runs the batch (sequence i in session slot i, from its prefix or empty) and returns
    /// the mean cross-entropy over all labelled tokens of the batch, recording `tape`.
    pub fn forward_train(
        &self,
        sess: &mut Session<CpuBackend>,
        batch: &[TrainSeq],
        tape: &mut Tape,
    ) -> Result<f64> {
        let cfg = &self.cfg;
        if batch.is_empty() || batch.len() > sess.slots {
            return Err(Error::Invalid(format!(
                "a batch of {} sequences for a session of {} slots",
                batch.len(),
                sess.slots
            )));
        }
        tape.prefix_lens.clear();
        tape.soft_rows.clear();
        for (i, s) in batch.iter().enumerate() {
            let rows = s.soft.len() / cfg.hidden + s.ids.len();
            if s.labels.len() != rows {
                return Err(Error::Invalid(format!(
                    "sequence {i}: {} labels for {rows} rows",
                    s.labels.len()
                )));
            }
            match s.prefix {
                Some(p) => sess.set_prefix(cfg, &self.backend, i, p)?,
                None => sess.reset(i),
            }
            tape.prefix_lens.push(s.prefix.map_or(0, |p| p.len));
            tape.soft_rows.push(s.soft.len() / cfg.hidden);
        }
        let inputs: Vec<SeqInput> = batch
            .iter()
            .enumerate()
            .map(|(slot, s)| SeqInput {
                slot,
                soft: s.soft,
                ids: s.ids,
            })
            .collect();
        self.forward_recorded(sess, &inputs, Logits::None, Capture::None, Some(tape))?;

        // Labelled rows: row t is scored against labels[t + 1].
        let mut picks: Vec<(u32, u32)> = Vec::new();
        for (i, (s, span)) in batch.iter().zip(&tape.spans).enumerate() {
            for t in 0..span.rows.saturating_sub(1) {
                let y = s.labels[t + 1];
                if y == IGNORE {
                    continue;
                }
                if y < 0 || y as usize >= cfg.vocab {
                    return Err(Error::Invalid(format!(
                        "sequence {i}: label {y} at {} is outside the vocabulary",
                        t + 1
                    )));
                }
                picks.push(((span.row_start + t) as u32, y as u32));
            }
        }
        if picks.is_empty() {
            return Err(Error::Invalid("no labelled token in the batch".into()));
        }
        let (d, v) = (cfg.hidden, cfg.vocab);
        let scale = 1.0 / picks.len() as f32;
        tape.d_xn_final.clear();
        tape.d_xn_final.resize(tape.rows * d, 0.0);
        let head = self.weights.lm_head().dense_buf("the training loss")?;
        let mut xin = vec![0.0f32; LOSS_CHUNK * d];
        let mut logits = vec![0.0f32; LOSS_CHUNK * v];
        let mut dxn = vec![0.0f32; LOSS_CHUNK * d];
        let mut targets = Vec::with_capacity(LOSS_CHUNK);
        let mut total = 0.0f64;
        for chunk in picks.chunks(LOSS_CHUNK) {
            let m = chunk.len();
            targets.clear();
            for (j, &(row, y)) in chunk.iter().enumerate() {
                let r = row as usize;
                xin[j * d..(j + 1) * d].copy_from_slice(&tape.xn_final[r * d..(r + 1) * d]);
                targets.push(y);
            }
            matmul_nt(&xin, head, None, &mut logits, m, v, d);
            total += ops::cross_entropy_backward(&mut logits[..m * v], &targets, v, scale);
            matmul_nn(&logits, head, &mut dxn, m, v, d, false);
            for (j, &(row, _)) in chunk.iter().enumerate() {
                let r = row as usize;
                tape.d_xn_final[r * d..(r + 1) * d].copy_from_slice(&dxn[j * d..(j + 1) * d]);
            }
        }
        Ok(total / picks.len() as f64)
    }

    /// Gradients of the last `forward_train` loss with respect to each sequence's prefix and
    /// soft embeddings. `sess` must be the session that `forward_train` filled.
    pub fn backward(&self, sess: &Session<CpuBackend>, tape: &Tape) -> Result<Vec<SeqGrads>> {
        // On a rayon worker, like the forward (see `Model::forward_recorded`).
        rayon::scope(|_| self.backward_step(sess, tape))
    }

    fn backward_step(&self, sess: &Session<CpuBackend>, tape: &Tape) -> Result<Vec<SeqGrads>> {
        let cfg = &self.cfg;
        let (d, qd, kvd, f, hd) = (
            cfg.hidden,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate,
            cfg.head_dim,
        );
        let (nkv, cap) = (cfg.kv_heads, sess.capacity);
        let rows = tape.rows;
        if tape.d_xn_final.len() != rows * d || tape.layers.len() != cfg.layers {
            return Err(Error::Invalid(
                "backward needs the tape of a forward_train on this model".into(),
            ));
        }
        let mut grads: Vec<SeqGrads> = tape
            .prefix_lens
            .iter()
            .zip(&tape.soft_rows)
            .map(|(&p, &s)| SeqGrads {
                prefix_k: vec![0.0; cfg.layers * nkv * p * hd],
                prefix_v: vec![0.0; cfg.layers * nkv * p * hd],
                soft: vec![0.0; s * d],
            })
            .collect();
        let mut dx = vec![0.0f32; rows * d];
        ops::rmsnorm_backward(
            &tape.x_final,
            &self.weights.final_norm,
            &tape.d_xn_final,
            &mut dx,
            cfg.rms_eps,
        );

        let mut d_act = vec![0.0f32; rows * f];
        let mut dg = vec![0.0f32; rows * f];
        let mut du = vec![0.0f32; rows * f];
        let mut dxn = vec![0.0f32; rows * d];
        let mut d_att = vec![0.0f32; rows * qd];
        let mut dq = vec![0.0f32; rows * qd];
        let mut dk_rows = vec![0.0f32; rows * kvd];
        let mut dv_rows = vec![0.0f32; rows * kvd];
        let n_seq = tape.spans.len();
        let mut dk_cache = vec![0.0f32; n_seq * nkv * cap * hd];
        let mut dv_cache = vec![0.0f32; n_seq * nkv * cap * hd];
        for l in (0..cfg.layers).rev() {
            let w = &self.weights.layers[l];
            let lt = &tape.layers[l];
            // MLP: x_out = x_mid + down(silu(gate(n2)) · up(n2)), n2 = rmsnorm(x_mid)
            matmul_nn(
                &dx,
                w.w_down.dense_buf("the backward")?,
                &mut d_act,
                rows,
                d,
                f,
                false,
            );
            dg.copy_from_slice(&lt.gate[..rows * f]);
            du.copy_from_slice(&lt.up[..rows * f]);
            ops::swiglu_backward(&mut dg, &mut du, &d_act);
            matmul_nn(
                &dg,
                w.w_gate.dense_buf("the backward")?,
                &mut dxn,
                rows,
                f,
                d,
                false,
            );
            matmul_nn(
                &du,
                w.w_up.dense_buf("the backward")?,
                &mut dxn,
                rows,
                f,
                d,
                true,
            );
            ops::rmsnorm_backward(&lt.x_mid, &w.ffn_norm, &dxn, &mut dx, cfg.rms_eps);
            // Attention: x_mid = x_in + o(attn(rope(q(n1)), [prefix; rope(k(n1))], [prefix; v(n1)]))
            matmul_nn(
                &dx,
                w.wo.dense_buf("the backward")?,
                &mut d_att,
                rows,
                d,
                qd,
                false,
            );
            self.attention_backward(sess, tape, l, &d_att, &mut dq, &mut dk_cache, &mut dv_cache);
            for (si, span) in tape.spans.iter().enumerate() {
                let p = tape.prefix_lens[si];
                for g in 0..nkv {
                    let base = (si * nkv + g) * cap * hd;
                    if p > 0 {
                        let dst = ((l * nkv + g) * p) * hd;
                        grads[si].prefix_k[dst..dst + p * hd]
                            .copy_from_slice(&dk_cache[base..base + p * hd]);
                        grads[si].prefix_v[dst..dst + p * hd]
                            .copy_from_slice(&dv_cache[base..base + p * hd]);
                    }
                    for r in 0..span.rows {
                        let src = base + (span.pos + r) * hd;
                        let dst = (span.row_start + r) * kvd + g * hd;
                        dk_rows[dst..dst + hd].copy_from_slice(&dk_cache[src..src + hd]);
                        dv_rows[dst..dst + hd].copy_from_slice(&dv_cache[src..src + hd]);
                    }
                }
            }
            ops::rope_backward(
                &mut dq,
                &tape.positions,
                cfg.heads,
                hd,
                &self.rope.cos,
                &self.rope.sin,
            );
            ops::rope_backward(
                &mut dk_rows,
                &tape.positions,
                nkv,
                hd,
                &self.rope.cos,
                &self.rope.sin,
            );
            matmul_nn(
                &dq,
                w.wq.dense_buf("the backward")?,
                &mut dxn,
                rows,
                qd,
                d,
                false,
            );
            matmul_nn(
                &dk_rows,
                w.wk.dense_buf("the backward")?,
                &mut dxn,
                rows,
                kvd,
                d,
                true,
            );
            matmul_nn(
                &dv_rows,
                w.wv.dense_buf("the backward")?,
                &mut dxn,
                rows,
                kvd,
                d,
                true,
            );
            ops::rmsnorm_backward(&lt.x_in, &w.attn_norm, &dxn, &mut dx, cfg.rms_eps);
        }
        for (si, span) in tape.spans.iter().enumerate() {
            let s = tape.soft_rows[si];
            let a = span.row_start * d;
            grads[si].soft.copy_from_slice(&dx[a..a + s * d]);
        }
        Ok(grads)
    }

    /// dq for all rows, and d keys / d values per (sequence, kv head) block of the cache.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        sess: &Session<CpuBackend>,
        tape: &Tape,
        l: usize,
        d_att: &[f32],
        dq: &mut [f32],
        dk_cache: &mut [f32],
        dv_cache: &mut [f32],
    ) {
        let cfg = &self.cfg;
        let (hd, nkv, cap, qd) = (cfg.head_dim, cfg.kv_heads, sess.capacity, cfg.q_dim());
        let group = cfg.heads / nkv;
        dk_cache.fill(0.0);
        dv_cache.fill(0.0);
        let q = &tape.layers[l].q;
        let (kc, vc) = (&sess.k[l], &sess.v[l]);
        // One task per (sequence, kv head): it owns that block of dk/dv and, for the rows of
        // its sequence, the dq columns of its heads; the dq pieces are scattered after.
        let pieces: Vec<(usize, usize, Vec<f32>)> = dk_cache
            .par_chunks_mut(cap * hd)
            .zip(dv_cache.par_chunks_mut(cap * hd))
            .enumerate()
            .map(|(blk, (dk, dv))| {
                let (si, g) = (blk / nkv, blk % nkv);
                let span = tape.spans[si];
                let sq = AttnSeq {
                    row_start: span.row_start,
                    rows: span.rows,
                    pos: span.pos,
                };
                let base = ((span.slot * nkv + g) * cap) * hd;
                let k = &kc[base..base + cap * hd];
                let v = &vc[base..base + cap * hd];
                let mut local_dq = vec![0.0f32; span.rows * group * hd];
                let mut scratch = Vec::new();
                ops::attention_backward_group(
                    q,
                    d_att,
                    &mut local_dq,
                    k,
                    v,
                    dk,
                    dv,
                    sq,
                    g,
                    cfg.heads,
                    nkv,
                    hd,
                    &mut scratch,
                );
                (si, g, local_dq)
            })
            .collect();
        for (si, g, local) in pieces {
            let span = tape.spans[si];
            let w = group * hd;
            for r in 0..span.rows {
                let a = (span.row_start + r) * qd + g * w;
                dq[a..a + w].copy_from_slice(&local[r * w..(r + 1) * w]);
            }
        }
    }
}
