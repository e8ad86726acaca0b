//! 2-D convolution `y = w * x` (cross-correlation, no bias: bias is its own op).

use super::be;
use crate::device::Conv2dSpec;
use crate::error::{Error, Result};
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

struct Conv2dOp {
    spec: Conv2dSpec,
}

impl Conv2dOp {
    /// `dx = conv_transpose(dy, w)`, `dw = correlate(x, dy)`; with `square`, the same maps
    /// with `w (.) w` and `x (.) x` (the curvature recursion).
    fn reverse(&self, ctx: &OpCtx, dy: &Tensor, square: bool) -> Result<Vec<Option<Tensor>>> {
        let b = be(dy)?;
        let (x, w) = (ctx.inputs[0], ctx.inputs[1]);
        // Skip the passes nobody needs (the stem's input image, frozen weights).
        let dx = if ctx.needs_grad(0) {
            Some(if square {
                // Squares `w` inside the kernel (no `w (.) w` tensor).
                b.conv2d_backward_input_sq(dy, w, self.spec, x.shape())?
            } else {
                b.conv2d_backward_input(dy, w, self.spec, x.shape())?
            })
        } else {
            None
        };
        let dw = if ctx.needs_grad(1) {
            Some(if square {
                // Squares `x` inside the kernel's own copy: no `x (.) x` tensor.
                b.conv2d_backward_weight_sq(x, dy, self.spec, w.shape())?
            } else {
                b.conv2d_backward_weight(x, dy, self.spec, w.shape())?
            })
        } else {
            None
        };
        Ok(vec![dx, dw])
    }
}

impl TapeOp for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.reverse(ctx, dy, false)
    }
    // y is linear in x and in w: hx = conv_transpose(hy, w.w), hw = correlate(x.x, hy)
    // (method note, section 6).
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.reverse(ctx, hy, true)
    }
}

impl Tape {
    /// 2-D convolution (cross-correlation, as in PyTorch) of `x: [N, C_in, H, W]` with
    /// `w: [C_out, C_in / groups, k, k]`, giving `[N, C_out, H_out, W_out]` with
    /// `H_out = (H + 2 padding - dilation (k - 1) - 1) / stride + 1` (likewise `W_out`):
    ///
    /// `y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] x[n, g C_in/groups + c, i stride + a dilation - padding, j stride + b dilation - padding]`
    ///
    /// where `g = o / (C_out / groups)` and positions outside the input read zero. There is
    /// no bias (add one with the bias op). Depthwise convolutions (`groups == C_in == C_out`)
    /// run direct kernels; dense, pointwise and grouped ones run per-image GEMMs.
    ///
    /// Gradients: `dx` is the transposed convolution of `dy` with `w`, `dw` the correlation
    /// of `x` with `dy` summed over the batch (deterministically). Curvature (method note,
    /// section 6): `hx` is the transposed convolution of `hy` with `w (.) w` and `hw` the
    /// correlation of `x (.) x` with `hy`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `x` or `w` is not 4-D, the kernel is not square, or `w` does not
    /// have `C_in / groups` input channels; [`Error::Invalid`] when stride, dilation or groups
    /// is zero, `C_in` or `C_out` is not divisible by `groups`, or the dilated kernel does
    /// not fit in the padded input (empty output); [`Error::Device`] when `x` and `w` live
    /// on different devices.
    pub fn conv2d(&mut self, x: Var, w: Var, spec: Conv2dSpec) -> Result<Var> {
        let (xv, wv) = (self.value(x), self.value(w));
        if xv.device() != wv.device() {
            return Err(Error::Device(format!(
                "conv2d: input on {} but weight on {}",
                xv.device(),
                wv.device()
            )));
        }
        let y = be(xv)?.conv2d_forward(xv, wv, spec)?;
        Ok(self.push(y, &[x, w], Conv2dOp { spec }))
    }
}
