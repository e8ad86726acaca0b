// Host emulation of the CUDA execution model for kernels/*.cu (force-included by g++).
//
// A launch runs the blocks of the grid one after the other. The threads of a block are
// fibers (ucontext) on the calling OS thread: the scheduler resumes each live thread in turn
// until it reaches __syncthreads (which switches back to the scheduler) or returns, so
// __shared__ (a function-local static, used by one block at a time) and __syncthreads behave
// as on the device, cheaply and deterministically. A block whose threads do not all reach the
// same number of __syncthreads (undefined behaviour on the device) aborts the process with a
// message. Launches are serialised by one global mutex.
#ifndef BAYESNAS_CUDA_HOST_SHIM_H
#define BAYESNAS_CUDA_HOST_SHIM_H

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <vector>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace bz_host {
inline uint3 tidx;
inline uint3 bidx;
inline dim3 bdim;
inline dim3 gdim;

struct Fiber {
    ucontext_t ctx;
    bool done;
};
inline ucontext_t sched;
inline Fiber* current = nullptr;
inline const std::function<void()>* body = nullptr;

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline void fiber_main() {
    (*body)();
    current->done = true;  // returns to uc_link = the scheduler
}

// Out of line: getcontext returns twice, which would make g++ warn about (and pessimise)
// the scheduler's locals.
[[gnu::noinline]] inline void init_fiber(Fiber& fb, char* stack, size_t size) {
    getcontext(&fb.ctx);
    fb.ctx.uc_stack.ss_sp = stack;
    fb.ctx.uc_stack.ss_size = size;
    fb.ctx.uc_link = &sched;
    fb.done = false;
    makecontext(&fb.ctx, fiber_main, 0);
}

inline void sync() { swapcontext(&current->ctx, &sched); }

// Runs `kernel()` for every thread of every block of `grid` with `block` threads.
template <class F>
void launch(dim3 grid, dim3 block, F&& kernel) {
    std::lock_guard<std::mutex> guard(launch_mutex());
    const std::function<void()> f(kernel);
    body = &f;
    bdim = block;
    gdim = grid;
    const unsigned nt = block.x * block.y * block.z;
    const size_t stack = 256 * 1024;
    static std::vector<char> stacks;
    if (stacks.size() < nt * stack) stacks.resize(nt * stack);
    std::vector<Fiber> fibers(nt);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                bidx = uint3{x, y, z};
                for (unsigned t = 0; t < nt; ++t) init_fiber(fibers[t], stacks.data() + t * stack, stack);
                for (;;) {
                    unsigned done = 0;
                    for (unsigned t = 0; t < nt; ++t) {
                        Fiber& fb = fibers[t];
                        if (!fb.done) {
                            current = &fb;
                            tidx = uint3{t % block.x, (t / block.x) % block.y,
                                         t / (block.x * block.y)};
                            swapcontext(&sched, &fb.ctx);
                        }
                        done += fb.done ? 1 : 0;
                    }
                    if (done == nt) break;
                    if (done != 0) {
                        std::fprintf(stderr,
                                     "cuda host shim: block (%u,%u,%u): %u of %u threads "
                                     "returned while others wait in __syncthreads\n",
                                     x, y, z, done, nt);
                        std::abort();
                    }
                }
            }
    current = nullptr;
    body = nullptr;
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

inline void __syncthreads() { bz_host::sync(); }

#endif
