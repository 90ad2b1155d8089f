//! The op trait the transformer is written against. One implementation per device: the CPU
//! one here (`cpu`), the CUDA one with the kernel toolchain. Buffers are flat f32 arrays;
//! every op states its shapes in row-major terms.
pub mod cpu;
pub mod device;

pub use crate::quant::bf16::Bf16Matrix;
pub use crate::quant::QuantMatrix;
pub use cpu::CpuBackend;
pub use device::DeviceBackend;

use crate::error::Result;
use crate::rope::RopeScaling;

/// One sequence of a batch, as the attention ops see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    /// First row of this sequence in the batch's concatenated rows.
    pub row_start: usize,
    /// Number of new rows (tokens) this step.
    pub rows: usize,
    /// KV-cache slot of the sequence.
    pub slot: usize,
    /// Cache position of the first new row: everything before it (prefix + earlier tokens)
    /// is already in the cache. Row `i` sits at position `pos + i` and attends to cache
    /// positions `0..=pos + i`.
    pub pos: usize,
}

/// Attention geometry shared by the attention ops.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions per cache slot.
    pub capacity: usize,
}

/// A weight matrix [rows, cols] (HF layout: rows = output features).
pub struct Mat<B: Backend + ?Sized> {
    pub data: MatData<B>,
    pub rows: usize,
    pub cols: usize,
}

/// How a weight matrix is stored.
pub enum MatData<B: Backend + ?Sized> {
    /// f32 on the backend (the golden path, and what the backward reads).
    Dense(B::Buf),
    /// GGUF blocks in host memory (`--weights native`; the CPU backend's matmul reads them).
    Quant(QuantMatrix),
    /// bf16 in host memory (`--weights bf16` on the CPU).
    Bf16(Bf16Matrix),
    /// In the device backend's own storage on its device: bf16 (`--weights bf16`) or GGUF
    /// blocks (`--weights native`); the buffer knows which. Only the device backend makes
    /// these. The second field is the bytes it holds.
    Device(B::Buf, usize),
}

impl<B: Backend + ?Sized> Mat<B> {
    pub fn dense(buf: B::Buf, rows: usize, cols: usize) -> Self {
        Mat {
            data: MatData::Dense(buf),
            rows,
            cols,
        }
    }

    /// The f32 buffer, or an error naming `what` needs it when the matrix is quantised.
    pub fn dense_buf(&self, what: &str) -> Result<&B::Buf> {
        match &self.data {
            MatData::Dense(b) => Ok(b),
            MatData::Quant(q) => Err(crate::Error::Invalid(format!(
                "{what} needs f32 weights, but this model was loaded with its {:?} blocks \
                 kept (--weights native); load it with --weights f32",
                q.ty
            ))),
            MatData::Bf16(_) | MatData::Device(..) => Err(crate::Error::Invalid(format!(
                "{what} needs f32 weights, but this model was loaded as bf16 \
                 (--weights bf16); load it with --weights f32"
            ))),
        }
    }

    pub fn quant(&self) -> Option<&QuantMatrix> {
        match &self.data {
            MatData::Quant(q) => Some(q),
            MatData::Dense(_) | MatData::Bf16(_) | MatData::Device(..) => None,
        }
    }

    /// Row `r` as f32 on the host.
    pub fn row_to_host(&self, be: &B, r: usize, out: &mut [f32]) -> Result<()>
    where
        B: Sized,
    {
        if r >= self.rows {
            return Err(crate::Error::Invalid(format!(
                "row {r} of a {}-row matrix",
                self.rows
            )));
        }
        match &self.data {
            MatData::Dense(b) => be.download(b, r * self.cols, &mut out[..self.cols]),
            MatData::Quant(q) => {
                q.dequantize_row(r, out);
                Ok(())
            }
            MatData::Bf16(b) => {
                b.dequantize_rows(r, r + 1, out);
                Ok(())
            }
            MatData::Device(b, _) => {
                let mut row = be.zeros(self.cols)?;
                be.gather_rows(b, self.cols, &[r as u32], &mut row, 0)?;
                be.download(&row, 0, &mut out[..self.cols])
            }
        }
    }
}

pub trait Backend: Send + Sync {
    type Buf: Send + Sync;

    fn name(&self) -> String;
    fn upload(&self, data: Vec<f32>) -> Result<Self::Buf>;
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// Copies `buf[offset..offset + out.len()]` to the host.
    fn download(&self, buf: &Self::Buf, offset: usize, out: &mut [f32]) -> Result<()>;
    /// Copies host data into `buf[offset..]`.
    fn write(&self, buf: &mut Self::Buf, offset: usize, data: &[f32]) -> Result<()>;
    fn len(&self, buf: &Self::Buf) -> usize;

    /// How this backend keeps a weight matrix loaded as bf16 (`--weights bf16`): in host
    /// memory unless it overrides this (the device backend puts it on the device).
    fn bf16_matrix(&self, m: Bf16Matrix) -> Result<MatData<Self>>
    where
        Self: Sized,
    {
        Ok(MatData::Bf16(m))
    }
    /// How this backend keeps a matrix of GGUF blocks (`--weights native`): the blocks
    /// themselves, in the packed layout of the CPU's integer kernels, unless it overrides this.
    fn quant_matrix(&self, mut q: QuantMatrix) -> Result<MatData<Self>>
    where
        Self: Sized,
    {
        q.act_planes = crate::weights::ACTIVATION_PLANES;
        q.pack();
        Ok(MatData::Quant(q))
    }

    /// out[out_row + i, :] = src[idx[i], :] for rows of `width` values (embedding lookup,
    /// picking the rows that need logits; `src` may also be the buffer of a
    /// [`MatData::Device`] matrix). An index past `src` is an error, not a panic.
    fn gather_rows(
        &self,
        src: &Self::Buf,
        width: usize,
        idx: &[u32],
        out: &mut Self::Buf,
        out_row: usize,
    ) -> Result<()>;
    /// out[r] = x[r] / sqrt(mean(x[r]²) + eps) · w, for `rows` rows of width w.len().
    fn rmsnorm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        eps: f32,
    ) -> Result<()>;
    /// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]).
    fn matmul_nt(
        &self,
        x: &Self::Buf,
        w: &Mat<Self>,
        bias: Option<&Self::Buf>,
        out: &mut Self::Buf,
        m: usize,
    ) -> Result<()>;
    /// In-place rotary (HF half-split convention) on `rows` rows of `heads` heads; row r of
    /// the batch has position `positions[r]`. `table` holds cos then sin, [max_pos, hd/2] each.
    fn rope(
        &self,
        x: &mut Self::Buf,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        table: &RopeTable<Self>,
    ) -> Result<()>;
    /// Stores this step's keys and values ([rows, kv_heads·hd]) into the cache
    /// ([slots, kv_heads, capacity, hd]) at each sequence's positions.
    fn kv_write(
        &self,
        k: &Self::Buf,
        v: &Self::Buf,
        cache_k: &mut Self::Buf,
        cache_v: &mut Self::Buf,
        seqs: &[SeqSpan],
        shape: AttnShape,
    ) -> Result<()>;
    /// Causal grouped-query attention of q ([rows, heads·hd]) against the cache; out has q's shape.
    fn attention(
        &self,
        q: &Self::Buf,
        cache_k: &Self::Buf,
        cache_v: &Self::Buf,
        seqs: &[SeqSpan],
        shape: AttnShape,
        out: &mut Self::Buf,
    ) -> Result<()>;
    /// out = silu(gate) · up, elementwise over the first `n` values.
    fn swiglu(&self, gate: &Self::Buf, up: &Self::Buf, out: &mut Self::Buf, n: usize)
        -> Result<()>;
    /// x += y over the first `n` values.
    fn add_assign(&self, x: &mut Self::Buf, y: &Self::Buf, n: usize) -> Result<()>;
}

/// cos/sin tables for rotary embeddings.
pub struct RopeTable<B: Backend + ?Sized> {
    pub cos: B::Buf,
    pub sin: B::Buf,
    pub max_pos: usize,
    pub half: usize,
}

impl<B: Backend> RopeTable<B> {
    /// HF's default rotary: inv_freq[i] = θ^(−2i/d), angle = pos · inv_freq[i], in f32.
    pub fn new(backend: &B, head_dim: usize, theta: f32, max_pos: usize) -> Result<Self> {
        Self::scaled(backend, head_dim, theta, &RopeScaling::None, max_pos)
    }

    /// Rotary with the inverse frequencies of `scaling` (see [`RopeScaling::inv_freq`]);
    /// angle = pos · inv_freq[i] in f32, as HF computes it.
    pub fn scaled(
        backend: &B,
        head_dim: usize,
        theta: f32,
        scaling: &RopeScaling,
        max_pos: usize,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let inv = scaling.inv_freq(head_dim, theta);
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(RopeTable {
            cos: backend.upload(cos)?,
            sin: backend.upload(sin)?,
            max_pos,
            half,
        })
    }
}
