// Channel concat / split and the factorized-reduce shift, NCHW, f32. 1-D grid-stride loops.
#include "bayesnas_common.cuh"

// COPY_INTO_CHANNELS (concat piece): big[n, c_off + c, :] = block[n, c, :] for c < c_src.
// COPY_FROM_CHANNELS (split piece):  block[n, c, :] = big[n, c_off + c, :].
// Arguments: (block, big) for COPY_INTO_CHANNELS as (src, dst); for COPY_FROM_CHANNELS the
// kernel reads `src` as the big [n, c_dst, hw] tensor and writes `dst` as the [n, c_src, hw]
// block.
// Grid-stride over n * c_src * hw.
extern "C" __global__ void copy_channels(const float* __restrict__ src, float* __restrict__ dst,
                                         CopyParams p) {
    BZ_GRID_STRIDE(i, p.n * p.c_src * p.hw) {
        const int64_t q = i % p.hw, c = (i / p.hw) % p.c_src, n = i / (p.hw * p.c_src);
        const int64_t big = (n * p.c_dst + p.c_off + c) * p.hw + q;
        if (p.direction == COPY_INTO_CHANNELS) {
            dst[big] = src[i];
        } else {
            dst[i] = src[big];
        }
    }
}

// y[n, c, i, j] = x[n, c, i + 1, j + 1]; y is [n, c, h - 1, w - 1]. Grid-stride over y.
extern "C" __global__ void shift_crop(const float* __restrict__ x, float* __restrict__ y,
                                      ShiftParams p) {
    const int64_t ho = p.h - 1, wo = p.w - 1;
    BZ_GRID_STRIDE(i, p.n * p.c * ho * wo) {
        const int64_t j = i % wo, r = (i / wo) % ho, pl = i / (wo * ho);
        y[i] = x[(pl * p.h + r + 1) * p.w + j + 1];
    }
}

// Adjoint: dx[n, c, i, j] = dy[n, c, i - 1, j - 1] for i, j >= 1, else 0 (dx is
// [n, c, h, w], dy [n, c, h - 1, w - 1]). Grid-stride over dx.
extern "C" __global__ void shift_crop_bwd(const float* __restrict__ dy, float* __restrict__ dx,
                                          ShiftParams p) {
    const int64_t ho = p.h - 1, wo = p.w - 1;
    BZ_GRID_STRIDE(i, p.n * p.c * p.h * p.w) {
        const int64_t j = i % p.w, r = (i / p.w) % p.h, pl = i / (p.w * p.h);
        dx[i] = (r >= 1 && j >= 1) ? dy[(pl * ho + r - 1) * wo + j - 1] : 0.0f;
    }
}

// y[r, j] = x[r, idx[j]]: x is [n, cols], y [n, m]. Grid-stride over y.
extern "C" __global__ void select_columns(const float* __restrict__ x,
                                          const int64_t* __restrict__ idx,
                                          float* __restrict__ y, ColumnsParams p) {
    BZ_GRID_STRIDE(i, p.n * p.m) {
        const int64_t j = i % p.m, r = i / p.m;
        y[i] = x[r * p.cols + idx[j]];
    }
}

// Adjoint: dx[r, i] = 0 + dy[r, pos[i]] where pos[i] >= 0 (column i was selected), else 0
// (the sum into zeros of the scatter, so -0 becomes +0). dx is [n, cols], dy [n, m].
// Grid-stride over dx.
extern "C" __global__ void select_columns_bwd(const float* __restrict__ dy,
                                              const int64_t* __restrict__ pos,
                                              float* __restrict__ dx, ColumnsParams p) {
    BZ_GRID_STRIDE(i, p.n * p.cols) {
        const int64_t c = i % p.cols, r = i / p.cols;
        const int64_t j = pos[c];
        dx[i] = j >= 0 ? 0.0f + dy[r * p.m + j] : 0.0f;
    }
}
