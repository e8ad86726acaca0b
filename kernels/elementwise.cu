// Elementwise maps and the deterministic dot/sum partial reduction.
#include "bayesnas_common.cuh"

// y = op(x): EW_UNARY_RELU max(x, 0) (NaN -> 0 as f32::max), EW_UNARY_SQUARE x^2,
// EW_UNARY_SCALE alpha * x.
extern "C" __global__ void ew_unary(const float* __restrict__ x, float* __restrict__ y,
                                    EwParams p) {
    BZ_GRID_STRIDE(i, p.n) {
        float v = x[i];
        float r;
        if (p.op == EW_UNARY_RELU) {
            r = v > 0.0f ? v : 0.0f;
        } else if (p.op == EW_UNARY_SQUARE) {
            r = v * v;
        } else {
            r = v * p.alpha;
        }
        y[i] = r;
    }
}

// y = a op b: EW_BINARY_ADD a + b, EW_BINARY_SUB a - b, EW_BINARY_MUL a * b,
// EW_BINARY_RELU_MASK b * 1[a > 0].
extern "C" __global__ void ew_binary(const float* __restrict__ a, const float* __restrict__ b,
                                     float* __restrict__ y, EwParams p) {
    BZ_GRID_STRIDE(i, p.n) {
        float u = a[i], v = b[i];
        float r;
        switch (p.op) {
            case EW_BINARY_ADD: r = u + v; break;
            case EW_BINARY_SUB: r = u - v; break;
            case EW_BINARY_MUL: r = u * v; break;
            default: r = u > 0.0f ? v : 0.0f; break;
        }
        y[i] = r;
    }
}

// y += alpha * x.
extern "C" __global__ void ew_axpy(const float* __restrict__ x, float* __restrict__ y,
                                   EwParams p) {
    BZ_GRID_STRIDE(i, p.n) { y[i] += p.alpha * x[i]; }
}

// Block `blk` of `blocks` (each of blockDim.x threads): the f64 sum over its grid-stride
// share of a[i] * b[i] (of a[i] when b is null), combined by the block's fixed tree. The one
// body of reduce_dot_partial and reduce_sumsq_multi.
BZ_INLINE double dot_block_sum(const float* __restrict__ a, const float* __restrict__ b,
                               int64_t n, int64_t blk, int64_t blocks, double* sh) {
    double acc = 0.0;
    const int64_t step = (int64_t)blockDim.x * blocks;
    const int64_t i0 = blk * blockDim.x + threadIdx.x;
    if (b) {
        for (int64_t i = i0; i < n; i += step) acc += (double)a[i] * (double)b[i];
    } else {
        for (int64_t i = i0; i < n; i += step) acc += (double)a[i];
    }
    return bz_block_sum(acc, sh);
}

// Sums of squares of several tensors in one launch (the gradient norms): block (b, t) is
// block b of reduce_dot_partial(xs[t], xs[t]) launched with table[3t + 1] blocks (the same
// dot_block_sum), writing partials[table[3t + 2] + b]; blocks past a tensor's count return
// at once (the whole block, before any barrier).
extern "C" __global__ void reduce_sumsq_multi(const float* const* __restrict__ xs,
                                              const int64_t* __restrict__ table,
                                              double* __restrict__ partials,
                                              SumsqMultiParams p) {
    __shared__ double sh[BZ_BLOCK];
    const int64_t t = blockIdx.y;
    const int64_t n = table[3 * t], blocks = table[3 * t + 1], off = table[3 * t + 2];
    if ((int64_t)blockIdx.x >= blocks) return;
    const double tot = dot_block_sum(xs[t], xs[t], n, blockIdx.x, blocks, sh);
    if (threadIdx.x == 0) partials[off + blockIdx.x] = tot;
}

// y += xs[0] + ... + xs[k - 1], each added to the running value in order (the values of k
// ew_axpy launches with alpha 1: 1 * x is exact). Grid-stride over n.
extern "C" __global__ void ew_add_into(float* __restrict__ y, AddIntoParams p) {
    BZ_GRID_STRIDE(i, p.n) {
        float a = y[i];
        for (int t = 0; t < p.k; ++t) a += p.xs[t][i];
        y[i] = a;
    }
}

// y[i] = x[i] * scale[i / inner] (scale: one value per sample, on the device).
extern "C" __global__ void scale_samples(const float* __restrict__ x,
                                         const float* __restrict__ scale,
                                         float* __restrict__ y, EwParams p) {
    BZ_GRID_STRIDE(i, p.n) { y[i] = x[i] * scale[i / p.inner]; }
}

// y[i] = alpha.
extern "C" __global__ void fill(float* __restrict__ y, EwParams p) {
    BZ_GRID_STRIDE(i, p.n) { y[i] = p.alpha; }
}

// partials[blockIdx.x] = sum over this block's grid-stride share of a[i] (or a[i] * b[i]),
// in f64. Launch with exactly gridDim.x == p.blocks and blockDim.x == 256; the host adds the
// p.blocks partials in index order. The result depends only on (n, blocks): deterministic.
extern "C" __global__ void reduce_dot_partial(const float* __restrict__ a,
                                              const float* __restrict__ b,
                                              double* __restrict__ partials, ReduceParams p) {
    __shared__ double sh[BZ_BLOCK];
    const double tot = dot_block_sum(a, b, p.n, blockIdx.x, gridDim.x, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = tot;
}

// y_t += alpha x_t for several tensors in one launch: element i of the concatenation is
// element i - offsets[t] of tensor t (offsets sorted, binary search), the same per-element
// arithmetic as ew_axpy. Grid-stride over total.
extern "C" __global__ void ew_axpy_multi(const float* const* __restrict__ xs,
                                         float* const* __restrict__ ys,
                                         const int64_t* __restrict__ offsets,
                                         AxpyMultiParams p) {
    BZ_GRID_STRIDE(i, p.total) {
        int64_t lo = 0, hi = p.tensors - 1;
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
        }
        const int64_t j = i - offsets[lo];
        ys[lo][j] += p.alpha * xs[lo][j];
    }
}
