//! A bounds-checked wrapper over the `gemm` crate for strided f32 matrices, shared by the
//! unfused and fused cross-attention.

/// A read-only strided matrix view: element (r, c) at `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// Row-major with row stride `rs`.
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }
    /// The transpose of a row-major matrix with row stride `rs`.
    pub fn t(data: &'a [f32], rs: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rs,
        }
    }
}

/// Number of elements a `rows × cols` view with these strides spans.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst[m×n] (+)= scale · a[m×k] · b[k×n]`; dst is row-major with row stride `dst_rs`.
/// With `accumulate` the product is added to what `dst` holds, otherwise it overwrites it.
/// `threads > 1` lets `gemm` split the product over the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: View,
    b: View,
    scale: f32,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst_rs >= n, "matmul: dst rows overlap");
    assert!(
        extent(m, n, dst_rs, 1) <= dst.len(),
        "matmul: dst too small"
    );
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        extent(m, k, a.rs, a.cs) <= a.data.len(),
        "matmul: lhs too small"
    );
    assert!(
        extent(k, n, b.rs, b.cs) <= b.data.len(),
        "matmul: rhs too small"
    );
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element the product touches lies inside its slice (the extents were
    // checked just above), dst's rows do not overlap (dst_rs >= n, column stride 1), and
    // dst is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}
