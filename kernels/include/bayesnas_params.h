/* Kernel parameter structs shared by the kernels in kernels/ (.cu files) and the Rust launcher.
 *
 * Every kernel takes its pointers first and then ONE of these structs by value. Plain C:
 * fixed-width integers, float and double, no pointers. The Rust mirror
 * src/device/cuda/params.rs is generated from this file by tools/gen-params
 * (`cargo run -p gen-params`); CI runs `cargo run -p gen-params -- --check`.
 * Field order is chosen so that no struct has padding holes before its end
 * (int64 first, then 4-byte fields). */
#ifndef BAYESNAS_PARAMS_H
#define BAYESNAS_PARAMS_H

#ifdef __CUDACC__
#include <cstdint>
#else
#include <stdint.h>
#endif

/* Elementwise maps (ew_unary, ew_binary, ew_axpy, scale_samples, fill).
 * n: elements; inner: elements per sample (scale_samples only); op: an EW_UNARY_* code for
 * ew_unary, an EW_BINARY_* code for ew_binary, EW_NO_OP for the others;
 * alpha: scale (EW_UNARY_SCALE), axpy factor, fill value. */
typedef struct EwParams {
    int64_t n;
    int64_t inner;
    int32_t op;
    float alpha;
} EwParams;

/* EwParams.op of the kernels that take no op code. */
#define EW_NO_OP 0
/* ew_unary: y = max(x, 0) (NaN -> 0), x^2, alpha * x. */
#define EW_UNARY_RELU 0
#define EW_UNARY_SQUARE 1
#define EW_UNARY_SCALE 2
/* ew_binary: y = a + b, a - b, a * b, b * 1[a > 0]. */
#define EW_BINARY_ADD 0
#define EW_BINARY_SUB 1
#define EW_BINARY_MUL 2
#define EW_BINARY_RELU_MASK 3

/* reduce_dot_partial: n elements, `blocks` = gridDim.x the partial buffer is sized for. */
typedef struct ReduceParams {
    int64_t n;
    int64_t blocks;
} ReduceParams;

/* Depthwise convolution (groups == channels == c, one filter per channel), NCHW.
 * Input [n, c, h, w], output [n, c, ho, wo], weight [c, 1, k, k].
 * square_w: dw_conv_bwd_input uses w^2 (curvature); square_x: dw_conv_bwd_weight uses x^2.
 * splits: sample splits of dw_conv_bwd_weight_partial (gridDim.y; partials per channel). */
typedef struct DwParams {
    int64_t n;
    int64_t c;
    int64_t h;
    int64_t w;
    int64_t ho;
    int64_t wo;
    int32_t k;
    int32_t stride;
    int32_t padding;
    int32_t dilation;
    int32_t square_w;
    int32_t square_x;
    int32_t splits;
    int32_t _pad;
} DwParams;

/* A depthwise convolution followed by a pointwise one in one kernel (sep_conv_fwd), NCHW.
 * Input [n, c, h, w], depthwise weight [c, 1, k, k] under (stride, padding, dilation),
 * pointwise weight [co, c, 1, 1]; writes mid [n, c, ho, wo] (the depthwise output) and
 * y [n, co, ho, wo]. tile: output positions per block; the block keeps c * tile floats of
 * mid in shared memory, at most SEP_SMEM. */
#define SEP_SMEM 8192
typedef struct SepParams {
    int64_t n;
    int64_t c;
    int64_t co;
    int64_t h;
    int64_t w;
    int64_t ho;
    int64_t wo;
    int32_t k;
    int32_t stride;
    int32_t padding;
    int32_t dilation;
    int32_t tile;
    int32_t _pad;
} SepParams;

/* General direct convolution (any groups/stride/padding/dilation), NCHW.
 * Input [n, c_in, h, w], weight [c_out, c_in / groups, k, k], output [n, c_out, ho, wo].
 * im2col/col2im use the same struct (see kernels/README.md for the column layout). */
typedef struct ConvParams {
    int64_t n;
    int64_t c_in;
    int64_t c_out;
    int64_t h;
    int64_t w;
    int64_t ho;
    int64_t wo;
    int32_t k;
    int32_t stride;
    int32_t padding;
    int32_t dilation;
    int32_t groups;
    int32_t square_x;
} ConvParams;

/* Batch norm and per-channel maps over [n, c, s] (s = elements per plane).
 * splits: sample splits of the *_partial reductions (gridDim.y; partials per channel).
 * momentum, var_factor: the running-statistics update folded into bn_stats and
 * bn_stats_finalize when their rm/rv pointers are not null (as bn_running_update). */
typedef struct BnParams {
    int64_t n;
    int64_t c;
    int64_t s;
    float eps;
    int32_t splits;
    float momentum;
    float var_factor;
} BnParams;

/* Running statistics of batch norm (bn_running_update): c channels;
 * r = r (1 - momentum) + momentum mean; rv = rv (1 - momentum) + var_factor var. */
typedef struct BnRunningParams {
    int64_t c;
    float momentum;
    float var_factor;
} BnRunningParams;

/* Pooling over NCHW planes. Input [n, c, h, w], output [n, c, ho, wo].
 * power: POOL_GRADIENT or POOL_CURVATURE (avgpool_bwd, gap_bwd: dy / count^power). */
typedef struct PoolParams {
    int64_t n;
    int64_t c;
    int64_t h;
    int64_t w;
    int64_t ho;
    int64_t wo;
    int32_t k;
    int32_t stride;
    int32_t padding;
    int32_t power;
} PoolParams;

/* PoolParams.power. */
#define POOL_GRADIENT 1
#define POOL_CURVATURE 2

/* copy_channels: the [n, c_src, hw] block <-> channels [c_off, c_off + c_src) of an
 * [n, c_dst, hw] tensor. direction COPY_INTO_CHANNELS: src block -> dst (concat);
 * COPY_FROM_CHANNELS: the big tensor's slice -> the block (split; then the first pointer is
 * the big tensor and the second the destination block). */
typedef struct CopyParams {
    int64_t n;
    int64_t hw;
    int64_t c_src;
    int64_t c_dst;
    int64_t c_off;
    int32_t direction;
    int32_t _pad;
} CopyParams;

/* CopyParams.direction. */
#define COPY_INTO_CHANNELS 0
#define COPY_FROM_CHANNELS 1

/* shift_crop: x [n, c, h, w] -> y [n, c, h - 1, w - 1] = x[:, :, 1:, 1:] (and its adjoint). */
typedef struct ShiftParams {
    int64_t n;
    int64_t c;
    int64_t h;
    int64_t w;
} ShiftParams;

/* select_columns: y [n, m] = x[:, idx] for x [n, cols] and m unique column indices idx;
 * select_columns_bwd: dx [n, cols] from dy [n, m] through the inverse map pos [cols]
 * (pos[i] = j where idx[j] = i, else -1). */
typedef struct ColumnsParams {
    int64_t n;
    int64_t cols;
    int64_t m;
} ColumnsParams;

/* Fused mixed op: k branches of n samples with `inner` elements each.
 * chunks: partial-sum chunks per sample in mixed_bwd / mixed_curv (gridDim.x = n * chunks). */
typedef struct MixedParams {
    int64_t n;
    int64_t inner;
    int64_t chunks;
    int32_t k;
    int32_t _pad;
} MixedParams;

/* Softmax cross-entropy over [b, k] logits. */
typedef struct LossParams {
    int64_t b;
    int64_t k;
} LossParams;

/* SGD with momentum (PyTorch): g' = grad_scale g + weight_decay w; m = momentum m + g';
 * w -= lr m. */
typedef struct SgdParams {
    int64_t n;
    float lr;
    float momentum;
    float weight_decay;
    float grad_scale;
} SgdParams;

/* SGD with momentum over several tensors at once (sgd_momentum_multi): tensors tensors whose
 * element offsets are offsets[0..=tensors] (offsets[tensors] = total elements), with the
 * update of SgdParams (n unused there). */
typedef struct SgdMultiParams {
    int64_t tensors;
    int64_t total;
    float lr;
    float momentum;
    float weight_decay;
    float grad_scale;
} SgdMultiParams;

/* y_t += alpha x_t over several tensors at once (ew_axpy_multi); offsets as SgdMultiParams. */
typedef struct AxpyMultiParams {
    int64_t tensors;
    int64_t total;
    float alpha;
    int32_t _pad;
} AxpyMultiParams;

/* Sums of squares of several tensors in one launch (reduce_sumsq_multi): tensor t has
 * table[3t] elements, is reduced by table[3t + 1] blocks exactly as reduce_dot_partial(x, x)
 * with that many blocks, and writes its partials from table[3t + 2]. Grid (max_blocks,
 * tensors). */
typedef struct SumsqMultiParams {
    int64_t tensors;
    int64_t max_blocks;
} SumsqMultiParams;

/* y += x_0 + x_1 + ... + x_{k-1}, added to y in that order in f32 (ew_add_into), for
 * 1 <= k <= ADD_INTO_MAX tensors of n elements whose device pointers travel in the struct
 * (no pointer table to upload). */
#define ADD_INTO_MAX 8
typedef struct AddIntoParams {
    const float* xs[ADD_INTO_MAX];
    int64_t n;
    int32_t k;
    int32_t _pad;
} AddIntoParams;

/* Group-lasso gradient (kernels/optim.cu group_lasso_grad): groups groups over members
 * scalar members (see bayesnas_engine::device::LassoGroups). */
typedef struct LassoParams {
    int64_t groups;
    int64_t members;
} LassoParams;

/* Hierarchical group-ARD update (kernels/ard.cu group_ard_update; host reference
 * bayesnas_engine::ard). n_parents parents of n_children children each; every parent and every
 * child is a group of n_members members. Groups are laid out parent by parent, parent first:
 * g = p * (n_children + 1) (+ 1 + k for child k); per-member values are [group][member].
 * clamp_negative: 0 rejects negative curvature (status ARD_ERR_NEGATIVE), 1 clamps it to 0. */
typedef struct ArdParams {
    int64_t n_parents;
    int64_t n_children;
    int64_t n_members;
    double lambda_parent;
    double lambda_child;
    int32_t clamp_negative;
    int32_t _pad;
} ArdParams;

/* group_ard_update status codes (status_out[g]). */
#define ARD_UPDATED 1
#define ARD_DEAD 2
#define ARD_NO_CURVATURE 3
#define ARD_ERR_NOT_FINITE (-1)
#define ARD_ERR_NEGATIVE (-2)
#define ARD_ERR_BAD_GAMMA (-3)

#endif /* BAYESNAS_PARAMS_H */
