// Batch norm over [n, c, s] (s = elements per plane) and per-channel maps.
// Reductions: one block of 256 threads per channel (grid c); each thread sums its strided
// share in f64, the block adds the 256 sums in a fixed tree: deterministic.
#include "bayesnas_common.cuh"

// mean, biased var, invstd = 1 / sqrt(var + eps) per channel (two passes over the channel).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_stats(const float* __restrict__ x, float* __restrict__ mean, float* __restrict__ var,
             float* __restrict__ invstd, BnParams p) {
    __shared__ double sh[BZ_BLOCK];
    const int64_t c = blockIdx.x;
    const double m = (double)(p.n * p.s);
    double acc = 0.0;
    for (int64_t n = 0; n < p.n; ++n) {
        const float* xp = x + (n * p.c + c) * p.s;
        for (int64_t i = threadIdx.x; i < p.s; i += BZ_BLOCK) acc += (double)xp[i];
    }
    const double mu = bz_block_sum(acc, sh) / m;
    double sq = 0.0;
    for (int64_t n = 0; n < p.n; ++n) {
        const float* xp = x + (n * p.c + c) * p.s;
        for (int64_t i = threadIdx.x; i < p.s; i += BZ_BLOCK) {
            const double e = (double)xp[i] - mu;
            sq += e * e;
        }
    }
    double v = bz_block_sum(sq, sh) / m;
    if (v < 0.0) v = 0.0;
    if (threadIdx.x == 0) {
        mean[c] = (float)mu;
        var[c] = (float)v;
        invstd[c] = (float)(1.0 / sqrt(v + (double)p.eps));
    }
}

// y = x * scale[c] + shift[c] (shift may be null). 1-D grid-stride over n * c * s.
extern "C" __global__ void channel_affine(const float* __restrict__ x,
                                          const float* __restrict__ scale,
                                          const float* __restrict__ shift,
                                          float* __restrict__ y, BnParams p) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.s) {
        const int64_t c = (i / p.s) % p.c;
        y[i] = shift ? x[i] * scale[c] + shift[c] : x[i] * scale[c];
    }
}

// Training forward output: y = (x - mean[c]) * (invstd[c] * weight[c]) + bias[c]
// (weight, bias may be null: 1 and 0). 1-D grid-stride over n * c * s.
extern "C" __global__ void bn_fwd_apply(const float* __restrict__ x,
                                        const float* __restrict__ mean,
                                        const float* __restrict__ invstd,
                                        const float* __restrict__ weight,
                                        const float* __restrict__ bias,
                                        float* __restrict__ y, BnParams p) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.s) {
        const int64_t c = (i / p.s) % p.c;
        const float a = (float)((double)invstd[c] * (weight ? (double)weight[c] : 1.0));
        y[i] = (x[i] - mean[c]) * a + (bias ? bias[c] : 0.0f);
    }
}

// sum_dy[c] = sum dy, sum_dy_xhat[c] = invstd[c] * sum dy (x - mean[c]) (the affine bias and
// weight gradients). Grid c, block 256.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_bwd_reduce(const float* __restrict__ dy, const float* __restrict__ x,
                  const float* __restrict__ mean, const float* __restrict__ invstd,
                  float* __restrict__ sum_dy, float* __restrict__ sum_dy_xhat, BnParams p) {
    __shared__ double sh[BZ_BLOCK];
    const int64_t c = blockIdx.x;
    const float mu = mean[c];
    double a = 0.0, b = 0.0;
    for (int64_t n = 0; n < p.n; ++n) {
        const int64_t off = (n * p.c + c) * p.s;
        for (int64_t i = threadIdx.x; i < p.s; i += BZ_BLOCK) {
            const float d = dy[off + i];
            a += (double)d;
            b += (double)(d * (x[off + i] - mu));
        }
    }
    const double sa = bz_block_sum(a, sh);
    const double sb = bz_block_sum(b, sh);
    if (threadIdx.x == 0) {
        sum_dy[c] = (float)sa;
        sum_dy_xhat[c] = (float)(sb * (double)invstd[c]);
    }
}

// dx = g dy + k1 (x - mean) + k0 with g = invstd w, k0 = -g sum_dy / m,
// k1 = -g invstd sum_dy_xhat / m, m = n * s (the CPU formula; w = 1 without weight).
// 1-D grid-stride over n * c * s.
extern "C" __global__ void bn_bwd_apply(const float* __restrict__ dy,
                                        const float* __restrict__ x,
                                        const float* __restrict__ mean,
                                        const float* __restrict__ invstd,
                                        const float* __restrict__ weight,
                                        const float* __restrict__ sum_dy,
                                        const float* __restrict__ sum_dy_xhat,
                                        float* __restrict__ dx, BnParams p) {
    const double inv_m = 1.0 / (double)(p.n * p.s);
    BZ_GRID_STRIDE(i, p.n * p.c * p.s) {
        const int64_t c = (i / p.s) % p.c;
        const double is = (double)invstd[c];
        const double gc = is * (weight ? (double)weight[c] : 1.0);
        const float g = (float)gc;
        const float k0 = (float)(-gc * (double)sum_dy[c] * inv_m);
        const float k1 = (float)(-gc * is * (double)sum_dy_xhat[c] * inv_m);
        dx[i] = g * dy[i] + k1 * (x[i] - mean[c]) + k0;
    }
}

// out[c] = sum over n, s of x (or x * y when y is not null), f64. Grid c, block 256.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    channel_sums(const float* __restrict__ x, const float* __restrict__ y,
                 float* __restrict__ out, BnParams p) {
    __shared__ double sh[BZ_BLOCK];
    const int64_t c = blockIdx.x;
    double a = 0.0;
    for (int64_t n = 0; n < p.n; ++n) {
        const int64_t off = (n * p.c + c) * p.s;
        for (int64_t i = threadIdx.x; i < p.s; i += BZ_BLOCK)
            a += y ? (double)x[off + i] * (double)y[off + i] : (double)x[off + i];
    }
    const double t = bz_block_sum(a, sh);
    if (threadIdx.x == 0) out[c] = (float)t;
}
