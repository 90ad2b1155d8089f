// The H pass of the compressor's fused cross-attention (crates/cmt-compress/src/attention/
// fused.rs, "The H-pass kernel"): the K/V projections and the RMSNorm gain are folded into
// the queries qhat and the output u outside, so this pass works in H's width d.
//
// Per document b with rows j < len_b, per query row i < tq:
//   rinv_j = 1/sqrt(mean_c H_jc² + eps),  y_j = rinv_j·H_j,  s_ij = qhat_i·y_j
//   lse_i  = log Σ_j exp(s_ij),           u_i = Σ_j exp(s_ij − lse_i)·y_j
// Backward (FlashAttention-2: s recomputed from lse, nothing of size tq × n stored):
//   p_ij = exp(s_ij − lse_i), δ_i = du_i·u_i, ds_ij = p_ij·(du_i·y_j − δ_i)
//   dqhat_i = Σ_j ds_ij·y_j                       (overwritten)
//   dy_j = Σ_i (p_ij·du_i + ds_ij·qhat_i),  dH_j += rinv_j·(dy_j − (dy_j·y_j/d)·y_j)
//
// Layouts: qhat, u, du, dqhat f32 [docs, tq, d]; lse f32 [docs, tq]; H (f32 or bf16) and dH
// (f32) [docs, n_max, d]; lens i32 [docs], clamped to [0, n_max]. Rows j ≥ len are never read
// (padding is masked by the loop bound) and their dH is left untouched. A document with
// len = 0 gets u = 0, lse = −inf, dqhat = 0.
//
// Decomposition (portable, no tensor cores, no atomics). blockDim.x = CA_THREADS, one warp per
// query (forward, backward-dq) or per row (backward-dH); a lane owns columns lane + 32k, so
// every dot product is lane partials + one butterfly, and every row update is lane-local.
// - forward: one block per (document, group of CA_WARPS queries). H is read once per block in
//   tiles of `ca_tile_rows(d)` rows, staged in shared memory already normalised (rinv once per
//   row per tile), then each warp runs an online softmax over the tile CA_NR rows at a time
//   (CA_NR independent reductions in flight, one rescale of the accumulator per step).
// - backward: one launch, two kinds of blocks. The first docs·groups blocks recompute each
//   group's scores over the same H tiles and accumulate dqhat in registers; the remaining
//   docs·ceil(n_max/CA_WARPS) blocks (only when dH is non-null) own CA_WARPS rows each, stage
//   the doc's queries (qhat_i, du_i, δ_i, lse_i) chunk by chunk in shared memory, accumulate
//   dy_j over all tq queries in registers, then apply the RMSNorm backward to the row. Each
//   output element has exactly one writer: no atomics, deterministic.
//
// Expected ceiling (reasoned, not yet measured on a GPU): the score and accumulate loops read
// one f32 of y from shared memory per FMA (qhat, du and the accumulators are in registers), so
// they are bound by shared-memory bandwidth (128 B/clk/SM) at about a quarter of the FP32 FMA
// rate. ptxas: forward 128 registers (capped by __launch_bounds__ for 2 blocks/SM, no spills),
// backward 175 (sm_80) / 192 (sm_90), 1 block/SM (a cap at 128 spills ~1 KiB/thread). The
// upgrade is a tensor-core variant (S = qhat·Yᵀ and u += P·Y as mma tiles) beside this one.
#include "common.cuh"

#if defined(__CUDACC__)
#define CA_UNROLL _Pragma("unroll")
#else
#define CA_UNROLL
#endif

#define CA_THREADS 256
#define CA_WARPS (CA_THREADS / 32)
// Columns per lane: d ≤ 32·CA_KMAX = 1024 (checked by the launch builder).
#define CA_KMAX 32
// Shared tile buffer (floats): 32 KiB, under the 48 KiB of static shared memory.
#define CA_SMEM_FLOATS 8192
// Forward / dq: at most this many rows per tile, and rows are consumed CA_NR at a time.
#define CA_RMAX 64
#define CA_NR 4
// dH: at most this many staged queries per chunk (2·d floats each), consumed 2 at a time.
#define CA_QCMAX 32

#define POS_INF __int_as_float(0x7f800000)

// Rows per tile: as many as fit, a multiple of CA_NR (≥ 8 for d ≤ 1024).
__device__ __forceinline__ int ca_tile_rows(int d) {
    const int r = CA_SMEM_FLOATS / d;
    return (r < CA_RMAX ? r : CA_RMAX) / CA_NR * CA_NR;
}
// Queries per dH chunk: as many (qhat, du) pairs as fit, even (≥ 4 for d ≤ 1024).
__device__ __forceinline__ int ca_query_chunk(int d) {
    const int r = CA_SMEM_FLOATS / (2 * d);
    return (r < CA_QCMAX ? r : CA_QCMAX) / 2 * 2;
}

// N independent butterflies interleaved (ILP instead of N serial shuffle chains). Whole warp.
template <int N>
__device__ __forceinline__ void warp_sum_n(float (&v)[N]) {
    for (int o = 16; o > 0; o >>= 1) {
        CA_UNROLL
        for (int r = 0; r < N; r++) v[r] += __shfl_xor_sync(0xffffffffu, v[r], o);
    }
}

__device__ __forceinline__ int ca_min(int a, int b) { return a < b ? a : b; }

__device__ __forceinline__ int ca_len(const int* lens, int b, int n_max) {
    const int len = lens[b];
    return len < 0 ? 0 : (len > n_max ? n_max : len);
}

// Stages rows [j0, j0 + cnt) of one document's H as y = rinv·H (f32, row stride d) into ys,
// plus zero rows up to cnt rounded up to CA_NR (the CA_NR-row steps read them; their scores
// are masked). One warp per row; every thread of the block must call it (no barrier inside:
// the caller's barriers order it against the readers).
template <typename T>
__device__ void ca_stage_rows(float* ys, const T* hb, int j0, int cnt, int d, float eps) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int padded = (cnt + CA_NR - 1) / CA_NR * CA_NR;
    for (int r = warp; r < padded; r += CA_WARPS) {  // warp-uniform bounds
        float* yr = ys + r * d;                       // ≤ CA_SMEM_FLOATS: fits int
        if (r >= cnt) {
            for (int c = lane; c < d; c += 32) yr[c] = 0.0f;
            continue;
        }
        // idx_t: (j0 + r)·d alone fits int, but hb's offset from H does not (docs·n_max·d).
        const T* hr = hb + (idx_t)(j0 + r) * d;
        float ss = 0.0f;
        for (int c = lane; c < d; c += 32) {
            const float v = to_f32(hr[c]);
            yr[c] = v;
            ss += v * v;
        }
        const float rinv = rsqrtf(warp_sum(ss) / d + eps);
        // Each lane rescales only the columns it wrote itself: no barrier needed here.
        for (int c = lane; c < d; c += 32) yr[c] *= rinv;
    }
}

template <typename T>
__device__ void ca_forward(float* u, float* lse, const float* qhat, const T* h, const int* lens,
                           int docs, int tq, int n_max, int d, float eps) {
    __shared__ float ys[CA_SMEM_FLOATS];
    const int groups = (tq + CA_WARPS - 1) / CA_WARPS;
    const int b = blockIdx.x / groups, g = blockIdx.x % groups;
    if (b >= docs) return;  // whole block
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int i = g * CA_WARPS + warp;
    // A warp past tq still stages rows and meets every barrier; it only skips the math.
    const bool active = i < tq;
    const int len = ca_len(lens, b, n_max), rows = ca_tile_rows(d);
    // idx_t: docs·tq·d and docs·n_max·d can pass 2^31 (e.g. 4096 docs × 2048 rows × 576).
    const idx_t qo = ((idx_t)b * tq + (active ? i : 0)) * d;
    const T* hb = h + (idx_t)b * n_max * d;

    float q[CA_KMAX], acc[CA_KMAX];
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) {
        const int c = lane + 32 * k;
        q[k] = (active && c < d) ? qhat[qo + c] : 0.0f;
        acc[k] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int j0 = 0; j0 < len; j0 += rows) {  // block-uniform
        const int cnt = ca_min(rows, len - j0);
        // Race fixed: no warp may overwrite ys while another still reads the previous tile.
        __syncthreads();
        ca_stage_rows(ys, hb, j0, cnt, d, eps);
        // Race fixed: every row of the tile (staged by other warps) is complete before reads.
        __syncthreads();
        if (!active) continue;  // warp-uniform; no barrier below before the loop's next one
        for (int r0 = 0; r0 < cnt; r0 += CA_NR) {
            const float* y0 = ys + r0 * d;
            float s[CA_NR];
            CA_UNROLL
            for (int r = 0; r < CA_NR; r++) s[r] = 0.0f;
            CA_UNROLL
            for (int k = 0; k < CA_KMAX; k++) {
                const int c = lane + 32 * k;
                if (c < d) {
                    CA_UNROLL
                    for (int r = 0; r < CA_NR; r++) s[r] += q[k] * y0[r * d + c];
                }
            }
            warp_sum_n(s);
            // Padding rows of the last step (r0 + r ≥ cnt, zero in ys) are masked here.
            float mx = m;
            CA_UNROLL
            for (int r = 0; r < CA_NR; r++)
                if (r0 + r < cnt) mx = fmaxf(mx, s[r]);
            const float scale = expf(m - mx);  // m = −inf on the first step: 0 (acc is 0)
            float p[CA_NR], ps = 0.0f;
            CA_UNROLL
            for (int r = 0; r < CA_NR; r++) {
                p[r] = r0 + r < cnt ? expf(s[r] - mx) : 0.0f;
                ps += p[r];
            }
            l = l * scale + ps;
            m = mx;
            CA_UNROLL
            for (int k = 0; k < CA_KMAX; k++) {
                const int c = lane + 32 * k;
                if (c < d) {
                    float a = acc[k] * scale;
                    CA_UNROLL
                    for (int r = 0; r < CA_NR; r++) a += p[r] * y0[r * d + c];
                    acc[k] = a;
                }
            }
        }
    }
    if (!active) return;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) {
        const int c = lane + 32 * k;
        if (c < d) u[qo + c] = acc[k] * inv;
    }
    if (lane == 0) lse[(idx_t)b * tq + i] = l > 0.0f ? m + logf(l) : NEG_INF;
}

// Backward, dqhat for one (document, query group) block: the forward's tile loop again, with
// p recomputed from lse and dqhat accumulated in registers.
template <typename T>
__device__ void ca_backward_dq(float* ys, float* dq, const float* qhat, const T* h, const int* lens,
                               const float* u, const float* lse, const float* du, int b, int g,
                               int tq, int n_max, int d, float eps) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int i = g * CA_WARPS + warp;
    const bool active = i < tq;
    const int len = ca_len(lens, b, n_max), rows = ca_tile_rows(d);
    const idx_t qo = ((idx_t)b * tq + (active ? i : 0)) * d;  // idx_t: see ca_forward
    const T* hb = h + (idx_t)b * n_max * d;

    float q[CA_KMAX], g_[CA_KMAX], acc[CA_KMAX];
    float dd = 0.0f;
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) {
        const int c = lane + 32 * k;
        const bool in = active && c < d;
        q[k] = in ? qhat[qo + c] : 0.0f;
        g_[k] = in ? du[qo + c] : 0.0f;
        dd += in ? g_[k] * u[qo + c] : 0.0f;
        acc[k] = 0.0f;
    }
    const float delta = warp_sum(dd);  // whole warp (inactive warps sum zeros)
    const float L = active && len > 0 ? lse[(idx_t)b * tq + i] : 0.0f;
    for (int j0 = 0; j0 < len; j0 += rows) {
        const int cnt = ca_min(rows, len - j0);
        __syncthreads();  // race fixed: the previous tile is consumed before it is overwritten
        ca_stage_rows(ys, hb, j0, cnt, d, eps);
        __syncthreads();  // race fixed: rows staged by other warps are complete
        if (!active) continue;
        for (int r0 = 0; r0 < cnt; r0 += CA_NR) {
            const float* y0 = ys + r0 * d;
            float v[2 * CA_NR];  // s in [0, CA_NR), du·y in [CA_NR, 2·CA_NR)
            CA_UNROLL
            for (int r = 0; r < 2 * CA_NR; r++) v[r] = 0.0f;
            CA_UNROLL
            for (int k = 0; k < CA_KMAX; k++) {
                const int c = lane + 32 * k;
                if (c < d) {
                    CA_UNROLL
                    for (int r = 0; r < CA_NR; r++) {
                        const float yv = y0[r * d + c];
                        v[r] += q[k] * yv;
                        v[CA_NR + r] += g_[k] * yv;
                    }
                }
            }
            warp_sum_n(v);
            float ds[CA_NR];
            CA_UNROLL
            for (int r = 0; r < CA_NR; r++)
                ds[r] = r0 + r < cnt ? expf(v[r] - L) * (v[CA_NR + r] - delta) : 0.0f;
            CA_UNROLL
            for (int k = 0; k < CA_KMAX; k++) {
                const int c = lane + 32 * k;
                if (c < d) {
                    float a = acc[k];
                    CA_UNROLL
                    for (int r = 0; r < CA_NR; r++) a += ds[r] * y0[r * d + c];
                    acc[k] = a;
                }
            }
        }
    }
    if (!active) return;
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) {
        const int c = lane + 32 * k;
        if (c < d) dq[qo + c] = acc[k];
    }
}

// Backward, dH for CA_WARPS rows of one document: warp w owns row j = tile·CA_WARPS + w, holds
// y_j and dy_j in registers, and walks every query of the document from the staged chunks.
template <typename T>
__device__ void ca_backward_dh(float* st, float* stat, float* dh, const float* qhat, const T* h,
                               const int* lens, const float* u, const float* lse, const float* du,
                               int b, int tile, int tq, int n_max, int d, float eps) {
    const int len = ca_len(lens, b, n_max);
    if (tile * CA_WARPS >= len) return;  // whole block: all its rows are padding
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j = tile * CA_WARPS + warp;
    const bool active = j < len;  // a padding row's warp still stages queries and meets barriers
    // idx_t: (b·n_max + j)·d passes 2^31 for large batches.
    const idx_t ro = ((idx_t)b * n_max + (active ? j : 0)) * d;

    float y[CA_KMAX], dy[CA_KMAX];
    float ss = 0.0f;
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) {
        const int c = lane + 32 * k;
        y[k] = (active && c < d) ? to_f32(h[ro + c]) : 0.0f;
        ss += y[k] * y[k];
        dy[k] = 0.0f;
    }
    const float rinv = rsqrtf(warp_sum(ss) / d + eps);
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) y[k] *= rinv;

    const int qc = ca_query_chunk(d);
    for (int i0 = 0; i0 < tq; i0 += qc) {  // block-uniform
        const int cnt = ca_min(qc, tq - i0), padded = (cnt + 1) / 2 * 2;
        // Race fixed: no warp overwrites the chunk while another still reads the previous one.
        __syncthreads();
        // Stage qhat_i and du_i (2·d floats per slot), δ_i and lse_i; one warp per query. An odd
        // count gets one zero slot with lse = +inf, so its p and ds are exactly 0.
        for (int r = warp; r < padded; r += CA_WARPS) {  // warp-uniform bounds
            float* sq = st + r * 2 * d;                   // ≤ CA_SMEM_FLOATS: fits int
            if (r >= cnt) {
                for (int c = lane; c < 2 * d; c += 32) sq[c] = 0.0f;
                if (lane == 0) {
                    stat[r] = 0.0f;
                    stat[CA_QCMAX + r] = POS_INF;
                }
                continue;
            }
            const idx_t qo = ((idx_t)b * tq + i0 + r) * d;
            float dd = 0.0f;
            for (int c = lane; c < d; c += 32) {
                const float gv = du[qo + c];
                sq[c] = qhat[qo + c];
                sq[d + c] = gv;
                dd += gv * u[qo + c];
            }
            dd = warp_sum(dd);
            if (lane == 0) {
                stat[r] = dd;
                stat[CA_QCMAX + r] = lse[(idx_t)b * tq + i0 + r];
            }
        }
        // Race fixed: every slot and stat written by other warps is visible before reads.
        __syncthreads();
        if (!active) continue;
        for (int r0 = 0; r0 < padded; r0 += 2) {
            const float* s0 = st + r0 * 2 * d;
            const float* s1 = s0 + 2 * d;
            float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // s_0, du_0·y, s_1, du_1·y
            CA_UNROLL
            for (int k = 0; k < CA_KMAX; k++) {
                const int c = lane + 32 * k;
                if (c < d) {
                    v[0] += s0[c] * y[k];
                    v[1] += s0[d + c] * y[k];
                    v[2] += s1[c] * y[k];
                    v[3] += s1[d + c] * y[k];
                }
            }
            warp_sum_n(v);
            const float p0 = expf(v[0] - stat[CA_QCMAX + r0]);
            const float p1 = expf(v[2] - stat[CA_QCMAX + r0 + 1]);
            const float ds0 = p0 * (v[1] - stat[r0]), ds1 = p1 * (v[3] - stat[r0 + 1]);
            CA_UNROLL
            for (int k = 0; k < CA_KMAX; k++) {
                const int c = lane + 32 * k;
                if (c < d)
                    dy[k] += p0 * s0[d + c] + ds0 * s0[c] + p1 * s1[d + c] + ds1 * s1[c];
            }
        }
    }
    if (!active) return;
    float dot = 0.0f;
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) dot += dy[k] * y[k];
    const float proj = warp_sum(dot) / d;
    CA_UNROLL
    for (int k = 0; k < CA_KMAX; k++) {
        const int c = lane + 32 * k;
        // The only writer of this row: a plain read-modify-write, no atomic.
        if (c < d) dh[ro + c] += rinv * (dy[k] - proj * y[k]);
    }
}

// Grid: docs·groups dq blocks, then (when dh is non-null) docs·ceil(n_max/CA_WARPS) dH blocks.
template <typename T>
__device__ void ca_backward(float* dq, float* dh, const float* qhat, const T* h, const int* lens,
                            const float* u, const float* lse, const float* du, int docs, int tq,
                            int n_max, int d, float eps) {
    // One buffer for both block kinds (separate arrays would each count against the limit).
    __shared__ float smem[CA_SMEM_FLOATS];
    __shared__ float stat[2 * CA_QCMAX];
    const unsigned groups = (tq + CA_WARPS - 1) / CA_WARPS;
    const unsigned nq = (unsigned)docs * groups;  // fits: the launch builder checks the grid
    if (blockIdx.x < nq) {
        ca_backward_dq<T>(smem, dq, qhat, h, lens, u, lse, du, blockIdx.x / groups,
                          blockIdx.x % groups, tq, n_max, d, eps);
    } else if (dh != nullptr) {
        const unsigned tiles = (n_max + CA_WARPS - 1) / CA_WARPS, t = blockIdx.x - nq;
        if (t / tiles < (unsigned)docs)
            ca_backward_dh<T>(smem, stat, dh, qhat, h, lens, u, lse, du, t / tiles, t % tiles, tq,
                              n_max, d, eps);
    }
}

#define COMPRESS_ATTENTION(T, S)                                                                  \
    extern "C" __global__ void __launch_bounds__(CA_THREADS, 2) compress_attention_forward_##S(   \
        float* u, float* lse, const float* qhat, const T* h, const int* lens, int docs, int tq,   \
        int n_max, int d, float eps) {                                                            \
        ca_forward<T>(u, lse, qhat, h, lens, docs, tq, n_max, d, eps);                            \
    }                                                                                             \
    CMT_EMU_EXPORT(compress_attention_forward_##S)                                                \
    extern "C" __global__ void __launch_bounds__(CA_THREADS) compress_attention_backward_##S(     \
        float* dq, float* dh, const float* qhat, const T* h, const int* lens, const float* u,     \
        const float* lse, const float* du, int docs, int tq, int n_max, int d, float eps) {       \
        ca_backward<T>(dq, dh, qhat, h, lens, u, lse, du, docs, tq, n_max, d, eps);               \
    }                                                                                             \
    CMT_EMU_EXPORT(compress_attention_backward_##S)
COMPRESS_ATTENTION(float, f32)
COMPRESS_ATTENTION(bf16, bf16)
