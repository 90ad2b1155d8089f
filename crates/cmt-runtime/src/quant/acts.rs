//! Activation quantisation: each row of x cut into 32-element blocks, each block stored as
//! 32 × i8 with an f32 scale d = max|x|/127 (so |x − d·q| ≤ d/2 per element) and the sum of
//! its q (the term Q4_0's offset and Q4_1's minimum multiply).
use super::BLOCK;

/// m rows of k activations, quantised.
#[derive(Debug, Default, Clone)]
pub struct QuantActs {
    pub k: usize,
    /// [m · k], row-major.
    pub qs: Vec<i8>,
    /// [m · k/32] block scales.
    pub d: Vec<f32>,
    /// [m · k/32] Σ q of each block.
    pub sum: Vec<i32>,
    /// [m · k/32] d · Σq of each block (the factor of Q4_0's offset and Q4_1's minimum).
    pub dsum: Vec<f32>,
    /// The quantisation of what this one leaves over (x − d·q), when the matmul asked for
    /// two planes: the pair then carries x to within d/(2·254) per element instead of d/2.
    pub residual: Option<Box<QuantActs>>,
}

/// Quantises one block symmetrically to integers in ±`qmax`: d = max|x| / qmax and
/// q_i = x_i / d rounded half away from zero, each handed to `put(i, q_i)`; returns (d, Σq).
#[inline]
pub(crate) fn quantize_block(xs: &[f32], qmax: i32, mut put: impl FnMut(usize, i32)) -> (f32, i32) {
    let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / qmax as f32;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut s = 0i32;
    for (i, &v) in xs.iter().enumerate() {
        // Round half away from zero, as `f32::round`, but inline: `round` is a libm call on
        // baseline x86-64 (5 % of decode). The cast truncates toward zero. |v·id| ≤ qmax up
        // to rounding of id; clamp so a rounding up never wraps.
        let t = v * id;
        let q = ((t + 0.5f32.copysign(t)) as i32).clamp(-qmax, qmax);
        put(i, q);
        s += q;
    }
    (d, s)
}

/// One activation row, as the dot kernels read it.
#[derive(Debug, Clone, Copy)]
pub struct ActRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub sum: &'a [i32],
    pub dsum: &'a [f32],
}

impl QuantActs {
    /// Quantises m rows of `x` (k a multiple of 32).
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        assert!(
            k.is_multiple_of(BLOCK),
            "activation width {k} is not whole blocks"
        );
        let nb = m * k / BLOCK;
        let mut a = QuantActs {
            k,
            qs: vec![0; m * k],
            d: vec![0.0; nb],
            sum: vec![0; nb],
            dsum: vec![0.0; nb],
            residual: None,
        };
        for (b, (xs, qs)) in x[..m * k]
            .chunks_exact(BLOCK)
            .zip(a.qs.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let (d, s) = quantize_block(xs, 127, |i, q| qs[i] = q as i8);
            a.d[b] = d;
            a.sum[b] = s;
            a.dsum[b] = d * s as f32;
        }
        a
    }

    /// Quantises into `planes` planes (1 or 2): the second quantises the first's error.
    pub fn quantize_planes(x: &[f32], m: usize, k: usize, planes: usize) -> Self {
        let mut a = Self::quantize(x, m, k);
        if planes >= 2 {
            let rest: Vec<f32> = x[..m * k]
                .iter()
                .enumerate()
                .map(|(i, &v)| v - a.d[i / BLOCK] * a.qs[i] as f32)
                .collect();
            a.residual = Some(Box::new(Self::quantize(&rest, m, k)));
        }
        a
    }

    pub fn blocks_per_row(&self) -> usize {
        self.k / BLOCK
    }

    /// Row i.
    pub fn row(&self, i: usize) -> ActRow<'_> {
        let nb = self.blocks_per_row();
        let blocks = i * nb..(i + 1) * nb;
        ActRow {
            qs: &self.qs[i * self.k..(i + 1) * self.k],
            d: &self.d[blocks.clone()],
            sum: &self.sum[blocks.clone()],
            dsum: &self.dsum[blocks],
        }
    }

    /// Per block, the largest error of a dequantised element: d/2 (round to nearest).
    pub fn max_error(&self, block: usize) -> f32 {
        self.d[block] * 0.5
    }
}
