//! Launch geometry and argument packing for every kernel in `kernels/*.cu`, independent of
//! who executes it: the CUDA driver (`cuda::gpu`), the CPU emulator (`cmt-kernel-check`) and
//! the GPU check binary all launch the same `Launch` values, so the grid/block arithmetic
//! that real GPUs run is exactly what the emulated tests cover.
//!
//! Pointers are raw addresses (device pointers on a GPU, host pointers in the emulator); the
//! executor that dereferences them owns the safety argument.
// Kernel signatures mirror the CUDA ones, pointer by pointer.
#![allow(clippy::too_many_arguments)]
use super::CudaError;

pub mod transformer;

#[cfg(target_endian = "big")]
compile_error!("kernel arguments are packed little-endian");

/// Storage type of a kernel's tensors (math is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    Bf16,
}

impl DType {
    pub const ALL: [DType; 2] = [DType::F32, DType::Bf16];
    pub fn suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        }
    }
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }
}

/// One kernel parameter, as `cuLaunchKernel` reads it: `args[i]` points at the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A pointer; 0 is `nullptr` (only where the kernel documents it as optional).
    Ptr(u64),
    I32(i32),
    F32(f32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// PTX module (file stem in kernels/ptx).
    pub module: &'static str,
    /// `extern "C"` entry point.
    pub entry: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub args: Vec<Arg>,
}

impl Launch {
    /// A 1-D launch of `{op}_{dt}` in `module` (set `grid[1..]` for more dimensions).
    pub fn new(
        module: &'static str,
        op: &str,
        dt: DType,
        grid: u32,
        block: u32,
        args: Vec<Arg>,
    ) -> Self {
        Launch {
            module,
            entry: format!("{op}_{}", dt.suffix()),
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            args,
        }
    }
    /// A zero-sized problem: executors skip it (CUDA rejects an empty grid).
    pub fn is_empty(&self) -> bool {
        self.grid.contains(&0)
    }
    /// One 8-byte slot per argument, the value in its low bytes; pass pointers to these
    /// slots as the `void**` parameter array.
    pub fn arg_slots(&self) -> Vec<u64> {
        self.args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) => p,
                Arg::I32(v) => u64::from(v as u32),
                Arg::F32(v) => u64::from(v.to_bits()),
            })
            .collect()
    }
}

/// Elementwise kernels: 256 threads, grid capped (grid-stride loops cover the rest).
const EW_BLOCK: u32 = 256;
const EW_MAX_GRID: u64 = 65_535;
/// RMSNorm: one warp per row, 8 rows per block.
const ROWS_PER_BLOCK: u32 = 8;
/// Cross-entropy: one block per row of the vocabulary.
const XENT_BLOCK: u32 = 512;

/// `v` as a kernel's i32 argument, or an error naming `what`.
pub fn i32_of(what: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v)
        .map_err(|_| CudaError::Shape(format!("{what} = {v} does not fit a kernel's i32")))
}

fn ew_grid(n: usize) -> u32 {
    (n as u64).div_ceil(u64::from(EW_BLOCK)).min(EW_MAX_GRID) as u32
}

/// out[i, :] = table[ids[i], :] with a bf16 table and f32 rows (bf16 weights on the device).
pub fn embedding_forward_widen(
    out: u64,
    table: u64,
    ids: u64,
    n: usize,
    d: usize,
    vocab: usize,
) -> Result<Launch, CudaError> {
    let mut l = embedding_forward(DType::Bf16, out, table, ids, n, d, vocab)?;
    l.entry = "embedding_forward_bf16_f32".into();
    Ok(l)
}

/// out[i, :] = table[ids[i], :]; `ids` are i32 already checked to be < vocab.
pub fn embedding_forward(
    dt: DType,
    out: u64,
    table: u64,
    ids: u64,
    n: usize,
    d: usize,
    vocab: usize,
) -> Result<Launch, CudaError> {
    let total = n
        .checked_mul(d)
        .ok_or_else(|| CudaError::Shape("embedding size overflows".into()))?;
    let args = vec![
        Arg::Ptr(out),
        Arg::Ptr(table),
        Arg::Ptr(ids),
        Arg::I32(i32_of("n", n)?),
        Arg::I32(i32_of("d", d)?),
        Arg::I32(i32_of("vocab", vocab)?),
    ];
    Ok(Launch::new(
        "embedding",
        "embedding_forward",
        dt,
        ew_grid(total),
        EW_BLOCK,
        args,
    ))
}

fn rows_grid(rows: usize) -> u32 {
    rows.div_ceil(ROWS_PER_BLOCK as usize) as u32
}

/// y = rmsnorm(x)·w over `rows` rows of width `d`; `rstd` (f32 [rows]) may be 0.
pub fn rmsnorm_forward(
    dt: DType,
    y: u64,
    rstd: u64,
    x: u64,
    w: u64,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<Launch, CudaError> {
    let args = vec![
        Arg::Ptr(y),
        Arg::Ptr(rstd),
        Arg::Ptr(x),
        Arg::Ptr(w),
        Arg::I32(i32_of("rows", rows)?),
        Arg::I32(i32_of("d", d)?),
        Arg::F32(eps),
    ];
    Ok(Launch::new(
        "rmsnorm",
        "rmsnorm_forward",
        dt,
        rows_grid(rows),
        ROWS_PER_BLOCK * 32,
        args,
    ))
}

/// dx from dy, x, w and the forward's rstd.
pub fn rmsnorm_backward(
    dt: DType,
    dx: u64,
    dy: u64,
    x: u64,
    w: u64,
    rstd: u64,
    rows: usize,
    d: usize,
) -> Result<Launch, CudaError> {
    let args = vec![
        Arg::Ptr(dx),
        Arg::Ptr(dy),
        Arg::Ptr(x),
        Arg::Ptr(w),
        Arg::Ptr(rstd),
        Arg::I32(i32_of("rows", rows)?),
        Arg::I32(i32_of("d", d)?),
    ];
    Ok(Launch::new(
        "rmsnorm",
        "rmsnorm_backward",
        dt,
        rows_grid(rows),
        ROWS_PER_BLOCK * 32,
        args,
    ))
}

/// dw (f32 [d]) = Σ_rows dy·x·rstd, added to dw when `accumulate`.
pub fn rmsnorm_backward_weight(
    dt: DType,
    dw: u64,
    dy: u64,
    x: u64,
    rstd: u64,
    rows: usize,
    d: usize,
    accumulate: bool,
) -> Result<Launch, CudaError> {
    let args = vec![
        Arg::Ptr(dw),
        Arg::Ptr(dy),
        Arg::Ptr(x),
        Arg::Ptr(rstd),
        Arg::I32(i32_of("rows", rows)?),
        Arg::I32(i32_of("d", d)?),
        Arg::I32(i32::from(accumulate)),
    ];
    let grid = d.div_ceil(EW_BLOCK as usize) as u32;
    Ok(Launch::new(
        "rmsnorm",
        "rmsnorm_backward_weight",
        dt,
        grid,
        EW_BLOCK,
        args,
    ))
}

/// Rotary in place on x [rows, heads, hd]; `pos` i32 [rows] already checked < max_pos; the
/// tables are f32 [max_pos, hd/2]. `backward` applies the inverse rotation to a gradient.
pub fn rope(
    dt: DType,
    backward: bool,
    x: u64,
    pos: u64,
    cos: u64,
    sin: u64,
    rows: usize,
    heads: usize,
    hd: usize,
    max_pos: usize,
) -> Result<Launch, CudaError> {
    if !hd.is_multiple_of(2) {
        return Err(CudaError::Shape(format!("rotary head_dim {hd} is odd")));
    }
    let pairs = rows
        .checked_mul(heads)
        .and_then(|v| v.checked_mul(hd / 2))
        .ok_or_else(|| CudaError::Shape("rope size overflows".into()))?;
    let args = vec![
        Arg::Ptr(x),
        Arg::Ptr(pos),
        Arg::Ptr(cos),
        Arg::Ptr(sin),
        Arg::I32(i32_of("rows", rows)?),
        Arg::I32(i32_of("heads", heads)?),
        Arg::I32(i32_of("head_dim", hd)?),
        Arg::I32(i32_of("max_pos", max_pos)?),
    ];
    let op = if backward {
        "rope_backward"
    } else {
        "rope_forward"
    };
    Ok(Launch::new("rope", op, dt, ew_grid(pairs), EW_BLOCK, args))
}

/// out = silu(gate)·up over n values.
pub fn swiglu_forward(
    dt: DType,
    out: u64,
    gate: u64,
    up: u64,
    n: usize,
) -> Result<Launch, CudaError> {
    let args = vec![
        Arg::Ptr(out),
        Arg::Ptr(gate),
        Arg::Ptr(up),
        Arg::I32(i32_of("n", n)?),
    ];
    Ok(Launch::new(
        "swiglu",
        "swiglu_forward",
        dt,
        ew_grid(n),
        EW_BLOCK,
        args,
    ))
}

/// dgate, dup from dout, gate, up (outputs may alias the inputs they replace).
pub fn swiglu_backward(
    dt: DType,
    dgate: u64,
    dup: u64,
    dout: u64,
    gate: u64,
    up: u64,
    n: usize,
) -> Result<Launch, CudaError> {
    let args = vec![
        Arg::Ptr(dgate),
        Arg::Ptr(dup),
        Arg::Ptr(dout),
        Arg::Ptr(gate),
        Arg::Ptr(up),
        Arg::I32(i32_of("n", n)?),
    ];
    Ok(Launch::new(
        "swiglu",
        "swiglu_backward",
        dt,
        ew_grid(n),
        EW_BLOCK,
        args,
    ))
}

/// out = a + b over n values (out may be a).
pub fn residual_forward(
    dt: DType,
    out: u64,
    a: u64,
    b: u64,
    n: usize,
) -> Result<Launch, CudaError> {
    let args = vec![
        Arg::Ptr(out),
        Arg::Ptr(a),
        Arg::Ptr(b),
        Arg::I32(i32_of("n", n)?),
    ];
    Ok(Launch::new(
        "residual",
        "residual_forward",
        dt,
        ew_grid(n),
        EW_BLOCK,
        args,
    ))
}

/// Per-row loss (f32 [rows]) and, when `dlogits` ≠ 0, (softmax − onehot)·dscale; targets
/// are i32 [rows], negative = ignored row.
pub fn cross_entropy_fused(
    dt: DType,
    losses: u64,
    dlogits: u64,
    logits: u64,
    targets: u64,
    rows: usize,
    vocab: usize,
    dscale: f32,
) -> Result<Launch, CudaError> {
    if vocab == 0 {
        return Err(CudaError::Shape(
            "cross-entropy over an empty vocabulary".into(),
        ));
    }
    let args = vec![
        Arg::Ptr(losses),
        Arg::Ptr(dlogits),
        Arg::Ptr(logits),
        Arg::Ptr(targets),
        Arg::I32(i32_of("rows", rows)?),
        Arg::I32(i32_of("vocab", vocab)?),
        Arg::F32(dscale),
    ];
    let grid =
        u32::try_from(rows).map_err(|_| CudaError::Shape(format!("{rows} rows exceed a grid")))?;
    Ok(Launch::new(
        "cross_entropy",
        "cross_entropy_fused",
        dt,
        grid,
        XENT_BLOCK,
        args,
    ))
}
