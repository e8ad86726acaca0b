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
