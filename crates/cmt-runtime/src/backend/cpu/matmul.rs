//! out[m, n] = x[m, k] · w[n, k]ᵀ on the CPU.
//!
//! Two regimes. Decode (small m) is bound by reading w once: each thread streams a band of
//! w's rows and dots every one with all m inputs while the row is in L1. Prefill (large m)
//! is compute bound and goes to the `gemm` crate's packed, cache-blocked kernels.
use super::simd::dot;
use rayon::prelude::*;

/// Below this many input rows, the streaming kernel beats packing for gemm. The two kernels
/// sum in different orders, so a row's result depends on which side of this bound the
/// step's row count falls; callers that need a sequence's bits independent of what else is
/// in the step (the compressor's document encoder) group by it.
pub const SKINNY_MAX_M: usize = 8;
/// Output features per rayon task in the streaming kernel.
const ROWS_PER_TASK: usize = 32;

pub fn matmul_nt(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(
        x.len() >= m * k && w.len() >= n * k && out.len() >= m * n,
        "matmul_nt: buffers too small"
    );
    if let Some(b) = bias {
        assert!(b.len() >= n, "matmul_nt: bias too small");
    }
    if m == 0 || n == 0 {
        return;
    }
    if m <= SKINNY_MAX_M {
        skinny(x, w, bias, out, m, n, k);
    } else {
        packed(x, w, bias, out, m, n, k);
    }
}

fn skinny(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    by_columns(out, m, n, ROWS_PER_TASK, |j, vals| {
        let wr = &w[j * k..(j + 1) * k];
        let b = bias.map_or(0.0, |b| b[j]);
        for (i, v) in vals.iter_mut().enumerate() {
            *v = dot(&x[i * k..(i + 1) * k], wr) + b;
        }
    });
}

/// Fills out[m, n] (row-major) one output feature at a time: `column(j, vals)` writes
/// feature j of all m rows into `vals[..m]`. Features are banded `per_task` to a rayon
/// task, so each task streams its band of weight rows once for all m inputs (the decode
/// GEMVs of every weight format).
pub(crate) fn by_columns(
    out: &mut [f32],
    m: usize,
    n: usize,
    per_task: usize,
    column: impl Fn(usize, &mut [f32]) + Sync,
) {
    assert!(
        out.len() >= m * n,
        "by_columns: {} outputs for [{m}, {n}]",
        out.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    // Tasks own disjoint column bands of every output row; write through a raw pointer
    // because a band is strided across the m output rows.
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..n.div_ceil(per_task)).into_par_iter().for_each(|t| {
        let optr = out_ptr;
        let mut stack = [0.0f32; SKINNY_MAX_M];
        let mut heap = Vec::new();
        let vals = if m <= SKINNY_MAX_M {
            &mut stack[..m]
        } else {
            heap.resize(m, 0.0);
            &mut heap[..]
        };
        for j in t * per_task..((t + 1) * per_task).min(n) {
            column(j, vals);
            for (i, &v) in vals.iter().enumerate() {
                // SAFETY: i < m, j < n, so i·n + j < m·n <= out.len() (checked); column j
                // belongs to this task alone, so no two threads write the same element.
                unsafe { *optr.0.add(i * n + j) = v };
            }
        }
    });
}

/// A raw output pointer handed to rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: used only to hand disjoint output elements to rayon tasks (`by_columns`, the
// dequantised-tile GEMM's column bands).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// The `gemm` crate's threading: the current rayon pool (`--threads`), or none.
fn gemm_parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

fn packed(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let read_dst = if let Some(b) = bias {
        for row in out[..m * n].chunks_exact_mut(n) {
            row.copy_from_slice(&b[..n]);
        }
        true
    } else {
        false
    };
    // SAFETY: out is [m, n] row-major with row stride n, checked in `matmul_nt` to be
    // large enough, as are x and w; out aliases neither.
    unsafe {
        gemm_x_wt(
            out.as_mut_ptr(),
            n,
            x,
            w,
            m,
            n,
            k,
            read_dst,
            gemm_parallelism(),
        )
    };
}

/// dst[m, n] (+)= x[m, k] · wᵀ for w [n, k] row-major, through the `gemm` crate; dst rows
/// are `dst_stride` apart (a column band of a wider output), adding to dst if `accumulate`.
///
/// SAFETY (callers): dst points at m rows of n writable f32, `dst_stride` apart, aliasing
/// neither x (≥ m·k values) nor w (≥ n·k values).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_x_wt(
    dst: *mut f32,
    dst_stride: usize,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    debug_assert!(x.len() >= m * k && w.len() >= n * k);
    // SAFETY: dst as the caller promises (col stride 1, row stride dst_stride); lhs = x
    // [m, k] row-major; rhs = wᵀ, element (kk, j) at w[j·k + kk]: row stride 1, col
    // stride k.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_stride as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// out[m, k] (+)= dy[m, n] · w[n, k]: the input gradient of `matmul_nt` (w not transposed).
/// With `accumulate`, adds to what `out` holds.
pub fn matmul_nn(
    dy: &[f32],
    w: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    assert!(
        dy.len() >= m * n && w.len() >= n * k && out.len() >= m * k,
        "matmul_nn: buffers too small"
    );
    if m == 0 || k == 0 {
        return;
    }
    if n == 0 {
        if !accumulate {
            out[..m * k].fill(0.0);
        }
        return;
    }
    let par = gemm_parallelism();
    // SAFETY: dst is [m, k] row-major (col stride 1, row stride k); lhs = dy [m, n]
    // row-major; rhs = w [n, k] row-major. Sizes were checked above; dst aliases neither.
    unsafe {
        gemm::gemm(
            m,
            k,
            n,
            out.as_mut_ptr(),
            1,
            k as isize,
            accumulate,
            dy.as_ptr(),
            1,
            n as isize,
            w.as_ptr(),
            1,
            k as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// The plain triple loop, in f64: the reference the fast paths are tested against.
#[cfg(test)]
pub fn matmul_nt_slow(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for kk in 0..k {
                s += x[i * k + kk] as f64 * w[j * k + kk] as f64;
            }
            out[i * n + j] = s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matmul_nn_matches_triple_loop(m in 1usize..40, n in 1usize..50, k in 1usize..60, acc: bool) {
            let gen = |len: usize, s: usize| -> Vec<f32> { (0..len).map(|i| ((i * 7919 + s * 31) % 200) as f32 / 100.0 - 1.0).collect() };
            let (dy, w, init) = (gen(m * n, 1), gen(n * k, 2), gen(m * k, 3));
            let mut out = init.clone();
            matmul_nn(&dy, &w, &mut out, m, n, k, acc);
            for i in 0..m {
                for j in 0..k {
                    let mut r: f64 = if acc { init[i * k + j] as f64 } else { 0.0 };
                    for t in 0..n {
                        r += dy[i * n + t] as f64 * w[t * k + j] as f64;
                    }
                    prop_assert!((out[i * k + j] as f64 - r).abs() <= 1e-4 * (1.0 + r.abs()));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_triple_loop(m in 1usize..40, n in 1usize..70, k in 1usize..90, seed in 0u64..1000, with_bias: bool) {
            let gen = |len: usize, s: u64| -> Vec<f32> {
                (0..len).map(|i| (((i as u64 * 2654435761 + s * 97) % 1000) as f32 / 500.0) - 1.0).collect()
            };
            let x = gen(m * k, seed);
            let w = gen(n * k, seed + 1);
            let b = gen(n, seed + 2);
            let bias = with_bias.then_some(&b[..]);
            let mut out = vec![f32::NAN; m * n];
            matmul_nt(&x, &w, bias, &mut out, m, n, k);
            let want = matmul_nt_slow(&x, &w, bias, m, n, k);
            for (g, r) in out.iter().zip(&want) {
                prop_assert!((*g as f64 - r).abs() <= 1e-5 + 1e-5 * r.abs() * (k as f64).sqrt(), "{g} vs {r}");
            }
        }
    }
}
