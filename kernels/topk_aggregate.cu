// Fused self-matching / top-k aggregation (DESIGN §1 steps 5–6, §7), in two launches so that
// a bank sharded over devices gives exactly the same result:
//   topk_scan_<key dtype>       scan → candidates. Block (x, y) scans rows
//                               [x·rows_per_block, (x+1)·rows_per_block) for questions
//                               [32y, 32y+32) and writes its own top-k (raw score, row) per
//                               question. Each key is read once per group of 32 questions.
//   topk_combine_<mem dtype>    combine → aggregate. One block per question: the exact top-k
//                               of all candidates, w = softmax(s/τ) over them, A = Σ w_d M_d.
// The same contract as the CPU kernel (crates/cmt-memory/src/topk): raw score
// q·k = fmaf(q[r-1], k[r-1], … fmaf(q[0], k[0], 0)) in f32, dimension by dimension in order,
// so scores are bitwise equal to the CPU's and the selection is identical; a higher score is
// better, among equal scores the lower row (= the lower id: ids increase with rows); NaN
// scores and dead rows are never candidates; k ≤ 64.
//
// Layouts (all device memory):
//   keys     column-major: dimension j of row i at keys[j·ld + i], ld ≥ n (a capacity, so
//            appends do not move the matrix). A warp reads 32 consecutive rows of one
//            dimension: coalesced, and one thread folds its row's dimensions in order.
//   live     bit i%32 of u32 word i/32 (the CPU KeyMatrix's u64 words, uploaded as is, are
//            the same bytes on a little-endian host).
//   queries  nq × r f32, row-major.
//   cand     [nq][blocks][k] scores (f32) and rows (u32, EMPTY where a block saw fewer than
//            k live entries).
//   memories row-major, M of row i at mem[i·td], td = T·D.
//
// No online softmax state is carried during the scan (the issue suggested one): the softmax
// is over the selected set only, which is known after the last candidate is merged, and a
// running (max, Σe, Σ e·M) cannot take back an entry that a better one later evicts. Carrying
// Σ e·M along would also read the T·D memory (9216 values at T=16, D=576) of every entry that
// is ever a block's candidate instead of the k selected ones: ~70× the bytes of its key. The
// combine reads exactly k memories per question, once.
//
// Index overflow: at 1M × 128 keys, j·ld < 2^27, but a 20M-row bank already passes 2^31,
// and memories (1M × 9216 values) pass 2^33; every offset into keys, memories, candidates
// and outputs is computed in idx_t (64-bit). Rows fit u32 (n is an i32).
#include "common.cuh"

#define TOPK_MAX_K 64
// Threads per block of both kernels (the shared arrays are sized for it; the launch code in
// cmt_runtime::cuda::topk always uses it).
#define TOPK_BLOCK 256
// Questions per scan block, and dimensions of their staged copy in shared memory.
#define TOPK_QG 32
#define TOPK_QJ 128
#define TOPK_EMPTY 0xffffffffu
// Loops over a question group must unroll so that the accumulators stay in registers; the
// host compiler of the emulator does not know the pragma.
#ifdef __CUDACC__
#define TOPK_UNROLL _Pragma("unroll")
#else
#define TOPK_UNROLL
#endif

// a better than b; EMPTY is worse than everything. Scores here are never NaN.
__device__ __forceinline__ bool topk_better(float sa, unsigned ra, float sb, unsigned rb) {
    if (ra == TOPK_EMPTY) return false;
    if (rb == TOPK_EMPTY) return true;
    return sa > sb || (sa == sb && ra < rb);
}

// OR over the block, returned to every thread; every thread must call it. The leading
// barrier keeps a call's writes from racing the previous call's reads of `scratch`.
__device__ __forceinline__ unsigned topk_block_or(unsigned v, unsigned* scratch) {
    for (int o = 16; o > 0; o >>= 1) v |= __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    unsigned r = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) r |= scratch[w];
    return r;
}

// Shared state of one block: a sorted (best first) list of ≤ k entries per question, the
// tile being merged, and the list being rebuilt.
struct TopkShared {
    float list_s[TOPK_QG * TOPK_MAX_K];
    unsigned list_r[TOPK_QG * TOPK_MAX_K];
    float tile_s[TOPK_BLOCK];
    unsigned tile_r[TOPK_BLOCK];
    float new_s[TOPK_MAX_K];
    unsigned new_r[TOPK_MAX_K];
    unsigned scratch[32];
};

// list ← top-k of (list ∪ tile), every thread calls it (the caller's branch must be uniform
// over the block). Each thread has written its own tile slot. Rows are distinct, so the rank
// of an entry (how many entries of the union beat it) is unique and the entries of rank < k
// are scattered to their final places without sorting.
__device__ void topk_merge(TopkShared& sh, float* list_s, unsigned* list_r, int k) {
    const int t = threadIdx.x, nt = blockDim.x;
    if (t < k) sh.new_r[t] = TOPK_EMPTY, sh.new_s[t] = 0.0f;
    // Tile writes and the EMPTY fill are visible before any rank is computed or scattered.
    __syncthreads();
    if (t < k && list_r[t] != TOPK_EMPTY) {
        const float s = list_s[t];
        const unsigned row = list_r[t];
        int rank = t;  // the list is sorted and its entries distinct
        for (int i = 0; i < nt && rank < k; i++) rank += topk_better(sh.tile_s[i], sh.tile_r[i], s, row);
        if (rank < k) sh.new_s[rank] = s, sh.new_r[rank] = row;
    }
    if (sh.tile_r[t] != TOPK_EMPTY) {
        const float s = sh.tile_s[t];
        const unsigned row = sh.tile_r[t];
        int rank = 0;
        for (int i = 0; i < k && rank < k; i++) rank += topk_better(list_s[i], list_r[i], s, row);
        for (int i = 0; i < nt && rank < k; i++) rank += topk_better(sh.tile_s[i], sh.tile_r[i], s, row);
        if (rank < k) sh.new_s[rank] = s, sh.new_r[rank] = row;
    }
    // Every scatter is done, and every read of the old list and of the tile.
    __syncthreads();
    if (t < k) list_s[t] = sh.new_s[t], list_r[t] = sh.new_r[t];
    // The new list is visible before thresholds are read from it or the tile is rewritten.
    __syncthreads();
}

// Offers one tile (one entry per thread: its row and its scores for the QG questions) to the
// lists. Only questions where some thread beats the current k-th best are merged; after the
// first tiles that is rare, so a tile usually costs one block OR. Inlined so that `acc`
// stays in registers.
template <int QG>
__device__ __forceinline__ void topk_offer(TopkShared& sh, const float* acc, unsigned row, bool valid, int k) {
    unsigned mask = 0;
TOPK_UNROLL
    for (int qi = 0; qi < QG; qi++) {
        const float* ls = sh.list_s + qi * TOPK_MAX_K;
        const unsigned* lr = sh.list_r + qi * TOPK_MAX_K;
        const bool ok = valid && acc[qi] == acc[qi];  // NaN never enters
        if (ok && topk_better(acc[qi], row, ls[k - 1], lr[k - 1])) mask |= 1u << qi;
    }
    mask = topk_block_or(mask, sh.scratch);  // block-uniform from here on
TOPK_UNROLL
    for (int qi = 0; qi < QG; qi++) {
        if (mask >> qi & 1u) {
            const bool ok = valid && acc[qi] == acc[qi];
            sh.tile_s[threadIdx.x] = ok ? acc[qi] : 0.0f;
            sh.tile_r[threadIdx.x] = ok ? row : TOPK_EMPTY;
            topk_merge(sh, sh.list_s + qi * TOPK_MAX_K, sh.list_r + qi * TOPK_MAX_K, k);
        }
    }
}

// Four consecutive dimensions of a staged question: one 16-byte shared load feeds 4 FMAs
// (with scalar loads, shared-memory issue would cap the 32-question scan at 1/4 of the FMA
// rate).
struct alignas(16) TopkF4 {
    float x, y, z, w;
};
__device__ __forceinline__ float topk_f4_at(const TopkF4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}
#define TOPK_QJ4 (TOPK_QJ / 4)

// Stages dimensions [j0, j0 + TOPK_QJ) of the group's questions, zero past r and past ng
// (the padded questions of a QG > ng instantiation then compute harmless zeros).
__device__ __forceinline__ void topk_stage_q(TopkF4* qs, const float* q, int ng, int r, int j0) {
    for (int i = threadIdx.x; i < TOPK_QG * TOPK_QJ4; i += blockDim.x) {
        const int qi = i / TOPK_QJ4, j = j0 + 4 * (i % TOPK_QJ4);
        const float* qr = q + (idx_t)qi * r;
        const bool on = qi < ng;
        qs[i] = TopkF4{on && j < r ? qr[j] : 0.0f, on && j + 1 < r ? qr[j + 1] : 0.0f,
                       on && j + 2 < r ? qr[j + 2] : 0.0f, on && j + 3 < r ? qr[j + 3] : 0.0f};
    }
}

template <typename T, int QG>
__device__ void topk_scan_rows(TopkShared& sh, TopkF4* qs, const T* keys, idx_t ld,
                               const unsigned* live, const float* q, int ng, int r, int k,
                               idx_t row0, idx_t row1) {
    // Every thread runs the same number of tiles (the bound is block-uniform), so the
    // barriers inside are reached by the whole block, including threads past row1.
    for (idx_t base = row0; base < row1; base += blockDim.x) {
        const idx_t row = base + threadIdx.x;
        const bool in = row < row1;
        const bool valid = in && (live[row >> 5] >> (row & 31) & 1u);
        float acc[QG];
TOPK_UNROLL
        for (int qi = 0; qi < QG; qi++) acc[qi] = 0.0f;
        for (int j0 = 0; j0 < r; j0 += TOPK_QJ) {
            if (r > TOPK_QJ) {  // uniform; for r ≤ TOPK_QJ the caller staged q once
                __syncthreads();  // everyone is done with the previous chunk
                topk_stage_q(qs, q, ng, r, j0);
                __syncthreads();
            }
            const int jn = r - j0 < TOPK_QJ ? r - j0 : TOPK_QJ;
            if (valid) {
                const T* kp = keys + (idx_t)j0 * ld + row;
                int j = 0;
                // Four independent key loads in flight per thread; the fold per question
                // stays in dimension order.
                for (; j + 4 <= jn; j += 4) {
                    const float k0 = to_f32(kp[(idx_t)j * ld]), k1 = to_f32(kp[(idx_t)(j + 1) * ld]);
                    const float k2 = to_f32(kp[(idx_t)(j + 2) * ld]), k3 = to_f32(kp[(idx_t)(j + 3) * ld]);
TOPK_UNROLL
                    for (int qi = 0; qi < QG; qi++) {
                        const TopkF4 v = qs[qi * TOPK_QJ4 + j / 4];
                        acc[qi] = fmaf(v.w, k3, fmaf(v.z, k2, fmaf(v.y, k1, fmaf(v.x, k0, acc[qi]))));
                    }
                }
                for (; j < jn; j++) {
                    const float kv = to_f32(kp[(idx_t)j * ld]);
TOPK_UNROLL
                    for (int qi = 0; qi < QG; qi++)
                        acc[qi] = fmaf(topk_f4_at(qs[qi * TOPK_QJ4 + j / 4], j & 3), kv, acc[qi]);
                }
            }
        }
        topk_offer<QG>(sh, acc, (unsigned)row, valid, k);
    }
}

template <typename T>
__device__ void topk_scan(float* cand_s, unsigned* cand_r, const T* keys, int ld,
                          const unsigned* live, int n, const float* queries, int nq, int r,
                          int k, int rows_per_block) {
    __shared__ TopkShared sh;
    __shared__ TopkF4 qs[TOPK_QG * TOPK_QJ4];
    const int q0 = blockIdx.y * TOPK_QG;
    const int ng = nq - q0 < TOPK_QG ? nq - q0 : TOPK_QG;
    const idx_t blocks = gridDim.x, b = blockIdx.x;
    const idx_t row0 = b * rows_per_block;
    const idx_t row1 = row0 + rows_per_block < (idx_t)n ? row0 + rows_per_block : (idx_t)n;
    const float* q = queries + (idx_t)q0 * r;
    for (int i = threadIdx.x; i < TOPK_QG * TOPK_MAX_K; i += blockDim.x) sh.list_r[i] = TOPK_EMPTY, sh.list_s[i] = 0.0f;
    if (r <= TOPK_QJ) topk_stage_q(qs, q, ng, r, 0);
    __syncthreads();
    // ng is block-uniform: one instantiation per block, the smallest that holds the group.
    if (ng == 1) topk_scan_rows<T, 1>(sh, qs, keys, ld, live, q, ng, r, k, row0, row1);
    else if (ng <= 2) topk_scan_rows<T, 2>(sh, qs, keys, ld, live, q, ng, r, k, row0, row1);
    else if (ng <= 4) topk_scan_rows<T, 4>(sh, qs, keys, ld, live, q, ng, r, k, row0, row1);
    else if (ng <= 8) topk_scan_rows<T, 8>(sh, qs, keys, ld, live, q, ng, r, k, row0, row1);
    else if (ng <= 16) topk_scan_rows<T, 16>(sh, qs, keys, ld, live, q, ng, r, k, row0, row1);
    else topk_scan_rows<T, 32>(sh, qs, keys, ld, live, q, ng, r, k, row0, row1);
    // The last merge ended with a barrier, and a block with no merge at all reads lists it
    // initialised before the barrier above: every list is final here.
    for (int i = threadIdx.x; i < ng * k; i += blockDim.x) {
        const int qi = i / k, j = i % k;
        const idx_t o = ((idx_t)(q0 + qi) * blocks + b) * k + j;
        cand_s[o] = sh.list_s[qi * TOPK_MAX_K + j];
        cand_r[o] = sh.list_r[qi * TOPK_MAX_K + j];
    }
}

// Per question (blockIdx.x): top-k of its `ncand` candidates (rows must be distinct: each
// row belongs to one scan block, or, after a gather from shards, to one slot of `mem`),
// scores s = raw/τ, w = softmax(s), A = Σ w M in selection order. Slots past the number of
// selected entries get row −1 and score and weight 0; with nothing selected A = 0 (the host
// reports the empty bank). Non-finite scores are passed through for the host to report.
template <typename T>
__device__ void topk_combine(int* out_rows, float* out_s, float* out_w, float* out_a,
                             const float* cand_s, const unsigned* cand_r, int ncand, int k,
                             float tau, const T* mem, int td) {
    __shared__ TopkShared sh;
    __shared__ float w[TOPK_MAX_K];
    const idx_t q = blockIdx.x;
    const int t = threadIdx.x;
    if (t < k) sh.list_r[t] = TOPK_EMPTY, sh.list_s[t] = 0.0f;
    __syncthreads();
    const float* cs = cand_s + q * ncand;
    const unsigned* cr = cand_r + q * ncand;
    for (int base = 0; base < ncand; base += blockDim.x) {  // uniform trip count
        const int i = base + t;
        const unsigned row = i < ncand ? cr[i] : TOPK_EMPTY;
        const float s = i < ncand ? cs[i] : 0.0f;
        const bool ok = row != TOPK_EMPTY && s == s;
        const unsigned hit = ok && topk_better(s, row, sh.list_s[k - 1], sh.list_r[k - 1]);
        if (topk_block_or(hit, sh.scratch)) {
            sh.tile_s[t] = ok ? s : 0.0f;
            sh.tile_r[t] = ok ? row : TOPK_EMPTY;
            topk_merge(sh, sh.list_s, sh.list_r, k);
        }
    }
    // Lists are final (the last merge, or the barrier after the init, ordered them).
    int count = 0;
    while (count < k && sh.list_r[count] != TOPK_EMPTY) count++;
    // Division by τ > 0 keeps the order, so entry 0 has the largest s.
    const float smax = count > 0 ? sh.list_s[0] / tau : 0.0f;
    if (t < count) w[t] = expf(sh.list_s[t] / tau - smax);
    __syncthreads();
    float z = 0.0f;
    for (int i = 0; i < count; i++) z += w[i];  // same order in every thread
    const float inv = 1.0f / z;
    if (t < k) {
        const bool sel = t < count;
        out_rows[q * k + t] = sel ? (int)sh.list_r[t] : -1;
        out_s[q * k + t] = sel ? sh.list_s[t] / tau : 0.0f;
        out_w[q * k + t] = sel ? w[t] * inv : 0.0f;
    }
    for (int i = t; i < td; i += blockDim.x) {
        float a = 0.0f;
        for (int j = 0; j < count; j++) a = fmaf(w[j] * inv, to_f32(mem[(idx_t)sh.list_r[j] * td + i]), a);
        out_a[q * td + i] = a;
    }
}

#define TOPK_SCAN(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(TOPK_BLOCK)                                     \
        topk_scan_##S(float* cand_s, unsigned* cand_r, const T* keys, int ld,                    \
                      const unsigned* live, int n, const float* queries, int nq, int r, int k,   \
                      int rows_per_block) {                                                      \
        topk_scan<T>(cand_s, cand_r, keys, ld, live, n, queries, nq, r, k, rows_per_block);      \
    }                                                                                            \
    CMT_EMU_EXPORT(topk_scan_##S)
#define TOPK_COMBINE(T, S)                                                                       \
    extern "C" __global__ void __launch_bounds__(TOPK_BLOCK)                                     \
        topk_combine_##S(int* out_rows, float* out_s, float* out_w, float* out_a,                \
                         const float* cand_s, const unsigned* cand_r, int ncand, int k,          \
                         float tau, const T* mem, int td) {                                      \
        topk_combine<T>(out_rows, out_s, out_w, out_a, cand_s, cand_r, ncand, k, tau, mem, td);  \
    }                                                                                            \
    CMT_EMU_EXPORT(topk_combine_##S)
TOPK_SCAN(float, f32)
TOPK_SCAN(bf16, bf16)
TOPK_COMBINE(float, f32)
TOPK_COMBINE(bf16, bf16)
