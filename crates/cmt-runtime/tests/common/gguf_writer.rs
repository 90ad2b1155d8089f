//! A minimal GGUF v3 writer for tests: metadata, tensors in F32/F16/BF16/Q8_0/Q4_0/Q4_1.
#![allow(dead_code)]
use cmt_runtime::gguf::GgmlType;
use half::{bf16, f16};

pub enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

#[derive(Clone, Copy, Debug)]
pub enum Ty {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    /// The k-quants: not quantised from the values (no quantiser here) but valid blocks
    /// made from their bits, with small scales; see `encode`.
    Q4K,
    Q5K,
    Q6K,
}

impl Ty {
    fn code(self) -> u32 {
        match self {
            Ty::F32 => 0,
            Ty::F16 => 1,
            Ty::Q4_0 => 2,
            Ty::Q4_1 => 3,
            Ty::Q8_0 => 8,
            Ty::BF16 => 30,
            Ty::Q4K => 12,
            Ty::Q5K => 13,
            Ty::Q6K => 14,
        }
    }
}

/// Encodes `v` as `ty`, returning the bytes and the values as the file now holds them
/// (what a correct reader must dequantise to), computed with the ggml reference formulas.
pub fn encode(ty: Ty, v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut b = Vec::new();
    let mut back = Vec::with_capacity(v.len());
    if let Some(g) = match ty {
        Ty::Q4K => Some(GgmlType::Q4K),
        Ty::Q5K => Some(GgmlType::Q5K),
        Ty::Q6K => Some(GgmlType::Q6K),
        _ => None,
    } {
        return k_blocks(g, v);
    }
    match ty {
        Ty::F32 => {
            for x in v {
                b.extend_from_slice(&x.to_le_bytes());
                back.push(*x);
            }
        }
        Ty::F16 => {
            for x in v {
                let h = f16::from_f32(*x);
                b.extend_from_slice(&h.to_le_bytes());
                back.push(h.to_f32());
            }
        }
        Ty::BF16 => {
            for x in v {
                let h = bf16::from_f32(*x);
                b.extend_from_slice(&h.to_le_bytes());
                back.push(h.to_f32());
            }
        }
        Ty::Q8_0 => {
            for blk in v.chunks(32) {
                let amax = blk.iter().fold(0.0f32, |a, x| a.max(x.abs()));
                let d = f16::from_f32(amax / 127.0);
                let id = if d.to_f32() != 0.0 {
                    1.0 / d.to_f32()
                } else {
                    0.0
                };
                b.extend_from_slice(&d.to_le_bytes());
                for x in blk {
                    let q = (x * id).round().clamp(-127.0, 127.0) as i8;
                    b.push(q as u8);
                    back.push(q as f32 * d.to_f32());
                }
            }
        }
        Ty::Q4_0 => {
            for blk in v.chunks(32) {
                let max = blk
                    .iter()
                    .fold(0.0f32, |a, &x| if x.abs() > a.abs() { x } else { a });
                let d = f16::from_f32(max / -8.0);
                let id = if d.to_f32() != 0.0 {
                    1.0 / d.to_f32()
                } else {
                    0.0
                };
                b.extend_from_slice(&d.to_le_bytes());
                let q: Vec<u8> = blk
                    .iter()
                    .map(|x| ((x * id + 8.5) as i32).clamp(0, 15) as u8)
                    .collect();
                for j in 0..16 {
                    b.push(q[j] | (q[j + 16] << 4));
                }
                back.extend(q.iter().map(|&q| (q as i32 - 8) as f32 * d.to_f32()));
            }
        }
        Ty::Q4K | Ty::Q5K | Ty::Q6K => unreachable!("k-quants are made by k_blocks"),
        Ty::Q4_1 => {
            for blk in v.chunks(32) {
                let min = blk.iter().cloned().fold(f32::INFINITY, f32::min);
                let max = blk.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let d = f16::from_f32((max - min) / 15.0);
                let m = f16::from_f32(min);
                let id = if d.to_f32() != 0.0 {
                    1.0 / d.to_f32()
                } else {
                    0.0
                };
                b.extend_from_slice(&d.to_le_bytes());
                b.extend_from_slice(&m.to_le_bytes());
                let q: Vec<u8> = blk
                    .iter()
                    .map(|x| (((x - min) * id + 0.5) as i32).clamp(0, 15) as u8)
                    .collect();
                for j in 0..16 {
                    b.push(q[j] | (q[j + 16] << 4));
                }
                back.extend(q.iter().map(|&q| q as f32 * d.to_f32() + m.to_f32()));
            }
        }
    }
    (b, back)
}

pub struct Writer {
    pub meta: Vec<(String, Meta)>,
    /// name, dims (GGUF order, fastest first), type, encoded bytes
    pub tensors: Vec<(String, Vec<u64>, Ty, Vec<u8>)>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            meta: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn meta(&mut self, k: &str, v: Meta) {
        self.meta.push((k.to_string(), v));
    }

    /// Adds a tensor of HF shape [rows, cols] (or [n]); returns the values as stored.
    pub fn tensor(&mut self, name: &str, hf_shape: &[usize], ty: Ty, v: &[f32]) -> Vec<f32> {
        let (bytes, back) = encode(ty, v);
        let dims = hf_shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name.to_string(), dims, ty, bytes));
        back
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(b"GGUF");
        o.extend_from_slice(&3u32.to_le_bytes());
        o.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        o.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut o, k);
            match v {
                Meta::U32(x) => {
                    o.extend_from_slice(&4u32.to_le_bytes());
                    o.extend_from_slice(&x.to_le_bytes());
                }
                Meta::F32(x) => {
                    o.extend_from_slice(&6u32.to_le_bytes());
                    o.extend_from_slice(&x.to_le_bytes());
                }
                Meta::Bool(x) => {
                    o.extend_from_slice(&7u32.to_le_bytes());
                    o.push(*x as u8);
                }
                Meta::Str(s) => {
                    o.extend_from_slice(&8u32.to_le_bytes());
                    put_str(&mut o, s);
                }
                Meta::StrArray(a) => {
                    o.extend_from_slice(&9u32.to_le_bytes());
                    o.extend_from_slice(&8u32.to_le_bytes());
                    o.extend_from_slice(&(a.len() as u64).to_le_bytes());
                    for s in a {
                        put_str(&mut o, s);
                    }
                }
                Meta::I32Array(a) => {
                    o.extend_from_slice(&9u32.to_le_bytes());
                    o.extend_from_slice(&5u32.to_le_bytes());
                    o.extend_from_slice(&(a.len() as u64).to_le_bytes());
                    for x in a {
                        o.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, bytes) in &self.tensors {
            put_str(&mut o, name);
            o.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                o.extend_from_slice(&d.to_le_bytes());
            }
            o.extend_from_slice(&ty.code().to_le_bytes());
            o.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset += (bytes.len() as u64).div_ceil(32) * 32;
        }
        while o.len() % 32 != 0 {
            o.push(0);
        }
        let start = o.len();
        for ((_, _, _, bytes), off) in self.tensors.iter().zip(offsets) {
            o.resize(start + off as usize, 0);
            o.extend_from_slice(bytes);
        }
        o
    }
}

/// k-quant blocks whose quant bytes come from the bits of `v` (one block per 256 values)
/// and whose f16 scales are small and finite, with the values they dequantise to (by the
/// runtime's dequantiser, itself checked against gguf-py). Not a quantiser: the values
/// are not `v`'s; tests compare a model's kept blocks against its own f32 path.
fn k_blocks(g: GgmlType, v: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let (elems, bb) = g.block();
    assert!(
        v.len().is_multiple_of(elems),
        "{} values are not whole {g:?} blocks",
        v.len()
    );
    let mut bytes = Vec::with_capacity(v.len() / elems * bb);
    for chunk in v.chunks_exact(elems) {
        let mut b: Vec<u8> = (0..bb)
            .map(|i| (chunk[i % elems].to_bits() >> (8 * (i % 3))) as u8)
            .collect();
        let small = |x: f32| f16::from_f32(x).to_le_bytes();
        match g {
            GgmlType::Q6K => b[208..210].copy_from_slice(&small(2e-4)),
            _ => {
                b[0..2].copy_from_slice(&small(2e-3));
                b[2..4].copy_from_slice(&small(1e-3));
            }
        }
        bytes.extend(b);
    }
    let mut back = vec![0.0; v.len()];
    cmt_runtime::gguf::dequantize(g, &bytes, &mut back).expect("whole blocks");
    (bytes, back)
}
