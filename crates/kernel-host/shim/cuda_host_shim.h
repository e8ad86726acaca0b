// Host emulation of the CUDA execution model for kernels/*.cu (force-included by g++).
//
// A launch runs blockDim.x * blockDim.y * blockDim.z real std::threads; every thread walks the
// blocks of the grid in the same order, with a std::barrier after each block, so __shared__
// (a function-local static: one instance, used by one block at a time) and __syncthreads
// (the same barrier) behave as on the device. Launches are serialised by one global mutex.
// Kernels must not return early before a __syncthreads (the barrier would deadlock), which
// is also undefined behaviour on the device.
#ifndef BAYESNAS_CUDA_HOST_SHIM_H
#define BAYESNAS_CUDA_HOST_SHIM_H

#include <barrier>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace bz_host {
inline thread_local uint3 tidx;
inline thread_local uint3 bidx;
inline dim3 bdim;
inline dim3 gdim;
inline std::barrier<>* bar = nullptr;

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

// Runs `kernel()` for every block of `grid` with `block` threads.
template <class F>
void launch(dim3 grid, dim3 block, F&& kernel) {
    std::lock_guard<std::mutex> guard(launch_mutex());
    bdim = block;
    gdim = grid;
    const unsigned nt = block.x * block.y * block.z;
    std::barrier<> b(nt);
    bar = &b;
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (unsigned t = 0; t < nt; ++t) {
        threads.emplace_back([&, t] {
            tidx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned z = 0; z < grid.z; ++z)
                for (unsigned y = 0; y < grid.y; ++y)
                    for (unsigned x = 0; x < grid.x; ++x) {
                        bidx = uint3{x, y, z};
                        kernel();
                        b.arrive_and_wait();
                    }
        });
    }
    for (auto& th : threads) th.join();
    bar = nullptr;
}
}  // namespace bz_host

#define threadIdx (bz_host::tidx)
#define blockIdx (bz_host::bidx)
#define blockDim (bz_host::bdim)
#define gridDim (bz_host::gdim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

inline void __syncthreads() { bz_host::bar->arrive_and_wait(); }

#endif
