//! The decoder-only transformer (Llama / Mistral / Qwen2), written once against `Backend`.
use crate::backend::{AttnShape, Backend, RopeTable, SeqSpan};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::session::Session;
use crate::train::Tape;
use crate::weights::Weights;

/// One sequence of a forward step.
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    /// KV-cache slot; the step continues whatever the slot already holds.
    pub slot: usize,
    /// Soft input embeddings [s, hidden] placed before `ids` (may be empty).
    pub soft: &'a [f32],
    pub ids: &'a [u32],
}

impl<'a> SeqInput<'a> {
    pub fn tokens(slot: usize, ids: &'a [u32]) -> Self {
        SeqInput {
            slot,
            soft: &[],
            ids,
        }
    }
}

/// Which rows get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every row of every sequence, in input order.
    All,
    /// The last row of each sequence.
    Last,
    None,
}

/// One checkpoint of the residual stream, as captured by [`Model::forward_hidden`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HiddenLayer {
    /// The residual stream after `n` layers: 0 = the token embeddings, `L` = the output
    /// of the last layer (before the final norm).
    Residual(usize),
    /// The output of the final RMSNorm (what the LM head reads).
    FinalNorm,
}

impl HiddenLayer {
    /// Position in the full capture list of [`Model::forward`] (`layers + 2` entries):
    /// `Residual(n)` → n, `FinalNorm` → layers + 1. Errors if `n > layers`.
    pub fn capture_index(self, layers: usize) -> Result<usize> {
        match self {
            HiddenLayer::Residual(n) if n <= layers => Ok(n),
            HiddenLayer::Residual(n) => Err(Error::Invalid(format!(
                "hidden layer {n} out of range: the model has {layers} layers (0..={layers})"
            ))),
            HiddenLayer::FinalNorm => Ok(layers + 1),
        }
    }
}

/// What a forward step copies out of the residual stream.
pub(crate) enum Capture<'a> {
    None,
    /// Every checkpoint (`layers + 2` entries of [rows, hidden]).
    All(&'a mut Vec<Vec<f32>>),
    /// Only checkpoint `at` (a [`HiddenLayer::capture_index`]), into `out` ([rows, hidden]).
    One {
        at: usize,
        out: &'a mut Vec<f32>,
    },
}

pub struct Model<B: Backend> {
    pub cfg: ModelConfig,
    pub backend: B,
    pub weights: Weights<B>,
    pub(crate) rope: RopeTable<B>,
}

impl<B: Backend> Model<B> {
    pub fn new(cfg: ModelConfig, backend: B, weights: Weights<B>) -> Result<Self> {
        let rope = RopeTable::scaled(
            &backend,
            cfg.head_dim,
            cfg.rope_theta,
            &cfg.rope_scaling,
            cfg.max_positions,
        )?;
        Ok(Model {
            cfg,
            backend,
            weights,
            rope,
        })
    }

    /// A session with `slots` independent sequences of up to `capacity` positions each.
    pub fn session(&self, slots: usize, capacity: usize) -> Result<Session<B>> {
        Session::new(&self.cfg, &self.backend, slots, capacity)
    }

    /// Runs one step over a batch of sequences and returns the requested logits
    /// ([n_rows, vocab], host memory owned by the session). If `hidden` is given, it receives
    /// the residual stream of all rows after the embedding and after every layer, then the
    /// final-norm output: layers + 2 entries of [rows, hidden].
    pub fn forward<'s>(
        &self,
        sess: &'s mut Session<B>,
        inputs: &[SeqInput],
        logits: Logits,
        hidden: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<&'s [f32]> {
        let capture = match hidden {
            Some(h) => Capture::All(h),
            None => Capture::None,
        };
        self.forward_recorded(sess, inputs, logits, capture, None)
    }

    /// Runs one step (no logits) and copies out only the hidden states at `layer`:
    /// `out` becomes [rows, hidden], the rows of every sequence in input order. Costs one
    /// download instead of the `layers + 2` of `forward`'s full capture.
    pub fn forward_hidden(
        &self,
        sess: &mut Session<B>,
        inputs: &[SeqInput],
        layer: HiddenLayer,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let at = layer.capture_index(self.cfg.layers)?;
        let capture = Capture::One { at, out };
        self.forward_recorded(sess, inputs, Logits::None, capture, None)?;
        Ok(())
    }

    /// `forward`, also saving into `tape` the activations the backward pass needs
    /// (see `train`). Keys and values stay in the session's cache.
    pub(crate) fn forward_recorded<'s>(
        &self,
        sess: &'s mut Session<B>,
        inputs: &[SeqInput],
        logits: Logits,
        hidden: Capture<'_>,
        tape: Option<&mut Tape>,
    ) -> Result<&'s [f32]> {
        // Run the whole step on a rayon worker. Called from a thread outside the pool, every
        // parallel op of the step (~400 per decoded token) would otherwise be a cold
        // injection: a sleeping worker woken, the caller parked on a latch, two context
        // switches per op (≈ a quarter of a decode step, docs/perf.md). Inside the pool the
        // nested par_iters split by work stealing. Results do not depend on the thread.
        rayon::scope(|_| self.forward_step(sess, inputs, logits, hidden, tape))
    }

    fn forward_step<'s>(
        &self,
        sess: &'s mut Session<B>,
        inputs: &[SeqInput],
        logits: Logits,
        mut hidden: Capture<'_>,
        mut tape: Option<&mut Tape>,
    ) -> Result<&'s [f32]> {
        let cfg = &self.cfg;
        let be = &self.backend;
        let d = cfg.hidden;
        // Lay the batch out as consecutive rows, one span per sequence.
        sess.spans.clear();
        sess.ids.clear();
        sess.positions.clear();
        sess.pick.clear();
        let mut rows = 0;
        for (i, inp) in inputs.iter().enumerate() {
            if inp.soft.len() % d != 0 {
                return Err(Error::Invalid(format!(
                    "sequence {i}: soft embeddings hold {} values, not a multiple of hidden size {d}",
                    inp.soft.len()
                )));
            }
            let n = inp.soft.len() / d + inp.ids.len();
            if n == 0 {
                return Err(Error::Invalid(format!("sequence {i} is empty")));
            }
            if inp.slot >= sess.slots {
                return Err(Error::Invalid(format!(
                    "sequence {i}: slot {} >= {} slots",
                    inp.slot, sess.slots
                )));
            }
            if inputs[..i].iter().any(|o| o.slot == inp.slot) {
                return Err(Error::Invalid(format!(
                    "sequence {i}: slot {} used twice in one step",
                    inp.slot
                )));
            }
            let pos = sess.lens[inp.slot];
            if pos + n > sess.capacity {
                return Err(Error::Invalid(format!(
                    "sequence {i}: {pos} cached + {n} new positions exceed the session capacity of {}",
                    sess.capacity
                )));
            }
            sess.spans.push(SeqSpan {
                row_start: rows,
                rows: n,
                slot: inp.slot,
                pos,
            });
            let rot = pos + sess.offsets[inp.slot];
            sess.positions.extend((rot..rot + n).map(|p| p as u32));
            match logits {
                Logits::All => sess.pick.extend((rows..rows + n).map(|r| r as u32)),
                Logits::Last => sess.pick.push((rows + n - 1) as u32),
                Logits::None => {}
            }
            rows += n;
        }
        let n_out = sess.pick.len();
        sess.ensure_scratch(cfg, be, rows, n_out)?;
        let s = sess.scratch.as_mut().expect("scratch allocated above");

        for (inp, span) in inputs.iter().zip(&sess.spans) {
            let n_soft = inp.soft.len() / d;
            be.write(&mut s.x, span.row_start * d, inp.soft)?;
            self.weights
                .embed_rows(be, inp.ids, &mut s.x, span.row_start + n_soft)?;
        }
        let mut checkpoint = 0;
        let mut capture = |buf: &B::Buf| -> Result<()> {
            match &mut hidden {
                Capture::None => {}
                Capture::All(h) => {
                    let mut host = vec![0.0; rows * d];
                    be.download(buf, 0, &mut host)?;
                    h.push(host);
                }
                Capture::One { at, out } if *at == checkpoint => {
                    out.clear();
                    out.resize(rows * d, 0.0);
                    be.download(buf, 0, out)?;
                }
                Capture::One { .. } => {}
            }
            checkpoint += 1;
            Ok(())
        };
        capture(&s.x)?;

        if let Some(t) = tape.as_deref_mut() {
            t.start(cfg, rows, &sess.spans);
        }
        let save = |dst: &mut Vec<f32>, buf: &B::Buf| be.download(buf, 0, dst);
        let shape = AttnShape {
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            capacity: sess.capacity,
        };
        for (l, w) in self.weights.layers.iter().enumerate() {
            if let Some(t) = tape.as_deref_mut() {
                save(&mut t.layers[l].x_in, &s.x)?;
            }
            be.rmsnorm(&s.x, &w.attn_norm, &mut s.xn, rows, cfg.rms_eps)?;
            be.matmul_nt(&s.xn, &w.wq, w.bq.as_ref(), &mut s.q, rows)?;
            be.matmul_nt(&s.xn, &w.wk, w.bk.as_ref(), &mut s.k, rows)?;
            be.matmul_nt(&s.xn, &w.wv, w.bv.as_ref(), &mut s.v, rows)?;
            be.rope(
                &mut s.q,
                &sess.positions,
                cfg.heads,
                cfg.head_dim,
                &self.rope,
            )?;
            be.rope(
                &mut s.k,
                &sess.positions,
                cfg.kv_heads,
                cfg.head_dim,
                &self.rope,
            )?;
            if let Some(t) = tape.as_deref_mut() {
                save(&mut t.layers[l].q, &s.q)?;
            }
            be.kv_write(
                &s.k,
                &s.v,
                &mut sess.k[l],
                &mut sess.v[l],
                &sess.spans,
                shape,
            )?;
            be.attention(&s.q, &sess.k[l], &sess.v[l], &sess.spans, shape, &mut s.att)?;
            be.matmul_nt(&s.att, &w.wo, None, &mut s.o, rows)?;
            be.add_assign(&mut s.x, &s.o, rows * d)?;

            be.rmsnorm(&s.x, &w.ffn_norm, &mut s.xn, rows, cfg.rms_eps)?;
            be.matmul_nt(&s.xn, &w.w_gate, None, &mut s.gate, rows)?;
            be.matmul_nt(&s.xn, &w.w_up, None, &mut s.up, rows)?;
            if let Some(t) = tape.as_deref_mut() {
                let lt = &mut t.layers[l];
                save(&mut lt.x_mid, &s.x)?;
                save(&mut lt.gate, &s.gate)?;
                save(&mut lt.up, &s.up)?;
            }
            be.swiglu(&s.gate, &s.up, &mut s.act, rows * cfg.intermediate)?;
            be.matmul_nt(&s.act, &w.w_down, None, &mut s.o, rows)?;
            be.add_assign(&mut s.x, &s.o, rows * d)?;
            capture(&s.x)?;
        }
        be.rmsnorm(&s.x, &self.weights.final_norm, &mut s.xn, rows, cfg.rms_eps)?;
        capture(&s.xn)?;
        if let Some(t) = tape {
            save(&mut t.x_final, &s.x)?;
            save(&mut t.xn_final, &s.xn)?;
        }
        for span in &sess.spans {
            sess.lens[span.slot] = span.pos + span.rows;
        }

        if n_out == 0 {
            return Ok(&[]);
        }
        be.gather_rows(&s.xn, d, &sess.pick, &mut s.head_in, 0)?;
        be.matmul_nt(
            &s.head_in,
            self.weights.lm_head(),
            None,
            &mut s.logits,
            n_out,
        )?;
        let n = n_out * cfg.vocab;
        if sess.logits.len() < n {
            sess.logits.resize(n, 0.0);
        }
        be.download(&s.logits, 0, &mut sess.logits[..n])?;
        Ok(&sess.logits[..n])
    }
}
