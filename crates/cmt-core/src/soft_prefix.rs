//! G_ω in soft mode (`PrefixMode::Soft`): the refined aggregate A′ ∈ R^{T×D} becomes p = T
//! soft input embeddings that θ reads before the question; θ's own layers make every
//! layer's keys and values of them, so what θ attends to is in its own distribution from
//! the first step (the low-rank key/value projections of [`crate::prefix`] start out of it).
//! ```text
//! U = RMSNorm(A′) ⊙ g              [T, D]   g starts at θ's embedding RMS
//! Z = U · Downᵀ                    [T, R]
//! E = U + Z · Upᵀ + b              [T, D]   Up and b start at zero
//! ```
//! Parameters: `2·R·D + 2·D` (74k for SmolLM2-135M at R = 64).
use crate::config::PrefixMode;
use crate::error::{Error, Result};
use crate::prefix::{PrefixDims, PrefixParams, EPS};
use cmt_compress::linalg::{gemm, rmsnorm, rmsnorm_backward, Mat};

/// What [`backward`] needs from a [`forward`].
pub struct SoftTape {
    a: Vec<f32>,
    u: Vec<f32>,
    z: Vec<f32>,
}

fn soft_mode(dims: &PrefixDims, what: &str) -> Result<()> {
    if dims.mode != PrefixMode::Soft {
        return Err(Error::Invalid(format!(
            "the soft prefix {what} called on a key/value-mode G_ω"
        )));
    }
    Ok(())
}

/// The soft rows E (`[n, p, D]`) of `n` aggregates `a` (`[n, p, D]`), with the tape.
pub fn forward(dims: &PrefixDims, w: &PrefixParams, a: &[f32]) -> Result<(Vec<f32>, SoftTape)> {
    soft_mode(dims, "generator")?;
    w.check(dims)?;
    let (d, r, p) = (dims.d, dims.rank, dims.p);
    if a.is_empty() || !a.len().is_multiple_of(p * d) {
        return Err(Error::Shape(format!(
            "soft prefix generator: {} values is not a whole number of p·D = {} aggregates",
            a.len(),
            p * d
        )));
    }
    let rows = a.len() / d;
    let mut u = vec![0.0; rows * d];
    rmsnorm(a, &w.norm, EPS, &mut u);
    let mut z = vec![0.0; rows * r];
    gemm(
        &mut z,
        false,
        Mat::new(&u, rows, d),
        false,
        Mat::new(&w.down, r, d),
        true,
    );
    let mut e = u.clone();
    gemm(
        &mut e,
        true,
        Mat::new(&z, rows, r),
        false,
        Mat::new(&w.up, d, r),
        true,
    );
    for row in e.chunks_exact_mut(d) {
        row.iter_mut().zip(&w.bias).for_each(|(x, b)| *x += b);
    }
    let tape = SoftTape {
        a: a.to_vec(),
        u,
        z,
    };
    Ok((e, tape))
}

/// Backward of [`forward`]: given dL/dE (`[n, p, D]`), accumulates dL/dω into `grads` and
/// returns dL/dA′.
pub fn backward(
    dims: &PrefixDims,
    w: &PrefixParams,
    tape: &SoftTape,
    d_e: &[f32],
    grads: &mut PrefixParams,
) -> Result<Vec<f32>> {
    soft_mode(dims, "backward")?;
    grads.check(dims)?;
    let (d, r) = (dims.d, dims.rank);
    if d_e.len() != tape.a.len() {
        return Err(Error::Shape(format!(
            "soft prefix backward: {} gradient values for {} soft-row values",
            d_e.len(),
            tape.a.len()
        )));
    }
    let rows = d_e.len() / d;
    for row in d_e.chunks_exact(d) {
        grads.bias.iter_mut().zip(row).for_each(|(g, x)| *g += x);
    }
    // dUp += dEᵀ · Z; dZ = dE · Up.
    gemm(
        &mut grads.up,
        true,
        Mat::new(d_e, rows, d),
        true,
        Mat::new(&tape.z, rows, r),
        false,
    );
    let mut dz = vec![0.0; rows * r];
    gemm(
        &mut dz,
        false,
        Mat::new(d_e, rows, d),
        false,
        Mat::new(&w.up, d, r),
        false,
    );
    // dDown += dZᵀ · U; dU = dE + dZ · Down.
    gemm(
        &mut grads.down,
        true,
        Mat::new(&dz, rows, r),
        true,
        Mat::new(&tape.u, rows, d),
        false,
    );
    let mut du = d_e.to_vec();
    gemm(
        &mut du,
        true,
        Mat::new(&dz, rows, r),
        false,
        Mat::new(&w.down, r, d),
        false,
    );
    let mut da = vec![0.0; rows * d];
    rmsnorm_backward(&tape.a, &w.norm, EPS, &du, &mut da, &mut grads.norm);
    Ok(da)
}
