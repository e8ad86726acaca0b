// extern "C" host launchers host_<kernel>(Launch, args...) for the multi-tensor kernels
// (ew_axpy_multi, sgd_momentum_multi: pointer tables and int64 offsets) and the batch-norm
// running-statistics kernels (bn_running_update, bn_eval_constants). Same pattern as
// launch.cpp; declared on the Rust side in src/multi.rs.
#include "bayesnas_params.h"

struct Launch {
    unsigned gx, gy, gz, bx;
};

#define WRAP_MULTI(name, args, ...)                                                        \
    extern "C" void name(__VA_ARGS__);                                                     \
    extern "C" void host_##name(Launch launch_cfg_, __VA_ARGS__) {                         \
        bz_host::launch(dim3(launch_cfg_.gx, launch_cfg_.gy, launch_cfg_.gz),              \
                        dim3(launch_cfg_.bx), [&] { name args; });                         \
    }

// elementwise.cu
WRAP_MULTI(ew_axpy_multi, (xs, ys, offsets, p), const float* const* xs, float* const* ys,
           const int64_t* offsets, AxpyMultiParams p)
WRAP_MULTI(ew_add_into, (y, p), float* y, AddIntoParams p)
WRAP_MULTI(reduce_sumsq_multi, (xs, table, partials, p), const float* const* xs,
           const int64_t* table, double* partials, SumsqMultiParams p)
// optim.cu
WRAP_MULTI(sgd_momentum_multi, (w, g, m, offsets, p), float* const* w, const float* const* g,
           float* const* m, const int64_t* offsets, SgdMultiParams p)
// batchnorm.cu
WRAP_MULTI(bn_running_update, (rm, rv, mean, var, p), float* rm, float* rv, const float* mean,
           const float* var, BnRunningParams p)
WRAP_MULTI(bn_eval_constants, (rm, rv, weight, bias, slope, shift, invstd, p), const float* rm,
           const float* rv, const float* weight, const float* bias, float* slope, float* shift,
           float* invstd, BnParams p)
