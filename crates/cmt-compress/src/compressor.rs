//! The compressor C_φ (DESIGN §1 steps 2–3): T learned queries pass through B blocks of
//! `Q ← Q + CrossAttn(RMSNorm(Q), RMSNorm(H))`, `Q ← Q + MLP(RMSNorm(Q))` with
//! `MLP(x) = W2 · silu(W1 · x)`; the memory is M = Q ∈ R^{T×D}, the key
//! `k = normalize(W_key · mean_t M)` ∈ R^r (L2, `z / sqrt(|z|² + 1e-12)`).
//!
//! A batch of documents runs together: the query side is `docs·T` rows of real GEMMs, the
//! document side goes through the fused cross-attention ([`crate::attention::fused`]).
//! The backward gives gradients for every parameter and, optionally, for H (so that
//! training through θ stays possible).
use crate::attention::DocBatch;
use crate::blocks::{self, StackTape};
use crate::config::CompressorConfig;
use crate::error::{Error, Result};
use crate::linalg::{gemm, Mat};
use crate::params::Params;

const KEY_EPS: f32 = 1e-12;

#[derive(Clone, Debug, PartialEq)]
pub struct Compressor {
    pub cfg: CompressorConfig,
    pub params: Params,
}

/// Memories `[docs, T, d]` and keys `[docs, r]` of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Compressed {
    pub memories: Vec<f32>,
    pub keys: Vec<f32>,
}

/// What the backward needs from a training forward.
pub struct Tape {
    docs: usize,
    stack: StackTape,
    pooled: Vec<f32>,
    z: Vec<f32>,
}

impl Compressor {
    pub fn new(cfg: CompressorConfig, params: Params) -> Result<Self> {
        cfg.validate()?;
        params.check(&cfg)?;
        Ok(Compressor { cfg, params })
    }

    /// A freshly initialised compressor (see [`Params::init`]).
    pub fn init(cfg: CompressorConfig, seed: u64) -> Result<Self> {
        let params = Params::init(&cfg, seed)?;
        Self::new(cfg, params)
    }

    fn check_batch(&self, docs: &DocBatch) -> Result<()> {
        if docs.docs() == 0 {
            return Err(Error::Shape("compressor: empty batch of documents".into()));
        }
        if docs.h.len() != docs.docs() * docs.n_max * self.cfg.d {
            return Err(Error::Shape(format!(
                "compressor: hidden states hold {} values, expected {} docs × {} rows × d = {}",
                docs.h.len(),
                docs.docs(),
                docs.n_max,
                self.cfg.d
            )));
        }
        Ok(())
    }

    /// Memories and keys of a batch of documents (inference).
    pub fn forward(&self, docs: &DocBatch) -> Result<Compressed> {
        self.run(docs).map(|(c, _)| c)
    }

    /// [`Compressor::forward`], also returning the tape for [`Compressor::backward`].
    pub fn forward_train(&self, docs: &DocBatch) -> Result<(Compressed, Tape)> {
        self.run(docs)
    }

    /// The hidden states the blocks read: standardised when the config has input
    /// statistics (then owned), else the batch's own.
    fn block_input(&self, docs: &DocBatch) -> Option<Vec<f32>> {
        self.cfg.input_stats.as_ref().map(|s| s.apply(docs))
    }

    fn run(&self, docs: &DocBatch) -> Result<(Compressed, Tape)> {
        self.check_batch(docs)?;
        let owned = self.block_input(docs);
        let docs = &DocBatch {
            h: owned.as_deref().unwrap_or(docs.h),
            ..*docs
        };
        let cfg = &self.cfg;
        let (nd, t, d) = (docs.docs(), cfg.mem_tokens, cfg.d);
        let mut x: Vec<f32> = self.params.q0.repeat(nd);
        let stack = blocks::forward(cfg, &self.params.blocks, docs, &mut x)?;
        // Key head: mean over the T memory tokens, project, L2-normalise.
        let mut pooled = vec![0.0; nd * d];
        for (pd, md) in pooled.chunks_exact_mut(d).zip(x.chunks_exact(t * d)) {
            for row in md.chunks_exact(d) {
                pd.iter_mut().zip(row).for_each(|(p, &v)| *p += v);
            }
            pd.iter_mut().for_each(|p| *p /= t as f32);
        }
        let kd = cfg.key_dim;
        let mut z = vec![0.0; nd * kd];
        gemm(
            &mut z,
            false,
            Mat::new(&pooled, nd, d),
            false,
            Mat::new(&self.params.w_key, kd, d),
            true,
        );
        let keys: Vec<f32> = z
            .chunks_exact(kd)
            .flat_map(|zr| {
                let inv = 1.0 / (zr.iter().map(|v| v * v).sum::<f32>() + KEY_EPS).sqrt();
                zr.iter().map(move |v| v * inv)
            })
            .collect();
        let tape = Tape {
            docs: nd,
            stack,
            pooled,
            z,
        };
        Ok((Compressed { memories: x, keys }, tape))
    }

    /// Accumulates into `grads` the gradients of a loss whose gradients with respect to the
    /// memories (`d_mem`, `[docs, T, d]`) and the keys (`d_key`, `[docs, r]`) are given
    /// (either may be absent: zero). With `d_h` (`[docs, n_max, d]`), also accumulates the
    /// gradient with respect to the document hidden states. `docs` must be the batch the
    /// tape was recorded on.
    pub fn backward(
        &self,
        docs: &DocBatch,
        tape: &Tape,
        d_mem: Option<&[f32]>,
        d_key: Option<&[f32]>,
        grads: &mut Params,
        d_h: Option<&mut [f32]>,
    ) -> Result<()> {
        self.check_batch(docs)?;
        let cfg = &self.cfg;
        let (nd, t, d, kd) = (tape.docs, cfg.mem_tokens, cfg.d, cfg.key_dim);
        if docs.docs() != nd {
            return Err(Error::Shape(format!(
                "compressor backward: tape of {nd} documents, batch of {}",
                docs.docs()
            )));
        }
        grads.check(cfg)?;
        let r = nd * t;
        let check = |name: &str, got: Option<usize>, want: usize| match got {
            Some(n) if n != want => Err(Error::Shape(format!(
                "compressor backward: {name} holds {n} values, expected {want}"
            ))),
            _ => Ok(()),
        };
        check("d_mem", d_mem.map(<[f32]>::len), r * d)?;
        check("d_key", d_key.map(<[f32]>::len), nd * kd)?;
        check("d_h", d_h.as_deref().map(<[f32]>::len), docs.h.len())?;

        let mut dx = d_mem.map_or_else(|| vec![0.0; r * d], <[f32]>::to_vec);
        if let Some(dk) = d_key {
            // key = z / n, n = sqrt(|z|² + eps): dz = dk / n − z (z·dk) / n³.
            let mut dz = vec![0.0; nd * kd];
            for ((dzr, zr), dkr) in dz
                .chunks_exact_mut(kd)
                .zip(tape.z.chunks_exact(kd))
                .zip(dk.chunks_exact(kd))
            {
                let n2 = zr.iter().map(|v| v * v).sum::<f32>() + KEY_EPS;
                let inv = 1.0 / n2.sqrt();
                let zdk: f32 = zr.iter().zip(dkr).map(|(z, g)| z * g).sum();
                let c = zdk * inv / n2;
                for ((o, &z), &g) in dzr.iter_mut().zip(zr).zip(dkr) {
                    *o = g * inv - z * c;
                }
            }
            gemm(
                &mut grads.w_key,
                true,
                Mat::new(&dz, nd, kd),
                true,
                Mat::new(&tape.pooled, nd, d),
                false,
            );
            let mut dpooled = vec![0.0; nd * d];
            gemm(
                &mut dpooled,
                false,
                Mat::new(&dz, nd, kd),
                false,
                Mat::new(&self.params.w_key, kd, d),
                false,
            );
            for (dxd, dp) in dx.chunks_exact_mut(t * d).zip(dpooled.chunks_exact(d)) {
                for row in dxd.chunks_exact_mut(d) {
                    row.iter_mut()
                        .zip(dp)
                        .for_each(|(x, &g)| *x += g / t as f32);
                }
            }
        }

        let owned = self.block_input(docs);
        let block_docs = DocBatch {
            h: owned.as_deref().unwrap_or(docs.h),
            ..*docs
        };
        // The blocks' gradient with respect to what they read; with input statistics
        // dL/dh = dL/dh' ⊙ scale (the mean is a constant), applied after the accumulation,
        // so it goes through a scratch buffer then.
        let mut dh_scratch;
        let (d_block, d_caller) = match (d_h, &self.cfg.input_stats) {
            (Some(b), None) => (b, None),
            (caller, _) => {
                dh_scratch = vec![0.0; docs.h.len()];
                (dh_scratch.as_mut_slice(), caller)
            }
        };
        blocks::backward(
            cfg,
            &self.params.blocks,
            &block_docs,
            &tape.stack,
            &mut dx,
            &mut grads.blocks,
            d_block,
        )?;
        if let (Some(out), Some(stats)) = (d_caller, &self.cfg.input_stats) {
            for (o, g) in out.chunks_exact_mut(d).zip(d_block.chunks_exact(d)) {
                for ((o, &g), &sc) in o.iter_mut().zip(g).zip(&stats.scale) {
                    *o += g * sc;
                }
            }
        }
        for dxd in dx.chunks_exact(t * d) {
            grads.q0.iter_mut().zip(dxd).for_each(|(g, &v)| *g += v);
        }
        Ok(())
    }
}
