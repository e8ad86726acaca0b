// Shared helpers of the kernels. Compiled by nvcc for the device and, in crates/kernel-emulation,
// by g++ for the host through a shim header (crates/kernel-emulation/shim/cuda_host_shim.h) that
// defines __global__, __device__, __shared__, __syncthreads and the index variables. Hence:
// no warp shuffles, no atomics, no early return before a __syncthreads, static shared memory.
#ifndef BAYESNAS_COMMON_CUH
#define BAYESNAS_COMMON_CUH

#include "bayesnas_params.h"

#ifdef __CUDACC__
#define BZ_LDG(p) __ldg(p)
#define BZ_INLINE __device__ __forceinline__
#else
#define BZ_LDG(p) (*(p))
#define BZ_INLINE inline
#endif

// Block size every reduction kernel requires (a power of two).
#define BZ_BLOCK 256

// 1-D grid-stride loop over [0, n).
#define BZ_GRID_STRIDE(i, n)                                                        \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);       \
         i += (int64_t)blockDim.x * gridDim.x)

// Sum of `v` over the block (blockDim.x == BZ_BLOCK), fixed tree order; every thread gets the
// result. `sh` is a __shared__ buffer of BZ_BLOCK elements. Ends with a barrier so that `sh`
// can be reused at once.
template <typename T>
BZ_INLINE T bz_block_sum(T v, T* sh) {
    const unsigned t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned s = BZ_BLOCK / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();
    return r;
}

// Floor division for possibly negative numerators (d > 0).
BZ_INLINE int64_t bz_floor_div(int64_t a, int64_t d) {
    int64_t q = a / d;
    return (a % d != 0 && a < 0) ? q - 1 : q;
}

BZ_INLINE bool bz_isnan(float x) { return x != x; }

#endif
