//! Launches of the transformer's own kernels: kernels/matmul.cu and kernels/attention.cu.
//! Activations (x, q, out, k, v) are f32; `dt` is the storage type of the weights (matmul) or
//! of the key/value cache (attention, kv_write).
use super::{i32_of, Arg, DType, Launch};
use crate::backend::SeqSpan;
use crate::cuda::CudaError;

/// Tile of `matmul_nt_tiled` (kernels/matmul.cu MM_BM × MM_BN), 256 threads.
const MM_TILE: usize = 64;
const MM_THREADS: u32 = 256;
/// matmul_nt_mma: the same 64×64 tile on 4 warps.
const MMA_THREADS: u32 = 128;
/// Output features per block of `matmul_nt_gemv` (one warp each).
const GEMV_WARPS: usize = 8;
/// Most rows of x one GEMV launch takes (kernels/matmul.cu GEMV_MAX_M).
pub const GEMV_MAX_M: usize = 8;
/// Largest head size attention_forward holds in registers (ATT_MAX_HD).
pub const ATT_MAX_HD: usize = 256;
const ATT_THREADS: u32 = 128;
/// Blocks that keep a large GPU busy (≈ 2 per SM of an H100/H200): decode attention splits
/// each row's positions until it has about this many.
const ATT_TARGET_BLOCKS: usize = 256;
/// Fewest positions worth a split of their own.
const ATT_MIN_SPLIT: usize = 64;
const ATT_MAX_SPLITS: usize = 64;

/// How a matmul's weight matrix is stored on the device (kernels/weights.cuh): dense f32 or
/// bf16, or GGUF blocks of 32 as the file holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightType {
    F32,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl WeightType {
    pub fn suffix(self) -> &'static str {
        match self {
            WeightType::F32 => "f32",
            WeightType::Bf16 => "bf16",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_0 => "q4_0",
            WeightType::Q4_1 => "q4_1",
        }
    }
    /// Bytes of a [rows, cols] matrix (cols a multiple of 32 for the block types).
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        match self {
            WeightType::F32 => rows * cols * 4,
            WeightType::Bf16 => rows * cols * 2,
            WeightType::Q8_0 => rows * cols / 32 * 34,
            WeightType::Q4_0 => rows * cols / 32 * 18,
            WeightType::Q4_1 => rows * cols / 32 * 20,
        }
    }
    pub fn is_blocks(self) -> bool {
        !matches!(self, WeightType::F32 | WeightType::Bf16)
    }
}

/// Which matmul kernel to run; `Auto` picks GEMV for at most [`GEMV_MAX_M`] rows, else the
/// portable tiled kernel. `TensorCore` (bf16 weights only, x rounded to bf16, sm_80+) is
/// chosen by the device backend after its self-test, never by `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKernel {
    Auto,
    Tiled,
    Gemv,
    TensorCore,
}

/// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]; `bias` = 0 for none).
pub fn matmul_nt(
    wt: WeightType,
    kernel: MatmulKernel,
    out: u64,
    x: u64,
    w: u64,
    bias: u64,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Launch, CudaError> {
    if wt.is_blocks() && !k.is_multiple_of(32) {
        return Err(CudaError::Shape(format!(
            "{wt:?} weights with {k} columns: not whole 32-element blocks"
        )));
    }
    if kernel == MatmulKernel::TensorCore && wt != WeightType::Bf16 {
        return Err(CudaError::Shape(
            "the tensor-core matmul takes bf16 weights only".into(),
        ));
    }
    let gemv = match kernel {
        MatmulKernel::Auto => m <= GEMV_MAX_M,
        MatmulKernel::Tiled | MatmulKernel::TensorCore => false,
        MatmulKernel::Gemv if m > GEMV_MAX_M => {
            return Err(CudaError::Shape(format!(
                "GEMV takes at most {GEMV_MAX_M} rows, not {m}"
            )))
        }
        MatmulKernel::Gemv => true,
    };
    let args = vec![
        Arg::Ptr(out),
        Arg::Ptr(x),
        Arg::Ptr(w),
        Arg::Ptr(bias),
        Arg::I32(i32_of("m", m)?),
        Arg::I32(i32_of("n", n)?),
        Arg::I32(i32_of("k", k)?),
    ];
    // 4-wide loads need every row start 4-element aligned.
    let vec = if k.is_multiple_of(4) { "_vec" } else { "" };
    let grid_of = |v: usize, what: &str| {
        u32::try_from(v).map_err(|_| CudaError::Shape(format!("{what}: {v} blocks")))
    };
    if gemv {
        let grid = grid_of(n.div_ceil(GEMV_WARPS), "matmul n")?;
        Ok(launch_w(
            &format!("matmul_nt_gemv{vec}"),
            wt,
            grid,
            (GEMV_WARPS * 32) as u32,
            args,
        ))
    } else {
        let gy = grid_of(m.div_ceil(MM_TILE), "matmul m")?;
        if gy > 65_535 {
            return Err(CudaError::Shape(format!("matmul: {m} rows exceed a grid")));
        }
        let (op, threads) = if kernel == MatmulKernel::TensorCore {
            ("matmul_nt_mma".to_string(), MMA_THREADS)
        } else {
            (format!("matmul_nt_tiled{vec}"), MM_THREADS)
        };
        let mut l = launch_w(
            &op,
            wt,
            grid_of(n.div_ceil(MM_TILE), "matmul n")?,
            threads,
            args,
        );
        l.grid[1] = gy;
        Ok(l)
    }
}

/// A matmul launch of `{op}_{weight type}`.
fn launch_w(op: &str, wt: WeightType, grid: u32, block: u32, args: Vec<Arg>) -> Launch {
    Launch {
        module: "matmul",
        entry: format!("{op}_{}", wt.suffix()),
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        args,
    }
}

/// out[i, :] = the f32 values of row ids[i] of a GGUF-block table (kernels/embedding.cu).
pub fn embedding_blocks(
    wt: WeightType,
    out: u64,
    table: u64,
    ids: u64,
    n: usize,
    d: usize,
    vocab: usize,
) -> Result<Launch, CudaError> {
    if !wt.is_blocks() || !d.is_multiple_of(32) {
        return Err(CudaError::Shape(format!(
            "a block-table lookup of {wt:?} rows of {d} values"
        )));
    }
    let mut l = super::embedding_forward(DType::F32, out, table, ids, n, d, vocab)?;
    l.entry = format!("embedding_forward_{}_f32", wt.suffix());
    Ok(l)
}

/// Per-row tables of a batch: the cache slot of each row, its cache position, and the last
/// position it attends to (its own). Uploaded as i32 for kv_write and attention_forward.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowTables {
    pub slot: Vec<i32>,
    pub pos: Vec<i32>,
}

impl RowTables {
    /// Checks every span against `capacity`, `slots` and the batch's `rows`.
    pub fn of(
        seqs: &[SeqSpan],
        rows: usize,
        slots: usize,
        capacity: usize,
    ) -> Result<Self, CudaError> {
        let mut t = RowTables {
            slot: vec![-1; rows],
            pos: vec![-1; rows],
        };
        for s in seqs {
            if s.slot >= slots || s.pos + s.rows > capacity || s.row_start + s.rows > rows {
                return Err(CudaError::Shape(format!(
                    "sequence span {s:?} outside {rows} rows / {slots} slots / capacity {capacity}"
                )));
            }
            for i in 0..s.rows {
                let r = s.row_start + i;
                if t.slot[r] >= 0 {
                    return Err(CudaError::Shape(format!(
                        "row {r} is in two sequence spans"
                    )));
                }
                t.slot[r] = i32_of("slot", s.slot)?;
                t.pos[r] = i32_of("position", s.pos + i)?;
            }
        }
        if let Some(r) = t.slot.iter().position(|&s| s < 0) {
            return Err(CudaError::Shape(format!("row {r} is in no sequence span")));
        }
        Ok(t)
    }
}

/// cache[slot, h, pos, :] = k[r, h, :] and the same for v, for every row of `tables`.
pub fn kv_write(
    dt: DType,
    cache_k: u64,
    cache_v: u64,
    k: u64,
    v: u64,
    row_slot: u64,
    row_pos: u64,
    rows: usize,
    kv_heads: usize,
    hd: usize,
    capacity: usize,
) -> Result<Launch, CudaError> {
    let total = rows * kv_heads * hd;
    let args = vec![
        Arg::Ptr(cache_k),
        Arg::Ptr(cache_v),
        Arg::Ptr(k),
        Arg::Ptr(v),
        Arg::Ptr(row_slot),
        Arg::Ptr(row_pos),
        Arg::I32(i32_of("rows", rows)?),
        Arg::I32(i32_of("kv_heads", kv_heads)?),
        Arg::I32(i32_of("head_dim", hd)?),
        Arg::I32(i32_of("capacity", capacity)?),
    ];
    Ok(Launch::new(
        "attention",
        "kv_write",
        dt,
        super::ew_grid(total),
        super::EW_BLOCK,
        args,
    ))
}

/// How many chunks attention_forward splits each row's positions into: 1 when the batch
/// has rows enough to fill the GPU (prefill), more for a few rows over long caches (decode).
pub fn attention_splits(rows: usize, heads: usize, longest: usize) -> usize {
    let blocks = rows * heads;
    if blocks >= ATT_TARGET_BLOCKS {
        return 1;
    }
    ATT_TARGET_BLOCKS
        .div_ceil(blocks.max(1))
        .min(longest.div_ceil(ATT_MIN_SPLIT))
        .clamp(1, ATT_MAX_SPLITS)
}

/// f32 values of the partials buffer attention needs with `splits` > 1 (0 for 1).
pub fn attention_part_len(rows: usize, heads: usize, hd: usize, splits: usize) -> usize {
    if splits > 1 {
        rows * heads * splits * (hd + 2)
    } else {
        0
    }
}

/// Geometry of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub rows: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub capacity: usize,
    pub splits: usize,
}

/// out[r, h, :] = softmax(q·Kᵀ/√hd)·V over positions 0..=row_pos[r] of slot row_slot[r]: one
/// launch, or two (partials + combine) when `splits` > 1; `part` holds
/// [`attention_part_len`] f32 values then.
pub fn attention_forward(
    dt: DType,
    out: u64,
    part: u64,
    q: u64,
    cache_k: u64,
    cache_v: u64,
    row_slot: u64,
    row_pos: u64,
    d: AttnDims,
) -> Result<Vec<Launch>, CudaError> {
    if d.head_dim == 0 || d.head_dim > ATT_MAX_HD {
        return Err(CudaError::Shape(format!(
            "attention head_dim {} outside 1..={ATT_MAX_HD}",
            d.head_dim
        )));
    }
    if d.kv_heads == 0 || !d.heads.is_multiple_of(d.kv_heads) {
        return Err(CudaError::Shape(format!(
            "{} query heads do not group over {} key/value heads",
            d.heads, d.kv_heads
        )));
    }
    if d.splits == 0 || d.splits > ATT_MAX_SPLITS {
        return Err(CudaError::Shape(format!("{} attention splits", d.splits)));
    }
    let blocks = u32::try_from(d.rows * d.heads)
        .map_err(|_| CudaError::Shape("attention: too many rows × heads".into()))?;
    let args = vec![
        Arg::Ptr(out),
        Arg::Ptr(part),
        Arg::Ptr(q),
        Arg::Ptr(cache_k),
        Arg::Ptr(cache_v),
        Arg::Ptr(row_slot),
        Arg::Ptr(row_pos),
        Arg::I32(i32_of("heads", d.heads)?),
        Arg::I32(i32_of("kv_heads", d.kv_heads)?),
        Arg::I32(i32_of("head_dim", d.head_dim)?),
        Arg::I32(i32_of("capacity", d.capacity)?),
        Arg::I32(i32_of("splits", d.splits)?),
        Arg::F32(1.0 / (d.head_dim as f32).sqrt()),
    ];
    let mut fwd = Launch::new(
        "attention",
        "attention_forward",
        dt,
        blocks,
        ATT_THREADS,
        args,
    );
    fwd.grid[1] = d.splits as u32;
    let mut v = vec![fwd];
    if d.splits > 1 {
        let args = vec![
            Arg::Ptr(out),
            Arg::Ptr(part),
            Arg::I32(i32_of("head_dim", d.head_dim)?),
            Arg::I32(i32_of("splits", d.splits)?),
        ];
        v.push(Launch::new(
            "attention",
            "attention_combine",
            DType::F32,
            blocks,
            64,
            args,
        ));
    }
    Ok(v)
}

/// The backward of [`attention_forward`] (kernels/attention.cu `attention_backward`): writes
/// dq ([rows, heads, hd], f32) and accumulates into dk, dv (f32, the caches' layout and size,
/// zeroed by the caller for a fresh gradient) for every row of the batch. `d.splits` is unused.
pub fn attention_backward(
    dt: DType,
    dq: u64,
    dk: u64,
    dv: u64,
    q: u64,
    dout: u64,
    cache_k: u64,
    cache_v: u64,
    row_slot: u64,
    row_pos: u64,
    d: AttnDims,
) -> Result<Launch, CudaError> {
    let mut fwd = attention_forward(
        dt,
        0,
        0,
        q,
        cache_k,
        cache_v,
        row_slot,
        row_pos,
        AttnDims { splits: 1, ..d },
    )?
    .remove(0);
    // Same geometry and checks as the forward; the backward's own arguments.
    fwd.entry = format!("attention_backward_{}", dt.suffix());
    fwd.args = vec![
        Arg::Ptr(dq),
        Arg::Ptr(dk),
        Arg::Ptr(dv),
        Arg::Ptr(q),
        Arg::Ptr(dout),
        Arg::Ptr(cache_k),
        Arg::Ptr(cache_v),
        Arg::Ptr(row_slot),
        Arg::Ptr(row_pos),
        Arg::I32(i32_of("heads", d.heads)?),
        Arg::I32(i32_of("kv_heads", d.kv_heads)?),
        Arg::I32(i32_of("head_dim", d.head_dim)?),
        Arg::I32(i32_of("capacity", d.capacity)?),
        Arg::F32(1.0 / (d.head_dim as f32).sqrt()),
    ];
    Ok(fwd)
}
