//! CPU references for the CUDA kernels, on f32 slices (bf16 kernels are checked against
//! these run on the bf16-rounded inputs). The forward ones are the `CpuBackend` ops
//! themselves, so a kernel is compared with exactly what the CPU path computes; the
//! backward ones are written plainly, in f64, from the math in the kernel comments.
use crate::backend::{Backend, CpuBackend, RopeTable};
use crate::error::Result;

/// out[i, :] = table[ids[i], :].
pub fn embedding_forward(table: &[f32], ids: &[u32], d: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0; ids.len() * d];
    CpuBackend.gather_rows(&table.to_vec(), d, ids, &mut out, 0)?;
    Ok(out)
}

/// (y, rstd) of RMSNorm over rows of width w.len().
pub fn rmsnorm_forward(
    x: &[f32],
    w: &[f32],
    rows: usize,
    eps: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let d = w.len();
    let mut y = vec![0.0; rows * d];
    CpuBackend.rmsnorm(&x.to_vec(), &w.to_vec(), &mut y, rows, eps)?;
    let rstd = x
        .chunks(d)
        .take(rows)
        .map(|r| 1.0 / (r.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt())
        .collect();
    Ok((y, rstd))
}

/// (dx, dw) of y = w · x · r(x), r = 1/sqrt(mean(x²) + eps), given dy.
pub fn rmsnorm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rows: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut dx = vec![0.0; rows * d];
    let mut dw = vec![0.0f64; d];
    for r in 0..rows {
        let (xr, gr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
        let ms = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / d as f64;
        let rs = 1.0 / (ms + f64::from(eps)).sqrt();
        let dot: f64 = (0..d)
            .map(|j| f64::from(gr[j]) * f64::from(w[j]) * f64::from(xr[j]))
            .sum();
        for j in 0..d {
            let g = f64::from(gr[j]) * f64::from(w[j]);
            dx[r * d + j] = (rs * g - rs.powi(3) * f64::from(xr[j]) * dot / d as f64) as f32;
            dw[j] += f64::from(gr[j]) * f64::from(xr[j]) * rs;
        }
    }
    (dx, dw.into_iter().map(|v| v as f32).collect())
}

/// Rotary forward in place (the CPU backend's `rope`), with `table` from `RopeTable::new`.
pub fn rope_forward(
    x: &mut Vec<f32>,
    positions: &[u32],
    heads: usize,
    hd: usize,
    table: &RopeTable<CpuBackend>,
) -> Result<()> {
    CpuBackend.rope(x, positions, heads, hd, table)
}

/// Rotary backward in place: the transpose of the forward rotation applied to a gradient.
pub fn rope_backward(
    dx: &mut [f32],
    positions: &[u32],
    heads: usize,
    hd: usize,
    table: &RopeTable<CpuBackend>,
) {
    let half = hd / 2;
    for (row, &p) in dx.chunks_mut(heads * hd).zip(positions) {
        let (cos, sin) = (
            &table.cos[p as usize * half..],
            &table.sin[p as usize * half..],
        );
        for head in row.chunks_mut(hd) {
            for i in 0..half {
                let (g1, g2) = (head[i], head[i + half]);
                head[i] = g1 * cos[i] + g2 * sin[i];
                head[i + half] = g2 * cos[i] - g1 * sin[i];
            }
        }
    }
}

pub fn swiglu_forward(gate: &[f32], up: &[f32]) -> Result<Vec<f32>> {
    let mut out = vec![0.0; gate.len()];
    CpuBackend.swiglu(&gate.to_vec(), &up.to_vec(), &mut out, gate.len())?;
    Ok(out)
}

/// (dgate, dup) of out = silu(gate)·up.
pub fn swiglu_backward(dout: &[f32], gate: &[f32], up: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = Vec::with_capacity(gate.len());
    let mut du = Vec::with_capacity(gate.len());
    for ((&dy, &g), &u) in dout.iter().zip(gate).zip(up) {
        let (dy, g, u) = (f64::from(dy), f64::from(g), f64::from(u));
        let s = 1.0 / (1.0 + (-g).exp());
        dg.push((dy * u * s * (1.0 + g * (1.0 - s))) as f32);
        du.push((dy * g * s) as f32);
    }
    (dg, du)
}

pub fn residual_forward(a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
    let mut out = a.to_vec();
    CpuBackend.add_assign(&mut out, &b.to_vec(), a.len())?;
    Ok(out)
}

/// (losses [rows], dlogits [rows, vocab]) of softmax cross-entropy; negative targets are
/// ignored rows (loss 0, gradient 0); dlogits are scaled by `dscale`.
pub fn cross_entropy(
    logits: &[f32],
    targets: &[i32],
    vocab: usize,
    dscale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut losses = Vec::with_capacity(targets.len());
    let mut dl = vec![0.0; targets.len() * vocab];
    for (r, &t) in targets.iter().enumerate() {
        if t < 0 {
            losses.push(0.0);
            continue;
        }
        let row = &logits[r * vocab..(r + 1) * vocab];
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
        losses.push((sum.ln() + m - f64::from(row[t as usize])) as f32);
        for (v, &l) in row.iter().enumerate() {
            let p = (f64::from(l) - m).exp() / sum;
            let onehot = if v == t as usize { 1.0 } else { 0.0 };
            dl[r * vocab + v] = ((p - onehot) * f64::from(dscale)) as f32;
        }
    }
    (losses, dl)
}
