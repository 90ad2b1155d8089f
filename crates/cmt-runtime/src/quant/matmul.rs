//! out[m, n] = x[m, k] · wᵀ (+ bias) for a quantised w [n, k].
//!
//! A matrix with a packed copy (every kept type, wherever a SIMD level runs) is
//! read through [`super::packed`]'s 16-row layout and 16-bit activations in decode, and in
//! prefill too with AVX-512 VNNI ([`prefill_reads_packed`]; `docs/perf.md`).
//! Otherwise decode (m ≤ [`INT8_MAX_M`]) is bound by reading w once: x is quantised to 8-bit
//! blocks once, and each rayon task streams a band of w's rows, dotting each with all m rows
//! while it is in L1. Prefill is compute bound: each task dequantises a tile of w's rows to
//! f32 (exactly the values the f32 path holds) and hands it to the `gemm` crate's kernels,
//! so prefill keeps the f32 path's speed and accuracy at a fraction of its memory.
use super::acts::QuantActs;
use super::dot::DotKernel;
use super::QuantMatrix;
use crate::backend::cpu::matmul::{by_columns, gemm_x_wt, SendPtr};
use rayon::prelude::*;

/// Up to this many rows, the int8 dot path; above, dequantised tiles into the f32 GEMM
/// (the same bound as the f32 path's streaming kernel; see `docs/perf.md`).
pub const INT8_MAX_M: usize = crate::backend::cpu::SKINNY_MAX_M;
/// Output features per task on the int8 path.
const ROWS_PER_TASK: usize = 64;
/// Weight rows dequantised per tile on the GEMM path (64 × 1536 f32 = 384 KiB at most for
/// the default model: stays in L2).
const TILE_ROWS: usize = 64;

pub fn quant_matmul_nt(
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
) {
    match &w.packed {
        Some(p) if m <= INT8_MAX_M || prefill_reads_packed() => {
            super::packed::packed_matmul_nt(x, p, bias, out, m, DotKernel::best())
        }
        // Dequantised tiles read the blocks, which packing keeps (only the row kernels'
        // tables are dropped).
        Some(_) => matmul_dequant_gemm(x, w, bias, out, m),
        None => quant_matmul_unpacked(x, w, bias, out, m),
    }
}

/// Whether prefill (m > [`INT8_MAX_M`]) runs the packed kernel: with AVX-512 VNNI, where it
/// matches the f32 GEMM (`docs/perf.md`). The AVX2 packed kernel measured 1.5× slower than
/// dequantised tiles at m = 128 on the development machine (whose GEMM has AVX-512), so
/// AVX2 CPUs keep the tiles for prefill and the packed kernel for decode.
pub fn prefill_reads_packed() -> bool {
    DotKernel::best().level() == super::dot::SimdLevel::Avx512Vnni
}

fn quant_matmul_unpacked(
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
) {
    if m <= INT8_MAX_M {
        matmul_int8(DotKernel::best(), x, w, bias, out, m);
    } else {
        matmul_dequant_gemm(x, w, bias, out, m);
    }
}

/// The bf16 matmul: f32-activation GEMV for decode, dequantised tiles for prefill.
pub fn bf16_matmul_nt(
    x: &[f32],
    w: &super::bf16::Bf16Matrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
) {
    if m <= INT8_MAX_M {
        super::bf16::matmul_bf16_gemv(DotKernel::best().level(), x, w, bias, out, m);
    } else {
        matmul_dequant_gemm(x, w, bias, out, m);
    }
}

fn check(x: &[f32], w: &QuantMatrix, bias: Option<&[f32]>, out: &[f32], m: usize) {
    assert!(
        x.len() >= m * w.cols && out.len() >= m * w.rows,
        "quant matmul: buffers too small"
    );
    if let Some(b) = bias {
        assert!(b.len() >= w.rows, "quant matmul: bias too small");
    }
}

/// The int8 path with a chosen kernel (tests run every level through here).
pub fn matmul_int8(
    kernel: DotKernel,
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
) {
    check(x, w, bias, out, m);
    let (n, k) = (w.rows, w.cols);
    if m == 0 || n == 0 {
        return;
    }
    let acts = QuantActs::quantize_planes(x, m, k, w.act_planes);
    // Each activation row's views, made once (not once per weight row).
    let rows: Vec<_> = (0..m)
        .map(|i| (acts.row(i), acts.residual.as_ref().map(|r| r.row(i))))
        .collect();
    by_columns(out, m, n, ROWS_PER_TASK, |j, vals| {
        let wr = w.row(j);
        let b = bias.map_or(0.0, |b| b[j]);
        for (v, (a, second)) in vals.iter_mut().zip(&rows) {
            *v = kernel.dot_planes(&wr, a, second.as_ref()) + b;
        }
    });
}

/// A weight matrix that can hand out rows as f32 (the prefill path's tiles).
pub trait DequantRows: Sync {
    fn shape(&self) -> (usize, usize);
    /// Rows `r0..r1` as f32, row-major into `out`.
    fn rows_f32(&self, r0: usize, r1: usize, out: &mut [f32]);
}

impl DequantRows for QuantMatrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    fn rows_f32(&self, r0: usize, r1: usize, out: &mut [f32]) {
        self.dequantize_rows(r0, r1, out)
    }
}

impl DequantRows for super::bf16::Bf16Matrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    fn rows_f32(&self, r0: usize, r1: usize, out: &mut [f32]) {
        self.dequantize_rows(r0, r1, out)
    }
}

/// The prefill path: f32 tiles of w into the GEMM, tiles over threads.
pub fn matmul_dequant_gemm<W: DequantRows + ?Sized>(
    x: &[f32],
    w: &W,
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
) {
    let (n, k) = w.shape();
    assert!(
        x.len() >= m * k && out.len() >= m * n && bias.is_none_or(|b| b.len() >= n),
        "dequantised-tile matmul: buffers too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..n.div_ceil(TILE_ROWS)).into_par_iter().for_each(|t| {
        let (j0, j1) = (t * TILE_ROWS, ((t + 1) * TILE_ROWS).min(n));
        let mut tile = vec![0.0f32; (j1 - j0) * k];
        w.rows_f32(j0, j1, &mut tile);
        let optr = out_ptr;
        // SAFETY: dst is out's columns j0..j1 of all m rows (row stride n), inside out
        // (checked) and written by this task only; the tile holds rows j0..j1 of w.
        unsafe {
            gemm_x_wt(
                optr.0.add(j0),
                n,
                x,
                &tile,
                m,
                j1 - j0,
                k,
                false,
                gemm::Parallelism::None,
            )
        };
        if let Some(b) = bias {
            for i in 0..m {
                for (j, &bj) in b.iter().enumerate().take(j1).skip(j0) {
                    // SAFETY: as above, element (i, j) of this task's columns.
                    unsafe { *optr.0.add(i * n + j) += bj };
                }
            }
        }
    });
}
