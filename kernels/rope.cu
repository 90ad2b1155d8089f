// Rotary embedding, HF half-split convention (element i pairs with i + hd/2), in place on
// [rows, heads, hd]; row r sits at position pos[r]; cos/sin tables are f32 [max_pos, hd/2].
// One thread per (row, head, i < hd/2) pair.
#include "common.cuh"

// Forward rotates by +θ; the backward applies the transpose (rotation by −θ) to the gradient.
template <typename T, bool BACKWARD>
__device__ void rope_apply(T* x, const int* pos, const float* cos_t, const float* sin_t, int rows,
                           int heads, int hd, int max_pos) {
    const int half = hd / 2;
    const idx_t total = (idx_t)rows * heads * half;
    for (idx_t t = global_thread(); t < total; t += grid_threads()) {
        const int i = (int)(t % half);
        const idx_t head = t / half;
        const int p = pos[head / heads];
        if (p < 0 || p >= max_pos) continue;  // host validates; never read past the table
        const float c = cos_t[(idx_t)p * half + i], s = sin_t[(idx_t)p * half + i];
        T* h = x + head * hd;
        const float x1 = to_f32(h[i]), x2 = to_f32(h[i + half]);
        if (BACKWARD) {
            h[i] = from_f32<T>(x1 * c + x2 * s);
            h[i + half] = from_f32<T>(x2 * c - x1 * s);
        } else {
            h[i] = from_f32<T>(x1 * c - x2 * s);
            h[i + half] = from_f32<T>(x2 * c + x1 * s);
        }
    }
}

#define ROPE(T, S)                                                                               \
    extern "C" __global__ void rope_forward_##S(T* x, const int* pos, const float* cos_t,        \
                                                const float* sin_t, int rows, int heads, int hd, \
                                                int max_pos) {                                   \
        rope_apply<T, false>(x, pos, cos_t, sin_t, rows, heads, hd, max_pos);                    \
    }                                                                                            \
    CMT_EMU_EXPORT(rope_forward_##S)                                                             \
    extern "C" __global__ void rope_backward_##S(T* dx, const int* pos, const float* cos_t,      \
                                                 const float* sin_t, int rows, int heads,        \
                                                 int hd, int max_pos) {                          \
        rope_apply<T, true>(dx, pos, cos_t, sin_t, rows, heads, hd, max_pos);                    \
    }                                                                                            \
    CMT_EMU_EXPORT(rope_backward_##S)
ROPE(float, f32)
ROPE(bf16, bf16)
