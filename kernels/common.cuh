// Shared by every kernel: storage-type conversion, warp/block reductions, export macro.
#pragma once
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

// NVRTC has no <math.h>, so no INFINITY.
#define NEG_INF __int_as_float(0xff800000)

// Registers an entry point with the CPU emulator; nothing on the GPU.
#ifndef CMT_EMU_EXPORT
#define CMT_EMU_EXPORT(name)
#endif

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
// Round to nearest even, like the CPU reference's half::bf16::from_f32.
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16(x); }

// All 32 lanes must be present (no lane may have exited).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum/max returned to every thread. blockDim.x must be a multiple of 32 and every
// thread of the block must call it. The leading barrier lets back-to-back calls share the
// scratch; each warp reduces the partials itself, so no broadcast barrier is needed.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < nw ? scratch[lane] : 0.0f);
}
__device__ __forceinline__ float block_max(float v) {
    __shared__ float scratch[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_max(lane < nw ? scratch[lane] : NEG_INF);
}

// Grid-stride index type: element counts can pass 2^31 (logits of a long batch).
typedef unsigned long long idx_t;
__device__ __forceinline__ idx_t global_thread() { return (idx_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ idx_t grid_threads() { return (idx_t)gridDim.x * blockDim.x; }
