// Causal grouped-query attention against the key/value cache, the prefix included (a prefix
// is just the first cache positions of a sequence, so it needs no special case).
//
// Layouts: q and out f32 [rows, heads, hd]; the caches, of storage type T, are
// [slots, kv_heads, capacity, hd]; row r of the batch reads slot row_slot[r] and attends to
// cache positions 0..=row_last[r]. Query head h reads key/value head h / (heads / kv_heads).
//
// attention_forward: grid (rows·heads, splits), 128 threads. Block (r·heads + h, s) takes
// the s-th of `splits` equal chunks of the row's positions; each of its 4 warps walks every
// 4th position of the chunk with an online softmax (running max m, sum l, weighted sum acc,
// lane j holding dims j, j+32, …), so no score vector is ever stored. The warps then merge in
// shared memory. With splits == 1 the block writes out directly (prefill: many rows); with
// splits > 1 (decode: few rows, long caches) it writes (m, l, acc) to `part` and
// attention_combine merges the chunks with their log-sum-exp weights (flash-decoding).
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_MAX_HD 256
#define ATT_PER_LANE (ATT_MAX_HD / 32)

// One block's online softmax for one (row, head) over the positions p0 + warp,
// p0 + warp + ATT_WARPS, … < p1: each warp keeps a running max m, sum l and weighted value
// sum (into s_acc[warp], the caller's shared memory), then the warps' states are merged:
// the block's value sum for dim d is Σ_w wt[w]·s_acc[w][d], its max mm and sum ll. q·k is
// multiplied by s_scale (1 when qr is already scaled). Every thread returns the same result.
struct AttnMerge {
    float mm, ll, wt[ATT_WARPS];
};

template <typename T>
__device__ AttnMerge attention_online(const float qr[ATT_PER_LANE], float s_scale,
                                      const T* cache_k, const T* cache_v, idx_t base, int hd,
                                      int p0, int p1, float (*s_acc)[ATT_MAX_HD]) {
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float acc[ATT_PER_LANE];
    for (int j = 0; j < ATT_PER_LANE; j++) acc[j] = 0.0f;
    float m = NEG_INF, l = 0.0f;
    // Every lane of a warp runs the same positions: the shuffles in warp_sum stay converged.
    for (int p = p0 + warp; p < p1; p += ATT_WARPS) {
        const T* kp = cache_k + (base + p) * hd;
        const T* vp = cache_v + (base + p) * hd;
        float s = 0.0f;
        for (int j = 0; j < ATT_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < hd) s += qr[j] * to_f32(kp[d]);
        }
        s = warp_sum(s) * s_scale;
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new);  // 0 on the first position (m = -inf)
        const float e = __expf(s - m_new);
        l = l * corr + e;
        for (int j = 0; j < ATT_PER_LANE; j++) {
            const int d = lane + 32 * j;
            acc[j] = acc[j] * corr + (d < hd ? e * to_f32(vp[d]) : 0.0f);
        }
        m = m_new;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
    for (int j = 0; j < ATT_PER_LANE; j++) {
        const int d = lane + 32 * j;
        if (d < hd) s_acc[warp][d] = acc[j];
    }
    __syncthreads();
    AttnMerge r;
    r.mm = NEG_INF;
    for (int w = 0; w < ATT_WARPS; w++) r.mm = fmaxf(r.mm, s_m[w]);
    // A warp (or, with splits, a whole block) may have had no position: weight 0, and a
    // block with none at all must not compute exp(-inf - -inf).
    r.ll = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++) {
        r.wt[w] = s_m[w] == NEG_INF ? 0.0f : __expf(s_m[w] - r.mm);
        r.ll += r.wt[w] * s_l[w];
    }
    return r;
}

template <typename T>
__device__ void attention_forward(float* out, float* part, const float* q, const T* cache_k,
                                  const T* cache_v, const int* row_slot, const int* row_last,
                                  int heads, int kv_heads, int hd, int capacity, int splits,
                                  float scale) {
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_HD];
    const int lane = threadIdx.x & 31;
    const int rh = blockIdx.x, split = blockIdx.y;
    const int r = rh / heads, h = rh % heads;
    const int kvh = h / (heads / kv_heads);
    const int n_pos = row_last[r] + 1;
    const int chunk = (n_pos + splits - 1) / splits;
    const int p0 = split * chunk, p1 = p0 + chunk < n_pos ? p0 + chunk : n_pos;

    float qr[ATT_PER_LANE];
    const float* qh = q + ((idx_t)r * heads + h) * hd;
    for (int j = 0; j < ATT_PER_LANE; j++) {
        const int d = lane + 32 * j;
        qr[j] = d < hd ? qh[d] * scale : 0.0f;
    }
    const idx_t base = ((idx_t)row_slot[r] * kv_heads + kvh) * capacity;
    const AttnMerge mg = attention_online(qr, 1.0f, cache_k, cache_v, base, hd, p0, p1, s_acc);
    const float mm = mg.mm, ll = mg.ll;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) a += mg.wt[w] * s_acc[w][d];
        if (splits == 1) {
            out[((idx_t)r * heads + h) * hd + d] = a / ll;
        } else {
            part[((idx_t)rh * splits + split) * (hd + 2) + 2 + d] = a;
        }
    }
    if (splits > 1 && threadIdx.x == 0) {
        float* pm = part + ((idx_t)rh * splits + split) * (hd + 2);
        pm[0] = mm;
        pm[1] = ll;
    }
}

// out[r, h, :] from the `splits` partials of (r, h): Σ e^(m_s − M) acc_s / Σ e^(m_s − M) l_s.
// Grid rows·heads, any block size; split 0 always holds position 0, so M is finite.
__device__ void attention_combine(float* out, const float* part, int hd, int splits) {
    const int rh = blockIdx.x;
    const float* pr = part + (idx_t)rh * splits * (hd + 2);
    float mm = NEG_INF;
    for (int s = 0; s < splits; s++) mm = fmaxf(mm, pr[(idx_t)s * (hd + 2)]);
    float ll = 0.0f;
    for (int s = 0; s < splits; s++) {
        const float ms = pr[(idx_t)s * (hd + 2)];
        if (ms != NEG_INF) ll += __expf(ms - mm) * pr[(idx_t)s * (hd + 2) + 1];
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < splits; s++) {
            const float ms = pr[(idx_t)s * (hd + 2)];
            if (ms != NEG_INF) a += __expf(ms - mm) * pr[(idx_t)s * (hd + 2) + 2 + d];
        }
        out[(idx_t)rh * hd + d] = a / ll;
    }
}

// cache[row_slot[r], h, row_pos[r], :] = k[r, h, :] (and v), for rows × kv_heads × hd values;
// k and v are f32, the caches T. One thread per value.
template <typename T>
__device__ void kv_write(T* cache_k, T* cache_v, const float* k, const float* v,
                         const int* row_slot, const int* row_pos, int rows, int kv_heads, int hd,
                         int capacity) {
    const idx_t total = (idx_t)rows * kv_heads * hd;
    for (idx_t t = global_thread(); t < total; t += grid_threads()) {
        const int d = (int)(t % hd);
        const idx_t rh = t / hd;
        const int h = (int)(rh % kv_heads), r = (int)(rh / kv_heads);
        const idx_t dst = (((idx_t)row_slot[r] * kv_heads + h) * capacity + row_pos[r]) * hd + d;
        cache_k[dst] = from_f32<T>(k[t]);
        cache_v[dst] = from_f32<T>(v[t]);
    }
}

// The backward of attention_forward for one (row, head) per block: the softmax is recomputed
// from q and the cache (nothing is saved), then
//   P_t = softmax(q·k_t/√hd), dP_t = dout·v_t, D = dout·out = Σ_t P_t dP_t,
//   dS_t = P_t (dP_t − D)/√hd, dq = Σ_t dS_t k_t, dk_t += dS_t q, dv_t += P_t dout.
// dq (f32, like q) is written; dk, dv (f32, the cache's layout) accumulate with atomicAdd:
// every query row and every head of a GQA group adds into the same key/value rows (a
// prefix's rows get the gradients the prefix path needs). Same grid as the forward, splits 1.
template <typename T>
__device__ void attention_backward(float* dq, float* dk, float* dv, const float* q,
                                   const float* dout, const T* cache_k, const T* cache_v,
                                   const int* row_slot, const int* row_last, int heads,
                                   int kv_heads, int hd, int capacity, float scale) {
    __shared__ float s_acc[ATT_WARPS][ATT_MAX_HD];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int rh = blockIdx.x, r = rh / heads, h = rh % heads;
    const int kvh = h / (heads / kv_heads);
    const int n_pos = row_last[r] + 1;
    const float* qh = q + ((idx_t)r * heads + h) * hd;
    const float* dh = dout + ((idx_t)r * heads + h) * hd;
    float qr[ATT_PER_LANE], dr[ATT_PER_LANE];
    for (int j = 0; j < ATT_PER_LANE; j++) {
        const int d = lane + 32 * j;
        qr[j] = d < hd ? qh[d] : 0.0f;
        dr[j] = d < hd ? dh[d] : 0.0f;
    }
    const idx_t base = ((idx_t)row_slot[r] * kv_heads + kvh) * capacity;
    // Pass 1: the softmax statistics and the output, as in the forward.
    const AttnMerge mg = attention_online(qr, scale, cache_k, cache_v, base, hd, 0, n_pos, s_acc);
    const float mm = mg.mm, ll = mg.ll;
    // D = dout·out, every thread a share of the dims, then one block-wide sum.
    float part = 0.0f;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) o += mg.wt[w] * s_acc[w][d];
        part += dh[d] * (o / ll);
    }
    const float big_d = block_sum(part);
    // Pass 2: per position, its probability and score gradient; dk/dv accumulate in place.
    float dqa[ATT_PER_LANE];
    for (int j = 0; j < ATT_PER_LANE; j++) dqa[j] = 0.0f;
    for (int p = warp; p < n_pos; p += ATT_WARPS) {
        const T* kp = cache_k + (base + p) * hd;
        const T* vp = cache_v + (base + p) * hd;
        float s = 0.0f, dp = 0.0f;
        for (int j = 0; j < ATT_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < hd) {
                s += qr[j] * to_f32(kp[d]);
                dp += dr[j] * to_f32(vp[d]);
            }
        }
        s = warp_sum(s) * scale;
        dp = warp_sum(dp);
        const float pr = __expf(s - mm) / ll;
        const float ds = pr * (dp - big_d) * scale;
        float* dkp = dk + (base + p) * hd;
        float* dvp = dv + (base + p) * hd;
        for (int j = 0; j < ATT_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < hd) {
                dqa[j] += ds * to_f32(kp[d]);
                atomicAdd(dkp + d, ds * qr[j]);
                atomicAdd(dvp + d, pr * dr[j]);
            }
        }
    }
    // The warps' dq shares, summed in shared memory (after every read of s_acc above).
    __syncthreads();
    for (int j = 0; j < ATT_PER_LANE; j++) {
        const int d = lane + 32 * j;
        if (d < hd) s_acc[warp][d] = dqa[j];
    }
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) v += s_acc[w][d];
        dq[((idx_t)r * heads + h) * hd + d] = v;
    }
}

#define ATTENTION(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_forward_##S(          \
        float* out, float* part, const float* q, const T* cache_k, const T* cache_v,             \
        const int* row_slot, const int* row_last, int heads, int kv_heads, int hd, int capacity, \
        int splits, float scale) {                                                               \
        attention_forward<T>(out, part, q, cache_k, cache_v, row_slot, row_last, heads,          \
                             kv_heads, hd, capacity, splits, scale);                             \
    }                                                                                            \
    CMT_EMU_EXPORT(attention_forward_##S)                                                        \
    extern "C" __global__ void kv_write_##S(T* cache_k, T* cache_v, const float* k,              \
                                            const float* v, const int* row_slot,                 \
                                            const int* row_pos, int rows, int kv_heads, int hd,  \
                                            int capacity) {                                      \
        kv_write<T>(cache_k, cache_v, k, v, row_slot, row_pos, rows, kv_heads, hd, capacity);    \
    }                                                                                            \
    CMT_EMU_EXPORT(kv_write_##S)                                                                 \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_backward_##S(         \
        float* dq, float* dk, float* dv, const float* q, const float* dout, const T* cache_k,    \
        const T* cache_v, const int* row_slot, const int* row_last, int heads, int kv_heads,     \
        int hd, int capacity, float scale) {                                                     \
        attention_backward<T>(dq, dk, dv, q, dout, cache_k, cache_v, row_slot, row_last, heads,  \
                              kv_heads, hd, capacity, scale);                                    \
    }                                                                                            \
    CMT_EMU_EXPORT(attention_backward_##S)
ATTENTION(float, f32)
ATTENTION(bf16, bf16)

extern "C" __global__ void attention_combine_f32(float* out, const float* part, int hd,
                                                 int splits) {
    attention_combine(out, part, hd, splits);
}
CMT_EMU_EXPORT(attention_combine_f32)
