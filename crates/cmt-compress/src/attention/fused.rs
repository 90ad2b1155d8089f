//! The fused one-pass cross-attention (the production CPU path).
//!
//! # Formulation: projections folded into the queries and the output
//! By associativity, `q_{t,h}·K_{j,h} = (Wk_hᵀ q_{t,h})·Hn_j` and
//! `Σ_j P_tj V_{j,h} = Wv_h (Σ_j P_tj Hn_j)`, with `Wk_h`, `Wv_h` the rows
//! `h·hd .. (h+1)·hd` of `wk`, `wv`. So K and V are never formed: the T·heads queries are
//! mapped into H's space once (`TQ × hd × d` FLOPs), the pass over H works in width d,
//! and the output is mapped back once. Per document the H pass costs `4·n·TQ·d` FLOPs
//! instead of `4·n·d·heads·hd` for the two projections alone — 4× fewer at T = 16,
//! hd = 64 (it wins whenever T < hd). The RMSNorm of H folds in too (its gain into the
//! queries and the output, its 1/rms per row into the scores).
//!
//! # The H-pass kernel (the part shared with `kernels/compress_attention.cu`)
//! Per document with rows `j < len`, per query row `i < TQ = T·heads` (`i = t·heads + h`):
//! ```text
//! rinv_j = 1 / sqrt(mean_c(H_jc²) + eps)
//! y_j    = rinv_j · H_j                               (normalised row, no gain)
//! s_ij   = qhat_i · y_j                               qhat_i = g_h ⊙ Wk_hᵀ q_{t,h} / sqrt(hd)
//! lse_i  = log Σ_j exp(s_ij)
//! u_i    = Σ_j exp(s_ij − lse_i) · y_j                U_{t,h} = g_h ⊙ u_i,  O_{t,h} = Wv_h U_{t,h}
//! ```
//! Backward, given `du_i = g_h ⊙ Wv_hᵀ dO_{t,h}` (FlashAttention-2: recompute s from lse):
//! ```text
//! p_ij    = exp(s_ij − lse_i)
//! δ_i     = du_i · u_i
//! ds_ij   = p_ij · (du_i · y_j − δ_i)
//! dqhat_i = Σ_j ds_ij · y_j
//! dy_j    = Σ_i (p_ij · du_i + ds_ij · qhat_i)
//! dH_j   += rinv_j · (dy_j − (dy_j · y_j / d) · y_j)
//! ```
//! and outside the pass: `dq_{t,h} = Wk_h (g_h ⊙ dqhat_i) / sqrt(hd)`,
//! `dWk_h += q_{t,h} ⊗ (g_h ⊙ dqhat_i) / sqrt(hd)`, `dWv_h += dO_{t,h} ⊗ U_{t,h}`,
//! `dg_h += Σ_i (qhat_i ⊘ g_h) ⊙ dqhat_i + Σ_i dU_i ⊙ u_i` (written without the division
//! in code: `qhat_i ⊘ g_h` is the unscaled-by-gain query, kept separately).
//! Neither pass holds more than a tile of scores; nothing of size TQ × n is stored.
//!
//! # This CPU implementation
//! - Query rows are kept in the order `i = t·heads + h` of the formulas, so one head's rows
//!   across a document (or the whole batch) have a uniform stride `heads·d`.
//! - [`forward`]: rayon over documents; per document the folded queries `qhat` come from
//!   one small product per head, then [`kernel::hpass_forward`] streams H once in tiles of
//!   [`kernel::TILE`] rows (online softmax, the normalisation and the score step with
//!   dispatched AVX-512 row primitives), then `O = (g_h ⊙ u) Wvᵀ` per head. With fewer
//!   documents than ~4× the threads, each document's query rows are also split into groups
//!   of whole `t` ranges that run in parallel.
//! - [`backward`]: rayon over documents (and over runs of H rows when there are few
//!   documents, each run with its own `dqhat` partial, summed after);
//!   [`kernel::hpass_backward`] recomputes `p` from `lse`. Weight gradients are summed in
//!   per-thread partials and reduced once.
//! - Every product (tile scores `qhat·yᵀ`, `p·y`, the backward's three, and the per-head
//!   query/output/weight products) goes through `mm`: a register-blocked AVX-512 kernel
//!   (6 × 64 block of C in zmm registers, K blocked so the B panel stays in L1, B read in
//!   place), or the `gemm` crate on machines without AVX-512F.
//! - [`Saved`] holds `u` and `lse`: `O(docs·TQ·d)`; `qhat` is recomputed in the backward
//!   (one small product per head per document).
//! - Buffers are allocated once per call and rayon split, never per tile; only when few
//!   documents are split into parallel pieces does each piece get its own tile scratch.
mod backward;
mod forward;
pub mod kernel;
mod mm;
mod simd;

#[doc(hidden)]
pub use mm::force_portable;

pub use backward::backward;
pub use forward::forward;

/// What the backward needs from the forward: `u` `[docs, TQ, d]` (rows `t·heads + h`) and
/// `lse` `[docs, TQ]`.
#[derive(Clone, Debug)]
pub struct Saved {
    pub(crate) u: Vec<f32>,
    pub(crate) lse: Vec<f32>,
    pub(crate) docs: usize,
    pub(crate) tq: usize,
    pub(crate) d: usize,
}

impl Saved {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.u.len() + self.lse.len()) * std::mem::size_of::<f32>()
    }
}

/// How many parallel pieces to cut each document into so that `docs · pieces` gives every
/// thread work (at most `max_pieces`).
pub(crate) fn pieces_per_doc(docs: usize, max_pieces: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads <= 1 || docs == 0 {
        return 1;
    }
    (4 * threads).div_ceil(docs).clamp(1, max_pieces.max(1))
}
