// Stand-in for cuda_bf16.h when the CUDA wheel headers are unavailable (offline builds):
// only what the kernels use. Rounding matches the real header: round to nearest even,
// NaN stays NaN.
#pragma once
#include <cstdint>
#include <cstring>

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline

struct __nv_bfloat16 {
    unsigned short __x;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = uint32_t(h.__x) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h.__x = 0x7fff;  // canonical NaN
    } else {
        h.__x = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return h;
}
