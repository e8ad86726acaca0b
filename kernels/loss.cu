// Softmax cross-entropy over [b, k] logits with u32 class labels (validated by the host).
#include "bayesnas_common.cuh"

// probs = softmax(logits) per row; loss_rows[r] = -log softmax(logits[r])[label[r]] in f64,
// computed stably as log(sum exp(z - max)) + max - z_label (the CPU formula, exp and sums in
// f64). The host (or B's finalize) adds loss_rows in row order and divides by b.
// One thread per row: grid-stride over b (any grid, block 256).
extern "C" __global__ void softmax_ce_fwd(const float* __restrict__ logits,
                                          const uint32_t* __restrict__ labels,
                                          float* __restrict__ probs,
                                          double* __restrict__ loss_rows, LossParams p) {
    BZ_GRID_STRIDE(r, p.b) {
        const float* z = logits + r * p.k;
        float* pr = probs + r * p.k;
        float m = -INFINITY;
        for (int64_t j = 0; j < p.k; ++j) m = z[j] > m ? z[j] : m;
        double sum = 0.0;
        for (int64_t j = 0; j < p.k; ++j) {
            const double e = exp((double)(z[j] - m));
            pr[j] = (float)e;
            sum += e;
        }
        for (int64_t j = 0; j < p.k; ++j) pr[j] = (float)((double)pr[j] / sum);
        loss_rows[r] = log(sum) + (double)(m - z[labels[r]]);
    }
}

// loss[0] = (float)(sum_r loss_rows[r] / b), rows added in order (the CPU's arithmetic).
// ONE thread (block 1).
extern "C" __global__ void softmax_ce_loss(const double* __restrict__ loss_rows,
                                           float* __restrict__ loss, LossParams p) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double acc = 0.0;
        for (int64_t r = 0; r < p.b; ++r) acc += loss_rows[r];
        loss[0] = (float)(acc / (double)p.b);
    }
}

// dlogits = (probs - onehot(label)) / b. Grid-stride over b * k.
extern "C" __global__ void softmax_ce_bwd(const float* __restrict__ probs,
                                          const uint32_t* __restrict__ labels,
                                          float* __restrict__ dlogits, LossParams p) {
    const float inv_b = 1.0f / (float)p.b;
    BZ_GRID_STRIDE(i, p.b * p.k) {
        const int64_t r = i / p.k, j = i % p.k;
        const float t = (int64_t)labels[r] == j ? 1.0f : 0.0f;
        dlogits[i] = (probs[i] - t) * inv_b;
    }
}

// Curvature seed h = (p - p^2) / b = p (1 - p) / b for every class (the CPU's formula) (method note section 6).
// Grid-stride over b * k.
extern "C" __global__ void softmax_ce_curv_seed(const float* __restrict__ probs,
                                                float* __restrict__ h, LossParams p) {
    const float inv_b = 1.0f / (float)p.b;
    BZ_GRID_STRIDE(i, p.b * p.k) {
        const float q = probs[i];
        h[i] = (q - q * q) * inv_b;
    }
}

// correct[0] = (float) the number of rows whose arg-max (the first largest logit, compared
// with >, as the CPU's argmax_rows) equals the label. ONE block of BZ_BLOCK threads: each
// counts rows r = tid, tid + BZ_BLOCK, ..., then a shared-memory sum of integers (exact, in
// any order).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    count_correct(const float* __restrict__ logits, const uint32_t* __restrict__ labels,
                  float* __restrict__ correct, LossParams p) {
    __shared__ int64_t red[BZ_BLOCK];
    int64_t mine = 0;
    for (int64_t r = threadIdx.x; r < p.b; r += BZ_BLOCK) {
        const float* z = logits + r * p.k;
        int64_t best = 0;
        for (int64_t j = 1; j < p.k; ++j)
            if (z[j] > z[best]) best = j;
        if (best == (int64_t)labels[r]) ++mine;
    }
    red[threadIdx.x] = mine;
    __syncthreads();
    for (int w = BZ_BLOCK / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) correct[0] = (float)red[0];
}
