//! The compressor C_φ (DESIGN §1 steps 2–3): T learned queries pass through B blocks of
//! `Q ← Q + CrossAttn(RMSNorm(Q), RMSNorm(H))`, `Q ← Q + MLP(RMSNorm(Q))` with
//! `MLP(x) = W2 · silu(W1 · x)`; the memory is M = Q ∈ R^{T×D}, the key
//! `k = normalize(W_key · mean_t M)` ∈ R^r (L2, `z / sqrt(|z|² + 1e-12)`).
//!
//! A batch of documents runs together: the query side is `docs·T` rows of real GEMMs, the
//! document side goes through the fused cross-attention ([`crate::attention::fused`]).
//! The backward gives gradients for every parameter and, optionally, for H (so that
//! training through θ stays possible).
use crate::attention::{fused, CrossAttnDims, CrossAttnGrads, CrossAttnWeights, DocBatch};
use crate::config::CompressorConfig;
use crate::error::{Error, Result};
use crate::linalg::{gemm, rmsnorm, rmsnorm_backward, silu, silu_grad, Mat};
use crate::params::Params;

const KEY_EPS: f32 = 1e-12;

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
    blocks: Vec<BlockTape>,
    pooled: Vec<f32>,
    z: Vec<f32>,
}

struct BlockTape {
    /// Residual stream entering the block, `[R, d]` (R = docs·T).
    x_in: Vec<f32>,
    xn_q: Vec<f32>,
    q: Vec<f32>,
    attn: fused::Saved,
    o: Vec<f32>,
    /// Residual stream entering the MLP.
    x_mid: Vec<f32>,
    xn_mlp: Vec<f32>,
    z1: Vec<f32>,
    act: Vec<f32>,
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

    fn attn_dims(&self) -> CrossAttnDims {
        CrossAttnDims {
            t: self.cfg.mem_tokens,
            d: self.cfg.d,
            heads: self.cfg.heads,
            head_dim: self.cfg.head_dim,
        }
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

    fn run(&self, docs: &DocBatch) -> Result<(Compressed, Tape)> {
        self.check_batch(docs)?;
        let cfg = &self.cfg;
        let (nd, t, d, a, f) = (
            docs.docs(),
            cfg.mem_tokens,
            cfg.d,
            cfg.attn_width(),
            cfg.mlp_hidden,
        );
        let r = nd * t;
        let mut x: Vec<f32> = self.params.q0.repeat(nd);
        let mut blocks = Vec::with_capacity(cfg.blocks);
        for p in &self.params.blocks {
            let x_in = x.clone();
            let mut xn_q = vec![0.0; r * d];
            rmsnorm(&x, &p.norm_q, cfg.eps, &mut xn_q);
            let mut q = vec![0.0; r * a];
            gemm(
                &mut q,
                false,
                Mat::new(&xn_q, r, d),
                false,
                Mat::new(&p.wq, a, d),
                true,
            );
            let w = CrossAttnWeights {
                g_h: &p.norm_h,
                wk: &p.wk,
                wv: &p.wv,
                eps: cfg.eps,
            };
            let mut o = vec![0.0; r * a];
            let attn = fused::forward(&self.attn_dims(), docs, &w, &q, &mut o)?;
            gemm(
                &mut x,
                true,
                Mat::new(&o, r, a),
                false,
                Mat::new(&p.wo, d, a),
                true,
            );
            let x_mid = x.clone();
            let mut xn_mlp = vec![0.0; r * d];
            rmsnorm(&x, &p.norm_mlp, cfg.eps, &mut xn_mlp);
            let mut z1 = vec![0.0; r * f];
            gemm(
                &mut z1,
                false,
                Mat::new(&xn_mlp, r, d),
                false,
                Mat::new(&p.w1, f, d),
                true,
            );
            let act: Vec<f32> = z1.iter().map(|&z| silu(z)).collect();
            gemm(
                &mut x,
                true,
                Mat::new(&act, r, f),
                false,
                Mat::new(&p.w2, d, f),
                true,
            );
            blocks.push(BlockTape {
                x_in,
                xn_q,
                q,
                attn,
                o,
                x_mid,
                xn_mlp,
                z1,
                act,
            });
        }
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
            blocks,
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
        let (nd, t, d, a, f, kd) = (
            tape.docs,
            cfg.mem_tokens,
            cfg.d,
            cfg.attn_width(),
            cfg.mlp_hidden,
            cfg.key_dim,
        );
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

        let mut dh_scratch;
        let d_h = match d_h {
            Some(b) => b,
            None => {
                dh_scratch = vec![0.0; docs.h.len()];
                dh_scratch.as_mut_slice()
            }
        };
        let mut tmp_d = vec![0.0; r * d];
        let mut tmp_f = vec![0.0; r * f];
        let mut tmp_a = vec![0.0; r * a];
        let mut dq = vec![0.0; r * a];
        for (bt, (p, g)) in tape
            .blocks
            .iter()
            .zip(self.params.blocks.iter().zip(grads.blocks.iter_mut()))
            .rev()
        {
            // MLP: x += w2 · silu(w1 · norm(x_mid)).
            gemm(
                &mut g.w2,
                true,
                Mat::new(&dx, r, d),
                true,
                Mat::new(&bt.act, r, f),
                false,
            );
            gemm(
                &mut tmp_f,
                false,
                Mat::new(&dx, r, d),
                false,
                Mat::new(&p.w2, d, f),
                false,
            );
            tmp_f
                .iter_mut()
                .zip(&bt.z1)
                .for_each(|(g, &z)| *g *= silu_grad(z));
            gemm(
                &mut g.w1,
                true,
                Mat::new(&tmp_f, r, f),
                true,
                Mat::new(&bt.xn_mlp, r, d),
                false,
            );
            gemm(
                &mut tmp_d,
                false,
                Mat::new(&tmp_f, r, f),
                false,
                Mat::new(&p.w1, f, d),
                false,
            );
            rmsnorm_backward(
                &bt.x_mid,
                &p.norm_mlp,
                cfg.eps,
                &tmp_d,
                &mut dx,
                &mut g.norm_mlp,
            );
            // Attention: x += wo · attn(q = wq · norm(x_in), H).
            gemm(
                &mut g.wo,
                true,
                Mat::new(&dx, r, d),
                true,
                Mat::new(&bt.o, r, a),
                false,
            );
            gemm(
                &mut tmp_a,
                false,
                Mat::new(&dx, r, d),
                false,
                Mat::new(&p.wo, d, a),
                false,
            );
            let w = CrossAttnWeights {
                g_h: &p.norm_h,
                wk: &p.wk,
                wv: &p.wv,
                eps: cfg.eps,
            };
            let mut ag = CrossAttnGrads {
                dq: &mut dq,
                dwk: &mut g.wk,
                dwv: &mut g.wv,
                dg_h: &mut g.norm_h,
                dh: &mut *d_h,
            };
            fused::backward(
                &self.attn_dims(),
                docs,
                &w,
                &bt.q,
                &bt.attn,
                &tmp_a,
                &mut ag,
            )?;
            gemm(
                &mut g.wq,
                true,
                Mat::new(&dq, r, a),
                true,
                Mat::new(&bt.xn_q, r, d),
                false,
            );
            gemm(
                &mut tmp_d,
                false,
                Mat::new(&dq, r, a),
                false,
                Mat::new(&p.wq, a, d),
                false,
            );
            rmsnorm_backward(&bt.x_in, &p.norm_q, cfg.eps, &tmp_d, &mut dx, &mut g.norm_q);
        }
        for dxd in dx.chunks_exact(t * d) {
            grads.q0.iter_mut().zip(dxd).for_each(|(g, &v)| *g += v);
        }
        Ok(())
    }
}
