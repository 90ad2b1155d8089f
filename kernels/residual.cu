// Residual add: out = a + b elementwise. `out` may alias `a` (the in-place x += y of the
// transformer). The backward is the identity on both inputs, so it has no kernel.
#include "common.cuh"

template <typename T>
__device__ void residual_forward(T* out, const T* a, const T* b, idx_t n) {
    for (idx_t t = global_thread(); t < n; t += grid_threads())
        out[t] = from_f32<T>(to_f32(a[t]) + to_f32(b[t]));
}

#define RESIDUAL(T, S)                                                                           \
    extern "C" __global__ void residual_forward_##S(T* out, const T* a, const T* b, int n) {     \
        residual_forward<T>(out, a, b, (idx_t)n);                                                \
    }                                                                                            \
    CMT_EMU_EXPORT(residual_forward_##S)
RESIDUAL(float, f32)
RESIDUAL(bf16, bf16)
