//! [`Backend`] for [`CudaBackend`]: each method validates through
//! [`crate::device::shape`] (the checks every backend shares) and launches its family's
//! kernels on the device's stream; the launchers live in one module per kernel family, as the
//! CPU backend's. See `kernels/README.md` for each kernel's launch geometry and the layout of
//! its reduction partials.

use super::CudaBackend;
use super::{batchnorm, conv, elementwise, gemm, loss, mixed, optim, pool, structure};
use crate::device::{
    Backend, BatchNormForward, BatchNormGrads, Binary, Conv2dSpec, Device, LassoGroups, Pool2dSpec,
    RunningStats, SgdStep, Unary,
};
use crate::error::{Error, Result};
use crate::tensor::{numel, Tensor};

impl Backend for CudaBackend {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.wrap(self.alloc_zeros(numel(shape))?, shape))
    }

    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::Shape {
                op: "upload",
                expected: format!("{} elements for shape {shape:?}", numel(shape)),
                found: format!("{} elements", data.len()),
            });
        }
        Ok(self.wrap(self.htod(&data)?, shape))
    }

    fn unary(&self, x: &Tensor, op: Unary) -> Result<Tensor> {
        elementwise::unary(self, x, op)
    }

    fn binary(&self, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
        elementwise::binary(self, a, b, op)
    }

    fn axpy(&self, alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
        elementwise::axpy(self, alpha, x, y)
    }

    fn add_into(&self, y: &mut Tensor, xs: &[&Tensor]) -> Result<()> {
        elementwise::add_into(self, y, xs)
    }

    fn axpy_multi(&self, alpha: f32, xs: &[&Tensor], ys: &mut [&mut Tensor]) -> Result<()> {
        elementwise::axpy_multi(self, alpha, xs, ys)
    }

    fn sum_all(&self, x: &Tensor) -> Result<f64> {
        elementwise::sum_all(self, x)
    }

    fn dot(&self, a: &Tensor, b: &Tensor) -> Result<f64> {
        elementwise::dot(self, a, b)
    }

    fn sum_of_squares(&self, groups: &[&[&Tensor]]) -> Result<Vec<f64>> {
        self.sum_of_squares_groups(groups)
    }

    fn scale_samples(&self, x: &Tensor, scale: &[f32]) -> Result<Tensor> {
        elementwise::scale_samples(self, x, scale)
    }

    fn matmul(&self, a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Result<Tensor> {
        gemm::matmul(self, a, trans_a, b, trans_b)
    }

    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
        conv::conv2d_forward(self, x, w, spec)
    }

    fn depthwise_pointwise_forward(
        &self,
        x: &Tensor,
        w_dw: &Tensor,
        dw_spec: Conv2dSpec,
        w_pw: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        conv::depthwise_pointwise_forward(self, x, w_dw, dw_spec, w_pw)
    }

    fn conv2d_backward_input(
        &self,
        dy: &Tensor,
        w: &Tensor,
        spec: Conv2dSpec,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        conv::conv2d_backward_input(self, dy, w, spec, x_shape, false)
    }

    fn conv2d_backward_input_sq(
        &self,
        hy: &Tensor,
        w: &Tensor,
        spec: Conv2dSpec,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        conv::conv2d_backward_input(self, hy, w, spec, x_shape, true)
    }

    fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor> {
        self.weight_correlation("conv2d_backward_weight", x, dy, spec, w_shape, false)
    }

    fn conv2d_backward_weight_sq(
        &self,
        x: &Tensor,
        hy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor> {
        self.weight_correlation("conv2d_backward_weight_sq", x, hy, spec, w_shape, true)
    }

    fn batch_norm_train_forward_with(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        running: Option<RunningStats<'_>>,
    ) -> Result<BatchNormForward> {
        batchnorm::batch_norm_train_forward(self, x, weight, bias, eps, running, false)
    }

    fn batch_norm_curvature(
        &self,
        hy: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        batchnorm::batch_norm_curvature(self, hy, None, invstd, weight)
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
        batchnorm::batch_norm_running_update(self, rm, rv, mean, var, momentum, var_factor)
    }

    fn batch_norm_eval_constants(
        &self,
        rm: &Tensor,
        rv: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        batchnorm::batch_norm_eval_constants(self, rm, rv, weight, bias, eps)
    }

    fn channel_affine(&self, x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
        batchnorm::channel_affine(self, x, scale, shift)
    }

    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<BatchNormGrads> {
        batchnorm::batch_norm_backward(self, dy, None, x, mean, invstd, weight)
    }

    fn batch_norm_relu_train_forward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        running: Option<RunningStats<'_>>,
    ) -> Result<BatchNormForward> {
        batchnorm::batch_norm_train_forward(self, x, weight, bias, eps, running, true)
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
        batchnorm::batch_norm_backward(self, dy, Some(y), x, mean, invstd, weight)
    }

    fn batch_norm_relu_curvature(
        &self,
        hy: &Tensor,
        y: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<Tensor> {
        batchnorm::batch_norm_curvature(self, hy, Some(y), invstd, weight)
    }

    fn channel_sums(&self, x: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        batchnorm::channel_sums(self, x, y)
    }

    fn max_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<(Tensor, Tensor)> {
        pool::max_pool2d_forward(self, x, spec)
    }

    fn max_pool2d_backward(
        &self,
        argmax: &Tensor,
        dy: &Tensor,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        pool::max_pool2d_backward(self, argmax, dy, x_shape)
    }

    fn avg_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
        pool::avg_pool2d_forward(self, x, spec)
    }

    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        spec: Pool2dSpec,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor> {
        pool::avg_pool2d_backward(self, dy, spec, x_shape, power)
    }

    fn global_avg_pool_forward(&self, x: &Tensor) -> Result<Tensor> {
        pool::global_avg_pool_forward(self, x)
    }

    fn global_avg_pool_backward(
        &self,
        dy: &Tensor,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor> {
        pool::global_avg_pool_backward(self, dy, x_shape, power)
    }

    fn concat_channels(&self, xs: &[&Tensor]) -> Result<Tensor> {
        structure::concat_channels(self, xs)
    }

    fn split_channels(&self, y: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
        structure::split_channels(self, y, sizes)
    }

    fn shift_crop(&self, x: &Tensor) -> Result<Tensor> {
        structure::shift_crop(self, x)
    }

    fn shift_crop_backward(&self, dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
        structure::shift_crop_backward(self, dy, x_shape)
    }

    fn select_columns(&self, x: &Tensor, idx: &[usize]) -> Result<Tensor> {
        structure::select_columns(self, x, idx)
    }

    fn select_columns_backward(&self, dy: &Tensor, idx: &[usize], cols: usize) -> Result<Tensor> {
        structure::select_columns_backward(self, dy, idx, cols)
    }

    fn mixed_forward(&self, xs: &[&Tensor], s0: &Tensor, s: &Tensor) -> Result<Tensor> {
        mixed::mixed_forward(self, xs, s0, s)
    }

    fn mixed_backward(
        &self,
        xs: &[&Tensor],
        dy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor)> {
        mixed::mixed_backward(self, xs, dy, s0, s)
    }

    fn mixed_switch_grads(&self, r: &Tensor, s0: &Tensor, s: &Tensor) -> Result<(Tensor, Tensor)> {
        mixed::mixed_switch_grads(self, r, s0, s)
    }

    fn mixed_curvature(
        &self,
        xs: &[&Tensor],
        hy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor, Tensor)> {
        mixed::mixed_curvature(self, xs, hy, s0, s)
    }

    fn softmax_cross_entropy(&self, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, Tensor)> {
        loss::softmax_cross_entropy(self, logits, labels)
    }

    fn count_correct(&self, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
        loss::count_correct(self, logits, labels)
    }

    fn softmax_cross_entropy_backward(&self, probs: &Tensor, labels: &[u32]) -> Result<Tensor> {
        loss::softmax_cross_entropy_backward(self, probs, labels)
    }

    fn softmax_cross_entropy_curvature(&self, probs: &Tensor) -> Result<Tensor> {
        loss::softmax_cross_entropy_curvature(self, probs)
    }

    fn sgd_momentum(
        &self,
        w: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        step: SgdStep,
    ) -> Result<()> {
        optim::sgd_momentum(self, w, g, m, step)
    }

    fn sgd_momentum_multi(
        &self,
        ws: &mut [&mut Tensor],
        gs: &[&Tensor],
        ms: &mut [&mut Tensor],
        step: SgdStep,
    ) -> Result<()> {
        optim::sgd_momentum_multi(self, ws, gs, ms, step)
    }

    fn group_lasso_grad(
        &self,
        values: &[&Tensor],
        grads: &mut [&mut Tensor],
        groups: &LassoGroups,
    ) -> Result<Tensor> {
        optim::group_lasso_grad(self, values, grads, groups)
    }
}
