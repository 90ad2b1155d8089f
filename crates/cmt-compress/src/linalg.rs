//! The dense ops the compressor's query side needs: a row-major GEMM with optional
//! transposes, row-wise RMSNorm forward/backward and SiLU.
//! Rows here are the batch's T memory tokens of every document, so these are real GEMMs
//! (docs·T rows), not matrix-vector products.

use crate::attention::linalg::{matmul, View};

/// `op(x)` as a strided view: `x` itself or its transpose.
fn view(x: Mat<'_>, t: bool) -> View<'_> {
    if t {
        View::t(x.data, x.cols)
    } else {
        View::rows(x.data, x.cols)
    }
}

/// A row-major matrix view: `rows × cols`, element (i, j) at `data[i·cols + j]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "Mat: {} values for {rows}×{cols}",
            data.len()
        );
        Mat { data, rows, cols }
    }
}

/// `dst[m, n] (+)= op(a) · op(b)` where `op(x)` is `x` or `xᵀ` (`ta`, `tb`). With
/// `accumulate`, adds to what `dst` holds; otherwise overwrites it. Runs on the
/// cross-attention's bounds-checked `gemm` wrapper with the current rayon pool.
pub fn gemm(dst: &mut [f32], accumulate: bool, a: Mat, ta: bool, b: Mat, tb: bool) {
    let (m, k) = if ta {
        (a.cols, a.rows)
    } else {
        (a.rows, a.cols)
    };
    let (kb, n) = if tb {
        (b.cols, b.rows)
    } else {
        (b.rows, b.cols)
    };
    assert_eq!(k, kb, "gemm: inner dimensions {k} and {kb} differ");
    matmul(
        m,
        n,
        k,
        dst,
        n,
        accumulate,
        view(a, ta),
        view(b, tb),
        1.0,
        rayon::current_num_threads(),
    );
}

/// `y = x ⊙ g / sqrt(mean(x²) + eps)` per row of width `g.len()`.
pub fn rmsnorm(x: &[f32], g: &[f32], eps: f32, y: &mut [f32]) {
    let d = g.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let rinv = rms_inv(xr, eps);
        for ((yv, &xv), &gv) in yr.iter_mut().zip(xr).zip(g) {
            *yv = xv * rinv * gv;
        }
    }
}

fn rms_inv(x: &[f32], eps: f32) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

/// Backward of [`rmsnorm`]: `dx += ∂/∂x`, `dg += ∂/∂g` given `dy`.
pub fn rmsnorm_backward(
    x: &[f32],
    g: &[f32],
    eps: f32,
    dy: &[f32],
    dx: &mut [f32],
    dg: &mut [f32],
) {
    let d = g.len();
    for ((xr, dyr), dxr) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let rinv = rms_inv(xr, eps);
        // y = rinv·x (before the gain); dŷ = dy ⊙ g; dx = rinv·(dŷ − (dŷ·y)/d · y).
        let mut dot = 0.0f32;
        for i in 0..d {
            let yh = xr[i] * rinv;
            dg[i] += dyr[i] * yh;
            dot += dyr[i] * g[i] * yh;
        }
        let c = dot / d as f32;
        for i in 0..d {
            dxr[i] += rinv * (dyr[i] * g[i] - c * xr[i] * rinv);
        }
    }
}

pub fn silu(z: f32) -> f32 {
    z / (1.0 + (-z).exp())
}

/// d silu(z) / dz.
pub fn silu_grad(z: f32) -> f32 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 + z * (1.0 - s))
}
