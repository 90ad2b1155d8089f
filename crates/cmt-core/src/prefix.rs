//! G_ω, the prefix generator (DESIGN §1 step 7): the refined aggregate A′ ∈ R^{T×D} becomes
//! a key/value prefix of p = T slots for every layer of θ, through low-rank per-layer
//! projections:
//! ```text
//! U        = RMSNorm(A′) ⊙ g                          [T, D]
//! Z_{ℓ,s}  = U · Down_{ℓ,s}ᵀ                          [T, R]    s ∈ {key, value}
//! Y_{ℓ,s}  = Z_{ℓ,s} · Up_{ℓ,s}ᵀ + b_{ℓ,s}             [T, n_kv·h]
//! K_ℓ[g, j, :] = Y_{ℓ,key}[j, g·h .. (g+1)·h]          (no rotary: used as given)
//! ```
//! Parameters: `2·L·(R·D + n_kv·h·R + n_kv·h) + D`, e.g. 2.95M for SmolLM2-135M at R = 64
//! (2.2% of θ). The value projections start at zero, so a fresh G_ω adds prefix slots that
//! carry nothing (they only take a little attention mass); the key projections start small.
use crate::config::PrefixMode;
use crate::error::{Error, Result};
use crate::init::normal_vec;
use cmt_compress::linalg::{gemm, rmsnorm, rmsnorm_backward, Mat};
use cmt_runtime::KvPrefix;

/// The shapes G_ω maps between.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefixDims {
    /// θ's layers L, key/value heads and head size.
    pub layers: usize,
    /// Key/value heads of θ.
    pub kv_heads: usize,
    /// Size of a head.
    pub head_dim: usize,
    /// Width of A′ (θ's hidden size D).
    pub d: usize,
    /// Prefix slots p (= rows of A′).
    pub p: usize,
    /// Rank R of the projections.
    pub rank: usize,
    /// Per-layer keys/values, or soft rows θ reads (then see [`crate::soft_prefix`]).
    pub mode: PrefixMode,
    /// Soft mode: the RMS the soft rows start at.
    pub soft_scale: f32,
}

impl PrefixDims {
    /// n_kv · h, the width of one layer's keys (or values) per slot.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// (name, shape) of every tensor, in checkpoint order.
    pub fn shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (l, d, r, kvd) = (self.layers, self.d, self.rank, self.kv_dim());
        if self.mode == PrefixMode::Soft {
            return vec![
                ("norm", vec![d]),
                ("down", vec![r, d]),
                ("up", vec![d, r]),
                ("bias", vec![d]),
            ];
        }
        vec![
            ("norm", vec![d]),
            ("down", vec![l, 2, r, d]),
            ("up", vec![l, 2, kvd, r]),
            ("bias", vec![l, 2, kvd]),
        ]
    }
}

/// ω.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefixParams {
    /// `[D]` RMSNorm gain.
    pub norm: Vec<f32>,
    /// `[L, 2, R, D]`: per layer, the key then the value down-projection.
    pub down: Vec<f32>,
    /// `[L, 2, n_kv·h, R]`.
    pub up: Vec<f32>,
    /// `[L, 2, n_kv·h]`.
    pub bias: Vec<f32>,
}

/// What the backward needs from a forward over a batch of `n` aggregates.
pub struct PrefixTape {
    n: usize,
    a: Vec<f32>,
    u: Vec<f32>,
    z: Vec<f32>,
}

pub(crate) const EPS: f32 = 1e-6;
/// Scale of the initial key up-projection (a fraction of a unit-variance projection).
const KEY_INIT: f32 = 0.1;

impl PrefixParams {
    /// All zeros (gradient accumulators).
    pub fn zeros(dims: &PrefixDims) -> Self {
        let n = |i: usize| dims.shapes()[i].1.iter().product::<usize>();
        PrefixParams {
            norm: vec![0.0; n(0)],
            down: vec![0.0; n(1)],
            up: vec![0.0; n(2)],
            bias: vec![0.0; n(3)],
        }
    }

    /// Gain 1, down ~ N(0, 1/D), key up ~ N(0, (0.1)²/R), value up 0, biases 0.
    /// Soft mode: gain `soft_scale`, down ~ N(0, 1/D), up 0, bias 0 (the soft rows start as
    /// the normalised A′ at θ's embedding scale).
    pub fn init(dims: &PrefixDims, seed: u64) -> Self {
        let mut p = Self::zeros(dims);
        p.down = normal_vec(p.down.len(), 1.0 / (dims.d as f32).sqrt(), seed);
        if dims.mode == PrefixMode::Soft {
            p.norm.fill(dims.soft_scale);
            return p;
        }
        p.norm.fill(1.0);
        let (kvd, r) = (dims.kv_dim(), dims.rank);
        let keys = normal_vec(
            dims.layers * kvd * r,
            KEY_INIT / (r as f32).sqrt(),
            seed ^ 0x9e37_79b9,
        );
        for (l, kl) in keys.chunks_exact(kvd * r).enumerate() {
            let off = (l * 2) * kvd * r;
            p.up[off..off + kvd * r].copy_from_slice(kl);
        }
        p
    }

    /// The four tensors by name.
    pub fn tensors(&self) -> [(&'static str, &[f32]); 4] {
        [
            ("norm", &self.norm),
            ("down", &self.down),
            ("up", &self.up),
            ("bias", &self.bias),
        ]
    }

    /// The four tensors by name, mutable.
    pub fn tensors_mut(&mut self) -> [(&'static str, &mut Vec<f32>); 4] {
        [
            ("norm", &mut self.norm),
            ("down", &mut self.down),
            ("up", &mut self.up),
            ("bias", &mut self.bias),
        ]
    }

    /// Number of scalars.
    pub fn num_params(&self) -> usize {
        self.tensors().iter().map(|(_, t)| t.len()).sum()
    }

    /// Checks every tensor's length against `dims`; the error names the tensor.
    pub fn check(&self, dims: &PrefixDims) -> Result<()> {
        for ((name, shape), (_, t)) in dims.shapes().iter().zip(self.tensors()) {
            let n: usize = shape.iter().product();
            if t.len() != n {
                return Err(Error::Shape(format!(
                    "prefix.{name} holds {} values, shape {shape:?} needs {n}",
                    t.len()
                )));
            }
        }
        Ok(())
    }
}

fn kv_mode(dims: &PrefixDims) -> Result<()> {
    if dims.mode != PrefixMode::Kv {
        return Err(Error::Invalid(
            "the key/value prefix generator called on a soft-mode G_ω".into(),
        ));
    }
    Ok(())
}

/// The `[T, kvd]` block of projection (ℓ, s) of `m` (`[L, 2, rows, cols]` flattened).
fn block(m: &[f32], ls: usize, rows: usize, cols: usize) -> &[f32] {
    &m[ls * rows * cols..(ls + 1) * rows * cols]
}

/// The prefixes of `n` aggregates `a` (`[n, p, D]`), with the tape for [`backward`].
pub fn forward(
    dims: &PrefixDims,
    w: &PrefixParams,
    a: &[f32],
) -> Result<(Vec<KvPrefix>, PrefixTape)> {
    w.check(dims)?;
    kv_mode(dims)?;
    let (l, d, r, kvd, p, hd, g) = (
        dims.layers,
        dims.d,
        dims.rank,
        dims.kv_dim(),
        dims.p,
        dims.head_dim,
        dims.kv_heads,
    );
    if a.is_empty() || !a.len().is_multiple_of(p * d) {
        return Err(Error::Shape(format!(
            "prefix generator: {} values is not a whole number of p·D = {} aggregates",
            a.len(),
            p * d
        )));
    }
    let n = a.len() / (p * d);
    let rows = n * p;
    let mut u = vec![0.0; rows * d];
    rmsnorm(a, &w.norm, EPS, &mut u);
    // Z = U · Downᵀ for all (ℓ, s) at once: [rows, L·2·R].
    let mut z = vec![0.0; rows * l * 2 * r];
    gemm(
        &mut z,
        false,
        Mat::new(&u, rows, d),
        false,
        Mat::new(&w.down, l * 2 * r, d),
        true,
    );
    let mut out: Vec<KvPrefix> = (0..n)
        .map(|_| KvPrefix {
            len: p,
            k: vec![0.0; l * g * p * hd],
            v: vec![0.0; l * g * p * hd],
        })
        .collect();
    let mut zs = vec![0.0; rows * r];
    let mut y = vec![0.0; rows * kvd];
    for ls in 0..l * 2 {
        for (row, dst) in zs.chunks_exact_mut(r).enumerate() {
            let src = row * l * 2 * r + ls * r;
            dst.copy_from_slice(&z[src..src + r]);
        }
        gemm(
            &mut y,
            false,
            Mat::new(&zs, rows, r),
            false,
            Mat::new(block(&w.up, ls, kvd, r), kvd, r),
            true,
        );
        let bias = block(&w.bias, ls, 1, kvd);
        let (layer, is_v) = (ls / 2, ls % 2 == 1);
        for (q, pre) in out.iter_mut().enumerate() {
            let dst = if is_v { &mut pre.v } else { &mut pre.k };
            for j in 0..p {
                let yr = &y[(q * p + j) * kvd..(q * p + j + 1) * kvd];
                for gi in 0..g {
                    let o = ((layer * g + gi) * p + j) * hd;
                    for e in 0..hd {
                        dst[o + e] = yr[gi * hd + e] + bias[gi * hd + e];
                    }
                }
            }
        }
    }
    let tape = PrefixTape {
        n,
        a: a.to_vec(),
        u,
        z,
    };
    Ok((out, tape))
}

/// Backward of [`forward`]: given dL/dK and dL/dV of each prefix (`[L, n_kv, p, h]`, as the
/// runtime's `SeqGrads` gives them), accumulates dL/dω into `grads` and returns dL/dA′
/// (`[n, p, D]`).
pub fn backward(
    dims: &PrefixDims,
    w: &PrefixParams,
    tape: &PrefixTape,
    d_prefix: &[(&[f32], &[f32])],
    grads: &mut PrefixParams,
) -> Result<Vec<f32>> {
    grads.check(dims)?;
    kv_mode(dims)?;
    let (l, d, r, kvd, p, hd, g) = (
        dims.layers,
        dims.d,
        dims.rank,
        dims.kv_dim(),
        dims.p,
        dims.head_dim,
        dims.kv_heads,
    );
    let n = tape.n;
    let want = l * g * p * hd;
    if d_prefix.len() != n
        || d_prefix
            .iter()
            .any(|(k, v)| k.len() != want || v.len() != want)
    {
        return Err(Error::Shape(format!(
            "prefix backward: expected {n} (dK, dV) pairs of {want} values each"
        )));
    }
    let rows = n * p;
    let mut dz = vec![0.0; rows * l * 2 * r];
    let mut zs = vec![0.0; rows * r];
    let mut dy = vec![0.0; rows * kvd];
    let mut dzs = vec![0.0; rows * r];
    for ls in 0..l * 2 {
        let (layer, is_v) = (ls / 2, ls % 2 == 1);
        for (q, (dk, dv)) in d_prefix.iter().enumerate() {
            let src = if is_v { dv } else { dk };
            for j in 0..p {
                let yr = &mut dy[(q * p + j) * kvd..(q * p + j + 1) * kvd];
                for gi in 0..g {
                    let o = ((layer * g + gi) * p + j) * hd;
                    yr[gi * hd..(gi + 1) * hd].copy_from_slice(&src[o..o + hd]);
                }
            }
        }
        let db = &mut grads.bias[ls * kvd..(ls + 1) * kvd];
        for row in dy.chunks_exact(kvd) {
            db.iter_mut().zip(row).for_each(|(b, &v)| *b += v);
        }
        for (row, dst) in zs.chunks_exact_mut(r).enumerate() {
            let s = row * l * 2 * r + ls * r;
            dst.copy_from_slice(&tape.z[s..s + r]);
        }
        // dUp += dYᵀ · Z; dZ = dY · Up.
        gemm(
            &mut grads.up[ls * kvd * r..(ls + 1) * kvd * r],
            true,
            Mat::new(&dy, rows, kvd),
            true,
            Mat::new(&zs, rows, r),
            false,
        );
        gemm(
            &mut dzs,
            false,
            Mat::new(&dy, rows, kvd),
            false,
            Mat::new(block(&w.up, ls, kvd, r), kvd, r),
            false,
        );
        for (row, src) in dzs.chunks_exact(r).enumerate() {
            let s = row * l * 2 * r + ls * r;
            dz[s..s + r].copy_from_slice(src);
        }
    }
    // dDown += dZᵀ · U; dU = dZ · Down.
    gemm(
        &mut grads.down,
        true,
        Mat::new(&dz, rows, l * 2 * r),
        true,
        Mat::new(&tape.u, rows, d),
        false,
    );
    let mut du = vec![0.0; rows * d];
    gemm(
        &mut du,
        false,
        Mat::new(&dz, rows, l * 2 * r),
        false,
        Mat::new(&w.down, l * 2 * r, d),
        false,
    );
    let mut da = vec![0.0; rows * d];
    rmsnorm_backward(&tape.a, &w.norm, EPS, &du, &mut da, &mut grads.norm);
    Ok(da)
}
