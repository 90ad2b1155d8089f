// RMSNorm, one warp per row (model widths are a few hundred to a few thousand values, so a
// warp keeps every lane busy without block barriers). blockDim.x = 32 · rows per block.
#include "common.cuh"

// y = w · (x · rstd), rstd = 1/sqrt(mean(x²) + eps); rstd is saved for the backward when
// non-null. Same operation order as the CPU reference.
template <typename T>
__device__ void rmsnorm_forward(T* y, float* rstd, const T* x, const T* w, int rows, int d, float eps) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warp
    const T* xr = x + (idx_t)row * d;
    T* yr = y + (idx_t)row * d;
    float ss = 0.0f;
    for (int i = lane; i < d; i += 32) {
        const float v = to_f32(xr[i]);
        ss += v * v;
    }
    const float r = rsqrtf(warp_sum(ss) / d + eps);
    for (int i = lane; i < d; i += 32) yr[i] = from_f32<T>(to_f32(w[i]) * (to_f32(xr[i]) * r));
    if (rstd != nullptr && lane == 0) rstd[row] = r;
}

// dx = r·g − r³·x·(g·x)/d with g = dy·w, r = rstd[row].
template <typename T>
__device__ void rmsnorm_backward(T* dx, const T* dy, const T* x, const T* w, const float* rstd,
                                 int rows, int d) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const idx_t o = (idx_t)row * d;
    float dot = 0.0f;
    for (int i = lane; i < d; i += 32) dot += to_f32(dy[o + i]) * to_f32(w[i]) * to_f32(x[o + i]);
    dot = warp_sum(dot);
    const float r = rstd[row], c = r * r * r * dot / d;
    for (int i = lane; i < d; i += 32)
        dx[o + i] = from_f32<T>(r * to_f32(dy[o + i]) * to_f32(w[i]) - c * to_f32(x[o + i]));
}

// dw[j] (+)= Σ_rows dy[r, j] · x[r, j] · rstd[r]. One thread per column: deterministic, no
// atomics, coalesced across j; parallelism is only d, so for many rows this is slow (a
// row-split with a second pass is the upgrade).
template <typename T>
__device__ void rmsnorm_backward_weight(float* dw, const T* dy, const T* x, const float* rstd,
                                        int rows, int d, int accumulate) {
    const idx_t j = global_thread();
    if (j >= (idx_t)d) return;
    float acc = 0.0f;
    for (int r = 0; r < rows; r++) {
        const idx_t o = (idx_t)r * d + j;
        acc += to_f32(dy[o]) * to_f32(x[o]) * rstd[r];
    }
    dw[j] = accumulate ? dw[j] + acc : acc;
}

#define RMSNORM(T, S)                                                                            \
    extern "C" __global__ void rmsnorm_forward_##S(T* y, float* rstd, const T* x, const T* w,    \
                                                   int rows, int d, float eps) {                 \
        rmsnorm_forward<T>(y, rstd, x, w, rows, d, eps);                                         \
    }                                                                                            \
    CMT_EMU_EXPORT(rmsnorm_forward_##S)                                                          \
    extern "C" __global__ void rmsnorm_backward_##S(T* dx, const T* dy, const T* x, const T* w,  \
                                                    const float* rstd, int rows, int d) {        \
        rmsnorm_backward<T>(dx, dy, x, w, rstd, rows, d);                                        \
    }                                                                                            \
    CMT_EMU_EXPORT(rmsnorm_backward_##S)                                                         \
    extern "C" __global__ void rmsnorm_backward_weight_##S(float* dw, const T* dy, const T* x,   \
                                                           const float* rstd, int rows, int d,   \
                                                           int accumulate) {                     \
        rmsnorm_backward_weight<T>(dw, dy, x, rstd, rows, d, accumulate);                        \
    }                                                                                            \
    CMT_EMU_EXPORT(rmsnorm_backward_weight_##S)
RMSNORM(float, f32)
RMSNORM(bf16, bf16)
