// SwiGLU: out = silu(gate) · up, elementwise; grid-stride, one element per thread step.
#include "common.cuh"

template <typename T>
__device__ void swiglu_forward(T* out, const T* gate, const T* up, idx_t n) {
    for (idx_t t = global_thread(); t < n; t += grid_threads()) {
        const float g = to_f32(gate[t]);
        out[t] = from_f32<T>(g / (1.0f + expf(-g)) * to_f32(up[t]));
    }
}

// With s = sigmoid(g): dup = dout · g·s, dgate = dout · up · s·(1 + g·(1 − s)).
// dgate/dup may alias gate/up (each element is read before it is written, by one thread).
template <typename T>
__device__ void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, idx_t n) {
    for (idx_t t = global_thread(); t < n; t += grid_threads()) {
        const float g = to_f32(gate[t]), u = to_f32(up[t]), dy = to_f32(dout[t]);
        const float s = 1.0f / (1.0f + expf(-g));
        dgate[t] = from_f32<T>(dy * u * s * (1.0f + g * (1.0f - s)));
        dup[t] = from_f32<T>(dy * g * s);
    }
}

#define SWIGLU(T, S)                                                                             \
    extern "C" __global__ void swiglu_forward_##S(T* out, const T* gate, const T* up, int n) {   \
        swiglu_forward<T>(out, gate, up, (idx_t)n);                                              \
    }                                                                                            \
    CMT_EMU_EXPORT(swiglu_forward_##S)                                                           \
    extern "C" __global__ void swiglu_backward_##S(T* dgate, T* dup, const T* dout,              \
                                                   const T* gate, const T* up, int n) {          \
        swiglu_backward<T>(dgate, dup, dout, gate, up, (idx_t)n);                                \
    }                                                                                            \
    CMT_EMU_EXPORT(swiglu_backward_##S)
SWIGLU(float, f32)
SWIGLU(bf16, bf16)
