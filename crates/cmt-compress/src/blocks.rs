//! The block stack shared by the compressor C_φ and the aggregator ψ (DESIGN §1 steps 2
//! and 6): B pre-norm blocks `X ← X + Wo·CrossAttn(Wq·RMSNorm(X), RMSNorm(H))`,
//! `X ← X + W2·silu(W1·RMSNorm(X))` over a batch of `docs` groups of `T` query rows, each
//! group attending over its own document's rows of `H`. The compressor starts `X` from its
//! learned queries Q₀; the aggregator starts it from the question's memory M_x and attends
//! over the selected memories. The backward returns the gradient with respect to the
//! starting `X`, so either caller can route it where its queries came from.
use crate::attention::{fused, CrossAttnDims, CrossAttnGrads, CrossAttnWeights, DocBatch};
use crate::config::CompressorConfig;
use crate::error::{Error, Result};
use crate::linalg::{gemm, rmsnorm, rmsnorm_backward, silu, silu_grad, Mat};
use crate::params::BlockParams;

/// What [`backward`] needs from a [`forward`].
pub struct StackTape {
    docs: usize,
    blocks: Vec<BlockTape>,
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

fn attn_dims(cfg: &CompressorConfig) -> CrossAttnDims {
    CrossAttnDims {
        t: cfg.mem_tokens,
        d: cfg.d,
        heads: cfg.heads,
        head_dim: cfg.head_dim,
    }
}

fn check(cfg: &CompressorConfig, params: &[BlockParams], docs: &DocBatch, x: &[f32]) -> Result<()> {
    if docs.docs() == 0 {
        return Err(Error::Shape("block stack: empty batch of documents".into()));
    }
    if docs.h.len() != docs.docs() * docs.n_max * cfg.d {
        return Err(Error::Shape(format!(
            "block stack: hidden states hold {} values, expected {} docs × {} rows × d = {}",
            docs.h.len(),
            docs.docs(),
            docs.n_max,
            cfg.d
        )));
    }
    let want = docs.docs() * cfg.mem_tokens * cfg.d;
    if x.len() != want {
        return Err(Error::Shape(format!(
            "block stack: queries hold {} values, expected docs·T·d = {want}",
            x.len()
        )));
    }
    if params.len() != cfg.blocks {
        return Err(Error::Shape(format!(
            "block stack: {} blocks of parameters for a config of {}",
            params.len(),
            cfg.blocks
        )));
    }
    Ok(())
}

/// Runs the blocks in place on `x` (`[docs, T, d]` in: the starting queries, out: the
/// result) against the batch `docs`, recording the tape.
pub fn forward(
    cfg: &CompressorConfig,
    params: &[BlockParams],
    docs: &DocBatch,
    x: &mut [f32],
) -> Result<StackTape> {
    check(cfg, params, docs, x)?;
    let (nd, t, d, a, f) = (
        docs.docs(),
        cfg.mem_tokens,
        cfg.d,
        cfg.attn_width(),
        cfg.mlp_hidden,
    );
    let r = nd * t;
    let mut blocks = Vec::with_capacity(cfg.blocks);
    for p in params {
        let x_in = x.to_vec();
        let mut xn_q = vec![0.0; r * d];
        rmsnorm(x, &p.norm_q, cfg.eps, &mut xn_q);
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
        let attn = fused::forward(&attn_dims(cfg), docs, &w, &q, &mut o)?;
        gemm(
            &mut *x,
            true,
            Mat::new(&o, r, a),
            false,
            Mat::new(&p.wo, d, a),
            true,
        );
        let x_mid = x.to_vec();
        let mut xn_mlp = vec![0.0; r * d];
        rmsnorm(x, &p.norm_mlp, cfg.eps, &mut xn_mlp);
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
            &mut *x,
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
    Ok(StackTape { docs: nd, blocks })
}

/// Backward of [`forward`]: `dx` holds dL/d(output) on entry and dL/d(starting queries) on
/// return; parameter gradients accumulate into `grads` and the gradient with respect to
/// the batch's hidden states into `d_h` (`[docs, n_max, d]`).
pub fn backward(
    cfg: &CompressorConfig,
    params: &[BlockParams],
    docs: &DocBatch,
    tape: &StackTape,
    dx: &mut [f32],
    grads: &mut [BlockParams],
    d_h: &mut [f32],
) -> Result<()> {
    check(cfg, params, docs, dx)?;
    if tape.docs != docs.docs() || grads.len() != params.len() || d_h.len() != docs.h.len() {
        return Err(Error::Shape(format!(
            "block stack backward: tape of {} documents, batch of {}, {} gradient blocks for \
             {}, d_h of {} values for {}",
            tape.docs,
            docs.docs(),
            grads.len(),
            params.len(),
            d_h.len(),
            docs.h.len()
        )));
    }
    let (t, d, a, f) = (cfg.mem_tokens, cfg.d, cfg.attn_width(), cfg.mlp_hidden);
    let r = tape.docs * t;
    let mut tmp_d = vec![0.0; r * d];
    let mut tmp_f = vec![0.0; r * f];
    let mut tmp_a = vec![0.0; r * a];
    let mut dq = vec![0.0; r * a];
    for (bt, (p, g)) in tape
        .blocks
        .iter()
        .zip(params.iter().zip(grads.iter_mut()))
        .rev()
    {
        // MLP: x += w2 · silu(w1 · norm(x_mid)).
        gemm(
            &mut g.w2,
            true,
            Mat::new(dx, r, d),
            true,
            Mat::new(&bt.act, r, f),
            false,
        );
        gemm(
            &mut tmp_f,
            false,
            Mat::new(dx, r, d),
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
        rmsnorm_backward(&bt.x_mid, &p.norm_mlp, cfg.eps, &tmp_d, dx, &mut g.norm_mlp);
        // Attention: x += wo · attn(q = wq · norm(x_in), H).
        gemm(
            &mut g.wo,
            true,
            Mat::new(dx, r, d),
            true,
            Mat::new(&bt.o, r, a),
            false,
        );
        gemm(
            &mut tmp_a,
            false,
            Mat::new(dx, r, d),
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
        fused::backward(&attn_dims(cfg), docs, &w, &bt.q, &bt.attn, &tmp_a, &mut ag)?;
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
        rmsnorm_backward(&bt.x_in, &p.norm_q, cfg.eps, &tmp_d, dx, &mut g.norm_q);
    }
    Ok(())
}
