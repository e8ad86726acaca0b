// Host emulation of the CUDA execution model for kernels/*.cu (force-included by g++).
//
// A launch runs the blocks of the grid one after the other. The threads of a block are
// fibers (ucontext) on the calling OS thread: the scheduler resumes each live thread in turn
// until it reaches __syncthreads (which switches back to the scheduler) or returns, so
// __shared__ (a function-local static, used by one block at a time) and __syncthreads behave
// as on the device, cheaply and deterministically. A block whose threads do not all reach the
// same number of __syncthreads (undefined behaviour on the device) aborts the process with a
// message. Launches are serialised by one global mutex.
//
// Barrier orders: the order in which the scheduler resumes a block's threads within one
// barrier phase (the code between two __syncthreads) is a per-OS-thread setting read at
// launch: ascending thread index (the default), descending, or shuffled (a fresh permutation
// for every block and every phase, drawn from a seed). A kernel that is correct on the device
// gives bit-identical results under every order; one that reads __shared__ data another
// thread writes in the same phase (a missing __syncthreads) depends on the order. Set it with
// bz_host_set_thread_order (csrc/order.cpp; Rust: bayesnas_kernel_emulation::set_thread_order).
//
// Under AddressSanitizer (__SANITIZE_ADDRESS__) every fiber switch is announced to the
// runtime (__sanitizer_start/finish_switch_fiber) so it tracks the fiber stacks.
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

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define BZ_HOST_ASAN 1
#else
#define BZ_HOST_ASAN 0
#endif

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

// Barrier order of the launches made by this OS thread (see the header comment).
enum ThreadOrder : int { ORDER_ASCENDING = 0, ORDER_DESCENDING = 1, ORDER_SHUFFLED = 2 };
inline thread_local int order_kind = ORDER_ASCENDING;
inline thread_local uint64_t order_seed = 0;

inline uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The resume order of `nt` threads for barrier phase `phase` of block number `block`.
inline void phase_order(std::vector<unsigned>& perm, unsigned nt, int kind, uint64_t seed,
                        uint64_t block, uint64_t phase) {
    perm.resize(nt);
    for (unsigned t = 0; t < nt; ++t) perm[t] = kind == ORDER_DESCENDING ? nt - 1 - t : t;
    if (kind != ORDER_SHUFFLED) return;
    uint64_t s = seed ^ (block * 0xd1b54a32d192ed03ull) ^ (phase * 0x8cb92ba72f3d8dd7ull);
    for (unsigned i = nt; i > 1; --i) {  // Fisher-Yates
        const unsigned j = (unsigned)(splitmix64(s) % i);
        const unsigned tmp = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = tmp;
    }
}

#if BZ_HOST_ASAN
inline void* sched_fake_stack = nullptr;
inline const void* sched_stack_bottom = nullptr;
inline size_t sched_stack_size = 0;
#endif

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline void fiber_main() {
#if BZ_HOST_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_stack_bottom, &sched_stack_size);
#endif
    (*body)();
    current->done = true;  // returns to uc_link = the scheduler
#if BZ_HOST_ASAN
    // The fiber's stack is dead once it returns: nullptr tells ASan to drop its fake stack.
    __sanitizer_start_switch_fiber(nullptr, sched_stack_bottom, sched_stack_size);
#endif
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

inline void sync() {
#if BZ_HOST_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, sched_stack_bottom, sched_stack_size);
    swapcontext(&current->ctx, &sched);
    __sanitizer_finish_switch_fiber(fake, &sched_stack_bottom, &sched_stack_size);
#else
    swapcontext(&current->ctx, &sched);
#endif
}

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
    const int kind = order_kind;
    const uint64_t seed = order_seed;
    std::vector<unsigned> perm;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                bidx = uint3{x, y, z};
                const uint64_t block_no = ((uint64_t)z * grid.y + y) * grid.x + x;
                for (unsigned t = 0; t < nt; ++t) init_fiber(fibers[t], stacks.data() + t * stack, stack);
                for (uint64_t phase = 0;; ++phase) {
                    unsigned done = 0;
                    phase_order(perm, nt, kind, seed, block_no, phase);
                    for (unsigned t : perm) {
                        Fiber& fb = fibers[t];
                        if (!fb.done) {
                            current = &fb;
                            tidx = uint3{t % block.x, (t / block.x) % block.y,
                                         t / (block.x * block.y)};
#if BZ_HOST_ASAN
                            void* fake = nullptr;
                            __sanitizer_start_switch_fiber(&fake, stacks.data() + t * stack,
                                                           stack);
                            swapcontext(&sched, &fb.ctx);
                            __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
                            swapcontext(&sched, &fb.ctx);
#endif
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
