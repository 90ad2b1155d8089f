//! A `Session` holds what a run of forward passes needs beyond the weights: the KV cache
//! (slots × capacity positions per layer), reusable scratch buffers, and host-side
//! bookkeeping. Buffers grow to the largest step seen and are then reused, so a decode loop
//! allocates nothing per token.
use crate::backend::{Backend, SeqSpan};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// A per-layer key/value prefix: `k`, `v` are [layers, kv_heads, p, head_dim], used as given
/// (no rotary applied). Sequence tokens then start at position p.
#[derive(Debug, Clone, PartialEq)]
pub struct KvPrefix {
    pub len: usize,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

pub(crate) struct Scratch<B: Backend> {
    pub rows: usize,
    pub out_rows: usize,
    pub x: B::Buf,
    pub xn: B::Buf,
    pub q: B::Buf,
    pub k: B::Buf,
    pub v: B::Buf,
    pub att: B::Buf,
    pub o: B::Buf,
    pub gate: B::Buf,
    pub up: B::Buf,
    pub act: B::Buf,
    pub head_in: B::Buf,
    pub logits: B::Buf,
}

pub struct Session<B: Backend> {
    pub(crate) k: Vec<B::Buf>,
    pub(crate) v: Vec<B::Buf>,
    pub slots: usize,
    pub capacity: usize,
    pub(crate) lens: Vec<usize>,
    /// Per slot: how far past its cache length the rotary positions of its next tokens are.
    pub(crate) offsets: Vec<usize>,
    pub(crate) scratch: Option<Scratch<B>>,
    /// Host copies reused across steps.
    pub(crate) logits: Vec<f32>,
    pub(crate) ids: Vec<u32>,
    pub(crate) positions: Vec<u32>,
    pub(crate) spans: Vec<SeqSpan>,
    pub(crate) pick: Vec<u32>,
}

impl<B: Backend> Session<B> {
    pub(crate) fn new(cfg: &ModelConfig, be: &B, slots: usize, capacity: usize) -> Result<Self> {
        if slots == 0 || capacity == 0 {
            return Err(Error::Invalid(
                "a session needs at least one slot and one position".into(),
            ));
        }
        if capacity > cfg.max_positions {
            return Err(Error::Invalid(format!(
                "capacity {capacity} exceeds the model's context of {} positions",
                cfg.max_positions
            )));
        }
        let per_layer = slots * cfg.kv_heads * capacity * cfg.head_dim;
        let mut k = Vec::with_capacity(cfg.layers);
        let mut v = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            k.push(be.zeros(per_layer)?);
            v.push(be.zeros(per_layer)?);
        }
        Ok(Session {
            k,
            v,
            slots,
            capacity,
            lens: vec![0; slots],
            offsets: vec![0; slots],
            scratch: None,
            logits: Vec::new(),
            ids: Vec::new(),
            positions: Vec::new(),
            spans: Vec::new(),
            pick: Vec::new(),
        })
    }

    /// Positions filled in `slot` (prefix plus processed tokens).
    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }

    pub fn is_empty(&self, slot: usize) -> bool {
        self.lens[slot] == 0
    }

    /// Forgets everything in `slot`.
    pub fn reset(&mut self, slot: usize) {
        self.lens[slot] = 0;
        self.offsets[slot] = 0;
    }

    pub fn reset_all(&mut self) {
        self.lens.fill(0);
        self.offsets.fill(0);
    }

    /// Makes the rotary positions of `slot`'s next tokens start `offset` past its cache
    /// length (cleared by [`Session::reset`] and [`Session::set_prefix`]): for a prefix of
    /// p entries whose keys were rotated for positions up to p + offset − 1, such as
    /// tokens kept from a longer sequence. Attention still spans exactly the cached entries.
    pub fn set_position_offset(&mut self, slot: usize, offset: usize) -> Result<()> {
        if slot >= self.slots {
            return Err(Error::Invalid(format!(
                "slot {slot} out of range: the session has {} slots",
                self.slots
            )));
        }
        self.offsets[slot] = offset;
        Ok(())
    }

    /// Empties `slot` and puts a key/value prefix in its first `prefix.len` positions.
    pub fn set_prefix(
        &mut self,
        cfg: &ModelConfig,
        be: &B,
        slot: usize,
        prefix: &KvPrefix,
    ) -> Result<()> {
        let (g_n, hd, p) = (cfg.kv_heads, cfg.head_dim, prefix.len);
        let want = cfg.layers * g_n * p * hd;
        if prefix.k.len() != want || prefix.v.len() != want {
            return Err(Error::Invalid(format!(
                "prefix k/v hold {}/{} values, expected layers·kv_heads·p·head_dim = {want}",
                prefix.k.len(),
                prefix.v.len()
            )));
        }
        if slot >= self.slots || p > self.capacity {
            return Err(Error::Invalid(format!(
                "prefix of {p} in slot {slot} does not fit {} slots × {} positions",
                self.slots, self.capacity
            )));
        }
        for l in 0..cfg.layers {
            for g in 0..g_n {
                let src = ((l * g_n + g) * p) * hd;
                let dst = ((slot * g_n + g) * self.capacity) * hd;
                be.write(&mut self.k[l], dst, &prefix.k[src..src + p * hd])?;
                be.write(&mut self.v[l], dst, &prefix.v[src..src + p * hd])?;
            }
        }
        self.lens[slot] = p;
        self.offsets[slot] = 0;
        Ok(())
    }

    /// The keys and values cached in `slot` (every filled position, prefix included), in
    /// [`KvPrefix`] layout: keys with the rotary of their positions already applied.
    pub fn read_kv(&self, cfg: &ModelConfig, be: &B, slot: usize) -> Result<KvPrefix> {
        if slot >= self.slots {
            return Err(Error::Invalid(format!(
                "slot {slot} out of range: the session has {} slots",
                self.slots
            )));
        }
        let (g_n, hd, p) = (cfg.kv_heads, cfg.head_dim, self.lens[slot]);
        let mut k = vec![0.0; cfg.layers * g_n * p * hd];
        let mut v = vec![0.0; k.len()];
        for l in 0..cfg.layers {
            for g in 0..g_n {
                let dst = ((l * g_n + g) * p) * hd;
                let src = ((slot * g_n + g) * self.capacity) * hd;
                be.download(&self.k[l], src, &mut k[dst..dst + p * hd])?;
                be.download(&self.v[l], src, &mut v[dst..dst + p * hd])?;
            }
        }
        Ok(KvPrefix { len: p, k, v })
    }

    /// Makes sure scratch buffers hold `rows` rows and `out_rows` logit rows.
    pub(crate) fn ensure_scratch(
        &mut self,
        cfg: &ModelConfig,
        be: &B,
        rows: usize,
        out_rows: usize,
    ) -> Result<()> {
        let fits = self
            .scratch
            .as_ref()
            .is_some_and(|s| s.rows >= rows && s.out_rows >= out_rows);
        if fits {
            return Ok(());
        }
        let (prev_rows, prev_out) = self
            .scratch
            .as_ref()
            .map_or((0, 0), |s| (s.rows, s.out_rows));
        let rows = rows.max(prev_rows);
        let out_rows = out_rows.max(prev_out);
        let (d, qd, kvd, f) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate);
        self.scratch = None; // free the old buffers before allocating the new ones
        self.scratch = Some(Scratch {
            rows,
            out_rows,
            x: be.zeros(rows * d)?,
            xn: be.zeros(rows * d)?,
            q: be.zeros(rows * qd)?,
            k: be.zeros(rows * kvd)?,
            v: be.zeros(rows * kvd)?,
            att: be.zeros(rows * qd)?,
            o: be.zeros(rows * d)?,
            gate: be.zeros(rows * f)?,
            up: be.zeros(rows * f)?,
            act: be.zeros(rows * f)?,
            head_in: be.zeros(out_rows * d)?,
            logits: be.zeros(out_rows * cfg.vocab)?,
        });
        Ok(())
    }
}
