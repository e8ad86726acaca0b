// Depthwise convolution (groups == channels, one k x k filter per channel), NCHW, f32.
//
// Gather formulations only (no atomics). dw_conv_fwd and dw_conv_bwd_input tile the output
// plane (resp. the input-gradient plane): one block of 256 threads per (tile, channel,
// sample), grid (tiles, c, n) where gridDim.x may be anything >= 1 (blocks loop over tiles).
// The block stages the input window of its tile (with zero padding) in shared memory with
// coalesced row-major loads, keeps the k x k filter in registers and computes 1, 2 or 4
// outputs per thread (adjacent rows in the forward). Templated on (k, stride, dilation) in {3,5} x {1,2} x {1,2}; other geometries
// take a slower global-memory path (same results). See kernels/README.md for the tile rule.
#include "bayesnas_common.cuh"

// Shared tile capacity in floats (the largest templated case, a 64 x 16 forward tile at
// k 5, stride 2, dilation 2, needs 135 x 39 = 5265).
#define DW_SMEM 5376

// Tile of a plane of `rows x cols` outputs: `tw` columns, `ty` thread rows, `rpt` rows per
// thread (1, 2 or 4); the tile is (ty * rpt) x tw.
struct DwTile {
    int tw, ty, rpt, th;
    int64_t tiles_w, tiles;
};

BZ_INLINE DwTile dw_tile(int64_t rows, int64_t cols) {
    DwTile t;
    t.tw = cols <= 16 ? 16 : 32;
    t.ty = BZ_BLOCK / t.tw;
    t.rpt = rows >= 4 * t.ty ? 4 : (rows >= 2 * t.ty ? 2 : 1);
    t.th = t.ty * t.rpt;
    t.tiles_w = (cols + t.tw - 1) / t.tw;
    t.tiles = t.tiles_w * ((rows + t.th - 1) / t.th);
    return t;
}

// Each thread computes R vertically ADJACENT outputs from the staged tile; all R x K x K taps
// are unrolled and read unconditionally (the tile always holds th rows), so loads shared
// between neighbouring outputs are issued once.
template <int K, int S, int D, int R>
BZ_INLINE void dw_fwd_tile_rows(const float* __restrict__ x, const float* __restrict__ w,
                                float* __restrict__ y, const DwParams& p, float* sm,
                                const DwTile& t) {
    const int64_t n = blockIdx.z, c = blockIdx.y;
    const int H = (int)p.h, W = (int)p.w, HO = (int)p.ho, WO = (int)p.wo;
    const float* xp = x + (n * p.c + c) * p.h * p.w;
    float* yp = y + (n * p.c + c) * p.ho * p.wo;
    float wr[K * K];
#pragma unroll
    for (int i = 0; i < K * K; ++i) wr[i] = BZ_LDG(w + c * K * K + i);
    const int IH = (t.th - 1) * S + (K - 1) * D + 1;
    const int IW = (t.tw - 1) * S + (K - 1) * D + 1;
    const int lx = threadIdx.x % t.tw, oy0 = (threadIdx.x / t.tw) * R;
    for (int64_t tile = blockIdx.x; tile < t.tiles; tile += gridDim.x) {
        const int oh0 = (int)(tile / t.tiles_w) * t.th, ow0 = (int)(tile % t.tiles_w) * t.tw;
        const int ih0 = oh0 * S - p.padding, iw0 = ow0 * S - p.padding;
        for (int i = threadIdx.x; i < IH * IW; i += BZ_BLOCK) {
            const int r = i / IW, q = i - r * IW;
            const int ih = ih0 + r, iw = iw0 + q;
            sm[i] = (ih >= 0 && ih < H && iw >= 0 && iw < W) ? xp[ih * W + iw] : 0.0f;
        }
        __syncthreads();
        const float* s0 = sm + oy0 * S * IW + lx * S;
        float acc[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            acc[r] = 0.0f;
#pragma unroll
            for (int ki = 0; ki < K; ++ki)
#pragma unroll
                for (int kj = 0; kj < K; ++kj)
                    acc[r] += s0[(r * S + ki * D) * IW + kj * D] * wr[ki * K + kj];
        }
        const int ow = ow0 + lx;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int oh = oh0 + oy0 + r;
            if (oh < HO && ow < WO) yp[oh * WO + ow] = acc[r];
        }
        __syncthreads();
    }
}

template <int K, int S, int D>
BZ_INLINE void dw_fwd_tiled(const float* __restrict__ x, const float* __restrict__ w,
                            float* __restrict__ y, const DwParams& p, float* sm) {
    const DwTile t = dw_tile(p.ho, p.wo);
    if (t.rpt == 4) {
        dw_fwd_tile_rows<K, S, D, 4>(x, w, y, p, sm, t);
    } else if (t.rpt == 2) {
        dw_fwd_tile_rows<K, S, D, 2>(x, w, y, p, sm, t);
    } else {
        dw_fwd_tile_rows<K, S, D, 1>(x, w, y, p, sm, t);
    }
}

// Any geometry, straight from global memory: the block strides over its plane.
BZ_INLINE void dw_fwd_generic(const float* __restrict__ x, const float* __restrict__ w,
                              float* __restrict__ y, const DwParams& p) {
    const int64_t n = blockIdx.z, c = blockIdx.y;
    const float* xp = x + (n * p.c + c) * p.h * p.w;
    float* yp = y + (n * p.c + c) * p.ho * p.wo;
    const float* wc = w + c * p.k * p.k;
    const int64_t per = p.ho * p.wo;
    for (int64_t o = (int64_t)blockIdx.x * BZ_BLOCK + threadIdx.x; o < per;
         o += (int64_t)gridDim.x * BZ_BLOCK) {
        const int64_t oh = o / p.wo, ow = o % p.wo;
        float acc = 0.0f;
        for (int ki = 0; ki < p.k; ++ki) {
            const int64_t ih = oh * p.stride - p.padding + (int64_t)ki * p.dilation;
            if (ih < 0 || ih >= p.h) continue;
            for (int kj = 0; kj < p.k; ++kj) {
                const int64_t iw = ow * p.stride - p.padding + (int64_t)kj * p.dilation;
                if (iw < 0 || iw >= p.w) continue;
                acc += xp[ih * p.w + iw] * wc[ki * p.k + kj];
            }
        }
        yp[o] = acc;
    }
}

#define DW_DISPATCH(FN, ...)                                                                  \
    do {                                                                                      \
        if (p.k == 3 && p.stride == 1 && p.dilation == 1) { FN<3, 1, 1>(__VA_ARGS__); return; } \
        if (p.k == 3 && p.stride == 2 && p.dilation == 1) { FN<3, 2, 1>(__VA_ARGS__); return; } \
        if (p.k == 3 && p.stride == 1 && p.dilation == 2) { FN<3, 1, 2>(__VA_ARGS__); return; } \
        if (p.k == 3 && p.stride == 2 && p.dilation == 2) { FN<3, 2, 2>(__VA_ARGS__); return; } \
        if (p.k == 5 && p.stride == 1 && p.dilation == 1) { FN<5, 1, 1>(__VA_ARGS__); return; } \
        if (p.k == 5 && p.stride == 2 && p.dilation == 1) { FN<5, 2, 1>(__VA_ARGS__); return; } \
        if (p.k == 5 && p.stride == 1 && p.dilation == 2) { FN<5, 1, 2>(__VA_ARGS__); return; } \
        if (p.k == 5 && p.stride == 2 && p.dilation == 2) { FN<5, 2, 2>(__VA_ARGS__); return; } \
    } while (0)

// y[n, c] = x[n, c] (*) w[c]. Grid (any >= 1, c, n), block 256.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK, 3)
    dw_conv_fwd(const float* __restrict__ x, const float* __restrict__ w,
                float* __restrict__ y, DwParams p) {
    __shared__ float sm[DW_SMEM];
    DW_DISPATCH(dw_fwd_tiled, x, w, y, p, sm);
    dw_fwd_generic(x, w, y, p);
}

// Same results as dw_conv_fwd for k == 3, compiled for that size only: 64 instead of 80
// registers (4 instead of 3 blocks per SM on sm_90). Other k take the global-memory path.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK, 4)
    dw_conv_fwd_k3(const float* __restrict__ x, const float* __restrict__ w,
                   float* __restrict__ y, DwParams p) {
    __shared__ float sm[DW_SMEM];
    if (p.stride == 1 && p.dilation == 1) { dw_fwd_tiled<3, 1, 1>(x, w, y, p, sm); return; }
    if (p.stride == 2 && p.dilation == 1) { dw_fwd_tiled<3, 2, 1>(x, w, y, p, sm); return; }
    if (p.stride == 1 && p.dilation == 2) { dw_fwd_tiled<3, 1, 2>(x, w, y, p, sm); return; }
    if (p.stride == 2 && p.dilation == 2) { dw_fwd_tiled<3, 2, 2>(x, w, y, p, sm); return; }
    dw_fwd_generic(x, w, y, p);
}

// dx[ih, iw] = sum over taps (ki, kj) with oh = (ih + P - ki D) / S exact and in range of
// dy[oh, ow] * w[ki, kj] (w^2 with square_w). Tiles the dx plane.
// Each thread computes R vertically adjacent dx rows (shared-memory loads of neighbouring
// rows are shared at stride 1; at stride 2 the row parity decides which taps apply).
template <int K, int S, int D, int R>
BZ_INLINE void dw_bwd_input_tile_rows(const float* __restrict__ dy,
                                      const float* __restrict__ w, float* __restrict__ dx,
                                      const DwParams& p, float* sm, const DwTile& t) {
    const int64_t n = blockIdx.z, c = blockIdx.y;
    const int H = (int)p.h, W = (int)p.w, HO = (int)p.ho, WO = (int)p.wo;
    const float* gp = dy + (n * p.c + c) * p.ho * p.wo;
    float* xp = dx + (n * p.c + c) * p.h * p.w;
    float wr[K * K];
#pragma unroll
    for (int i = 0; i < K * K; ++i) {
        const float v = BZ_LDG(w + c * K * K + i);
        wr[i] = p.square_w ? v * v : v;
    }
    const int P = p.padding;
    const int lx = threadIdx.x % t.tw, iy0 = (threadIdx.x / t.tw) * R;
    for (int64_t tile = blockIdx.x; tile < t.tiles; tile += gridDim.x) {
        const int ih0 = (int)(tile / t.tiles_w) * t.th, iw0 = (int)(tile % t.tiles_w) * t.tw;
        // First output row / column any tap of the tile reads (ceil division, may be < 0).
        const int oh_lo = (int)bz_floor_div(ih0 + P - (K - 1) * D + S - 1, S);
        const int ow_lo = (int)bz_floor_div(iw0 + P - (K - 1) * D + S - 1, S);
        const int OH = (int)bz_floor_div(ih0 + t.th - 1 + P, S) - oh_lo + 1;
        const int OW = (int)bz_floor_div(iw0 + t.tw - 1 + P, S) - ow_lo + 1;
        for (int i = threadIdx.x; i < OH * OW; i += BZ_BLOCK) {
            const int r = i / OW, q = i - r * OW;
            const int oh = oh_lo + r, ow = ow_lo + q;
            sm[i] = (oh >= 0 && oh < HO && ow >= 0 && ow < WO) ? gp[oh * WO + ow] : 0.0f;
        }
        __syncthreads();
        const int iw = iw0 + lx;
        float acc[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int ih = ih0 + iy0 + r;
            acc[r] = 0.0f;
#pragma unroll
            for (int ki = 0; ki < K; ++ki) {
                const int tr = ih + P - ki * D;
                if (S == 2 && (tr & 1)) continue;
                const int orow = (S == 2 ? (tr >> 1) : tr) - oh_lo;
#pragma unroll
                for (int kj = 0; kj < K; ++kj) {
                    const int tc = iw + P - kj * D;
                    if (S == 2 && (tc & 1)) continue;
                    const int ocol = (S == 2 ? (tc >> 1) : tc) - ow_lo;
                    acc[r] += sm[orow * OW + ocol] * wr[ki * K + kj];
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int ih = ih0 + iy0 + r;
            if (ih < H && iw < W) xp[ih * W + iw] = acc[r];
        }
        __syncthreads();
    }
}

template <int K, int S, int D>
BZ_INLINE void dw_bwd_input_tiled(const float* __restrict__ dy, const float* __restrict__ w,
                                  float* __restrict__ dx, const DwParams& p, float* sm) {
    const DwTile t = dw_tile(p.h, p.w);
    if (t.rpt == 4) {
        dw_bwd_input_tile_rows<K, S, D, 4>(dy, w, dx, p, sm, t);
    } else if (t.rpt == 2) {
        dw_bwd_input_tile_rows<K, S, D, 2>(dy, w, dx, p, sm, t);
    } else {
        dw_bwd_input_tile_rows<K, S, D, 1>(dy, w, dx, p, sm, t);
    }
}

BZ_INLINE void dw_bwd_input_generic(const float* __restrict__ dy, const float* __restrict__ w,
                                    float* __restrict__ dx, const DwParams& p) {
    const int64_t n = blockIdx.z, c = blockIdx.y;
    const float* gp = dy + (n * p.c + c) * p.ho * p.wo;
    float* xp = dx + (n * p.c + c) * p.h * p.w;
    const float* wc = w + c * p.k * p.k;
    const int64_t per = p.h * p.w;
    for (int64_t i = (int64_t)blockIdx.x * BZ_BLOCK + threadIdx.x; i < per;
         i += (int64_t)gridDim.x * BZ_BLOCK) {
        const int64_t ih = i / p.w, iw = i % p.w;
        float acc = 0.0f;
        for (int ki = 0; ki < p.k; ++ki) {
            const int64_t tr = ih + p.padding - (int64_t)ki * p.dilation;
            if (tr < 0 || tr % p.stride != 0) continue;
            const int64_t oh = tr / p.stride;
            if (oh >= p.ho) continue;
            for (int kj = 0; kj < p.k; ++kj) {
                const int64_t tc = iw + p.padding - (int64_t)kj * p.dilation;
                if (tc < 0 || tc % p.stride != 0) continue;
                const int64_t ow = tc / p.stride;
                if (ow >= p.wo) continue;
                float wv = wc[ki * p.k + kj];
                if (p.square_w) wv *= wv;
                acc += gp[oh * p.wo + ow] * wv;
            }
        }
        xp[i] = acc;
    }
}

// Input gradient (square_w = 0) or curvature (square_w = 1). Grid (any >= 1, c, n), block 256.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK, 3)
    dw_conv_bwd_input(const float* __restrict__ dy, const float* __restrict__ w,
                      float* __restrict__ dx, DwParams p) {
    __shared__ float sm[DW_SMEM];
    DW_DISPATCH(dw_bwd_input_tiled, dy, w, dx, p, sm);
    dw_bwd_input_generic(dy, w, dx, p);
}

// Weight gradient of channel c over samples [n0, n1): out[tap] = sum x(^2) * dy. Each thread
// accumulates its strided share of outputs in f32 registers (one per tap), then the block adds
// the 256 thread sums per tap in f64 in thread order (templated k: all taps after one barrier
// through `red`, 256 * 25 floats) or a fixed tree (K == 0: runtime k, at most 7).
template <int K, int S, int D>
BZ_INLINE void dw_bwd_weight_block(const float* __restrict__ x, const float* __restrict__ dy,
                                   float* __restrict__ out, const DwParams& p, int64_t c,
                                   int64_t n0, int64_t n1, double* sh, float* red) {
    const int k = K ? K : p.k;
    const int s = S ? S : p.stride;
    const int d = D ? D : p.dilation;
    float acc[K ? K * K : 49];
    for (int i = 0; i < k * k; ++i) acc[i] = 0.0f;
    const int64_t per = p.ho * p.wo;
    for (int64_t nn = n0; nn < n1; ++nn) {
        const float* xp = x + (nn * p.c + c) * p.h * p.w;
        const float* gp = dy + (nn * p.c + c) * per;
        for (int64_t o = threadIdx.x; o < per; o += BZ_BLOCK) {
            const int64_t oh = o / p.wo, ow = o - oh * p.wo;
            const float g = gp[o];
            const int64_t ihb = oh * s - p.padding, iwb = ow * s - p.padding;
#pragma unroll
            for (int ki = 0; ki < (K ? K : 7); ++ki) {
                if (ki >= k) break;
                const int64_t ih = ihb + (int64_t)ki * d;
                if (ih < 0 || ih >= p.h) continue;
#pragma unroll
                for (int kj = 0; kj < (K ? K : 7); ++kj) {
                    if (kj >= k) break;
                    const int64_t iw = iwb + (int64_t)kj * d;
                    if (iw < 0 || iw >= p.w) continue;
                    float v = xp[ih * p.w + iw];
                    if (p.square_x) v *= v;
                    acc[ki * k + kj] += v * g;
                }
            }
        }
    }
    if (K) {
        // All taps at once: thread t's sums to red[t * kk + tap], one barrier, then thread
        // `tap` adds the 256 values in thread order (f64).
        const int kk = K * K;
        for (int i = 0; i < kk; ++i) red[threadIdx.x * kk + i] = acc[i];
        __syncthreads();
        if ((int)threadIdx.x < kk) {
            double tot = 0.0;
            for (int t = 0; t < BZ_BLOCK; ++t) tot += (double)red[t * kk + threadIdx.x];
            out[threadIdx.x] = (float)tot;
        }
        __syncthreads();
    } else {
        for (int i = 0; i < k * k; ++i) {
            const double tot = bz_block_sum((double)acc[i], sh);
            if (threadIdx.x == 0) out[i] = (float)tot;
        }
    }
}

#define DW_DISPATCH_W(...)                                                                    \
    do {                                                                                      \
        if (p.k == 3 && p.stride == 1 && p.dilation == 1) { dw_bwd_weight_block<3, 1, 1>(__VA_ARGS__); break; } \
        if (p.k == 3 && p.stride == 2 && p.dilation == 1) { dw_bwd_weight_block<3, 2, 1>(__VA_ARGS__); break; } \
        if (p.k == 3 && p.stride == 1 && p.dilation == 2) { dw_bwd_weight_block<3, 1, 2>(__VA_ARGS__); break; } \
        if (p.k == 3 && p.stride == 2 && p.dilation == 2) { dw_bwd_weight_block<3, 2, 2>(__VA_ARGS__); break; } \
        if (p.k == 5 && p.stride == 1 && p.dilation == 1) { dw_bwd_weight_block<5, 1, 1>(__VA_ARGS__); break; } \
        if (p.k == 5 && p.stride == 2 && p.dilation == 1) { dw_bwd_weight_block<5, 2, 1>(__VA_ARGS__); break; } \
        if (p.k == 5 && p.stride == 1 && p.dilation == 2) { dw_bwd_weight_block<5, 1, 2>(__VA_ARGS__); break; } \
        if (p.k == 5 && p.stride == 2 && p.dilation == 2) { dw_bwd_weight_block<5, 2, 2>(__VA_ARGS__); break; } \
        dw_bwd_weight_block<0, 0, 0>(__VA_ARGS__);                                            \
    } while (0)

// dw[c] = sum over n, outputs of x(^2) * dy: one block per channel (grid c, block 256).
// k <= 7. For more parallelism use the _partial + _finalize pair.
extern "C" __global__ void __launch_bounds__(BZ_BLOCK, 2)
    dw_conv_bwd_weight(const float* __restrict__ x, const float* __restrict__ dy,
                       float* __restrict__ dw, DwParams p) {
    __shared__ double sh[BZ_BLOCK];
    __shared__ float red[BZ_BLOCK * 25];
    const int64_t c = blockIdx.x;
    DW_DISPATCH_W(x, dy, dw + c * p.k * p.k, p, c, 0, p.n, sh, red);
}

// Split form: grid (c, p.splits), block 256; block (c, j) covers samples
// [j * n / splits, (j + 1) * n / splits) and writes partials[(c * splits + j) * k * k + tap].
extern "C" __global__ void __launch_bounds__(BZ_BLOCK, 2)
    dw_conv_bwd_weight_partial(const float* __restrict__ x, const float* __restrict__ dy,
                               float* __restrict__ partials, DwParams p) {
    __shared__ double sh[BZ_BLOCK];
    __shared__ float red[BZ_BLOCK * 25];
    const int64_t c = blockIdx.x, j = blockIdx.y, sp = p.splits;
    const int64_t n0 = j * p.n / sp, n1 = (j + 1) * p.n / sp;
    DW_DISPATCH_W(x, dy, partials + (c * sp + j) * p.k * p.k, p, c, n0, n1, sh, red);
}

// dw[c * k * k + tap] = sum over j in order of partials[(c * splits + j) * k * k + tap].
// 1-D grid-stride over c * k * k (any grid, block 256).
extern "C" __global__ void dw_conv_bwd_weight_finalize(const float* __restrict__ partials,
                                                       float* __restrict__ dw, DwParams p) {
    const int64_t kk = (int64_t)p.k * p.k;
    BZ_GRID_STRIDE(i, p.c * kk) {
        const int64_t c = i / kk, tap = i - c * kk;
        float acc = 0.0f;
        for (int64_t j = 0; j < p.splits; ++j) acc += partials[(c * p.splits + j) * kk + tap];
        dw[i] = acc;
    }
}

// ---------------------------------------------------------------------------------------
// A depthwise convolution followed by a pointwise one (a separable convolution's pair) in
// one launch. Grid (tiles of p.tile output positions of the plane, n), block 256. Phase 1:
// the block computes the depthwise outputs of its tile for every channel (the k x k taps in
// row-major order, padding skipped), keeps them in shared memory and writes them to mid.
// Phase 2: y[n, o, pos] = sum over channels in order of wpw[o, ci] * mid[n, ci, pos], from
// shared memory. Each output is written by one thread: deterministic.
// ---------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    sep_conv_fwd(const float* __restrict__ x, const float* __restrict__ wdw,
                 const float* __restrict__ wpw, float* __restrict__ mid,
                 float* __restrict__ y, SepParams p) {
    __shared__ float sm[SEP_SMEM];
    const int64_t n = blockIdx.y, plane = p.ho * p.wo, T = p.tile;
    const int64_t pos0 = (int64_t)blockIdx.x * T;
    const int K = p.k;
    for (int64_t i = threadIdx.x; i < p.c * T; i += BZ_BLOCK) {
        const int64_t ci = i / T, pos = pos0 + (i - ci * T);
        if (pos >= plane) continue;
        const int64_t oh = pos / p.wo, ow = pos - oh * p.wo;
        const float* xp = x + (n * p.c + ci) * p.h * p.w;
        const float* wp = wdw + ci * K * K;
        float acc = 0.0f;
        for (int a = 0; a < K; ++a) {
            const int64_t ih = oh * p.stride + (int64_t)a * p.dilation - p.padding;
            if (ih < 0 || ih >= p.h) continue;
            for (int b = 0; b < K; ++b) {
                const int64_t iw = ow * p.stride + (int64_t)b * p.dilation - p.padding;
                if (iw < 0 || iw >= p.w) continue;
                acc += BZ_LDG(xp + ih * p.w + iw) * BZ_LDG(wp + a * K + b);
            }
        }
        sm[i] = acc;
        mid[(n * p.c + ci) * plane + pos] = acc;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < p.co * T; i += BZ_BLOCK) {
        const int64_t o = i / T, j = i - o * T, pos = pos0 + j;
        if (pos >= plane) continue;
        const float* wr = wpw + o * p.c;
        float acc = 0.0f;
        for (int64_t ci = 0; ci < p.c; ++ci) acc += BZ_LDG(wr + ci) * sm[ci * T + j];
        y[(n * p.co + o) * plane + pos] = acc;
    }
}
