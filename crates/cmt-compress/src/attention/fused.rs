//! The fused one-pass cross-attention (the production CPU path). Not written yet.
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
