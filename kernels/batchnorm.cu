// Batch norm over [n, c, s] (s = elements per plane) and per-channel maps.
// Reductions: one block of 256 threads per channel (grid c); each thread sums its strided
// share in f64, the block adds the 256 sums in a fixed tree: deterministic.
#include "bayesnas_common.cuh"

// The running-statistics update of one channel from its f32 batch statistics, the one
// formula of bn_running_update and of the statistics kernels: rm = rm (1 - momentum) +
// momentum mean, rv = rv (1 - momentum) + var_factor var.
__device__ __forceinline__ void bn_running_fold(float* __restrict__ rm, float* __restrict__ rv,
                                                int64_t c, float mean, float var,
                                                float momentum, float var_factor) {
    const float keep = 1.0f - momentum;
    rm[c] = rm[c] * keep + momentum * mean;
    rv[c] = rv[c] * keep + var_factor * var;
}

// mean, biased var, invstd = 1 / sqrt(var + eps) per channel (two passes over the channel);
// with rm/rv not null, also the running statistics (bn_running_fold).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_stats(const float* __restrict__ x, float* __restrict__ mean, float* __restrict__ var,
             float* __restrict__ invstd, float* __restrict__ rm, float* __restrict__ rv,
             BnParams p) {
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
        if (rm) bn_running_fold(rm, rv, c, (float)mu, (float)v, p.momentum, p.var_factor);
    }
}

// dy masked by the rectified output y of a batch norm fused with ReLU (ymask not null):
// dy[i] where ymask[i] > 0, else 0 (the CPU's binary ReluMask; y > 0 exactly where the
// pre-ReLU value is). Without ymask, dy[i].
BZ_INLINE float bn_relu_masked(const float* __restrict__ dy, const float* __restrict__ ymask,
                               int64_t i) {
    return ymask ? (ymask[i] > 0.0f ? dy[i] : 0.0f) : dy[i];
}

// The curvature rule of batch norm (an affine map per channel): hx = hy * (g * g) with
// g = weight[c] * invstd[c] (invstd[c] when weight is null), each product rounded to f32 as
// the CPU's binary Mul, Square and channel_affine (products only: nothing to contract into
// a fused multiply-add); hy masked by ymask (bn_relu_masked). 1-D grid-stride over n * c * s.
BZ_INLINE void bn_curvature_body(const float* __restrict__ hy, const float* __restrict__ ymask,
                                 const float* __restrict__ invstd,
                                 const float* __restrict__ weight, float* __restrict__ hx,
                                 const BnParams& p) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.s) {
        const int64_t c = (i / p.s) % p.c;
        const float g = weight ? weight[c] * invstd[c] : invstd[c];
        hx[i] = bn_relu_masked(hy, ymask, i) * (g * g);
    }
}

extern "C" __global__ void bn_curvature_input(const float* __restrict__ hy,
                                              const float* __restrict__ invstd,
                                              const float* __restrict__ weight,
                                              float* __restrict__ hx, BnParams p) {
    bn_curvature_body(hy, nullptr, invstd, weight, hx, p);
}

// bn_curvature_input of a batch norm fused with ReLU: hy masked by its rectified output y.
extern "C" __global__ void bn_relu_curvature_input(const float* __restrict__ hy,
                                                   const float* __restrict__ y,
                                                   const float* __restrict__ invstd,
                                                   const float* __restrict__ weight,
                                                   float* __restrict__ hx, BnParams p) {
    bn_curvature_body(hy, y, invstd, weight, hx, p);
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
// (weight, bias may be null: 1 and 0), rectified (max(y, 0), the CPU's ReLU) when relu.
// 1-D grid-stride over n * c * s.
BZ_INLINE void bn_fwd_apply_body(const float* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ invstd,
                                 const float* __restrict__ weight,
                                 const float* __restrict__ bias, float* __restrict__ y,
                                 const BnParams& p, bool relu) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.s) {
        const int64_t c = (i / p.s) % p.c;
        const float a = (float)((double)invstd[c] * (weight ? (double)weight[c] : 1.0));
        const float v = (x[i] - mean[c]) * a + (bias ? bias[c] : 0.0f);
        y[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

extern "C" __global__ void bn_fwd_apply(const float* __restrict__ x,
                                        const float* __restrict__ mean,
                                        const float* __restrict__ invstd,
                                        const float* __restrict__ weight,
                                        const float* __restrict__ bias,
                                        float* __restrict__ y, BnParams p) {
    bn_fwd_apply_body(x, mean, invstd, weight, bias, y, p, false);
}

// bn_fwd_apply followed by ReLU, in the same pass (batch norm fused with ReLU).
extern "C" __global__ void bn_relu_fwd_apply(const float* __restrict__ x,
                                             const float* __restrict__ mean,
                                             const float* __restrict__ invstd,
                                             const float* __restrict__ weight,
                                             const float* __restrict__ bias,
                                             float* __restrict__ y, BnParams p) {
    bn_fwd_apply_body(x, mean, invstd, weight, bias, y, p, true);
}

// sum_dy[c] = sum dy, sum_dy_xhat[c] = invstd[c] * sum dy (x - mean[c]) (the affine bias and
// weight gradients), dy masked by ymask (bn_relu_masked). Grid c, block 256.
BZ_INLINE void bn_bwd_reduce_body(const float* __restrict__ dy, const float* __restrict__ ymask,
                                  const float* __restrict__ x, const float* __restrict__ mean,
                                  const float* __restrict__ invstd, float* __restrict__ sum_dy,
                                  float* __restrict__ sum_dy_xhat, const BnParams& p,
                                  double* sh) {
    const int64_t c = blockIdx.x;
    const float mu = mean[c];
    double a = 0.0, b = 0.0;
    for (int64_t n = 0; n < p.n; ++n) {
        const int64_t off = (n * p.c + c) * p.s;
        for (int64_t i = threadIdx.x; i < p.s; i += BZ_BLOCK) {
            const float d = bn_relu_masked(dy, ymask, off + i);
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

extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_bwd_reduce(const float* __restrict__ dy, const float* __restrict__ x,
                  const float* __restrict__ mean, const float* __restrict__ invstd,
                  float* __restrict__ sum_dy, float* __restrict__ sum_dy_xhat, BnParams p) {
    __shared__ double sh[BZ_BLOCK];
    bn_bwd_reduce_body(dy, nullptr, x, mean, invstd, sum_dy, sum_dy_xhat, p, sh);
}

// bn_bwd_reduce of a batch norm fused with ReLU: dy masked by its rectified output y.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_relu_bwd_reduce(const float* __restrict__ dy, const float* __restrict__ y,
                       const float* __restrict__ x, const float* __restrict__ mean,
                       const float* __restrict__ invstd, float* __restrict__ sum_dy,
                       float* __restrict__ sum_dy_xhat, BnParams p) {
    __shared__ double sh[BZ_BLOCK];
    bn_bwd_reduce_body(dy, y, x, mean, invstd, sum_dy, sum_dy_xhat, p, sh);
}

// dx = g dy + k1 (x - mean) + k0 with g = invstd w, k0 = -g sum_dy / m,
// k1 = -g invstd sum_dy_xhat / m, m = n * s (the CPU formula; w = 1 without weight), dy
// masked by ymask (bn_relu_masked). 1-D grid-stride over n * c * s.
BZ_INLINE void bn_bwd_apply_body(const float* __restrict__ dy, const float* __restrict__ ymask,
                                 const float* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ invstd,
                                 const float* __restrict__ weight,
                                 const float* __restrict__ sum_dy,
                                 const float* __restrict__ sum_dy_xhat, float* __restrict__ dx,
                                 const BnParams& p) {
    const double inv_m = 1.0 / (double)(p.n * p.s);
    BZ_GRID_STRIDE(i, p.n * p.c * p.s) {
        const int64_t c = (i / p.s) % p.c;
        const double is = (double)invstd[c];
        const double gc = is * (weight ? (double)weight[c] : 1.0);
        const float g = (float)gc;
        const float k0 = (float)(-gc * (double)sum_dy[c] * inv_m);
        const float k1 = (float)(-gc * is * (double)sum_dy_xhat[c] * inv_m);
        dx[i] = g * bn_relu_masked(dy, ymask, i) + k1 * (x[i] - mean[c]) + k0;
    }
}

extern "C" __global__ void bn_bwd_apply(const float* __restrict__ dy,
                                        const float* __restrict__ x,
                                        const float* __restrict__ mean,
                                        const float* __restrict__ invstd,
                                        const float* __restrict__ weight,
                                        const float* __restrict__ sum_dy,
                                        const float* __restrict__ sum_dy_xhat,
                                        float* __restrict__ dx, BnParams p) {
    bn_bwd_apply_body(dy, nullptr, x, mean, invstd, weight, sum_dy, sum_dy_xhat, dx, p);
}

// bn_bwd_apply of a batch norm fused with ReLU: dy masked by its rectified output y.
extern "C" __global__ void bn_relu_bwd_apply(const float* __restrict__ dy,
                                             const float* __restrict__ y,
                                             const float* __restrict__ x,
                                             const float* __restrict__ mean,
                                             const float* __restrict__ invstd,
                                             const float* __restrict__ weight,
                                             const float* __restrict__ sum_dy,
                                             const float* __restrict__ sum_dy_xhat,
                                             float* __restrict__ dx, BnParams p) {
    bn_bwd_apply_body(dy, y, x, mean, invstd, weight, sum_dy, sum_dy_xhat, dx, p);
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

// ---------------------------------------------------------------------------------------
// Split reductions: grid (c, p.splits), block 256. Block (c, j) covers samples
// [j * n / splits, (j + 1) * n / splits) of channel c and writes its f64 sums to
// partials[(c * splits + j) * W + v] (W values per block, see each kernel); the finalize
// kernels (grid-stride over c) add them in j order. Deterministic for a given splits, which
// must be chosen from the shape only. Use these when c is small compared with the GPU.
// ---------------------------------------------------------------------------------------

// Two f64 sums over the block's share: u = x - shift (s0 += u, s1 += u * u) or, with dy,
// (s0 += dy, s1 += dy * (x - shift)), dy masked by ymask (bn_relu_masked). Thread sums are combined in thread order.
BZ_INLINE void bn_split_sums(const float* __restrict__ x, const float* __restrict__ dy,
                             const float* __restrict__ ymask, double shift, const BnParams& p,
                             double* out, double* red) {
    const int64_t c = blockIdx.x, j = blockIdx.y, sp = p.splits;
    const int64_t n0 = j * p.n / sp, n1 = (j + 1) * p.n / sp;
    double a = 0.0, b = 0.0;
    for (int64_t n = n0; n < n1; ++n) {
        const int64_t off = (n * p.c + c) * p.s;
        for (int64_t i = threadIdx.x; i < p.s; i += BZ_BLOCK) {
            const double u = (double)x[off + i] - shift;
            if (dy) {
                const double d = (double)bn_relu_masked(dy, ymask, off + i);
                a += d;
                b += d * u;
            } else {
                a += u;
                b += u * u;
            }
        }
    }
    red[2 * threadIdx.x] = a;
    red[2 * threadIdx.x + 1] = b;
    __syncthreads();
    if (threadIdx.x < 2) {
        double tot = 0.0;
        for (int t = 0; t < BZ_BLOCK; ++t) tot += red[2 * t + threadIdx.x];
        out[threadIdx.x] = tot;
    }
}

// Statistics, pass-free form: W = 2 sums of u = x - x[0, c, 0] and u^2 (the shift keeps the
// f64 single-pass variance accurate).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_stats_partial(const float* __restrict__ x, double* __restrict__ partials, BnParams p) {
    __shared__ double red[2 * BZ_BLOCK];
    const int64_t c = blockIdx.x;
    const double shift = (double)x[c * p.s];
    bn_split_sums(x, nullptr, nullptr, shift, p, partials + (c * p.splits + blockIdx.y) * 2,
                  red);
}

// mean = K + S0 / m, var = max(S1 / m - (S0 / m)^2, 0) (biased), invstd = 1/sqrt(var + eps),
// K = x[0, c, 0], m = n * s; with rm/rv not null, also the running statistics
// (bn_running_fold). Grid-stride over c.
extern "C" __global__ void bn_stats_finalize(const float* __restrict__ x,
                                             const double* __restrict__ partials,
                                             float* __restrict__ mean, float* __restrict__ var,
                                             float* __restrict__ invstd, float* __restrict__ rm,
                                             float* __restrict__ rv, BnParams p) {
    const double m = (double)(p.n * p.s);
    BZ_GRID_STRIDE(c, p.c) {
        double s0 = 0.0, s1 = 0.0;
        for (int64_t j = 0; j < p.splits; ++j) {
            s0 += partials[(c * p.splits + j) * 2];
            s1 += partials[(c * p.splits + j) * 2 + 1];
        }
        const double d = s0 / m;
        double v = s1 / m - d * d;
        if (v < 0.0) v = 0.0;
        const float mf = (float)((double)x[c * p.s] + d);
        mean[c] = mf;
        var[c] = (float)v;
        invstd[c] = (float)(1.0 / sqrt(v + (double)p.eps));
        if (rm) bn_running_fold(rm, rv, c, mf, (float)v, p.momentum, p.var_factor);
    }
}

// Backward sums: W = 2, sum dy and sum dy (x - mean[c]).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_bwd_partial(const float* __restrict__ dy, const float* __restrict__ x,
                   const float* __restrict__ mean, double* __restrict__ partials, BnParams p) {
    __shared__ double red[2 * BZ_BLOCK];
    const int64_t c = blockIdx.x;
    bn_split_sums(x, dy, nullptr, (double)mean[c], p,
                  partials + (c * p.splits + blockIdx.y) * 2, red);
}

// bn_bwd_partial of a batch norm fused with ReLU: dy masked by its rectified output y.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    bn_relu_bwd_partial(const float* __restrict__ dy, const float* __restrict__ y,
                        const float* __restrict__ x, const float* __restrict__ mean,
                        double* __restrict__ partials, BnParams p) {
    __shared__ double red[2 * BZ_BLOCK];
    const int64_t c = blockIdx.x;
    bn_split_sums(x, dy, y, (double)mean[c], p, partials + (c * p.splits + blockIdx.y) * 2,
                  red);
}

// sum_dy[c] = S0, sum_dy_xhat[c] = S1 * invstd[c] (what bn_bwd_reduce writes). Grid-stride
// over c.
extern "C" __global__ void bn_bwd_finalize(const double* __restrict__ partials,
                                           const float* __restrict__ invstd,
                                           float* __restrict__ sum_dy,
                                           float* __restrict__ sum_dy_xhat, BnParams p) {
    BZ_GRID_STRIDE(c, p.c) {
        double s0 = 0.0, s1 = 0.0;
        for (int64_t j = 0; j < p.splits; ++j) {
            s0 += partials[(c * p.splits + j) * 2];
            s1 += partials[(c * p.splits + j) * 2 + 1];
        }
        sum_dy[c] = (float)s0;
        sum_dy_xhat[c] = (float)(s1 * (double)invstd[c]);
    }
}

// channel_sums split form: W = 1, sum of x (or x * y). Grid (c, splits), block 256.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    channel_sums_partial(const float* __restrict__ x, const float* __restrict__ y,
                         double* __restrict__ partials, BnParams p) {
    __shared__ double sh[BZ_BLOCK];
    const int64_t c = blockIdx.x, j = blockIdx.y, sp = p.splits;
    const int64_t n0 = j * p.n / sp, n1 = (j + 1) * p.n / sp;
    double a = 0.0;
    for (int64_t n = n0; n < n1; ++n) {
        const int64_t off = (n * p.c + c) * p.s;
        for (int64_t i = threadIdx.x; i < p.s; i += BZ_BLOCK)
            a += y ? (double)x[off + i] * (double)y[off + i] : (double)x[off + i];
    }
    const double t = bz_block_sum(a, sh);
    if (threadIdx.x == 0) partials[c * sp + j] = t;
}

// out[c] = sum over j in order of partials[c * splits + j]. Grid-stride over c.
extern "C" __global__ void channel_sums_finalize(const double* __restrict__ partials,
                                                 float* __restrict__ out, BnParams p) {
    BZ_GRID_STRIDE(c, p.c) {
        double a = 0.0;
        for (int64_t j = 0; j < p.splits; ++j) a += partials[c * p.splits + j];
        out[c] = (float)a;
    }
}

// Running statistics update (PyTorch): rm = rm (1 - momentum) + momentum mean and
// rv = rv (1 - momentum) + var_factor var (var_factor = momentum m / (m - 1): the unbiased
// variance), in f32 as the CPU. Grid-stride over c.
extern "C" __global__ void bn_running_update(float* __restrict__ rm, float* __restrict__ rv,
                                             const float* __restrict__ mean,
                                             const float* __restrict__ var,
                                             BnRunningParams p) {
    BZ_GRID_STRIDE(c, p.c) bn_running_fold(rm, rv, c, mean[c], var[c], p.momentum, p.var_factor);
}

// Evaluation-mode constants per channel (f64 math as the CPU): invstd = 1 / sqrt(rv + eps),
// slope = invstd * weight, shift = bias - rm * slope (weight 1, bias 0 when the pointer is
// null). Uses p.c and p.eps. Grid-stride over c.
extern "C" __global__ void bn_eval_constants(const float* __restrict__ rm,
                                             const float* __restrict__ rv,
                                             const float* __restrict__ weight,
                                             const float* __restrict__ bias,
                                             float* __restrict__ slope, float* __restrict__ shift,
                                             float* __restrict__ invstd, BnParams p) {
    BZ_GRID_STRIDE(c, p.c) {
        const double is = 1.0 / sqrt((double)rv[c] + (double)p.eps);
        const double a = is * (weight ? (double)weight[c] : 1.0);
        invstd[c] = (float)is;
        slope[c] = (float)a;
        shift[c] = (float)((bias ? (double)bias[c] : 0.0) - (double)rm[c] * a);
    }
}
