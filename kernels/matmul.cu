// Matmul of the transformer: out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]), w in HF layout
// (rows = output features). x, bias and out are f32 (activations); w is read through a
// weights.cuh policy W: dense f32 or bf16 resident on the device, or GGUF Q8_0 / Q4_0 / Q4_1
// blocks (`--weights native`; their k is a multiple of 32); math and accumulation in f32.
//
// Two portable kernels, both run by the emulator:
// - matmul_nt_tiled: a block of 256 threads computes a 64×64 tile of out, each thread a 4×4
//   sub-tile, walking k in steps of 16 through shared-memory tiles of x and w (prefill);
// - matmul_nt_gemv: one warp per output feature, m ≤ GEMV_MAX_M rows of x at once (decode,
//   where the weights are read once per token and nothing is reused across rows).
// - matmul_nt_mma_bf16: bf16 weights on the tensor cores (mma.sync m16n8k16, f32 accumulate;
//   x rounded to bf16 as it enters shared memory), a 64×64 tile per block of 4 warps, each
//   warp 32×32 = 2×4 mma tiles. The emulator runs the same kernel with `mma_bf16_16816`
//   replaced by a warp-shuffle model of the instruction's fragment layout (PTX ISA,
//   "Matrix Fragments for mma.m16n8k16"), so the indexing is checked on the CPU; the real
//   instruction is checked by gpu-check, and the backend self-tests it before trusting it.
// VEC variants read 4 consecutive k at once (16-byte x loads, 16/8-byte w loads); the host
// picks them only when k % 4 == 0, so every row start stays 16-byte aligned for f32 (8 for
// bf16) given an aligned base pointer (device allocations are 256-byte aligned).
#include "weights.cuh"

#define MM_BM 64
#define MM_BN 64
#define MM_BK 16
#define MM_THREADS 256
#define GEMV_WARPS 8
#define GEMV_MAX_M 8

template <class W, bool VEC>
__device__ void matmul_nt_tiled(float* out, const float* x, const typename W::elem* w,
                                const float* bias, int m, int n, int k) {
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
            if (col0 + r < n && gk < k) W::at4(W::row(w, col0 + r, k), gk, b);
            for (int i = 0; i < 4; i++) {
                xs[kk + i][r] = a[i];
                ws[kk + i][r] = b[i];
            }
        } else {
            for (int i = tid; i < MM_BM * MM_BK; i += MM_THREADS) {
                const int r = i / MM_BK, kk = i % MM_BK, gk = k0 + kk;
                xs[kk][r] = (row0 + r < m && gk < k) ? x[(idx_t)(row0 + r) * k + gk] : 0.0f;
                ws[kk][r] = (col0 + r < n && gk < k) ? W::at(W::row(w, col0 + r, k), gk) : 0.0f;
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

template <class W, bool VEC>
__device__ void matmul_nt_gemv(float* out, const float* x, const typename W::elem* w,
                               const float* bias, int m, int n, int k) {
    const int lane = threadIdx.x & 31;
    // Whole warps skip together, so the shuffles below always see all 32 lanes.
    const int c = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (c >= n) return;
    const typename W::elem* wr = W::row(w, c, k);
    float acc[GEMV_MAX_M];
    for (int r = 0; r < GEMV_MAX_M; r++) acc[r] = 0.0f;
    if (VEC) {
        for (int j = lane * 4; j < k; j += 32 * 4) {
            float b[4];
            W::at4(wr, j, b);
            for (int r = 0; r < GEMV_MAX_M; r++) {
                if (r >= m) break;
                float a[4];
                load4(x + (idx_t)r * k + j, a);
                acc[r] += a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
            }
        }
    } else {
        for (int j = lane; j < k; j += 32) {
            const float b = W::at(wr, j);
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

#define MATMUL(W, S)                                                                             \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                     \
        matmul_nt_tiled_##S(float* out, const float* x, const W::elem* w, const float* bias,     \
                            int m, int n, int k) {                                               \
        matmul_nt_tiled<W, false>(out, x, w, bias, m, n, k);                                     \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_tiled_##S)                                                          \
    extern "C" __global__ void __launch_bounds__(MM_THREADS)                                     \
        matmul_nt_tiled_vec_##S(float* out, const float* x, const W::elem* w,                    \
                                const float* bias, int m, int n, int k) {                        \
        matmul_nt_tiled<W, true>(out, x, w, bias, m, n, k);                                      \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_tiled_vec_##S)                                                      \
    extern "C" __global__ void matmul_nt_gemv_##S(float* out, const float* x, const W::elem* w,  \
                                                  const float* bias, int m, int n, int k) {      \
        matmul_nt_gemv<W, false>(out, x, w, bias, m, n, k);                                      \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_gemv_##S)                                                           \
    extern "C" __global__ void matmul_nt_gemv_vec_##S(float* out, const float* x,                \
                                                      const W::elem* w, const float* bias,       \
                                                      int m, int n, int k) {                     \
        matmul_nt_gemv<W, true>(out, x, w, bias, m, n, k);                                       \
    }                                                                                            \
    CMT_EMU_EXPORT(matmul_nt_gemv_vec_##S)
MATMUL(Dense<float>, f32)
MATMUL(Dense<bf16>, bf16)
MATMUL(BlockQ8_0, q8_0)
MATMUL(BlockQ4_0, q4_0)
MATMUL(BlockQ4_1, q4_1)

// ---- tensor cores -------------------------------------------------------------------------
#define MMA_BK 32
#define MMA_THREADS 128
// Row stride of the shared tiles in bf16: 40 keeps each row 4-byte aligned for the paired
// loads below and staggers rows by 20 banks, so the 8 rows of a fragment load hit distinct
// banks.
#define MMA_LD (MMA_BK + 8)

// Two consecutive bf16 (p 4-byte aligned) as the .b32 register an mma fragment holds.
__device__ __forceinline__ unsigned ld_pair(const bf16* p) {
#ifdef __CUDA_ARCH__
    return *reinterpret_cast<const unsigned*>(p);
#else
    unsigned v;
    std::memcpy(&v, p, 4);
    return v;
#endif
}

#ifndef __CUDA_ARCH__
// The emulator's model of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: lane = 4g + t
// holds A[g][2t..2t+1] (a0), A[g+8][2t..] (a1), A[g][2t+8..] (a2), A[g+8][2t+8..] (a3);
// B[2t..2t+1][g] (b0), B[2t+8..][g] (b1); and C/D[g][2t..2t+1] (c0, c1), C/D[g+8][2t..] (c2,
// c3). Every lane gathers the whole A and B through shuffles and computes its four outputs.
__device__ inline float bf16_lo(unsigned v) { return __int_as_float((int)(v << 16)); }
__device__ inline float bf16_hi(unsigned v) { return __int_as_float((int)(v & 0xffff0000u)); }
__device__ void mma_bf16_16816(float c[4], const unsigned a[4], const unsigned b[2]) {
    float A[16][16], B[16][8];
    for (int src = 0; src < 32; src++) {
        const int g = src >> 2, t = src & 3;
        unsigned ra[4], rb[2];
        for (int i = 0; i < 4; i++) ra[i] = __shfl_sync(0xffffffffu, a[i], src);
        for (int i = 0; i < 2; i++) rb[i] = __shfl_sync(0xffffffffu, b[i], src);
        for (int i = 0; i < 4; i++) {
            const int r = g + 8 * (i & 1), k = 2 * t + 8 * (i >> 1);
            A[r][k] = bf16_lo(ra[i]);
            A[r][k + 1] = bf16_hi(ra[i]);
        }
        for (int i = 0; i < 2; i++) {
            B[2 * t + 8 * i][g] = bf16_lo(rb[i]);
            B[2 * t + 8 * i + 1][g] = bf16_hi(rb[i]);
        }
    }
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; i++) {
        const int r = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; k++) acc += A[r][k] * B[k][col];
        c[i] = acc;
    }
}
#else
__device__ __forceinline__ void mma_bf16_16816(float c[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

extern "C" __global__ void __launch_bounds__(MMA_THREADS)
    matmul_nt_mma_bf16(float* out, const float* x, const bf16* w, const float* bias, int m, int n,
                       int k) {
    __shared__ bf16 xs[MM_BM][MMA_LD];
    __shared__ bf16 ws[MM_BN][MMA_LD];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.y * MM_BM, col0 = blockIdx.x * MM_BN;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;  // this warp's 32×32 of the tile
    float acc[2][4][4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += MMA_BK) {
        // 64 rows × 32 k of each operand, 16 per thread; zeros past the edges, so the mma
        // of a ragged tile adds nothing for them.
        for (int i = tid; i < MM_BM * MMA_BK; i += MMA_THREADS) {
            const int r = i / MMA_BK, kk = i % MMA_BK, gk = k0 + kk;
            const float xv = (row0 + r < m && gk < k) ? x[(idx_t)(row0 + r) * k + gk] : 0.0f;
            xs[r][kk] = __float2bfloat16(xv);
            ws[r][kk] = (col0 + r < n && gk < k) ? w[(idx_t)(col0 + r) * k + gk]
                                                 : __float2bfloat16(0.0f);
        }
        __syncthreads();
        for (int kk = 0; kk < MMA_BK; kk += 16) {
            unsigned a[2][4], b[4][2];
            for (int mi = 0; mi < 2; mi++) {
                const int r = wm + mi * 16 + g;
                a[mi][0] = ld_pair(&xs[r][kk + 2 * t]);
                a[mi][1] = ld_pair(&xs[r + 8][kk + 2 * t]);
                a[mi][2] = ld_pair(&xs[r][kk + 2 * t + 8]);
                a[mi][3] = ld_pair(&xs[r + 8][kk + 2 * t + 8]);
            }
            for (int ni = 0; ni < 4; ni++) {
                const int c = wn + ni * 8 + g;
                b[ni][0] = ld_pair(&ws[c][kk + 2 * t]);
                b[ni][1] = ld_pair(&ws[c][kk + 2 * t + 8]);
            }
            for (int mi = 0; mi < 2; mi++)
                for (int ni = 0; ni < 4; ni++) mma_bf16_16816(acc[mi][ni], a[mi], b[ni]);
        }
        // The next stage overwrites tiles other warps may still be reading.
        __syncthreads();
    }
    for (int mi = 0; mi < 2; mi++)
        for (int ni = 0; ni < 4; ni++)
            for (int e = 0; e < 4; e++) {
                const int r = row0 + wm + mi * 16 + g + 8 * (e >> 1);
                const int c = col0 + wn + ni * 8 + 2 * t + (e & 1);
                if (r < m && c < n) out[(idx_t)r * n + c] = acc[mi][ni][e] + (bias ? bias[c] : 0.0f);
            }
}
CMT_EMU_EXPORT(matmul_nt_mma_bf16)
