// TEST-ONLY planted bugs: deliberately broken copies of kernels, so that the tests can show
// that their checks fail when they should. Never launched by the engine.
//
// planted_mixed_bwd_late_sync: mixed_bwd's loop-over-branches path (kernels/mixed.cu, k >
//   MIXED_MAX_K) with the barrier at the END of mixed_flush removed. Thread 0 adds the 256
//   per-thread sums of branch k while the other threads may already have stored their sums of
//   branch k + 1: under ascending order thread 0 runs first in the phase and still sees the
//   right values, so only the other barrier orders catch it (tests/barrier_orders.rs).
// planted_oob_write: writes y[i + 1] for i < n, one element past the end of y, for the
//   AddressSanitizer self-test (tools/emulation-asan.sh --self-test, tests/edge_cases.rs).
#include "bayesnas_common.cuh"

static void planted_flush_late_sync(double* red, int m, double* out) {
    __syncthreads();
    if ((int)threadIdx.x < m) {
        double tot = 0.0;
        for (int t = 0; t < BZ_BLOCK; ++t) tot += red[t * m + threadIdx.x];
        out[threadIdx.x] = tot;
    }
    // (the trailing __syncthreads of mixed_flush is missing here)
}

extern "C" __global__ void planted_mixed_bwd_late_sync(const float* const* __restrict__ xs,
                                                       const float* __restrict__ dy,
                                                       const float* __restrict__ s0,
                                                       const float* __restrict__ s,
                                                       float* const* __restrict__ dxs,
                                                       double* __restrict__ r_partials,
                                                       MixedParams p) {
    __shared__ double red[BZ_BLOCK];
    const int64_t b = blockIdx.x, n = b / p.chunks, chunk = b % p.chunks;
    const int64_t base = n * p.inner;
    const int64_t lo = base + chunk * p.inner / p.chunks;
    const int64_t hi = base + (chunk + 1) * p.inner / p.chunks;
    const float a = s0[0];
    for (int k = 0; k < p.k; ++k) {
        const float ck = a * s[k];
        const float* xk = xs[k];
        float* dk = dxs[k];
        double acc = 0.0;
        for (int64_t i = lo + threadIdx.x; i < hi; i += BZ_BLOCK) {
            const float d = dy[i];
            dk[i] = ck * d;
            acc += (double)(xk[i] * d);
        }
        red[threadIdx.x] = acc;
        planted_flush_late_sync(red, 1, r_partials + b * p.k + k);
    }
}

extern "C" __global__ void planted_oob_write(float* __restrict__ y, EwParams p) {
    BZ_GRID_STRIDE(i, p.n) { y[i + 1] = p.alpha; }
}

struct PlantedLaunch {
    unsigned gx, gy, gz, bx;
};

extern "C" void host_planted_mixed_bwd_late_sync(PlantedLaunch l, const float* const* xs,
                                                 const float* dy, const float* s0,
                                                 const float* s, float* const* dxs,
                                                 double* part, MixedParams p) {
    bz_host::launch(dim3(l.gx, l.gy, l.gz), dim3(l.bx),
                    [&] { planted_mixed_bwd_late_sync(xs, dy, s0, s, dxs, part, p); });
}

extern "C" void host_planted_oob_write(PlantedLaunch l, float* y, EwParams p) {
    bz_host::launch(dim3(l.gx, l.gy, l.gz), dim3(l.bx), [&] { planted_oob_write(y, p); });
}
