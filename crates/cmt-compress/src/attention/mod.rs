//! One cross-attention step of the compressor (DESIGN §1 step 2): T query rows of a
//! document attend over its n hidden-state rows.
//!
//! For each document (rows `j < len`; rows past `len` are padding and masked out):
//! ```text
//! Hn_j  = H_j ⊙ g_h / sqrt(mean(H_j²) + eps)          RMSNorm of the hidden states
//! K     = Hn Wkᵀ,  V = Hn Wvᵀ                          [n, heads·hd]
//! S_tj  = (q_{t,h} · K_{j,h}) / sqrt(hd)               per head h
//! P     = softmax over j < len of S
//! O_{t,h} = Σ_j P_tj V_{j,h}                           [T, heads·hd]
//! ```
//! Shapes: `h` is `[docs, n_max, d]` (row stride `d`, document stride `n_max·d`), `q` and
//! `out` are `[docs, t, heads·hd]`, `wk`/`wv` are `[heads·hd, d]` (row-major, the HF Linear
//! layout), `g_h` is `[d]`.
//!
//! Two implementations with the same signature: [`slow`] is the plain composition of ops
//! above (materialises K, V and the T×n scores; the test reference), [`fused`] is the
//! production path (one pass over H, no T×n score matrix in memory, see its module docs).
//! Backward: gradients with respect to `q`, `wk`, `wv`, `g_h` and `h`; weight and `h`
//! gradients are *accumulated* (`+=`) into the caller's buffers (H feeds several blocks),
//! `dq` is overwritten.
use crate::error::{Error, Result};

pub mod fused;
/// Launch geometry of kernels/compress_attention.cu (the CUDA H pass).
pub mod launch;
pub(crate) mod linalg;
pub mod slow;

/// Dimensions of one cross-attention step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossAttnDims {
    /// Query rows per document (the memory tokens T).
    pub t: usize,
    /// Width of H (the frozen model's hidden size D).
    pub d: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl CrossAttnDims {
    /// heads · head_dim: the width of q, K, V and the output.
    pub fn attn_width(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// A batch of documents' hidden states, padded to a common length.
#[derive(Clone, Copy, Debug)]
pub struct DocBatch<'a> {
    /// `[docs, n_max, d]`.
    pub h: &'a [f32],
    pub n_max: usize,
    /// Valid rows per document, each in `1..=n_max`.
    pub lens: &'a [usize],
}

impl DocBatch<'_> {
    pub fn docs(&self) -> usize {
        self.lens.len()
    }
}

/// The weights of one step.
#[derive(Clone, Copy, Debug)]
pub struct CrossAttnWeights<'a> {
    /// `[d]`: RMSNorm weight applied to H.
    pub g_h: &'a [f32],
    /// `[heads·hd, d]`.
    pub wk: &'a [f32],
    /// `[heads·hd, d]`.
    pub wv: &'a [f32],
    pub eps: f32,
}

/// Gradient buffers; weights and `dh` accumulate, `dq` is overwritten.
#[derive(Debug)]
pub struct CrossAttnGrads<'a> {
    /// `[docs, t, heads·hd]`, overwritten.
    pub dq: &'a mut [f32],
    /// `[heads·hd, d]`, accumulated.
    pub dwk: &'a mut [f32],
    /// `[heads·hd, d]`, accumulated.
    pub dwv: &'a mut [f32],
    /// `[d]`, accumulated.
    pub dg_h: &'a mut [f32],
    /// `[docs, n_max, d]`, accumulated; padding rows are left untouched.
    pub dh: &'a mut [f32],
}

/// Checks every buffer length against `dims` and the batch; the error names the buffer.
pub fn check_shapes(
    dims: &CrossAttnDims,
    docs: &DocBatch,
    w: &CrossAttnWeights,
    q: &[f32],
    out_len: usize,
) -> Result<()> {
    let (d, a, nd) = (dims.d, dims.attn_width(), docs.docs());
    let want = |name: &str, got: usize, want: usize| {
        if got == want {
            Ok(())
        } else {
            Err(Error::Shape(format!(
                "cross-attention: {name} holds {got} values, expected {want}"
            )))
        }
    };
    if dims.t == 0 || d == 0 || a == 0 {
        return Err(Error::Shape(format!(
            "cross-attention: empty dims {dims:?}"
        )));
    }
    want("h", docs.h.len(), nd * docs.n_max * d)?;
    want("q", q.len(), nd * dims.t * a)?;
    want("out", out_len, nd * dims.t * a)?;
    want("g_h", w.g_h.len(), d)?;
    want("wk", w.wk.len(), a * d)?;
    want("wv", w.wv.len(), a * d)?;
    if let Some((i, &n)) = docs
        .lens
        .iter()
        .enumerate()
        .find(|(_, &n)| n == 0 || n > docs.n_max)
    {
        return Err(Error::Shape(format!(
            "cross-attention: document {i} has {n} rows, must be in 1..={}",
            docs.n_max
        )));
    }
    Ok(())
}

/// [`check_shapes`] plus the gradient buffers.
pub(crate) fn check_grad_shapes(
    dims: &CrossAttnDims,
    docs: &DocBatch,
    w: &CrossAttnWeights,
    q: &[f32],
    d_out: &[f32],
    g: &CrossAttnGrads,
) -> Result<()> {
    check_shapes(dims, docs, w, q, q.len())?;
    let (d, a, nd) = (dims.d, dims.attn_width(), docs.docs());
    for (name, got, want) in [
        ("d_out", d_out.len(), nd * dims.t * a),
        ("dq", g.dq.len(), nd * dims.t * a),
        ("dwk", g.dwk.len(), a * d),
        ("dwv", g.dwv.len(), a * d),
        ("dg_h", g.dg_h.len(), d),
        ("dh", g.dh.len(), nd * docs.n_max * d),
    ] {
        if got != want {
            return Err(Error::Shape(format!(
                "cross-attention backward: {name} holds {got} values, expected {want}"
            )));
        }
    }
    Ok(())
}
