// How a kernel reads a weight matrix [rows, cols] (HF layout, a row per output feature):
// dense f32 / bf16, or GGUF blocks of 32 kept as the file stores them (Q8_0, Q4_0, Q4_1;
// `--weights native` on the device). Each policy gives a row's start and its values as f32,
// one or four consecutive at a time (`at4` needs j % 4 == 0, which keeps the four inside one
// half-block of a nibble type). Block values are computed exactly as the CPU dequantises them
// (crates/cmt-runtime/src/gguf/quant.rs), with __fmul_rn so that d·q + m is not contracted into
// an FMA the CPU does not do: the device's native path multiplies the f32 path's weights.
#pragma once
#include "common.cuh"

struct alignas(16) f32x4 {
    float v[4];
};
struct alignas(8) bf16x4 {
    bf16 v[4];
};

// Four consecutive values as f32; `p` 4-element aligned.
__device__ __forceinline__ void load4(const float* p, float o[4]) {
    const f32x4 q = *reinterpret_cast<const f32x4*>(p);
    for (int i = 0; i < 4; i++) o[i] = q.v[i];
}
__device__ __forceinline__ void load4(const bf16* p, float o[4]) {
    const bf16x4 q = *reinterpret_cast<const bf16x4*>(p);
    for (int i = 0; i < 4; i++) o[i] = to_f32(q.v[i]);
}

// IEEE half → float, exactly (normals, subnormals, inf, nan), from its two little-endian bytes.
__device__ __forceinline__ float f16_at(const unsigned char* p) {
    const unsigned h = (unsigned)p[0] | ((unsigned)p[1] << 8);
    const unsigned sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return __int_as_float((int)(sign | 0x7f800000u | (man << 13)));
    if (exp != 0) return __int_as_float((int)(sign | ((exp + 112) << 23) | (man << 13)));
    // Subnormal: man · 2^-24, exact in f32.
    const float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
}

template <typename T>
struct Dense {
    typedef T elem;
    __device__ static const T* row(const T* w, idx_t r, int cols) { return w + r * cols; }
    __device__ static float at(const T* row, int j) { return to_f32(row[j]); }
    __device__ static void at4(const T* row, int j, float o[4]) { load4(row + j, o); }
};

struct BlockQ8_0 {
    typedef unsigned char elem;
    static constexpr int BYTES = 34;
    __device__ static const unsigned char* row(const unsigned char* w, idx_t r, int cols) {
        return w + r * (idx_t)(cols / 32) * BYTES;
    }
    __device__ static float at(const unsigned char* row, int j) {
        const unsigned char* b = row + (j / 32) * BYTES;
        return __fmul_rn((float)(signed char)b[2 + j % 32], f16_at(b));
    }
    __device__ static void at4(const unsigned char* row, int j, float o[4]) {
        const unsigned char* b = row + (j / 32) * BYTES;
        const float d = f16_at(b);
        for (int i = 0; i < 4; i++) o[i] = __fmul_rn((float)(signed char)b[2 + j % 32 + i], d);
    }
};

// Nibble e of a 32-element block: low nibbles of bytes 0..15 hold elements 0..15, high
// nibbles elements 16..31.
__device__ __forceinline__ int nibble(const unsigned char* qs, int e) {
    return e < 16 ? (qs[e] & 0x0f) : (qs[e - 16] >> 4);
}

struct BlockQ4_0 {
    typedef unsigned char elem;
    static constexpr int BYTES = 18;
    __device__ static const unsigned char* row(const unsigned char* w, idx_t r, int cols) {
        return w + r * (idx_t)(cols / 32) * BYTES;
    }
    __device__ static float at(const unsigned char* row, int j) {
        const unsigned char* b = row + (j / 32) * BYTES;
        return __fmul_rn((float)(nibble(b + 2, j % 32) - 8), f16_at(b));
    }
    __device__ static void at4(const unsigned char* row, int j, float o[4]) {
        const unsigned char* b = row + (j / 32) * BYTES;
        const float d = f16_at(b);
        for (int i = 0; i < 4; i++) o[i] = __fmul_rn((float)(nibble(b + 2, j % 32 + i) - 8), d);
    }
};

struct BlockQ4_1 {
    typedef unsigned char elem;
    static constexpr int BYTES = 20;
    __device__ static const unsigned char* row(const unsigned char* w, idx_t r, int cols) {
        return w + r * (idx_t)(cols / 32) * BYTES;
    }
    __device__ static float at(const unsigned char* row, int j) {
        const unsigned char* b = row + (j / 32) * BYTES;
        return __fmul_rn((float)nibble(b + 4, j % 32), f16_at(b)) + f16_at(b + 2);
    }
    __device__ static void at4(const unsigned char* row, int j, float o[4]) {
        const unsigned char* b = row + (j / 32) * BYTES;
        const float d = f16_at(b), m = f16_at(b + 2);
        for (int i = 0; i < 4; i++) o[i] = __fmul_rn((float)nibble(b + 4, j % 32 + i), d) + m;
    }
};
