// Optimiser updates.
#include "bayesnas_common.cuh"

// SGD with momentum, PyTorch semantics (the Backend trait):
// d = grad_scale g + weight_decay w; m = momentum m + d; w -= lr m. Grid-stride over n.
extern "C" __global__ void sgd_momentum(float* __restrict__ w, const float* __restrict__ g,
                                        float* __restrict__ m, SgdParams p) {
    BZ_GRID_STRIDE(i, p.n) {
        const float wi = w[i];
        const float d = p.grad_scale * g[i] + p.weight_decay * wi;
        const float mi = p.momentum * m[i] + d;
        m[i] = mi;
        w[i] = wi - p.lr * mi;
    }
}

// sgd_momentum over several tensors in one launch: element i of the concatenation is
// element i - offsets[t] of tensor t (offsets sorted, found by binary search); the same
// per-element update as sgd_momentum. Grid-stride over total.
extern "C" __global__ void sgd_momentum_multi(float* const* __restrict__ w,
                                              const float* const* __restrict__ g,
                                              float* const* __restrict__ m,
                                              const int64_t* __restrict__ offsets,
                                              SgdMultiParams p) {
    BZ_GRID_STRIDE(i, p.total) {
        int64_t lo = 0, hi = p.tensors - 1;
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
        }
        const int64_t j = i - offsets[lo];
        const float wi = w[lo][j];
        const float d = p.grad_scale * g[lo][j] + p.weight_decay * wi;
        const float mi = p.momentum * m[lo][j] + d;
        m[lo][j] = mi;
        w[lo][j] = wi - p.lr * mi;
    }
}

// Gradient of the group lasso sum_g coef[g] ||v_g|| over scalar members of several tensors
// (Backend::group_lasso_grad): member m of group g is element elem[m] of tensor tensor[m];
// vals[t] / grads[t] are tensor t's value and gradient. Every member of a group with a
// non-zero norm gets grads += (float)(coef v / ||v||) (f64 math; a member is in one group
// only, so no two threads write one element). penalty[0] = (float) sum_g coef[g] ||v_g||,
// groups added in order by thread 0 from the f64 scratch contrib[groups].
// ONE block of BZ_BLOCK threads (one thread per group, strided).
extern "C" __global__ void __launch_bounds__(BZ_BLOCK)
    group_lasso_grad(const float* const* __restrict__ vals, float* const* __restrict__ grads,
                     const int64_t* __restrict__ start, const int64_t* __restrict__ tensor,
                     const int64_t* __restrict__ elem, const double* __restrict__ coef,
                     double* __restrict__ contrib, float* __restrict__ penalty,
                     LassoParams p) {
    for (int64_t g = threadIdx.x; g < p.groups; g += BZ_BLOCK) {
        double ss = 0.0;
        for (int64_t m = start[g]; m < start[g + 1]; ++m) {
            const double v = (double)vals[tensor[m]][elem[m]];
            ss += v * v;
        }
        const double norm = sqrt(ss);
        contrib[g] = coef[g] * norm;
        if (norm > 0.0) {
            for (int64_t m = start[g]; m < start[g + 1]; ++m) {
                const double v = (double)vals[tensor[m]][elem[m]];
                grads[tensor[m]][elem[m]] += (float)(coef[g] * v / norm);
            }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double acc = 0.0;
        for (int64_t g = 0; g < p.groups; ++g) acc += contrib[g];
        penalty[0] = (float)acc;
    }
}
