//! The fused cross-attention with its tile products on the portable path (the `gemm`
//! crate, what machines without AVX-512F run) against the unfused composition. A separate
//! test binary, so the switch cannot leak into the AVX-512 tests.
mod attn_common;

use attn_common::{check_fused_against_slow, Case};
use cmt_compress::attention::{fused, CrossAttnDims};

#[test]
fn portable_fused_matches_slow() {
    fused::force_portable(true);
    let dims = CrossAttnDims {
        t: 5,
        d: 40,
        heads: 3,
        head_dim: 12,
    };
    // Few documents (split into query groups / row runs) and many (not split).
    check_fused_against_slow(&Case::random(dims, 300, vec![300, 1, 129], 3, 2.0));
    let lens: Vec<usize> = (0..17).map(|i| 1 + (i * 53) % 200).collect();
    check_fused_against_slow(&Case::random(dims, 200, lens, 4, 1.0));
}
