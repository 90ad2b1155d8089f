//! Launch geometry of kernels/compress_attention.cu, the H pass of the compressor's fused
//! cross-attention (equations in crates/cmt-compress/src/attention/fused.rs and at the top of
//! the .cu file). Layouts: qhat, u, du, dqhat f32 `[docs, tq, d]`; lse f32 `[docs, tq]`; H
//! (`dt`) and dH (f32) `[docs, n_max, d]`; lens i32 `[docs]` (values in `0..=n_max`).
// Kernel signatures mirror the CUDA ones, pointer by pointer.
#![allow(clippy::too_many_arguments)]
use cmt_runtime::cuda::launch::{i32_of, Arg, DType, Launch};
use cmt_runtime::cuda::CudaError;

/// Threads per block (`CA_THREADS`): one warp per query (forward, dqhat) or per row (dH).
pub const THREADS: u32 = 256;
/// Queries per forward / dqhat block and rows per dH block (`CA_WARPS`).
pub const WARPS: usize = THREADS as usize / 32;
/// Largest width the kernels take: each lane holds `d / 32` columns (`32 · CA_KMAX`).
pub const MAX_D: usize = 1024;

/// The shape of one batched H pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub docs: usize,
    /// Query rows per document: T · heads.
    pub tq: usize,
    /// Rows of H per document (padded length).
    pub n_max: usize,
    pub d: usize,
}

impl Dims {
    fn args(&self) -> Result<[Arg; 4], CudaError> {
        if self.d == 0 || self.d > MAX_D {
            return Err(CudaError::Shape(format!(
                "compress_attention: d = {} is outside 1..={MAX_D}",
                self.d
            )));
        }
        // Every element offset is formed in 64 bits in the kernel; only the counts must fit i32.
        for (what, rows) in [("docs·tq·d", self.tq), ("docs·n_max·d", self.n_max)] {
            self.docs
                .checked_mul(rows)
                .and_then(|v| v.checked_mul(self.d))
                .ok_or_else(|| CudaError::Shape(format!("compress_attention: {what} overflows")))?;
        }
        Ok([
            Arg::I32(i32_of("docs", self.docs)?),
            Arg::I32(i32_of("tq", self.tq)?),
            Arg::I32(i32_of("n_max", self.n_max)?),
            Arg::I32(i32_of("d", self.d)?),
        ])
    }
    /// Forward blocks, which are also the backward's dqhat blocks: one per (doc, query group).
    fn query_blocks(&self) -> Option<usize> {
        self.docs.checked_mul(self.tq.div_ceil(WARPS))
    }
    /// The backward's dH blocks: one per (doc, WARPS rows).
    fn row_blocks(&self) -> Option<usize> {
        self.docs.checked_mul(self.n_max.div_ceil(WARPS))
    }
}

/// The kernel computes `unsigned` block counts: keep the grid within i32.
fn grid(blocks: Option<usize>) -> Result<u32, CudaError> {
    blocks
        .and_then(|b| i32::try_from(b).ok())
        .map(|b| b as u32)
        .ok_or_else(|| CudaError::Shape("compress_attention: grid too large".into()))
}

/// u and lse from qhat and H (one pass over H per (doc, query group) block).
pub fn compress_attention_forward(
    dt: DType,
    u: u64,
    lse: u64,
    qhat: u64,
    h: u64,
    lens: u64,
    dims: Dims,
    eps: f32,
) -> Result<Launch, CudaError> {
    let [docs, tq, n_max, d] = dims.args()?;
    let args = vec![
        Arg::Ptr(u),
        Arg::Ptr(lse),
        Arg::Ptr(qhat),
        Arg::Ptr(h),
        Arg::Ptr(lens),
        docs,
        tq,
        n_max,
        d,
        Arg::F32(eps),
    ];
    Ok(Launch::new(
        "compress_attention",
        "compress_attention_forward",
        dt,
        grid(dims.query_blocks())?,
        THREADS,
        args,
    ))
}

/// dqhat (overwritten) and, when `dh` ≠ 0, dH accumulated for the rows below each length,
/// from the forward's u and lse and the incoming du. With `dh` = 0 only the dqhat blocks run.
pub fn compress_attention_backward(
    dt: DType,
    dq: u64,
    dh: u64,
    qhat: u64,
    h: u64,
    lens: u64,
    u: u64,
    lse: u64,
    du: u64,
    dims: Dims,
    eps: f32,
) -> Result<Launch, CudaError> {
    let [docs, tq, n_max, d] = dims.args()?;
    let rows = if dh == 0 { Some(0) } else { dims.row_blocks() };
    let blocks = dims
        .query_blocks()
        .zip(rows)
        .and_then(|(a, b)| a.checked_add(b));
    let args = vec![
        Arg::Ptr(dq),
        Arg::Ptr(dh),
        Arg::Ptr(qhat),
        Arg::Ptr(h),
        Arg::Ptr(lens),
        Arg::Ptr(u),
        Arg::Ptr(lse),
        Arg::Ptr(du),
        docs,
        tq,
        n_max,
        d,
        Arg::F32(eps),
    ];
    Ok(Launch::new(
        "compress_attention",
        "compress_attention_backward",
        dt,
        grid(blocks)?,
        THREADS,
        args,
    ))
}
