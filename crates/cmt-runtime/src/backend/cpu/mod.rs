//! The CPU backend: multithreaded (rayon), SIMD where it pays (matmul, attention dots).
mod attention;
pub(crate) mod matmul;
pub mod simd;

pub use matmul::{matmul_nn, matmul_nt, SKINNY_MAX_M};

use super::{AttnShape, Backend, Mat, MatData, RopeTable, SeqSpan};
use crate::error::{Error, Result};
use crate::quant::matmul::{bf16_matmul_nt, quant_matmul_nt};
use rayon::prelude::*;

#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

fn check(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Invalid(format!(
            "{what}: buffer holds {have} values, needs {need}"
        )));
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }
    fn upload(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }
    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn download(&self, buf: &Vec<f32>, offset: usize, out: &mut [f32]) -> Result<()> {
        check("download", buf.len(), offset + out.len())?;
        out.copy_from_slice(&buf[offset..offset + out.len()]);
        Ok(())
    }
    fn write(&self, buf: &mut Vec<f32>, offset: usize, data: &[f32]) -> Result<()> {
        check("write", buf.len(), offset + data.len())?;
        buf[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn gather_rows(
        &self,
        src: &Vec<f32>,
        width: usize,
        idx: &[u32],
        out: &mut Vec<f32>,
        out_row: usize,
    ) -> Result<()> {
        check("gather_rows out", out.len(), (out_row + idx.len()) * width)?;
        let n_src = src.len() / width.max(1);
        for (i, &r) in idx.iter().enumerate() {
            let r = r as usize;
            if r >= n_src {
                return Err(Error::Invalid(format!(
                    "row {r} is out of range (0..{n_src}): a token id outside the vocabulary?"
                )));
            }
            let o = (out_row + i) * width;
            out[o..o + width].copy_from_slice(&src[r * width..(r + 1) * width]);
        }
        Ok(())
    }

    fn rmsnorm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let d = w.len();
        check("rmsnorm x", x.len(), rows * d)?;
        check("rmsnorm out", out.len(), rows * d)?;
        out[..rows * d]
            .par_chunks_mut(d)
            .zip(x[..rows * d].par_chunks(d))
            .for_each(|(o, xr)| {
                let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
                let r = 1.0 / (ms + eps).sqrt();
                for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w.iter()) {
                    *o = wv * (xv * r);
                }
            });
        Ok(())
    }

    fn matmul_nt(
        &self,
        x: &Vec<f32>,
        w: &Mat<Self>,
        bias: Option<&Vec<f32>>,
        out: &mut Vec<f32>,
        m: usize,
    ) -> Result<()> {
        check("matmul x", x.len(), m * w.cols)?;
        check("matmul out", out.len(), m * w.rows)?;
        if let Some(b) = bias {
            check("matmul bias", b.len(), w.rows)?;
        }
        let bias = bias.map(|b| &b[..]);
        match &w.data {
            MatData::Dense(buf) => matmul_nt(x, buf, bias, out, m, w.rows, w.cols),
            MatData::Quant(q) => quant_matmul_nt(x, q, bias, out, m),
            MatData::Bf16(b) => bf16_matmul_nt(x, b, bias, out, m),
            MatData::Device(..) => {
                return Err(Error::Invalid(
                    "a matrix resident on a device reached the CPU backend".into(),
                ))
            }
        }
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &[u32],
        heads: usize,
        hd: usize,
        t: &RopeTable<Self>,
    ) -> Result<()> {
        let width = heads * hd;
        let half = hd / 2;
        check("rope x", x.len(), positions.len() * width)?;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= t.max_pos) {
            return Err(Error::Invalid(format!(
                "position {p} is beyond the model's context ({})",
                t.max_pos
            )));
        }
        x[..positions.len() * width]
            .par_chunks_mut(width)
            .zip(positions.par_iter())
            .for_each(|(row, &p)| {
                let cos = &t.cos[p as usize * half..(p as usize + 1) * half];
                let sin = &t.sin[p as usize * half..(p as usize + 1) * half];
                for head in row.chunks_exact_mut(hd) {
                    let (a, b) = head.split_at_mut(half);
                    for i in 0..half {
                        let (x1, x2) = (a[i], b[i]);
                        a[i] = x1 * cos[i] - x2 * sin[i];
                        b[i] = x2 * cos[i] + x1 * sin[i];
                    }
                }
            });
        Ok(())
    }

    fn kv_write(
        &self,
        k: &Vec<f32>,
        v: &Vec<f32>,
        ck: &mut Vec<f32>,
        cv: &mut Vec<f32>,
        seqs: &[SeqSpan],
        s: AttnShape,
    ) -> Result<()> {
        validate_spans(seqs, s, ck.len())?;
        let rows = seqs.iter().map(|q| q.row_start + q.rows).max().unwrap_or(0);
        check("kv_write k", k.len(), rows * s.kv_heads * s.head_dim)?;
        check("kv_write v", v.len(), rows * s.kv_heads * s.head_dim)?;
        attention::kv_write(k, v, ck, cv, seqs, s);
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        ck: &Vec<f32>,
        cv: &Vec<f32>,
        seqs: &[SeqSpan],
        s: AttnShape,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        validate_spans(seqs, s, ck.len())?;
        attention::attention(q, ck, cv, seqs, s, out);
        Ok(())
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, out: &mut Vec<f32>, n: usize) -> Result<()> {
        check("swiglu", gate.len().min(up.len()).min(out.len()), n)?;
        out[..n]
            .par_chunks_mut(4096)
            .zip(gate[..n].par_chunks(4096).zip(up[..n].par_chunks(4096)))
            .for_each(|(o, (g, u))| simd::silu_mul(g, u, o));
        Ok(())
    }

    fn add_assign(&self, x: &mut Vec<f32>, y: &Vec<f32>, n: usize) -> Result<()> {
        check("add_assign", x.len().min(y.len()), n)?;
        for (a, b) in x[..n].iter_mut().zip(&y[..n]) {
            *a += b;
        }
        Ok(())
    }
}

/// Spans must fit the cache: an out-of-range slot or position would read another
/// sequence's keys.
fn validate_spans(seqs: &[SeqSpan], s: AttnShape, cache_len: usize) -> Result<()> {
    let slots = cache_len / (s.kv_heads * s.capacity * s.head_dim).max(1);
    for q in seqs {
        if q.slot >= slots || q.pos + q.rows > s.capacity {
            return Err(Error::Invalid(format!(
                "sequence in slot {} at position {} with {} rows does not fit a cache of {} slots × {} positions",
                q.slot, q.pos, q.rows, slots, s.capacity
            )));
        }
    }
    Ok(())
}
