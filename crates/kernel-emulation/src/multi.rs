//! Host launchers of the multi-tensor kernels (`ew_axpy_multi`, `sgd_momentum_multi`: tables
//! of tensor pointers and `tensors + 1` int64 element offsets, one binary search per element)
//! and of the batch-norm running-statistics kernels (`bn_running_update`,
//! `bn_eval_constants`). Defined in `csrc/launch_multi.cpp`; the same calling convention as
//! the launchers at the crate root: a [`Launch`] then the kernel's own arguments, with host
//! pointers in the tables.

use crate::params::{
    AddIntoParams, AxpyMultiParams, BnParams, BnRunningParams, SgdMultiParams, SumsqMultiParams,
};
use crate::Launch;

extern "C" {
    /// `ys[t][j] += alpha * xs[t][j]`, element `i` of the concatenation being element
    /// `i - offsets[t]` of tensor `t`.
    pub fn host_ew_axpy_multi(
        launch: Launch,
        xs: *const *const f32,
        ys: *const *mut f32,
        offsets: *const i64,
        p: AxpyMultiParams,
    );
    /// `sgd_momentum` over the tensors `w[t]`, `g[t]`, `m[t]` with the element offsets.
    pub fn host_sgd_momentum_multi(
        launch: Launch,
        w: *const *mut f32,
        g: *const *const f32,
        m: *const *mut f32,
        offsets: *const i64,
        p: SgdMultiParams,
    );
    /// `y += xs[0] + ... + xs[k - 1]` over `p.n` elements, the `p.k` host pointers in `p.xs`.
    pub fn host_ew_add_into(launch: Launch, y: *mut f32, p: AddIntoParams);
    /// Sums of squares of `p.tensors` tensors: `table` holds (elements, blocks, first
    /// partial) per tensor; grid (`p.max_blocks`, `p.tensors`).
    pub fn host_reduce_sumsq_multi(
        launch: Launch,
        xs: *const *const f32,
        table: *const i64,
        partials: *mut f64,
        p: SumsqMultiParams,
    );
    /// Running mean and variance update over `p.c` channels.
    pub fn host_bn_running_update(
        launch: Launch,
        rm: *mut f32,
        rv: *mut f32,
        mean: *const f32,
        var: *const f32,
        p: BnRunningParams,
    );
    /// Evaluation-mode `slope`, `shift`, `invstd` over `p.c` channels (`p.eps`); `weight`
    /// and `bias` may be null.
    pub fn host_bn_eval_constants(
        launch: Launch,
        rm: *const f32,
        rv: *const f32,
        weight: *const f32,
        bias: *const f32,
        slope: *mut f32,
        shift: *mut f32,
        invstd: *mut f32,
        p: BnParams,
    );
}
