// Max / average pooling over square windows and global average pooling, NCHW, f32.
// All backward kernels are gathers (one thread per input element, fixed order): no atomics.
#include "bayesnas_common.cuh"

// Window rows [r0, r1) of output row o clipped to the image [0, size).
BZ_INLINE void pool_clip(int64_t o, const PoolParams& p, int64_t size, int64_t& r0,
                         int64_t& r1) {
    const int64_t a = o * p.stride - p.padding;
    r0 = a < 0 ? 0 : a;
    r1 = a + p.k < size ? a + p.k : size;
}

// Outputs o whose window [o s - pad, o s - pad + k) covers input index i: [lo, hi].
BZ_INLINE void pool_cover(int64_t i, const PoolParams& p, int64_t outs, int64_t& lo,
                          int64_t& hi) {
    lo = bz_floor_div(i + p.padding - p.k + p.stride, p.stride);  // ceil((i + pad - k + 1) / s)
    if (lo < 0) lo = 0;
    hi = bz_floor_div(i + p.padding, p.stride);
    if (hi > outs - 1) hi = outs - 1;
}

// y = window max, argmax = in-plane offset ih * w + iw (as f32) of the first maximum in
// row-major order; padding never wins; a NaN always wins (so the last NaN of the window).
// 1-D grid-stride over n * c * ho * wo.
extern "C" __global__ void maxpool_fwd(const float* __restrict__ x, float* __restrict__ y,
                                       float* __restrict__ argmax, PoolParams p) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.ho * p.wo) {
        const int64_t ow = i % p.wo, oh = (i / p.wo) % p.ho, pl = i / (p.wo * p.ho);
        const float* xp = x + pl * p.h * p.w;
        int64_t r0, r1, c0, c1;
        pool_clip(oh, p, p.h, r0, r1);
        pool_clip(ow, p, p.w, c0, c1);
        float best = -INFINITY;
        int64_t arg = r0 * p.w + c0;
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) {
                const float v = xp[r * p.w + c];
                if (v > best || bz_isnan(v)) {
                    best = v;
                    arg = r * p.w + c;
                }
            }
        y[i] = best;
        argmax[i] = (float)arg;
    }
}

// dx[ih, iw] = sum, over the outputs whose window covers (ih, iw) in row-major output order,
// of dy[o] where argmax[o] == ih * w + iw (gather form of the scatter in output order; an
// offset outside the plane is simply never matched). 1-D grid-stride over n * c * h * w.
extern "C" __global__ void maxpool_bwd(const float* __restrict__ argmax,
                                       const float* __restrict__ dy, float* __restrict__ dx,
                                       PoolParams p) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.h * p.w) {
        const int64_t iw = i % p.w, ih = (i / p.w) % p.h, pl = i / (p.w * p.h);
        const float me = (float)(ih * p.w + iw);
        const float* ap = argmax + pl * p.ho * p.wo;
        const float* gp = dy + pl * p.ho * p.wo;
        int64_t oh0, oh1, ow0, ow1;
        pool_cover(ih, p, p.ho, oh0, oh1);
        pool_cover(iw, p, p.wo, ow0, ow1);
        float acc = 0.0f;
        for (int64_t oh = oh0; oh <= oh1; ++oh)
            for (int64_t ow = ow0; ow <= ow1; ++ow) {
                const int64_t o = oh * p.wo + ow;
                if (ap[o] == me) acc += gp[o];
            }
        dx[i] = acc;
    }
}

// y = mean over the window, padding excluded from the count. Grid-stride over n*c*ho*wo.
extern "C" __global__ void avgpool_fwd(const float* __restrict__ x, float* __restrict__ y,
                                       PoolParams p) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.ho * p.wo) {
        const int64_t ow = i % p.wo, oh = (i / p.wo) % p.ho, pl = i / (p.wo * p.ho);
        const float* xp = x + pl * p.h * p.w;
        int64_t r0, r1, c0, c1;
        pool_clip(oh, p, p.h, r0, r1);
        pool_clip(ow, p, p.w, c0, c1);
        float acc = 0.0f;
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t c = c0; c < c1; ++c) acc += xp[r * p.w + c];
        y[i] = acc * (float)(1.0 / (double)((r1 - r0) * (c1 - c0)));
    }
}

// dx[ih, iw] = sum over covering windows o of dy[o] / count(o)^power (power 1 or 2).
// Grid-stride over n * c * h * w.
extern "C" __global__ void avgpool_bwd(const float* __restrict__ dy, float* __restrict__ dx,
                                       PoolParams p) {
    BZ_GRID_STRIDE(i, p.n * p.c * p.h * p.w) {
        const int64_t iw = i % p.w, ih = (i / p.w) % p.h, pl = i / (p.w * p.h);
        const float* gp = dy + pl * p.ho * p.wo;
        int64_t oh0, oh1, ow0, ow1;
        pool_cover(ih, p, p.ho, oh0, oh1);
        pool_cover(iw, p, p.wo, ow0, ow1);
        float acc = 0.0f;
        for (int64_t oh = oh0; oh <= oh1; ++oh) {
            int64_t r0, r1;
            pool_clip(oh, p, p.h, r0, r1);
            for (int64_t ow = ow0; ow <= ow1; ++ow) {
                int64_t c0, c1;
                pool_clip(ow, p, p.w, c0, c1);
                const double inv = 1.0 / (double)((r1 - r0) * (c1 - c0));
                const float f = (float)(p.power == POOL_CURVATURE ? inv * inv : inv);
                acc += gp[oh * p.wo + ow] * f;
            }
        }
        dx[i] = acc;
    }
}

// y[n, c] = mean of plane (n, c): one block (256 threads) per plane, blocks grid-stride over
// the n * c planes (any grid); f64 block sum (fixed tree).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    gap_fwd(const float* __restrict__ x, float* __restrict__ y, PoolParams p) {
    __shared__ double sh[BZ_BLOCK];
    const int64_t hw = p.h * p.w;
    for (int64_t pl = blockIdx.x; pl < p.n * p.c; pl += gridDim.x) {
        const float* xp = x + pl * hw;
        double acc = 0.0;
        for (int64_t i = threadIdx.x; i < hw; i += BZ_BLOCK) acc += (double)xp[i];
        const double t = bz_block_sum(acc, sh);
        if (threadIdx.x == 0) y[pl] = (float)(t / (double)hw);
    }
}

// dx[n, c, :, :] = dy[n, c] / (h w)^power. Grid-stride over n * c * h * w.
extern "C" __global__ void gap_bwd(const float* __restrict__ dy, float* __restrict__ dx,
                                   PoolParams p) {
    const int64_t hw = p.h * p.w;
    const double inv = 1.0 / (double)hw;
    const double f = p.power == POOL_CURVATURE ? inv * inv : inv;
    BZ_GRID_STRIDE(i, p.n * p.c * hw) { dx[i] = (float)((double)dy[i / hw] * f); }
}

// Geometry-free max-pool backward, exactly the trait's semantics: one thread per plane
// (grid-stride over the n * c planes) zeroes its dx plane, then adds dy[o] at argmax[o] in
// output order (bitwise the CPU order; no atomics: a plane has one owner). Offsets outside
// the plane are skipped and set bad[0] = 1 (host: zero it first; non-zero -> error). Uses
// only n, c, h, w, ho, wo of the params (k, stride, padding are not needed).
extern "C" __global__ void maxpool_bwd_scatter(const float* __restrict__ argmax,
                                               const float* __restrict__ dy,
                                               float* __restrict__ dx,
                                               int32_t* __restrict__ bad, PoolParams p) {
    const int64_t hw = p.h * p.w, per = p.ho * p.wo;
    BZ_GRID_STRIDE(pl, p.n * p.c) {
        float* xp = dx + pl * hw;
        const float* ap = argmax + pl * per;
        const float* gp = dy + pl * per;
        for (int64_t i = 0; i < hw; ++i) xp[i] = 0.0f;
        for (int64_t o = 0; o < per; ++o) {
            const float a = ap[o];
            if (a >= 0.0f && a < (float)hw && a == (float)(int64_t)a) {
                xp[(int64_t)a] += gp[o];
            } else {
                bad[0] = 1;
            }
        }
    }
}
