//! The device seam: one [`Backend`] trait that every device implements.
//!
//! Ops in [`crate::ops`] own the autograd logic (what to save, how gradients and curvatures
//! flow); the backend owns the kernels. The CPU backend lives in [`cpu`], the CUDA backend in
//! [`cuda`]; both validate their operands with the same checks (`shape.rs`), so an op reports
//! the same error on every device.

pub mod counters;
pub mod cpu;
pub mod cuda;
pub(crate) mod shape;

pub(crate) use shape::same_shape;

use crate::error::Result;
use crate::tensor::Tensor;

/// The most tensors one [`Backend::add_into`] launch adds (more take one launch per this
/// many).
pub const ADD_INTO_MAX: usize = cuda::params::ADD_INTO_MAX as usize;

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host CPU (rayon thread pool).
    Cpu,
    /// CUDA device by ordinal.
    Cuda(usize),
}

impl Device {
    /// The backend implementing this device's kernels.
    pub fn backend(self) -> Result<&'static dyn Backend> {
        match self {
            Device::Cpu => Ok(&cpu::CpuBackend),
            Device::Cuda(i) => cuda::backend(i).map(|b| b as &'static dyn Backend),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// Square 2-D convolution geometry. Weight shape is `[c_out, c_in / groups, k, k]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dSpec {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Conv2dSpec {
    /// Stride 1, no padding, dilation 1, one group.
    pub fn new() -> Self {
        Conv2dSpec {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Output size along one spatial axis of size `input` for kernel size `k`.
    pub fn out_size(&self, input: usize, k: usize) -> usize {
        (input + 2 * self.padding - self.dilation * (k - 1) - 1) / self.stride + 1
    }
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Self::new()
    }
}

/// Square pooling window geometry (max and average pooling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dSpec {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2dSpec {
    /// Output size along one spatial axis of size `input`.
    pub fn out_size(&self, input: usize) -> usize {
        (input + 2 * self.padding - self.kernel) / self.stride + 1
    }
    /// Output shape `[N, C, Ho, Wo]` of an `[N, C, H, W]` input.
    pub fn out_shape(&self, [n, c, h, w]: [usize; 4]) -> [usize; 4] {
        [n, c, self.out_size(h), self.out_size(w)]
    }
}

/// Elementwise unary maps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    Square,
    Scale(f32),
}

/// Elementwise binary maps of two same-shape tensors `a`, `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    /// `b * 1[a > 0]`: ReLU backward (and curvature) with `a` the ReLU input.
    ReluMask,
}

/// Result of a training-mode batch-norm forward.
#[derive(Clone, Debug)]
pub struct BatchNormForward {
    /// Normalised (and, with affine parameters, scaled and shifted) output.
    pub y: Tensor,
    /// Per-channel batch mean, shape `[C]`.
    pub mean: Tensor,
    /// Per-channel biased batch variance, shape `[C]` (what the forward normalised with).
    pub var: Tensor,
    /// Per-channel `1 / sqrt(var + eps)`, shape `[C]`.
    pub invstd: Tensor,
}

/// The running statistics a training-mode batch-norm forward updates as it computes the
/// batch statistics ([`Backend::batch_norm_train_forward_with`]): `mean = mean (1 -
/// momentum) + momentum * batch mean`, `var = var (1 - momentum) + var_factor * batch var`
/// (f32; `var_factor` is `momentum * m / (m - 1)` for the unbiased variance).
#[derive(Debug)]
pub struct RunningStats<'a> {
    pub mean: &'a mut Tensor,
    pub var: &'a mut Tensor,
    pub momentum: f32,
    pub var_factor: f32,
}

/// Gradients of batch norm.
#[derive(Clone, Debug)]
pub struct BatchNormGrads {
    pub dx: Tensor,
    /// `sum(dy * x_hat)` per channel (the affine weight's gradient).
    pub dweight: Tensor,
    /// `sum(dy)` per channel (the affine bias's gradient).
    pub dbias: Tensor,
}

/// Settings of one [`Backend::sgd_momentum`] update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Multiplies every gradient before the update (clipping).
    pub grad_scale: f32,
}

/// The groups of a group-lasso penalty `sum_g coef[g] * ||v_g||` over scalar members of
/// several tensors ([`Backend::group_lasso_grad`]). Group `g` has the members
/// `start[g]..start[g + 1]`; member `m` is element `elem[m]` of tensor `tensor[m]`. A member
/// may belong to one group only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LassoGroups {
    /// `groups + 1` offsets into `tensor`/`elem`, starting at 0, non-decreasing.
    pub start: Vec<usize>,
    pub tensor: Vec<usize>,
    pub elem: Vec<usize>,
    /// The group's factor (`lambda * omega`), one per group.
    pub coef: Vec<f64>,
}

impl LassoGroups {
    /// Number of groups.
    pub fn len(&self) -> usize {
        self.coef.len()
    }
    pub fn is_empty(&self) -> bool {
        self.coef.is_empty()
    }
}

/// Kernels of one device. Every method validates shapes it relies on and returns an error
/// (never panics) on misuse; out-of-memory on an accelerator is an error too.
pub trait Backend: Send + Sync {
    /// Which device this is.
    fn device(&self) -> Device;

    // ----- memory -----
    /// Zeros of `shape`.
    fn zeros(&self, shape: &[usize]) -> Result<Tensor>;
    /// Upload host data.
    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor>;

    // ----- elementwise and reductions -----
    fn unary(&self, x: &Tensor, op: Unary) -> Result<Tensor>;
    fn binary(&self, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor>;
    /// `y += alpha * x`.
    fn axpy(&self, alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()>;
    /// `ys[i] += alpha * xs[i]` for several pairs of equal shapes, in one launch (the same
    /// per-element arithmetic as [`Backend::axpy`]).
    fn axpy_multi(&self, alpha: f32, xs: &[&Tensor], ys: &mut [&mut Tensor]) -> Result<()>;
    /// `y += xs[0] + xs[1] + ...`: each tensor added to the running value in order, in f32
    /// (the values of one `axpy(1.0, x, y)` per tensor), in one launch per
    /// [`ADD_INTO_MAX`] tensors. Every shape is checked before `y` changes.
    fn add_into(&self, y: &mut Tensor, xs: &[&Tensor]) -> Result<()>;
    /// Sum of all elements (accumulated in f64, deterministic order).
    fn sum_all(&self, x: &Tensor) -> Result<f64>;
    /// Sum of `a * b` over all elements (f64 accumulation, deterministic order).
    fn dot(&self, a: &Tensor, b: &Tensor) -> Result<f64>;
    /// For each group of tensors, `sum_i dot(x_i, x_i)` (f64, the tensors' sums added in
    /// order, each the same arithmetic as [`Backend::dot`]), with ONE host read for all
    /// groups.
    fn sum_of_squares(&self, groups: &[&[&Tensor]]) -> Result<Vec<f64>>;
    /// Multiply every sample `n` of `x` (shape `[N, ...]`) by `scale[n]` (shape `[N]`, host).
    fn scale_samples(&self, x: &Tensor, scale: &[f32]) -> Result<Tensor>;

    // ----- dense linear algebra -----
    /// 2-D matrix product `op(a) * op(b)` where `op` transposes when asked.
    fn matmul(&self, a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Result<Tensor>;

    // ----- convolution -----
    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, spec: Conv2dSpec) -> Result<Tensor>;
    /// Gradient with respect to the input (a transposed convolution of `dy` with `w`).
    /// With `w` squared elementwise this is the curvature recursion's input step.
    fn conv2d_backward_input(
        &self,
        dy: &Tensor,
        w: &Tensor,
        spec: Conv2dSpec,
        x_shape: &[usize],
    ) -> Result<Tensor>;
    /// The curvature recursion's input step: the transposed convolution of `hy` with `w (.)
    /// w`, squaring on the fly (equal to [`Backend::conv2d_backward_input`] of the squared
    /// weight, without making that tensor; on CUDA one launch for a depthwise weight, a
    /// squaring launch before the GEMM for a dense one).
    fn conv2d_backward_input_sq(
        &self,
        hy: &Tensor,
        w: &Tensor,
        spec: Conv2dSpec,
        x_shape: &[usize],
    ) -> Result<Tensor>;
    /// Gradient with respect to the weight (correlation of `x` with `dy`, summed over the
    /// batch). With `x` squared and `hy` for `dy` this is the weight curvature.
    fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor>;
    /// Weight curvature: correlation of `x (.) x` with `hy`, squaring on the fly (equal to
    /// `conv2d_backward_weight` of the squared input, without making that tensor).
    fn conv2d_backward_weight_sq(
        &self,
        x: &Tensor,
        hy: &Tensor,
        spec: Conv2dSpec,
        w_shape: &[usize],
    ) -> Result<Tensor>;

    /// A depthwise convolution followed by a pointwise one (1x1, stride 1, no padding, one
    /// group), the pair of a separable convolution: `mid = conv2d_forward(x, w_dw, dw_spec)`
    /// and `y = conv2d_forward(mid, w_pw, Conv2dSpec::new())`, in one launch on CUDA (the
    /// block keeps its tile of `mid` in shared memory for the pointwise sums). Returns `(mid,
    /// y)`: `mid` is what the pointwise weight gradient correlates with. The values are
    /// those of the two calls (bit for bit on the CPU, which composes them).
    ///
    /// # Errors
    /// The convolutions' own errors, and [`crate::Error::Invalid`] when `dw_spec` is not
    /// depthwise (`groups = C_in = C_out`) or `w_pw` is not `[C_out, C_in, 1, 1]`.
    fn depthwise_pointwise_forward(
        &self,
        x: &Tensor,
        w_dw: &Tensor,
        dw_spec: Conv2dSpec,
        w_pw: &Tensor,
    ) -> Result<(Tensor, Tensor)>;

    // ----- batch norm (NCHW, per channel) -----
    /// Training-mode batch norm: normalises with the batch mean and biased variance.
    fn batch_norm_train_forward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<BatchNormForward> {
        self.batch_norm_train_forward_with(x, weight, bias, eps, None)
    }
    /// [`Backend::batch_norm_train_forward`] that, given `running`, also updates those
    /// running statistics from the batch statistics it computes, in the same launches (the
    /// values of [`Backend::batch_norm_running_update`] with the returned mean and var).
    /// Every operand, `running` included, is checked before anything is written.
    fn batch_norm_train_forward_with(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        running: Option<RunningStats<'_>>,
    ) -> Result<BatchNormForward>;
    /// The running statistics update of training-mode batch norm (PyTorch), in one launch
    /// (the batch-norm op folds it into the forward: [`Backend::batch_norm_train_forward_with`]):
    /// `rm = rm * (1 - momentum) + momentum * mean`, `rv = rv * (1 - momentum) + var_factor
    /// * var` (f32; `var_factor` is `momentum * m / (m - 1)` for the unbiased variance).
    fn batch_norm_running_update(
        &self,
        rm: &mut Tensor,
        rv: &mut Tensor,
        mean: &Tensor,
        var: &Tensor,
        momentum: f32,
        var_factor: f32,
    ) -> Result<()>;
    /// The per-channel constants of evaluation-mode batch norm, on the device: `invstd = 1 /
    /// sqrt(rv + eps)`, `slope = invstd * weight` and `shift = bias - rm * slope` (f64 math,
    /// each rounded to f32; weight 1 and bias 0 when absent). Returns `(slope, shift,
    /// invstd)`, each `[C]`.
    fn batch_norm_eval_constants(
        &self,
        rm: &Tensor,
        rv: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)>;
    /// The curvature rule of batch norm as a per-channel affine map: `hx = hy * (g * g)` with
    /// `g = weight[c] * invstd[c]` (`invstd[c]` without weight), each product rounded to f32
    /// (the values of `binary(Mul)`, `unary(Square)` and `channel_affine`, in one launch).
    fn batch_norm_curvature(
        &self,
        hy: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<Tensor>;
    /// `y = (x - mean[c]) * scale[c] + shift[c]` computed as a per-channel affine map.
    fn channel_affine(&self, x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor>;
    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<BatchNormGrads>;
    /// Per-channel sums over N, H, W of `x` (or of `x * y` when `y` is given); shape `[C]`.
    fn channel_sums(&self, x: &Tensor, y: Option<&Tensor>) -> Result<Tensor>;

    // ----- batch norm followed by ReLU (one op: the ReLU costs no launch of its own) -----
    /// `max(bn(x), 0)`: [`Backend::batch_norm_train_forward_with`] followed by
    /// `unary(Relu)`, in the launches of the batch norm alone (its apply pass rectifies).
    /// The returned `y` is the rectified output; mean, var and invstd are the batch norm's.
    /// The values are those of the two calls (bit for bit on the CPU, which composes its two
    /// kernels).
    fn batch_norm_relu_train_forward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        running: Option<RunningStats<'_>>,
    ) -> Result<BatchNormForward>;
    /// The backward of [`Backend::batch_norm_relu_train_forward`]: `dy` masked by `y > 0`
    /// (`y` the rectified output; the mask `binary(y, dy, ReluMask)`, equal to the one the
    /// pre-ReLU values give) and then [`Backend::batch_norm_backward`], in the launches of
    /// the batch-norm backward alone (its kernels read the mask on the fly).
    fn batch_norm_relu_backward(
        &self,
        dy: &Tensor,
        y: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<BatchNormGrads>;
    /// The curvature rule of [`Backend::batch_norm_relu_train_forward`]: `hy` masked by
    /// `y > 0` (ReLU's `f'^2 = 1[x > 0]`), then [`Backend::batch_norm_curvature`], in one
    /// launch.
    fn batch_norm_relu_curvature(
        &self,
        hy: &Tensor,
        y: &Tensor,
        invstd: &Tensor,
        weight: Option<&Tensor>,
    ) -> Result<Tensor>;

    // ----- pooling -----
    /// Max pooling; returns `(y, argmax)`. `argmax` has `y`'s shape and holds, for each
    /// output, the flat in-plane offset `i * W + j` of the input element it took: the first
    /// maximum of the window in row-major order (padding never wins; a NaN does, the last one
    /// of the window if several, so NaN propagates as in PyTorch). The offsets are stored as
    /// f32, exact because planes are limited to 2^24 elements (larger ones are refused), so
    /// that they stay on the device like any other tensor.
    fn max_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<(Tensor, Tensor)>;
    /// Routes `dy` through the `argmax` of [`Backend::max_pool2d_forward`] into a zero input
    /// gradient of shape `x_shape`: `dx[n, c][argmax[o]] += dy[o]`, in output order per plane
    /// (deterministic). An offset outside the plane is an error.
    fn max_pool2d_backward(
        &self,
        argmax: &Tensor,
        dy: &Tensor,
        x_shape: &[usize],
    ) -> Result<Tensor>;
    /// Average over the window, padding excluded from the count.
    fn avg_pool2d_forward(&self, x: &Tensor, spec: Pool2dSpec) -> Result<Tensor>;
    /// Spreads `dy / n^power` of each window over its `n` counted inputs
    /// (`power = 1`: gradient, `power = 2`: curvature).
    fn avg_pool2d_backward(
        &self,
        dy: &Tensor,
        spec: Pool2dSpec,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor>;
    /// `[N, C, H, W] -> [N, C]` mean over H, W.
    fn global_avg_pool_forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Spreads `dy / (HW)^power` over each plane.
    fn global_avg_pool_backward(
        &self,
        dy: &Tensor,
        x_shape: &[usize],
        power: i32,
    ) -> Result<Tensor>;

    // ----- structure -----
    /// Concatenate along channels (dim 1) of NCHW tensors with equal N, H, W.
    fn concat_channels(&self, xs: &[&Tensor]) -> Result<Tensor>;
    /// Split along channels into pieces of the given channel counts.
    fn split_channels(&self, y: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>>;
    /// `x[:, :, 1:, 1:]` (the shifted input of factorized reduce).
    fn shift_crop(&self, x: &Tensor) -> Result<Tensor>;
    /// Adjoint of [`Backend::shift_crop`]: zero-pad `dy` at the top and left.
    fn shift_crop_backward(&self, dy: &Tensor, x_shape: &[usize]) -> Result<Tensor>;
    /// `y = x[:, idx]` for `x` of shape `[N, cols]` and unique column indices `idx`: the
    /// `[N, idx.len()]` copy of the selected columns, in `idx` order.
    fn select_columns(&self, x: &Tensor, idx: &[usize]) -> Result<Tensor>;
    /// Adjoint of [`Backend::select_columns`]: the `[N, cols]` tensor holding `0 + dy[:, j]`
    /// in column `idx[j]` and zeros elsewhere.
    fn select_columns_backward(&self, dy: &Tensor, idx: &[usize], cols: usize) -> Result<Tensor>;

    // ----- fused mixed op: y = s0 * sum_k s_k x_k -----
    fn mixed_forward(&self, xs: &[&Tensor], s0: &Tensor, s: &Tensor) -> Result<Tensor>;
    /// Returns `dx_k = s0 s_k dy` and the per-sample reductions `r[n, k] = sum(x_k[n] dy[n])`
    /// (shape `[N, K]`) from which every switch gradient follows, in one pass.
    fn mixed_backward(
        &self,
        xs: &[&Tensor],
        dy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor)>;
    /// The switch gradients from the per-sample reductions `r` (`[N, K]`) of
    /// [`Backend::mixed_backward`], on the device: `ds[k] = s0 * sum_n r[n, k]` (shape `[K]`)
    /// and `ds0 = sum_k s[k] * sum_n r[n, k]` (shape `[1]`); sums in f64, `n` then `k` in order.
    fn mixed_switch_grads(&self, r: &Tensor, s0: &Tensor, s: &Tensor) -> Result<(Tensor, Tensor)>;
    /// Returns `hx_k = (s0 s_k)^2 hy`, `h_s[k] = sum((s0 x_k)^2 hy)` (shape `[K]`) and
    /// `h_s0 = sum((sum_k s_k x_k)^2 hy)` (shape `[1]`), in one pass.
    fn mixed_curvature(
        &self,
        xs: &[&Tensor],
        hy: &Tensor,
        s0: &Tensor,
        s: &Tensor,
    ) -> Result<(Vec<Tensor>, Tensor, Tensor)>;

    // ----- loss -----
    /// Row-wise softmax of `[B, K]` logits and the mean cross-entropy against `labels`
    /// (class indices). Returns `(probs, loss)`, the loss a `[1]` tensor on the device (no
    /// host read).
    fn softmax_cross_entropy(&self, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, Tensor)>;
    /// The number of rows of `[B, K]` logits whose arg-max (the first largest value) equals
    /// the label, as a `[1]` tensor on the device (exact below 2^24 rows; no host read).
    fn count_correct(&self, logits: &Tensor, labels: &[u32]) -> Result<Tensor>;
    /// Gradient of that mean cross-entropy with respect to the logits, from the `[B, K]`
    /// probabilities: `(probs - onehot(labels)) / B`.
    fn softmax_cross_entropy_backward(&self, probs: &Tensor, labels: &[u32]) -> Result<Tensor>;
    /// Curvature seed of the mean cross-entropy (method note section 6): `(p - p^2) / B` for
    /// every class.
    fn softmax_cross_entropy_curvature(&self, probs: &Tensor) -> Result<Tensor>;

    // ----- optimiser -----
    /// SGD with momentum (PyTorch semantics): `g' = scale*g + wd*w; m = mu*m + g'; w -= lr*m`.
    fn sgd_momentum(&self, w: &mut Tensor, g: &Tensor, m: &mut Tensor, step: SgdStep)
        -> Result<()>;
    /// [`Backend::sgd_momentum`] of several tensors (`ws[i]`, `gs[i]`, `ms[i]` of one shape)
    /// with the same settings, in one launch; the same per-element arithmetic.
    fn sgd_momentum_multi(
        &self,
        ws: &mut [&mut Tensor],
        gs: &[&Tensor],
        ms: &mut [&mut Tensor],
        step: SgdStep,
    ) -> Result<()>;

    // ----- penalties -----
    /// Adds the gradient of `sum_g coef[g] ||v_g||` to `grads` (`grads[i]` has the shape of
    /// `values[i]`): member `m` of group `g` gets `(coef[g] * v_m / ||v_g||) as f32` (nothing
    /// when `||v_g|| = 0`); norms in f64. Returns the penalty as a `[1]` tensor on the device
    /// (groups added in order in f64). One launch, no host read.
    fn group_lasso_grad(
        &self,
        values: &[&Tensor],
        grads: &mut [&mut Tensor],
        groups: &LassoGroups,
    ) -> Result<Tensor>;
}
