//! ggml tensor types and their dequantisation to f32 (layouts as in ggml-common.h).
use half::{bf16, f16};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl GgmlType {
    pub fn from_u32(v: u32) -> Option<GgmlType> {
        Some(match v {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    pub fn to_u32(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// (elements per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 2 + 16),
            GgmlType::Q4_1 => (32, 2 + 2 + 16),
            GgmlType::Q5_0 => (32, 2 + 4 + 16),
            GgmlType::Q5_1 => (32, 2 + 2 + 4 + 16),
            GgmlType::Q8_0 => (32, 2 + 32),
            GgmlType::Q4K => (256, 2 + 2 + 12 + 128),
            GgmlType::Q5K => (256, 2 + 2 + 12 + 32 + 128),
            GgmlType::Q6K => (256, 128 + 64 + 16 + 2),
        }
    }

    /// Bytes for `n` elements, or None if `n` is not a whole number of blocks.
    pub fn n_bytes(self, n: usize) -> Option<usize> {
        let (be, bb) = self.block();
        n.is_multiple_of(be).then(|| n / be * bb)
    }
}

pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `src` (exactly `out.len()` elements of `ty`) into `out`.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<(), String> {
    let (be, bb) = ty.block();
    if !out.len().is_multiple_of(be) || src.len() != out.len() / be * bb {
        return Err(format!(
            "{} bytes do not hold {} elements of {ty:?}",
            src.len(),
            out.len()
        ));
    }
    // Work in chunks of whole blocks so threads never share a block.
    const BLOCKS_PER_TASK: usize = 4096;
    out.par_chunks_mut(be * BLOCKS_PER_TASK)
        .zip(src.par_chunks(bb * BLOCKS_PER_TASK))
        .for_each(|(o, s)| dequantize_blocks(ty, s, o));
    Ok(())
}

fn dequantize_blocks(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    let (be, bb) = ty.block();
    for (o, b) in out.chunks_exact_mut(be).zip(src.chunks_exact(bb)) {
        match ty {
            GgmlType::F32 => o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => o[0] = f16_at(b, 0),
            GgmlType::BF16 => o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                for (x, &q) in o.iter_mut().zip(&b[2..34]) {
                    *x = q as i8 as f32 * d;
                }
            }
            GgmlType::Q4_0 => {
                let d = f16_at(b, 0);
                for (j, &q) in b[2..18].iter().enumerate() {
                    o[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                    o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
            GgmlType::Q4_1 => {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for (j, &q) in b[4..20].iter().enumerate() {
                    o[j] = (q & 0x0f) as f32 * d + m;
                    o[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
            GgmlType::Q5_0 => {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for (j, &q) in b[6..22].iter().enumerate() {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    o[j] = (((q & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
                    o[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
                }
            }
            GgmlType::Q5_1 => {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                for (j, &q) in b[8..24].iter().enumerate() {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    o[j] = ((q & 0x0f) as u32 | h0) as f32 * d + m;
                    o[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
                }
            }
            GgmlType::Q4K => super::quant_k::q4_k(b, o),
            GgmlType::Q5K => super::quant_k::q5_k(b, o),
            GgmlType::Q6K => super::quant_k::q6_k(b, o),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.5, m = -1.0, nibbles j -> (lo = j, hi = 15 - j)
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = vec![0.0; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 1.0);
            assert_eq!(out[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q4_0_and_q8_0_blocks_by_hand() {
        let mut b = f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend((0..16u8).map(|j| j | (j << 4)));
        let mut out = vec![0.0; 32];
        dequantize(GgmlType::Q4_0, &b, &mut out).unwrap();
        assert_eq!(out[0], -16.0);
        assert_eq!(out[31], 14.0);
        let mut b = f16::from_f32(0.25).to_le_bytes().to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        dequantize(GgmlType::Q8_0, &b, &mut out).unwrap();
        assert_eq!(out[0], -4.0);
        assert_eq!(out[31], 3.75);
    }

    #[test]
    fn wrong_length_is_an_error() {
        let mut out = vec![0.0; 32];
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out).is_err());
        assert!(dequantize(GgmlType::F16, &[0u8; 63], &mut out).is_err());
    }
}
