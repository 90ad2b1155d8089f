// Runs unchanged kernels/*.cu as host C++ for the tests (DESIGN §3): one OS thread per CUDA
// thread of a block, blocks one after another, std::barrier for __syncthreads, a per-warp
// exchange buffer + barrier for __shfl_*_sync, and `__shared__` as a function-local static
// (correct because only one block runs at a time). Included first by the generated TU.
//
// Hazards this does NOT model: inline PTX, dynamic (extern) shared memory, warp divergence
// around shuffles or barriers (that deadlocks here; on a GPU it is undefined), memory
// ordering between blocks, and the GPU's fused multiply-adds (results differ in the last
// bits, hence tolerances in the tests).
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// Real cuda_bf16.h (host-compilable with the wheel headers) or the shim dir's stand-in.
#include <cuda_bf16.h>

#ifndef __global__
#define __global__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#undef __shared__
#define __shared__ static

namespace cmt_emu {

struct U3 {
    unsigned x, y, z;
};

struct Warp {
    explicit Warp(std::ptrdiff_t n) : bar(n), size(int(n)) {}
    std::barrier<> bar;
    int size;
    alignas(8) unsigned char slot[32][8];
};

inline thread_local U3 t_thread, t_block, t_block_dim, t_grid_dim;
inline thread_local std::barrier<>* t_bar = nullptr;
inline thread_local Warp* t_warp = nullptr;
inline thread_local int t_lane = 0;

// Every lane publishes its value, waits for the whole warp, reads the source lane, and waits
// again so no lane overwrites its slot before the others have read it.
template <typename T>
T exchange(T v, int src) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a large type");
    Warp& w = *t_warp;
    std::memcpy(w.slot[t_lane], &v, sizeof(T));
    w.bar.arrive_and_wait();
    T out = v;
    if (src >= 0 && src < w.size) std::memcpy(&out, w.slot[src], sizeof(T));
    w.bar.arrive_and_wait();
    return out;
}

using Trampoline = int (*)(U3, U3, void**);
inline std::map<std::string, Trampoline>& registry() {
    static std::map<std::string, Trampoline> r;
    return r;
}
struct Register {
    Register(const char* name, Trampoline t) { registry()[name] = t; }
};

// `args[i]` points at parameter i, exactly as cuLaunchKernel reads it.
template <typename... A, std::size_t... I>
void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A>
int launch(void (*f)(A...), U3 grid, U3 block, void** args) {
    const long nt = long(block.x) * block.y * block.z;
    if (nt <= 0 || nt > 1024) return 2;
    std::barrier<> bar(nt);
    std::vector<std::unique_ptr<Warp>> warps;
    for (long w = 0; w * 32 < nt; w++) warps.push_back(std::make_unique<Warp>(std::min(32L, nt - w * 32)));
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (long t = 0; t < nt; t++) {
        threads.emplace_back([&, t] {
            t_thread = U3{unsigned(t % block.x), unsigned(t / block.x % block.y), unsigned(t / (block.x * block.y))};
            t_block_dim = block;
            t_grid_dim = grid;
            t_bar = &bar;
            t_warp = warps[t / 32].get();
            t_lane = int(t % 32);
            for (unsigned bz = 0; bz < grid.z; bz++)
                for (unsigned by = 0; by < grid.y; by++)
                    for (unsigned bx = 0; bx < grid.x; bx++) {
                        t_block = U3{bx, by, bz};
                        call(f, args, std::index_sequence_for<A...>{});
                        // The block is done for everyone before `__shared__` is reused.
                        bar.arrive_and_wait();
                    }
        });
    }
    for (auto& th : threads) th.join();
    return 0;
}

}  // namespace cmt_emu

#define threadIdx (cmt_emu::t_thread)
#define blockIdx (cmt_emu::t_block)
#define blockDim (cmt_emu::t_block_dim)
#define gridDim (cmt_emu::t_grid_dim)

inline void __syncthreads() { cmt_emu::t_bar->arrive_and_wait(); }

// Width other than 32 is not emulated; the mask is ignored (all lanes must participate).
template <typename T>
T __shfl_sync(unsigned, T v, int src, int = 32) { return cmt_emu::exchange(v, src & 31); }
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask, int = 32) { return cmt_emu::exchange(v, cmt_emu::t_lane ^ mask); }
template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned d, int = 32) { return cmt_emu::exchange(v, cmt_emu::t_lane + int(d)); }
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned d, int = 32) { return cmt_emu::exchange(v, cmt_emu::t_lane - int(d)); }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
// Emulated threads of a block run concurrently: a real atomic read-modify-write.
inline float atomicAdd(float* a, float v) { return std::atomic_ref<float>(*a).fetch_add(v); }
// Round-to-nearest multiply, never fused with a following add (the host build has no FMA).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
inline float __int_as_float(unsigned i) { return __int_as_float(int(i)); }

#define CMT_EMU_EXPORT(name)                                                                     \
    static cmt_emu::Register cmt_emu_reg_##name(                                                 \
        #name, [](cmt_emu::U3 g, cmt_emu::U3 b, void** a) { return cmt_emu::launch(&name, g, b, a); });

extern "C" {
// 0 ok, 1 unknown kernel, 2 bad block size.
int cmt_emu_launch(const char* name, const unsigned* grid, const unsigned* block, void** args) {
    auto it = cmt_emu::registry().find(name);
    if (it == cmt_emu::registry().end()) return 1;
    return it->second(cmt_emu::U3{grid[0], grid[1], grid[2]}, cmt_emu::U3{block[0], block[1], block[2]}, args);
}
int cmt_emu_kernel_count() { return int(cmt_emu::registry().size()); }
const char* cmt_emu_kernel_name(int i) {
    auto it = cmt_emu::registry().begin();
    std::advance(it, i);
    return it->first.c_str();
}
}
