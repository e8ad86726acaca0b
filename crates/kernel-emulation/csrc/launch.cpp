// extern "C" host launchers host_<kernel>(Launch, args...) for the host-compiled kernels.
#include "bayesnas_params.h"

struct Launch {
    unsigned gx, gy, gz, bx;
};

#define WRAP(name, args, ...)                                                     \
    extern "C" void name(__VA_ARGS__);                                            \
    extern "C" void host_##name(Launch launch_cfg_, __VA_ARGS__) {                          \
        bz_host::launch(dim3(launch_cfg_.gx, launch_cfg_.gy, launch_cfg_.gz), dim3(launch_cfg_.bx), [&] { name args; }); \
    }

// elementwise.cu
WRAP(ew_unary, (x, y, p), const float* x, float* y, EwParams p)
WRAP(ew_binary, (a, b, y, p), const float* a, const float* b, float* y, EwParams p)
WRAP(ew_axpy, (x, y, p), const float* x, float* y, EwParams p)
WRAP(scale_samples, (x, s, y, p), const float* x, const float* s, float* y, EwParams p)
WRAP(fill, (y, p), float* y, EwParams p)
WRAP(reduce_dot_partial, (a, b, out, p), const float* a, const float* b, double* out,
     ReduceParams p)
// depthwise.cu
WRAP(sep_conv_fwd, (x, wdw, wpw, mid, y, p), const float* x, const float* wdw,
     const float* wpw, float* mid, float* y, SepParams p)
WRAP(dw_conv_fwd, (x, w, y, p), const float* x, const float* w, float* y, DwParams p)
WRAP(dw_conv_fwd_k3, (x, w, y, p), const float* x, const float* w, float* y, DwParams p)
WRAP(dw_conv_bwd_input, (dy, w, dx, p), const float* dy, const float* w, float* dx, DwParams p)
WRAP(dw_conv_bwd_weight, (x, dy, dw, p), const float* x, const float* dy, float* dw, DwParams p)
WRAP(dw_conv_bwd_weight_partial, (x, dy, part, p), const float* x, const float* dy,
     float* part, DwParams p)
WRAP(dw_conv_bwd_weight_finalize, (part, dw, p), const float* part, float* dw, DwParams p)
// conv_direct.cu
WRAP(conv_fwd_direct, (x, w, y, p), const float* x, const float* w, float* y, ConvParams p)
WRAP(conv_bwd_input_direct, (dy, w, dx, p), const float* dy, const float* w, float* dx,
     ConvParams p)
WRAP(conv_bwd_weight_direct, (x, dy, dw, p), const float* x, const float* dy, float* dw,
     ConvParams p)
WRAP(im2col, (x, col, p), const float* x, float* col, ConvParams p)
WRAP(col2im, (col, dx, p), const float* col, float* dx, ConvParams p)
// batchnorm.cu
WRAP(bn_stats, (x, m, v, is, rm, rv, p), const float* x, float* m, float* v, float* is,
     float* rm, float* rv, BnParams p)
WRAP(bn_curvature_input, (hy, is, w, hx, p), const float* hy, const float* is, const float* w,
     float* hx, BnParams p)
WRAP(channel_affine, (x, sc, sh, y, p), const float* x, const float* sc, const float* sh,
     float* y, BnParams p)
WRAP(bn_fwd_apply, (x, m, is, w, b, y, p), const float* x, const float* m, const float* is,
     const float* w, const float* b, float* y, BnParams p)
WRAP(bn_bwd_reduce, (dy, x, m, is, sd, sdx, p), const float* dy, const float* x,
     const float* m, const float* is, float* sd, float* sdx, BnParams p)
WRAP(bn_bwd_apply, (dy, x, m, is, w, sd, sdx, dx, p), const float* dy, const float* x,
     const float* m, const float* is, const float* w, const float* sd, const float* sdx,
     float* dx, BnParams p)
WRAP(bn_relu_fwd_apply, (x, m, is, w, b, y, p), const float* x, const float* m,
     const float* is, const float* w, const float* b, float* y, BnParams p)
WRAP(bn_relu_bwd_reduce, (dy, y, x, m, is, sd, sdx, p), const float* dy, const float* y,
     const float* x, const float* m, const float* is, float* sd, float* sdx, BnParams p)
WRAP(bn_relu_bwd_partial, (dy, y, x, m, part, p), const float* dy, const float* y,
     const float* x, const float* m, double* part, BnParams p)
WRAP(bn_relu_bwd_apply, (dy, y, x, m, is, w, sd, sdx, dx, p), const float* dy, const float* y,
     const float* x, const float* m, const float* is, const float* w, const float* sd,
     const float* sdx, float* dx, BnParams p)
WRAP(bn_relu_curvature_input, (hy, y, is, w, hx, p), const float* hy, const float* y,
     const float* is, const float* w, float* hx, BnParams p)
WRAP(channel_sums, (x, y, out, p), const float* x, const float* y, float* out, BnParams p)
WRAP(bn_stats_partial, (x, part, p), const float* x, double* part, BnParams p)
WRAP(bn_stats_finalize, (x, part, m, v, is, rm, rv, p), const float* x, const double* part,
     float* m, float* v, float* is, float* rm, float* rv, BnParams p)
WRAP(bn_bwd_partial, (dy, x, m, part, p), const float* dy, const float* x, const float* m,
     double* part, BnParams p)
WRAP(bn_bwd_finalize, (part, is, sd, sdx, p), const double* part, const float* is, float* sd,
     float* sdx, BnParams p)
WRAP(channel_sums_partial, (x, y, part, p), const float* x, const float* y, double* part,
     BnParams p)
WRAP(channel_sums_finalize, (part, out, p), const double* part, float* out, BnParams p)
// pool.cu
WRAP(maxpool_fwd, (x, y, a, p), const float* x, float* y, float* a, PoolParams p)
WRAP(maxpool_bwd, (a, dy, dx, p), const float* a, const float* dy, float* dx, PoolParams p)
WRAP(maxpool_bwd_scatter, (a, dy, dx, bad, p), const float* a, const float* dy, float* dx,
     int32_t* bad, PoolParams p)
WRAP(avgpool_fwd, (x, y, p), const float* x, float* y, PoolParams p)
WRAP(avgpool_bwd, (dy, dx, p), const float* dy, float* dx, PoolParams p)
WRAP(gap_fwd, (x, y, p), const float* x, float* y, PoolParams p)
WRAP(gap_bwd, (dy, dx, p), const float* dy, float* dx, PoolParams p)
// structure.cu
WRAP(copy_channels, (s, d, p), const float* s, float* d, CopyParams p)
WRAP(shift_crop, (x, y, p), const float* x, float* y, ShiftParams p)
WRAP(shift_crop_bwd, (dy, dx, p), const float* dy, float* dx, ShiftParams p)
WRAP(select_columns, (x, idx, y, p), const float* x, const int64_t* idx, float* y,
     ColumnsParams p)
WRAP(select_columns_bwd, (dy, pos, dx, p), const float* dy, const int64_t* pos, float* dx,
     ColumnsParams p)
// mixed.cu
WRAP(mixed_fwd, (xs, s0, s, y, p), const float* const* xs, const float* s0, const float* s,
     float* y, MixedParams p)
WRAP(mixed_bwd, (xs, dy, s0, s, dxs, part, p), const float* const* xs, const float* dy,
     const float* s0, const float* s, float* const* dxs, double* part, MixedParams p)
WRAP(mixed_reduce_finalize, (part, r, p), const double* part, float* r, MixedParams p)
WRAP(mixed_curv, (xs, hy, s0, s, hxs, part, p), const float* const* xs, const float* hy,
     const float* s0, const float* s, float* const* hxs, double* part, MixedParams p)
WRAP(mixed_curv_finalize, (part, s0, hs, hs0, p), const double* part, const float* s0,
     float* hs, float* hs0, MixedParams p)
WRAP(mixed_switch_grads, (r, s0, s, ds, ds0, p), const float* r, const float* s0,
     const float* s, float* ds, float* ds0, MixedParams p)
// loss.cu
WRAP(softmax_ce_fwd, (z, l, pr, lr, p), const float* z, const uint32_t* l, float* pr,
     double* lr, LossParams p)
WRAP(softmax_ce_bwd, (pr, l, dz, p), const float* pr, const uint32_t* l, float* dz,
     LossParams p)
WRAP(softmax_ce_curv_seed, (pr, h, p), const float* pr, float* h, LossParams p)
WRAP(softmax_ce_loss, (lr, l, p), const double* lr, float* l, LossParams p)
WRAP(count_correct, (z, labels, c, p), const float* z, const uint32_t* labels, float* c,
     LossParams p)
// optim.cu
WRAP(sgd_momentum, (w, g, m, p), float* w, const float* g, float* m, SgdParams p)
WRAP(group_lasso_grad, (v, g, st, te, el, c, ct, pen, p), const float* const* v,
     float* const* g, const int64_t* st, const int64_t* te, const int64_t* el, const double* c,
     double* ct, float* pen, LassoParams p)
// ard.cu
WRAP(group_ard_update, (w, h, gi, gp, go, om, ti, st, cl, c, p), const double* w,
     const double* h, const double* gi, const double* gp, double* go, double* om, double* ti,
     int32_t* st, int32_t* cl, double* c, ArdParams p)
