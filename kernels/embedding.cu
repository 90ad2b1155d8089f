// Embedding gather: out[i, :] = table[ids[i], :]. One thread per output element.
#include "common.cuh"

// ids outside [0, vocab) give a zero row instead of a wild read; the host validates ids
// before launching and reports the error.
template <typename T>
__device__ void embedding_forward(T* out, const T* table, const int* ids, int n, int d, int vocab) {
    const idx_t total = (idx_t)n * d;
    for (idx_t t = global_thread(); t < total; t += grid_threads()) {
        const idx_t row = t / d, col = t % d;
        const int id = ids[row];
        out[t] = (id >= 0 && id < vocab) ? table[(idx_t)id * d + col] : from_f32<T>(0.0f);
    }
}

#define EMBEDDING(T, S)                                                                          \
    extern "C" __global__ void embedding_forward_##S(T* out, const T* table, const int* ids,     \
                                                     int n, int d, int vocab) {                  \
        embedding_forward<T>(out, table, ids, n, d, vocab);                                      \
    }                                                                                            \
    CMT_EMU_EXPORT(embedding_forward_##S)
EMBEDDING(float, f32)
EMBEDDING(bf16, bf16)
