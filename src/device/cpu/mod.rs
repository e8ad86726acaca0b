//! The CPU backend: rayon-parallel kernels over host memory.
//!
//! Parallel loops split the *output* into fixed pieces, so every element is computed by one
//! thread in a fixed order; reductions sum fixed-size partials in index order. Results are
//! therefore identical run to run for a given thread count (and in fact for any count).

mod batchnorm;
pub(crate) mod conv;
mod elementwise;
pub mod gemm;
pub(crate) mod loss;
mod mixed;
mod optim;
mod plane;
pub(crate) mod pool;
mod simd;
mod structure;

use super::counters;
use super::{
    Backend, BatchNormForward, BatchNormGrads, Binary, Conv2dSpec, Device, LassoGroups, Pool2dSpec,
    RunningStats, SgdStep, Unary,
};
use crate::error::Result;
use crate::tensor::Tensor;

/// The CPU device's kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// Size of the fixed pieces reductions are split into (determinism does not depend on the
/// number of threads because the pieces do not).
pub(crate) const REDUCE_CHUNK: usize = 1 << 14;

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        counters::launch();
        Tensor::from_vec(vec![0.0; crate::tensor::numel(shape)], shape)
    }
    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        counters::launch();
        Tensor::from_vec(data, shape)
    }
    fn unary(&self, x: &Tensor, op: Unary) -> Result<Tensor> {
        counters::launch();
        Ok(elementwise::unary(x, op))
    }
    fn binary(&self, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
        counters::launch();
        elementwise::binary(a, b, op)
    }
    fn axpy(&self, alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
        counters::launch();
        elementwise::axpy(alpha, x, y)
    }
    fn add_into(&self, y: &mut Tensor, xs: &[&Tensor]) -> Result<()> {
        for _ in xs.chunks(super::ADD_INTO_MAX) {
            counters::launch();
        }
        elementwise::add_into(y, xs)
    }
    fn axpy_multi(&self, alpha: f32, xs: &[&Tensor], ys: &mut [&mut Tensor]) -> Result<()> {
        counters::launch();
        super::shape::axpy_multi(xs, ys)?;
        for (x, y) in xs.iter().zip(ys.iter_mut()) {
            elementwise::axpy(alpha, x, y)?;
        }
        Ok(())
    }
    fn sum_all(&self, x: &Tensor) -> Result<f64> {
        counters::launch();
        counters::host_read();
        Ok(elementwise::sum_all(x.cpu()))
    }
    fn dot(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        counters::launch();
        counters::host_read();
        elementwise::dot(a, b)
    }
    fn sum_of_squares(&self, groups: &[&[&Tensor]]) -> Result<Vec<f64>> {
        counters::launch();
        counters::host_read();
        groups
            .iter()
            .map(|g| {
                let mut s = 0.0f64;
                for x in g.iter() {
                    s += elementwise::dot(x, x)?;
                }
                Ok(s)
            })
            .collect()
    }
    fn scale_samples(&self, x: &Tensor, scale: &[f32]) -> Result<Tensor> {
        counters::launch();
        elementwise::scale_samples(x, scale)
    }
    fn matmul(&self, a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Result<Tensor> {
        counters::launch();
        gemm::matmul(a, trans_a, b, trans_b)
    }
    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
        counters::launch();
        conv::forward(x, w, spec)
    }
    // The composition of the two CPU convolutions (the same values, bit for bit), counted as
    // the one launch it is on CUDA.
    fn depthwise_pointwise_forward(
        &self,
        x: &Tensor,
        w_dw: &Tensor,
        dw_spec: Conv2dSpec,
        w_pw: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        counters::launch();
        super::shape::depthwise_pointwise(x.shape(), w_dw.shape(), dw_spec, w_pw.shape())?;
        let mid = conv::forward(x, w_dw, dw_spec)?;
        let y = conv::forward(&mid, w_pw, Conv2dSpec::new())?;
        Ok((mid, y))
    }
    fn conv2d_backward_input(
        &self,
        dy: &Tensor,
        w: &Tensor,
        spec: Conv2dSpec,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        counters::launch();
        conv::backward_input(dy, w, spec, x_shape)
    }
    fn conv2d_backward_input_sq(
        &self,
        hy: &Tensor,
        w: &Tensor,
        spec: Conv2dSpec,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        counters::launch();
        // The squared weight is this call's own scratch (the same f32 products as
        // `unary(w, Square)`).
        conv::backward_input(hy, &elementwise::unary(w, Unary::Square), spec, x_shape)
    }
    fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor> {
        counters::launch();
        conv::weight_correlation("conv2d_backward_weight", x, dy, spec, w_shape, false)
    }
    fn conv2d_backward_weight_sq(
        &self,
        x: &Tensor,
        hy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor> {
        counters::launch();
        conv::weight_correlation("conv2d_backward_weight_sq", x, hy, spec, w_shape, true)
    }
    fn batch_norm_train_forward_with(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        running: Option<RunningStats<'_>>,
    ) -> Result<BatchNormForward> {
        counters::launch();
        batchnorm::train_forward_with(x, weight, bias, eps, running, false)
    }
    fn batch_norm_curvature(
        &self,
        hy: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        counters::launch();
        batchnorm::curvature_input(hy, invstd, weight)
    }
    fn batch_norm_running_update(
        &self,
        rm: &mut Tensor,
        rv: &mut Tensor,
        mean: &Tensor,
        var: &Tensor,
        momentum: f32,
        var_factor: f32,
    ) -> Result<()> {
        counters::launch();
        batchnorm::running_update(rm, rv, mean, var, momentum, var_factor)
    }
    fn batch_norm_eval_constants(
        &self,
        rm: &Tensor,
        rv: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        counters::launch();
        batchnorm::eval_constants(rm, rv, weight, bias, eps)
    }
    fn channel_affine(&self, x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
        counters::launch();
        batchnorm::channel_affine(x, scale, shift)
    }
    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<BatchNormGrads> {
        counters::launch();
        batchnorm::backward(dy, x, mean, invstd, weight)
    }
    fn channel_sums(&self, x: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        counters::launch();
        batchnorm::channel_sums(x, y)
    }
    // The ReLU-fused batch norm: the forward rectifies in its apply pass; the backward and
    // curvature mask first (the values of the two ops, bit for bit), each counted as the one
    // launch it is on CUDA.
    fn batch_norm_relu_train_forward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        running: Option<RunningStats<'_>>,
    ) -> Result<BatchNormForward> {
        counters::launch();
        batchnorm::train_forward_with(x, weight, bias, eps, running, true)
    }
    fn batch_norm_relu_backward(
        &self,
        dy: &Tensor,
        y: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<BatchNormGrads> {
        counters::launch();
        super::shape::same_shape("batch_norm_relu_backward y", y, dy)?;
        let g = elementwise::binary(y, dy, Binary::ReluMask)?;
        batchnorm::backward(&g, x, mean, invstd, weight)
    }
    fn batch_norm_relu_curvature(
        &self,
        hy: &Tensor,
        y: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        counters::launch();
        super::shape::same_shape("batch_norm_relu_curvature y", y, hy)?;
        let g = elementwise::binary(y, hy, Binary::ReluMask)?;
        batchnorm::curvature_input(&g, invstd, weight)
    }
    fn max_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<(Tensor, Tensor)> {
        counters::launch();
        pool::max_forward(x, spec)
    }
    fn max_pool2d_backward(
        &self,
        argmax: &Tensor,
        dy: &Tensor,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        // No host read: CUDA reads its offset-check flag only on the fallback path for an
        // argmax its own forward did not make (see the counters module).
        counters::launch();
        pool::max_backward(argmax, dy, x_shape)
    }
    fn avg_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
        counters::launch();
        pool::avg_forward(x, spec)
    }
    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        spec: Pool2dSpec,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor> {
        counters::launch();
        pool::avg_backward(dy, spec, x_shape, power)
    }
    fn global_avg_pool_forward(&self, x: &Tensor) -> Result<Tensor> {
        counters::launch();
        pool::global_avg_forward(x)
    }
    fn global_avg_pool_backward(
        &self,
        dy: &Tensor,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor> {
        counters::launch();
        pool::global_avg_backward(dy, x_shape, power)
    }
    fn concat_channels(&self, xs: &[&Tensor]) -> Result<Tensor> {
        counters::launch();
        structure::concat_channels(xs)
    }
    fn split_channels(&self, y: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
        counters::launch();
        structure::split_channels(y, sizes)
    }
    fn shift_crop(&self, x: &Tensor) -> Result<Tensor> {
        counters::launch();
        structure::shift_crop(x)
    }
    fn shift_crop_backward(&self, dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
        counters::launch();
        structure::shift_crop_backward(dy, x_shape)
    }
    fn select_columns(&self, x: &Tensor, idx: &[usize]) -> Result<Tensor> {
        counters::launch();
        structure::select_columns(x, idx)
    }
    fn select_columns_backward(&self, dy: &Tensor, idx: &[usize], cols: usize) -> Result<Tensor> {
        counters::launch();
        structure::select_columns_backward(dy, idx, cols)
    }
    fn mixed_forward(&self, xs: &[&Tensor], s0: &Tensor, s: &Tensor) -> Result<Tensor> {
        counters::launch();
        mixed::forward(xs, s0, s)
    }
    fn mixed_backward(
        &self,
        xs: &[&Tensor],
        dy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor)> {
        counters::launch();
        mixed::backward(xs, dy, s0, s)
    }
    fn mixed_switch_grads(&self, r: &Tensor, s0: &Tensor, s: &Tensor) -> Result<(Tensor, Tensor)> {
        counters::launch();
        mixed::switch_grads(r, s0, s)
    }
    fn mixed_curvature(
        &self,
        xs: &[&Tensor],
        hy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor, Tensor)> {
        counters::launch();
        mixed::curvature(xs, hy, s0, s)
    }
    fn softmax_cross_entropy(&self, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, Tensor)> {
        counters::launch();
        let (probs, loss) = loss::softmax_cross_entropy(logits, labels)?;
        Ok((probs, Tensor::from_vec(vec![loss], &[1])?))
    }
    fn count_correct(&self, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
        counters::launch();
        loss::count_correct(logits, labels)
    }
    fn softmax_cross_entropy_backward(&self, probs: &Tensor, labels: &[u32]) -> Result<Tensor> {
        counters::launch();
        loss::softmax_cross_entropy_backward(probs, labels)
    }
    fn softmax_cross_entropy_curvature(&self, probs: &Tensor) -> Result<Tensor> {
        counters::launch();
        loss::softmax_cross_entropy_curvature(probs)
    }
    fn sgd_momentum(
        &self,
        w: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        step: SgdStep,
    ) -> Result<()> {
        counters::launch();
        optim::sgd_momentum(w, g, m, step)
    }
    fn sgd_momentum_multi(
        &self,
        ws: &mut [&mut Tensor],
        gs: &[&Tensor],
        ms: &mut [&mut Tensor],
        step: SgdStep,
    ) -> Result<()> {
        counters::launch();
        optim::sgd_momentum_multi(ws, gs, ms, step)
    }
    fn group_lasso_grad(
        &self,
        values: &[&Tensor],
        grads: &mut [&mut Tensor],
        groups: &LassoGroups,
    ) -> Result<Tensor> {
        counters::launch();
        optim::group_lasso_grad(values, grads, groups)
    }
}
