// Fused softmax + cross-entropy over the vocabulary, llm.c style: one block per row computes
// the loss and, in the same launch, dlogits = (softmax − onehot(target)) · dscale, so the
// [rows, V] probabilities never exist in memory. blockDim.x: a multiple of 32.
#include "common.cuh"

// losses[row] = logsumexp(logits[row]) − logits[row, target]; rows with target < 0 are
// ignored (loss 0, dlogits 0), like HF's -100. dlogits may be null (loss only) or alias
// logits (each element is read, then overwritten, by the same thread).
template <typename T>
__device__ void cross_entropy_fused(float* losses, T* dlogits, const T* logits, const int* targets,
                                    int rows, int vocab, float dscale) {
    const int row = blockIdx.x;
    if (row >= rows) return;  // whole block
    const T* lr = logits + (idx_t)row * vocab;
    const int target = targets[row];
    // Online softmax: per-thread running max and sum of exp relative to it, one read of the row.
    float m = NEG_INF, s = 0.0f;
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
        const float l = to_f32(lr[v]);
        if (l > m) {
            s = s * expf(m - l) + 1.0f;
            m = l;
        } else {
            s += expf(l - m);
        }
    }
    const float gmax = block_max(m);
    // A thread that saw no element has m = -inf and s = 0: its term is 0·0.
    const float sum = block_sum(m == NEG_INF ? 0.0f : s * expf(m - gmax));
    const bool valid = target >= 0 && target < vocab;
    if (threadIdx.x == 0) losses[row] = valid ? logf(sum) + gmax - to_f32(lr[target]) : 0.0f;
    if (dlogits == nullptr) return;
    T* dr = dlogits + (idx_t)row * vocab;
    const float inv = 1.0f / sum;
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
        const float p = expf(to_f32(lr[v]) - gmax) * inv;
        dr[v] = from_f32<T>(valid ? (p - (v == target ? 1.0f : 0.0f)) * dscale : 0.0f);
    }
}

#define CROSS_ENTROPY(T, S)                                                                      \
    extern "C" __global__ void cross_entropy_fused_##S(float* losses, T* dlogits,                \
                                                       const T* logits, const int* targets,      \
                                                       int rows, int vocab, float dscale) {      \
        cross_entropy_fused<T>(losses, dlogits, logits, targets, rows, vocab, dscale);           \
    }                                                                                            \
    CMT_EMU_EXPORT(cross_entropy_fused_##S)
CROSS_ENTROPY(float, f32)
CROSS_ENTROPY(bf16, bf16)
