// Embedding gather: out[i, :] = table[ids[i], :]. One thread per output element. The table's
// storage type TI may be narrower than the rows written (TO): bf16 weights resident on the
// device feed f32 activations (embedding_forward_bf16_f32).
#include "weights.cuh"

// ids outside [0, vocab) give a zero row instead of a wild read; the host validates ids
// before launching and reports the error.
template <typename TO, typename TI>
__device__ void embedding_forward(TO* out, const TI* table, const int* ids, int n, int d,
                                  int vocab) {
    const idx_t total = (idx_t)n * d;
    for (idx_t t = global_thread(); t < total; t += grid_threads()) {
        const idx_t row = t / d, col = t % d;
        const int id = ids[row];
        out[t] = from_f32<TO>((id >= 0 && id < vocab) ? to_f32(table[(idx_t)id * d + col]) : 0.0f);
    }
}

#define EMBEDDING(TO, TI, S)                                                                     \
    extern "C" __global__ void embedding_forward_##S(TO* out, const TI* table, const int* ids,   \
                                                     int n, int d, int vocab) {                  \
        embedding_forward<TO, TI>(out, table, ids, n, d, vocab);                                 \
    }                                                                                            \
    CMT_EMU_EXPORT(embedding_forward_##S)
EMBEDDING(float, float, f32)
EMBEDDING(bf16, bf16, bf16)
EMBEDDING(float, bf16, bf16_f32)

// Rows of a GGUF-block table (the token embedding kept as Q8_0 / Q4_0 / Q4_1 on the device)
// as f32, the values the CPU's dequantisation gives.
template <class W>
__device__ void embedding_blocks(float* out, const unsigned char* table, const int* ids, int n,
                                 int d, int vocab) {
    const idx_t total = (idx_t)n * d;
    for (idx_t t = global_thread(); t < total; t += grid_threads()) {
        const idx_t row = t / d;
        const int col = (int)(t % d), id = ids[row];
        out[t] = (id >= 0 && id < vocab) ? W::at(W::row(table, id, d), col) : 0.0f;
    }
}

#define EMBEDDING_BLOCKS(W, S)                                                                   \
    extern "C" __global__ void embedding_forward_##S##_f32(float* out, const unsigned char* table, \
                                                           const int* ids, int n, int d,         \
                                                           int vocab) {                          \
        embedding_blocks<W>(out, table, ids, n, d, vocab);                                       \
    }                                                                                            \
    CMT_EMU_EXPORT(embedding_forward_##S##_f32)
EMBEDDING_BLOCKS(BlockQ8_0, q8_0)
EMBEDDING_BLOCKS(BlockQ4_0, q4_0)
EMBEDDING_BLOCKS(BlockQ4_1, q4_1)
