// The fused mixed op y = s0 * sum_k s_k x_k of the supernet.
// Branch tensors are passed as device arrays of k device pointers; s0 ([1]) and s ([k]) live
// on the device. Tensors are [n, inner].
//
// mixed_bwd / mixed_curv: grid exactly n * p.chunks blocks of 256 threads; block
// b = sample * chunks + chunk covers elements [chunk * inner / chunks,
// (chunk + 1) * inner / chunks) of its sample, writes the elementwise outputs, and one f64
// partial per reduction: mixed_bwd partials[b * k + j] (j < k), mixed_curv
// partials[b * (k + 1) + j] (j < k: sum x_j^2 hy, j = k: sum z^2 hy, z = sum_j s_j x_j).
// Within a block the 256 per-thread f64 sums are added in thread order. The finalize kernels
// add the partials in chunk (and sample) order: deterministic.
#include "bayesnas_common.cuh"

// y = sum_k (s0 s_k) x_k (coefficients in f32 as the CPU, k added in order). Grid-stride
// over n * inner.
extern "C" __global__ void mixed_fwd(const float* const* __restrict__ xs,
                                     const float* __restrict__ s0, const float* __restrict__ s,
                                     float* __restrict__ y, MixedParams p) {
    const float a = s0[0];
    BZ_GRID_STRIDE(i, p.n * p.inner) {
        float acc = 0.0f;
        for (int k = 0; k < p.k; ++k) acc += (a * s[k]) * xs[k][i];
        y[i] = acc;
    }
}

// Branch counts up to MIXED_MAX_K take the single-sweep path (dy read once, per-thread f64
// sums of all branches in registers, one barrier for all reductions); larger k loop over the
// branches (same results up to f64 rounding of the per-thread sums, still deterministic).
#define MIXED_MAX_K 16

// Adds, for j < m, red[t * m + j] over the 256 threads t in order (f64) into out[j * ostride]
// (thread j does output j). One barrier before, one after.
BZ_INLINE void mixed_flush(double* red, int m, double* out, int64_t ostride) {
    __syncthreads();
    if ((int)threadIdx.x < m) {
        double tot = 0.0;
        for (int t = 0; t < BZ_BLOCK; ++t) tot += red[t * m + threadIdx.x];
        out[threadIdx.x * ostride] = tot;
    }
    __syncthreads();
}

// dx_k = (s0 s_k) dy for every k, and partials of r[n, k] = sum x_k[n] dy[n].
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    mixed_bwd(const float* const* __restrict__ xs, const float* __restrict__ dy,
              const float* __restrict__ s0, const float* __restrict__ s,
              float* const* __restrict__ dxs, double* __restrict__ r_partials,
              MixedParams p) {
    __shared__ double red[BZ_BLOCK * MIXED_MAX_K];
    const int64_t b = blockIdx.x, n = b / p.chunks, chunk = b % p.chunks;
    const int64_t base = n * p.inner;
    const int64_t lo = base + chunk * p.inner / p.chunks;
    const int64_t hi = base + (chunk + 1) * p.inner / p.chunks;
    const float a = s0[0];
    if (p.k <= MIXED_MAX_K) {
        double acc[MIXED_MAX_K];
        float ck[MIXED_MAX_K];
#pragma unroll
        for (int k = 0; k < MIXED_MAX_K; ++k) {
            acc[k] = 0.0;
            ck[k] = k < p.k ? a * s[k] : 0.0f;
        }
        for (int64_t i = lo + threadIdx.x; i < hi; i += BZ_BLOCK) {
            const float d = dy[i];
#pragma unroll
            for (int k = 0; k < MIXED_MAX_K; ++k) {
                if (k < p.k) {
                    dxs[k][i] = ck[k] * d;
                    acc[k] += (double)(xs[k][i] * d);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < MIXED_MAX_K; ++k)
            if (k < p.k) red[threadIdx.x * p.k + k] = acc[k];
        mixed_flush(red, p.k, r_partials + b * p.k, 1);
    } else {
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
            mixed_flush(red, 1, r_partials + b * p.k + k, 1);
        }
    }
}

// r[n, k] = sum over chunks in order of r_partials[(n * chunks + chunk) * k + k'], as f32
// ([n, k], row-major). Grid-stride over n * k (any grid, block 256).
extern "C" __global__ void mixed_reduce_finalize(const double* __restrict__ r_partials,
                                                 float* __restrict__ r, MixedParams p) {
    BZ_GRID_STRIDE(i, p.n * p.k) {
        const int64_t n = i / p.k, k = i % p.k;
        double acc = 0.0;
        for (int64_t c = 0; c < p.chunks; ++c) acc += r_partials[(n * p.chunks + c) * p.k + k];
        r[i] = (float)acc;
    }
}

// Switch gradients from r ([n, k], mixed_reduce_finalize's output): ds[k] = s0 * tot[k] and
// ds0 = sum_k s[k] tot[k] with tot[k] = sum_n r[n, k], all in f64, n then k in order (the
// CPU's arithmetic). Thread j < k writes ds[j]; thread 0 also recomputes every tot in the
// same order for ds0 (k and n are small: one edge's ops and the batch). ONE block, any size.
extern "C" __global__ void mixed_switch_grads(const float* __restrict__ r,
                                              const float* __restrict__ s0,
                                              const float* __restrict__ s,
                                              float* __restrict__ ds, float* __restrict__ ds0,
                                              MixedParams p) {
    const double a = (double)s0[0];
    for (int64_t j = threadIdx.x; j < p.k; j += blockDim.x) {
        double t = 0.0;
        for (int64_t n = 0; n < p.n; ++n) t += (double)r[n * p.k + j];
        ds[j] = (float)(a * t);
    }
    if (threadIdx.x == 0) {
        double acc = 0.0;
        for (int64_t j = 0; j < p.k; ++j) {
            double t = 0.0;
            for (int64_t n = 0; n < p.n; ++n) t += (double)r[n * p.k + j];
            acc += t * (double)s[j];
        }
        ds0[0] = (float)acc;
    }
}

// hx_k = (s0 s_k)^2 hy for every k, and partials of sum x_k^2 hy (per k) and sum z^2 hy
// (z = sum_k s_k x_k elementwise, k added in order).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    mixed_curv(const float* const* __restrict__ xs, const float* __restrict__ hy,
               const float* __restrict__ s0, const float* __restrict__ s,
               float* const* __restrict__ hxs, double* __restrict__ hs_partials,
               MixedParams p) {
    __shared__ double red[BZ_BLOCK * (MIXED_MAX_K + 1)];
    const int64_t b = blockIdx.x, n = b / p.chunks, chunk = b % p.chunks;
    const int64_t base = n * p.inner;
    const int64_t lo = base + chunk * p.inner / p.chunks;
    const int64_t hi = base + (chunk + 1) * p.inner / p.chunks;
    const float a = s0[0];
    const int64_t stride = (int64_t)p.k + 1;
    if (p.k <= MIXED_MAX_K) {
        double acc[MIXED_MAX_K + 1];
        float c2[MIXED_MAX_K], sk[MIXED_MAX_K];
#pragma unroll
        for (int k = 0; k < MIXED_MAX_K; ++k) {
            acc[k] = 0.0;
            sk[k] = k < p.k ? s[k] : 0.0f;
            c2[k] = (a * sk[k]) * (a * sk[k]);
        }
        acc[MIXED_MAX_K] = 0.0;
        for (int64_t i = lo + threadIdx.x; i < hi; i += BZ_BLOCK) {
            const float h = hy[i];
            float z = 0.0f;
#pragma unroll
            for (int k = 0; k < MIXED_MAX_K; ++k) {
                if (k < p.k) {
                    const float x = xs[k][i];
                    hxs[k][i] = c2[k] * h;
                    acc[k] += (double)(x * x * h);
                    z += sk[k] * x;
                }
            }
            acc[MIXED_MAX_K] += (double)(z * z * h);
        }
        const int m = p.k + 1;
#pragma unroll
        for (int k = 0; k < MIXED_MAX_K; ++k)
            if (k < p.k) red[threadIdx.x * m + k] = acc[k];
        red[threadIdx.x * m + p.k] = acc[MIXED_MAX_K];
        mixed_flush(red, m, hs_partials + b * stride, 1);
    } else {
        for (int k = 0; k < p.k; ++k) {
            const float c2 = (a * s[k]) * (a * s[k]);
            const float* xk = xs[k];
            float* hk = hxs[k];
            double acc = 0.0;
            for (int64_t i = lo + threadIdx.x; i < hi; i += BZ_BLOCK) {
                const float h = hy[i];
                const float x = xk[i];
                hk[i] = c2 * h;
                acc += (double)(x * x * h);
            }
            red[threadIdx.x] = acc;
            mixed_flush(red, 1, hs_partials + b * stride + k, 1);
        }
        double acc0 = 0.0;
        for (int64_t i = lo + threadIdx.x; i < hi; i += BZ_BLOCK) {
            float z = 0.0f;
            for (int k = 0; k < p.k; ++k) z += s[k] * xs[k][i];
            acc0 += (double)(z * z * hy[i]);
        }
        red[threadIdx.x] = acc0;
        mixed_flush(red, 1, hs_partials + b * stride + p.k, 1);
    }
}

// h_s[k] = s0^2 * sum over (n, chunk) in order of hs_partials[. * (k + 1) + k];
// h_s0[0] = the same sum of the z^2 hy partials. One block of 256 threads (grid 1): thread j
// (j <= k) computes output j.
extern "C" __global__ void mixed_curv_finalize(const double* __restrict__ hs_partials,
                                               const float* __restrict__ s0,
                                               float* __restrict__ hs, float* __restrict__ hs0,
                                               MixedParams p) {
    const double a = (double)s0[0];
    const int64_t stride = (int64_t)p.k + 1, blocks = p.n * p.chunks;
    for (int64_t j = threadIdx.x; j <= p.k; j += blockDim.x) {
        double acc = 0.0;
        for (int64_t b = 0; b < blocks; ++b) acc += hs_partials[b * stride + j];
        if (j < p.k) {
            hs[j] = (float)(acc * (a * a));
        } else {
            hs0[0] = (float)acc;
        }
    }
}
