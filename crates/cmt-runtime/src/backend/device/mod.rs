//! The device backend: the op trait on kernels/*.cu, for any kernel executor — a GPU
//! ([`crate::cuda::Gpu`]) or the CPU emulator of the kernels (`cmt-kernel-check`), which runs
//! the whole model through the unchanged CUDA sources in the tests. Activations and caches
//! are f32 on the device; weight matrices are f32 (`--weights f32`, the golden path), bf16
//! (`--weights bf16`), or with `native` the file's own Q8_0 / Q4_0 / Q4_1 blocks, which the
//! kernels dequantise to the f32 path's exact values as they read them (other block types go
//! to bf16); math in f32. Every op checks its buffers' sizes and types before it launches: that check is what
//! makes each launch's pointer arguments valid.
use super::{AttnShape, Backend, Bf16Matrix, Mat, MatData, QuantMatrix, RopeTable, SeqSpan};
use crate::cuda::launch::transformer::{
    self, attention_part_len, attention_splits, AttnDims, MatmulKernel, RowTables, WeightType,
};
use crate::cuda::launch::{self as kl, DType, Launch};
use crate::cuda::Exec;
use crate::error::{Error, Result};
use crate::quant::QType;
mod scratch;
mod tensor_cores;

use scratch::Table;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// A device buffer of `len` values stored as `ty`: f32 for every activation and cache; bf16
/// or GGUF blocks only for the weight matrices of [`MatData::Device`].
pub struct DeviceBuf<B> {
    raw: B,
    len: usize,
    ty: WeightType,
}

pub struct DeviceBackend<E: Exec> {
    exec: E,
    name: String,
    /// Scratch for attention's split partials, grown on demand and reused: launches on one
    /// stream run in order, so the next call cannot overwrite partials still being read.
    part: Mutex<Option<DeviceBuf<E::Buf>>>,
    /// The small i32 tables of a step (positions, row slots, ids) by role, with the host copy
    /// they hold: the 30 layers of a step pass the same tables, so each is uploaded once per
    /// step, not once per op. Rewriting one in place is safe for the same reason as `part`.
    tables: Mutex<HashMap<&'static str, Table<E::Buf>>>,
    /// Held by an op from its table uploads to its last launch, so that two threads sharing
    /// the backend cannot rewrite a table between another op's upload and its launch.
    serial: Mutex<()>,
    /// Whether bf16 prefill matmuls may use the tensor-core kernel (CMT_CUDA_MMA=0 or
    /// `without_tensor_cores` say no), and, once tried, whether its self-test passed.
    allow_tensor_cores: bool,
    tensor_cores: OnceLock<bool>,
}

fn check(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Invalid(format!(
            "{what}: buffer holds {have} values, needs {need}"
        )));
    }
    Ok(())
}

fn i32s(v: &[i32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl<E: Exec> DeviceBackend<E> {
    pub fn new(exec: E, name: impl Into<String>) -> Self {
        DeviceBackend {
            exec,
            name: name.into(),
            part: Mutex::new(None),
            tables: Mutex::new(HashMap::new()),
            serial: Mutex::new(()),
            allow_tensor_cores: std::env::var_os("CMT_CUDA_MMA").is_none_or(|v| v != "0"),
            tensor_cores: OnceLock::new(),
        }
    }

    pub fn exec(&self) -> &E {
        &self.exec
    }

    fn upload_bf16(&self, m: &Bf16Matrix) -> Result<DeviceBuf<E::Buf>> {
        let raw = self.exec.upload(bytemuck::cast_slice(m.values()))?;
        Ok(DeviceBuf {
            raw,
            len: m.rows * m.cols,
            ty: WeightType::Bf16,
        })
    }

    fn serial(&self) -> std::sync::MutexGuard<'_, ()> {
        self.serial.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ptr(&self, b: &DeviceBuf<E::Buf>) -> u64 {
        self.exec.ptr(&b.raw)
    }

    fn run(&self, launches: &[Launch]) -> Result<()> {
        for l in launches {
            // SAFETY: every launch built by the ops below takes pointers from `ptr` of live
            // buffers of this executor (or small tables uploaded for the call and alive until
            // it returns; an executor's later reads are ordered after the launch), and the
            // op checked each buffer's length against the shapes it passes.
            unsafe { self.exec.launch(l) }?;
        }
        Ok(())
    }
}

impl<E: Exec> Backend for DeviceBackend<E> {
    type Buf = DeviceBuf<E::Buf>;

    fn name(&self) -> String {
        self.name.clone()
    }
    fn upload(&self, data: Vec<f32>) -> Result<Self::Buf> {
        let raw = self.exec.upload(bytemuck::cast_slice(&data))?;
        Ok(DeviceBuf {
            raw,
            len: data.len(),
            ty: WeightType::F32,
        })
    }
    fn zeros(&self, n: usize) -> Result<Self::Buf> {
        Ok(DeviceBuf {
            raw: self.exec.alloc(n * 4)?,
            len: n,
            ty: WeightType::F32,
        })
    }
    fn download(&self, buf: &Self::Buf, offset: usize, out: &mut [f32]) -> Result<()> {
        f32_buf("download", buf)?;
        check("download", buf.len, offset + out.len())?;
        Ok(self
            .exec
            .read(&buf.raw, offset * 4, bytemuck::cast_slice_mut(out))?)
    }
    fn write(&self, buf: &mut Self::Buf, offset: usize, data: &[f32]) -> Result<()> {
        f32_buf("write", buf)?;
        check("write", buf.len, offset + data.len())?;
        Ok(self
            .exec
            .write(&mut buf.raw, offset * 4, bytemuck::cast_slice(data))?)
    }
    fn len(&self, buf: &Self::Buf) -> usize {
        buf.len
    }

    fn bf16_matrix(&self, m: Bf16Matrix) -> Result<MatData<Self>> {
        let bytes = m.rows * m.cols * 2;
        Ok(MatData::Device(self.upload_bf16(&m)?, bytes))
    }
    /// Q8_0, Q4_0 and Q4_1 blocks go to the device as they are; other types (Q5, k-quants)
    /// have no device kernel yet and are dequantised once at load and kept as bf16.
    fn quant_matrix(&self, q: QuantMatrix) -> Result<MatData<Self>> {
        let ty = match q.ty {
            QType::Q8_0 => WeightType::Q8_0,
            QType::Q4_0 => WeightType::Q4_0,
            QType::Q4_1 => WeightType::Q4_1,
            _ => {
                let mut f = vec![0.0f32; q.rows * q.cols];
                q.dequantize_rows(0, q.rows, &mut f);
                return self.bf16_matrix(Bf16Matrix::from_f32(q.rows, q.cols, &f));
            }
        };
        let raw = self.exec.upload(q.blocks())?;
        let buf = DeviceBuf {
            raw,
            len: q.rows * q.cols,
            ty,
        };
        Ok(MatData::Device(buf, ty.bytes(q.rows, q.cols)))
    }

    fn gather_rows(
        &self,
        src: &Self::Buf,
        width: usize,
        idx: &[u32],
        out: &mut Self::Buf,
        out_row: usize,
    ) -> Result<()> {
        check("gather_rows out", out.len, (out_row + idx.len()) * width)?;
        let n_src = src.len / width.max(1);
        if let Some(&r) = idx.iter().find(|&&r| r as usize >= n_src) {
            return Err(Error::Invalid(format!(
                "row {r} is out of range (0..{n_src}): a token id outside the vocabulary?"
            )));
        }
        if idx.is_empty() || width == 0 {
            return Ok(());
        }
        f32_buf("gather_rows out", out)?;
        let ids: Vec<i32> = idx.iter().map(|&r| r as i32).collect();
        let _serial = self.serial();
        let ids = self.table("gather", &ids)?;
        let dst = self.ptr(out) + (out_row * width * 4) as u64;
        let table = self.ptr(src);
        let n = idx.len();
        let l = match src.ty {
            WeightType::F32 => kl::embedding_forward(DType::F32, dst, table, ids, n, width, n_src)?,
            WeightType::Bf16 => kl::embedding_forward_widen(dst, table, ids, n, width, n_src)?,
            wt => transformer::embedding_blocks(wt, dst, table, ids, n, width, n_src)?,
        };
        self.run(&[l])
    }

    fn rmsnorm(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let d = w.len;
        check("rmsnorm x", x.len, rows * d)?;
        check("rmsnorm out", out.len, rows * d)?;
        let l = kl::rmsnorm_forward(
            DType::F32,
            self.ptr(out),
            0,
            self.ptr(x),
            self.ptr(w),
            rows,
            d,
            eps,
        )?;
        self.run(&[l])
    }

    fn matmul_nt(
        &self,
        x: &Self::Buf,
        w: &Mat<Self>,
        bias: Option<&Self::Buf>,
        out: &mut Self::Buf,
        m: usize,
    ) -> Result<()> {
        let (n, k) = (w.rows, w.cols);
        check("matmul x", x.len, m * k)?;
        check("matmul out", out.len, m * n)?;
        if let Some(b) = bias {
            check("matmul bias", b.len, n)?;
        }
        let wbuf = match &w.data {
            MatData::Dense(b) | MatData::Device(b, _) => b,
            MatData::Quant(_) | MatData::Bf16(_) => {
                return Err(Error::Invalid(format!(
                    "{}: a weight matrix in host memory reached the device backend",
                    self.name
                )))
            }
        };
        check("matmul w", wbuf.len, n * k)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let kernel =
            if wbuf.ty == WeightType::Bf16 && m > transformer::GEMV_MAX_M && self.tensor_cores() {
                MatmulKernel::TensorCore
            } else {
                MatmulKernel::Auto
            };
        let l = transformer::matmul_nt(
            wbuf.ty,
            kernel,
            self.ptr(out),
            self.ptr(x),
            self.ptr(wbuf),
            bias.map_or(0, |b| self.ptr(b)),
            m,
            n,
            k,
        )?;
        self.run(&[l])
    }

    fn rope(
        &self,
        x: &mut Self::Buf,
        positions: &[u32],
        heads: usize,
        hd: usize,
        t: &RopeTable<Self>,
    ) -> Result<()> {
        check("rope x", x.len, positions.len() * heads * hd)?;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= t.max_pos) {
            return Err(Error::Invalid(format!(
                "position {p} is beyond the model's context ({})",
                t.max_pos
            )));
        }
        check("rope cos", t.cos.len, t.max_pos * hd / 2)?;
        check("rope sin", t.sin.len, t.max_pos * hd / 2)?;
        if positions.is_empty() {
            return Ok(());
        }
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let _serial = self.serial();
        let pos = self.table("positions", &pos)?;
        let l = kl::rope(
            DType::F32,
            false,
            self.ptr(x),
            pos,
            self.ptr(&t.cos),
            self.ptr(&t.sin),
            positions.len(),
            heads,
            hd,
            t.max_pos,
        )?;
        self.run(&[l])
    }

    fn kv_write(
        &self,
        k: &Self::Buf,
        v: &Self::Buf,
        ck: &mut Self::Buf,
        cv: &mut Self::Buf,
        seqs: &[SeqSpan],
        s: AttnShape,
    ) -> Result<()> {
        let t = row_tables(seqs, s, ck.len.min(cv.len))?;
        let rows = t.slot.len();
        check("kv_write k", k.len, rows * s.kv_heads * s.head_dim)?;
        check("kv_write v", v.len, rows * s.kv_heads * s.head_dim)?;
        if rows == 0 {
            return Ok(());
        }
        let _serial = self.serial();
        let (slot, pos) = self.row_table_ptrs(&t)?;
        let l = transformer::kv_write(
            DType::F32,
            self.ptr(ck),
            self.ptr(cv),
            self.ptr(k),
            self.ptr(v),
            slot,
            pos,
            rows,
            s.kv_heads,
            s.head_dim,
            s.capacity,
        )?;
        self.run(&[l])
    }

    fn attention(
        &self,
        q: &Self::Buf,
        ck: &Self::Buf,
        cv: &Self::Buf,
        seqs: &[SeqSpan],
        s: AttnShape,
        out: &mut Self::Buf,
    ) -> Result<()> {
        let t = row_tables(seqs, s, ck.len.min(cv.len))?;
        let rows = t.slot.len();
        check("attention q", q.len, rows * s.heads * s.head_dim)?;
        check("attention out", out.len, rows * s.heads * s.head_dim)?;
        if rows == 0 {
            return Ok(());
        }
        let longest = seqs.iter().map(|q| q.pos + q.rows).max().unwrap_or(0);
        let splits = attention_splits(rows, s.heads, longest);
        let _serial = self.serial();
        let (slot, pos) = self.row_table_ptrs(&t)?;
        let dims = AttnDims {
            rows,
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            capacity: s.capacity,
            splits,
        };
        let n_part = attention_part_len(rows, s.heads, s.head_dim, splits);
        self.with_part(n_part, |part| {
            let ls = transformer::attention_forward(
                DType::F32,
                self.ptr(out),
                part,
                self.ptr(q),
                self.ptr(ck),
                self.ptr(cv),
                slot,
                pos,
                dims,
            )?;
            self.run(&ls)
        })
    }

    fn swiglu(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        out: &mut Self::Buf,
        n: usize,
    ) -> Result<()> {
        check("swiglu", gate.len.min(up.len).min(out.len), n)?;
        let l = kl::swiglu_forward(DType::F32, self.ptr(out), self.ptr(gate), self.ptr(up), n)?;
        self.run(&[l])
    }

    fn add_assign(&self, x: &mut Self::Buf, y: &Self::Buf, n: usize) -> Result<()> {
        check("add_assign", x.len.min(y.len), n)?;
        let px = self.ptr(x);
        let l = kl::residual_forward(DType::F32, px, px, self.ptr(y), n)?;
        self.run(&[l])
    }
}

/// Activations must be f32 buffers (only weight matrices are bf16).
fn f32_buf<B>(what: &str, b: &DeviceBuf<B>) -> Result<()> {
    if b.ty != WeightType::F32 {
        return Err(Error::Invalid(format!(
            "{what}: a {:?} buffer where f32 activations belong",
            b.ty
        )));
    }
    Ok(())
}

/// The batch's per-row tables, checked against caches of `cache_len` values; the batch has
/// `slot.len()` rows (the end of its last span).
fn row_tables(seqs: &[SeqSpan], s: AttnShape, cache_len: usize) -> Result<RowTables> {
    let rows = seqs.iter().map(|q| q.row_start + q.rows).max().unwrap_or(0);
    let slots = cache_len / (s.kv_heads * s.capacity * s.head_dim).max(1);
    Ok(RowTables::of(seqs, rows, slots, s.capacity)?)
}
