// Direct convolution for any geometry (groups, stride, padding, dilation), NCHW, f32, and the
// im2col / col2im pair for routing groups == 1 convolutions to cuBLAS. Simple and correct,
// not fast. Weight [c_out, c_in / groups, k, k].
#include "bayesnas_common.cuh"

// y[n, co, oh, ow]: one thread per output, 1-D grid-stride over n * c_out * ho * wo.
extern "C" __global__ void conv_fwd_direct(const float* __restrict__ x,
                                           const float* __restrict__ w,
                                           float* __restrict__ y, ConvParams p) {
    const int64_t cig = p.c_in / p.groups, cog = p.c_out / p.groups;
    const int64_t total = p.n * p.c_out * p.ho * p.wo;
    BZ_GRID_STRIDE(i, total) {
        const int64_t ow = i % p.wo, oh = (i / p.wo) % p.ho;
        const int64_t co = (i / (p.wo * p.ho)) % p.c_out, n = i / (p.wo * p.ho * p.c_out);
        const int64_t g = co / cog;
        float acc = 0.0f;
        for (int64_t ci = 0; ci < cig; ++ci) {
            const float* xp = x + (n * p.c_in + g * cig + ci) * p.h * p.w;
            const float* wp = w + (co * cig + ci) * p.k * p.k;
            for (int ki = 0; ki < p.k; ++ki) {
                const int64_t ih = oh * p.stride - p.padding + (int64_t)ki * p.dilation;
                if (ih < 0 || ih >= p.h) continue;
                for (int kj = 0; kj < p.k; ++kj) {
                    const int64_t iw = ow * p.stride - p.padding + (int64_t)kj * p.dilation;
                    if (iw < 0 || iw >= p.w) continue;
                    acc += xp[ih * p.w + iw] * wp[ki * p.k + kj];
                }
            }
        }
        y[i] = acc;
    }
}

// dx[n, ci, ih, iw] (gather): one thread per input element, 1-D grid-stride over
// n * c_in * h * w. Curvature: pass the squared weight.
extern "C" __global__ void conv_bwd_input_direct(const float* __restrict__ dy,
                                                 const float* __restrict__ w,
                                                 float* __restrict__ dx, ConvParams p) {
    const int64_t cig = p.c_in / p.groups, cog = p.c_out / p.groups;
    const int64_t total = p.n * p.c_in * p.h * p.w;
    BZ_GRID_STRIDE(i, total) {
        const int64_t iw = i % p.w, ih = (i / p.w) % p.h;
        const int64_t ci = (i / (p.w * p.h)) % p.c_in, n = i / (p.w * p.h * p.c_in);
        const int64_t g = ci / cig, cl = ci - g * cig;
        float acc = 0.0f;
        for (int64_t j = 0; j < cog; ++j) {
            const int64_t co = g * cog + j;
            const float* gp = dy + (n * p.c_out + co) * p.ho * p.wo;
            const float* wp = w + (co * cig + cl) * p.k * p.k;
            for (int ki = 0; ki < p.k; ++ki) {
                const int64_t tr = ih + p.padding - (int64_t)ki * p.dilation;
                if (tr < 0 || tr % p.stride != 0 || tr / p.stride >= p.ho) continue;
                const int64_t oh = tr / p.stride;
                for (int kj = 0; kj < p.k; ++kj) {
                    const int64_t tc = iw + p.padding - (int64_t)kj * p.dilation;
                    if (tc < 0 || tc % p.stride != 0 || tc / p.stride >= p.wo) continue;
                    acc += gp[oh * p.wo + tc / p.stride] * wp[ki * p.k + kj];
                }
            }
        }
        dx[i] = acc;
    }
}

// dw[co, ci, ki, kj] = sum over n, oh, ow of x(^2 with square_x) * dy. One block (256
// threads) per weight element, blocks grid-stride over c_out * (c_in / groups) * k * k (any
// grid); each thread sums its strided share in f32, the block adds them in f64 (fixed tree).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    conv_bwd_weight_direct(const float* __restrict__ x, const float* __restrict__ dy,
                           float* __restrict__ dw, ConvParams p) {
    __shared__ double sh[BZ_BLOCK];
    const int64_t cig = p.c_in / p.groups, cog = p.c_out / p.groups;
    const int64_t kk = (int64_t)p.k * p.k, nw = p.c_out * cig * kk;
    const int64_t per = p.ho * p.wo, total = p.n * per;
    for (int64_t wi = blockIdx.x; wi < nw; wi += gridDim.x) {
        const int64_t kj = wi % p.k, ki = (wi / p.k) % p.k;
        const int64_t cl = (wi / kk) % cig, co = wi / (kk * cig);
        const int64_t ci = (co / cog) * cig + cl;
        float acc = 0.0f;
        for (int64_t j = threadIdx.x; j < total; j += BZ_BLOCK) {
            const int64_t n = j / per, o = j - n * per;
            const int64_t oh = o / p.wo, ow = o - oh * p.wo;
            const int64_t ih = oh * p.stride - p.padding + ki * p.dilation;
            const int64_t iw = ow * p.stride - p.padding + kj * p.dilation;
            if (ih < 0 || ih >= p.h || iw < 0 || iw >= p.w) continue;
            float v = x[((n * p.c_in + ci) * p.h + ih) * p.w + iw];
            if (p.square_x) v *= v;
            acc += v * dy[(n * p.c_out + co) * per + o];
        }
        const double tot = bz_block_sum((double)acc, sh);
        if (threadIdx.x == 0) dw[wi] = (float)tot;
    }
}

// col[n][row][oh * wo + ow] with row = ci * k * k + ki * k + kj (ci over all c_in), the
// patch element x[n, ci, oh*s - p + ki*d, ow*s - p + kj*d] or 0 in the padding (x^2 with
// square_x). Shape [n, c_in * k * k, ho * wo]: per sample the B operand of
// y[n] = W[c_out, c_in k k] x col[n] (groups == 1; for groups > 1 group g owns rows
// [g * (c_in/groups) k k, (g + 1) * (c_in/groups) k k)). 1-D grid-stride over all of col.
extern "C" __global__ void im2col(const float* __restrict__ x, float* __restrict__ col,
                                  ConvParams p) {
    const int64_t kk = (int64_t)p.k * p.k, per = p.ho * p.wo;
    const int64_t total = p.n * p.c_in * kk * per;
    BZ_GRID_STRIDE(i, total) {
        const int64_t o = i % per, row = (i / per) % (p.c_in * kk), n = i / (per * p.c_in * kk);
        const int64_t ci = row / kk, ki = (row % kk) / p.k, kj = row % p.k;
        const int64_t oh = o / p.wo, ow = o % p.wo;
        const int64_t ih = oh * p.stride - p.padding + ki * p.dilation;
        const int64_t iw = ow * p.stride - p.padding + kj * p.dilation;
        float v = 0.0f;
        if (ih >= 0 && ih < p.h && iw >= 0 && iw < p.w) {
            v = x[((n * p.c_in + ci) * p.h + ih) * p.w + iw];
            if (p.square_x) v *= v;
        }
        col[i] = v;
    }
}

// Adjoint of im2col (gather, deterministic): dx[n, ci, ih, iw] = sum over (ki, kj) in
// row-major order whose output position is exact and in range of col[n][ci k k + ki k + kj][o].
// 1-D grid-stride over n * c_in * h * w.
extern "C" __global__ void col2im(const float* __restrict__ col, float* __restrict__ dx,
                                  ConvParams p) {
    const int64_t kk = (int64_t)p.k * p.k, per = p.ho * p.wo;
    const int64_t total = p.n * p.c_in * p.h * p.w;
    BZ_GRID_STRIDE(i, total) {
        const int64_t iw = i % p.w, ih = (i / p.w) % p.h;
        const int64_t ci = (i / (p.w * p.h)) % p.c_in, n = i / (p.w * p.h * p.c_in);
        const float* cp = col + (n * p.c_in + ci) * kk * per;
        float acc = 0.0f;
        for (int ki = 0; ki < p.k; ++ki) {
            const int64_t tr = ih + p.padding - (int64_t)ki * p.dilation;
            if (tr < 0 || tr % p.stride != 0 || tr / p.stride >= p.ho) continue;
            const int64_t oh = tr / p.stride;
            for (int kj = 0; kj < p.k; ++kj) {
                const int64_t tc = iw + p.padding - (int64_t)kj * p.dilation;
                if (tc < 0 || tc % p.stride != 0 || tc / p.stride >= p.wo) continue;
                acc += cp[(ki * p.k + kj) * per + oh * p.wo + tc / p.stride];
            }
        }
        dx[i] = acc;
    }
}
