// Dense matmul of the transformer: out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]), w in HF layout
// (rows = output features). x, bias and out are f32 (activations); w is the storage type T
// (f32, or bf16 weights resident on the device); math and accumulation in f32.
//
// Two portable kernels, both run by the emulator:
// - matmul_nt_tiled: a block of 256 threads computes a 64×64 tile of out, each thread a 4×4
//   sub-tile, walking k in steps of 16 through shared-memory tiles of x and w (prefill);
// - matmul_nt_gemv: one warp per output feature, m ≤ GEMV_MAX_M rows of x at once (decode,
//   where the weights are read once per token and nothing is reused across rows).
// VEC variants read 4 consecutive k at once (16-byte x loads, 16/8-byte w loads); the host
// picks them only when k % 4 == 0, so every row start stays 16-byte aligned for f32 (8 for
// bf16) given an aligned base pointer (device allocations are 256-byte aligned).
#include "common.cuh"

#define MM_BM 64
#define MM_BN 64
#define MM_BK 16
#define MM_THREADS 256
#define GEMV_WARPS 8
#define GEMV_MAX_M 8

struct alignas(16) f32x4 {
    float v[4];
};
struct alignas(8) bf16x4 {
    bf16 v[4];
};

// Four consecutive values of a row as f32; `p` is 4-element aligned (VEC paths only).
__device__ __forceinline__ void load4(const float* p, float o[4]) {
    const f32x4 q = *reinterpret_cast<const f32x4*>(p);
    for (int i = 0; i < 4; i++) o[i] = q.v[i];
}
__device__ __forceinline__ void load4(const bf16* p, float o[4]) {
    const bf16x4 q = *reinterpret_cast<const bf16x4*>(p);
    for (int i = 0; i < 4; i++) o[i] = to_f32(q.v[i]);
}

template <typename T, bool VEC>
__device__ void matmul_nt_tiled(float* out, const float* x, const T* w, const float* bias, int m,
                                int n, int k) {
    // Transposed tiles (xs[kk][row]) so the inner loop reads 4 consecutive rows/columns; the
    // +4 padding staggers the rows across shared-memory banks for the transposing stores.
    __shared__ float xs[MM_BK][MM_BM + 4];
    __shared__ float ws[MM_BK][MM_BN + 4];
    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * MM_BM, col0 = blockIdx.x * MM_BN;
    const int tr = tid / 16, tc = tid % 16;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += MM_BK) {
        if (VEC) {
            // 64 rows × 4 groups of 4 k = 256 loads of each operand, one per thread.
            const int r = tid / 4, kk = (tid % 4) * 4, gk = k0 + kk;
            float a[4] = {0.0f, 0.0f, 0.0f, 0.0f}, b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            // k % 4 == 0 and gk % 4 == 0, so gk < k means all four are in range.
            if (row0 + r < m && gk < k) load4(x + (idx_t)(row0 + r) * k + gk, a);
            if (col0 + r < n && gk < k) load4(w + (idx_t)(col0 + r) * k + gk, b);
            for (int i = 0; i < 4; i++) {
                xs[kk + i][r] = a[i];
                ws[kk + i][r] = b[i];
            }
        } else {
            for (int i = tid; i < MM_BM * MM_BK; i += MM_THREADS) {
                const int r = i / MM_BK, kk = i % MM_BK, gk = k0 + kk;
                xs[kk][r] = (row0 + r < m && gk < k) ? x[(idx_t)(row0 + r) * k + gk] : 0.0f;
                ws[kk][r] = (col0 + r < n && gk < k) ? to_f32(w[(idx_t)(col0 + r) * k + gk]) : 0.0f;
            }
        }
        __syncthreads();
        for (int kk = 0; kk < MM_BK; kk++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = xs[kk][tr * 4 + i];
            for (int j = 0; j < 4; j++) b[j] = ws[kk][tc * 4 + j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        // The next iteration overwrites the tiles other threads may still be reading.
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        const int r = row0 + tr * 4 + i;
        if (r >= m) break;
        for (int j = 0; j < 4; j++) {
            const int c = col0 + tc * 4 + j;
            if (c < n) out[(idx_t)r * n + c] = acc[i][j] + (bias ? bias[c] : 0.0f);
        }
    }
}

template <typename T, bool VEC>
__device__ void matmul_nt_gemv(float* out, const float* x, const T* w, const float* bias, int m,
                               int n, int k) {
    const int lane = threadIdx.x & 31;
    // Whole warps skip together, so the shuffles below always see all 32 lanes.
    const int c = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (c >= n) return;
    const T* wr = w + (idx_t)c * k;
    float acc[GEMV_MAX_M];
    for (int r = 0; r < GEMV_MAX_M; r++) acc[r] = 0.0f;
    if (VEC) {
        for (int j = lane * 4; j < k; j += 32 * 4) {
            float b[4];
            load4(wr + j, b);
            for (int r = 0; r < GEMV_MAX_M; r++) {
                if (r >= m) break;
                float a[4];
                load4(x + (idx_t)r * k + j, a);
                acc[r] += a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
            }
        }
    } else {
        for (int j = lane; j < k; j += 32) {
            const float b = to_f32(wr[j]);
            for (int r = 0; r < GEMV_MAX_M; r++) {
                if (r >= m) break;
                acc[r] += x[(idx_t)r * k + j] * b;
            }
        }
    }
    for (int r = 0; r < GEMV_MAX_M; r++) {
        if (r >= m) break;  // m is uniform across the warp
        const float s = warp_sum(acc[r]);
        if (lane == 0) out[(idx_t)r * n + c] = s + (bias ? bias[c] : 0.0f);
    }
}

#define MATMUL(T, S)                                                                             \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                     \
        matmul_nt_tiled_##S(float* out, const float* x, const T* w, const float* bias, int m,    \
                            int n, int k) {                                                      \
        matmul_nt_tiled<T, false>(out, x, w, bias, m, n, k);                                     \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_tiled_##S)                                                          \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                     \
        matmul_nt_tiled_vec_##S(float* out, const float* x, const T* w, const float* bias,       \
                                int m, int n, int k) {                                           \
        matmul_nt_tiled<T, true>(out, x, w, bias, m, n, k);                                      \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_tiled_vec_##S)                                                      \
    extern "C" __global__ void matmul_nt_gemv_##S(float* out, const float* x, const T* w,        \
                                                  const float* bias, int m, int n, int k) {      \
        matmul_nt_gemv<T, false>(out, x, w, bias, m, n, k);                                      \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_gemv_##S)                                                           \
    extern "C" __global__ void matmul_nt_gemv_vec_##S(float* out, const float* x, const T* w,    \
                                                      const float* bias, int m, int n, int k) {  \
        matmul_nt_gemv<T, true>(out, x, w, bias, m, n, k);                                       \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_gemv_vec_##S)
MATMUL(float, f32)
MATMUL(bf16, bf16)
