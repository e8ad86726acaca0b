//! 2-D convolution `y = w * x` (cross-correlation, no bias: bias is its own op).

use super::be;
use crate::device::Conv2dSpec;
use crate::error::{Error, Result};
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

struct Conv2dOp {
    spec: Conv2dSpec,
}

/// The reverse maps of one convolution `y = w * x` under `spec`: `dx = conv_transpose(dy,
/// w)` when `needs[0]` and `dw = correlate(x, dy)` when `needs[1]`; with `square`, the same
/// maps with `w (.) w` and `x (.) x` (the curvature recursion).
fn conv_reverse(
    spec: Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    square: bool,
    needs: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    let b = be(dy)?;
    // Skip the passes nobody needs (the stem's input image, frozen weights).
    let dx = if needs[0] {
        Some(if square {
            // Squares `w` inside the kernel (no `w (.) w` tensor).
            b.conv2d_backward_input_sq(dy, w, spec, x.shape())?
        } else {
            b.conv2d_backward_input(dy, w, spec, x.shape())?
        })
    } else {
        None
    };
    let dw = if needs[1] {
        Some(if square {
            // Squares `x` inside the kernel's own copy: no `x (.) x` tensor.
            b.conv2d_backward_weight_sq(x, dy, spec, w.shape())?
        } else {
            b.conv2d_backward_weight(x, dy, spec, w.shape())?
        })
    } else {
        None
    };
    Ok([dx, dw])
}

impl Conv2dOp {
    fn reverse(&self, ctx: &OpCtx, dy: &Tensor, square: bool) -> Result<Vec<Option<Tensor>>> {
        let needs = [ctx.needs_grad(0), ctx.needs_grad(1)];
        let (x, w) = (ctx.inputs[0], ctx.inputs[1]);
        Ok(conv_reverse(self.spec, x, w, dy, square, needs)?.into())
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

/// A depthwise convolution then a pointwise one, as one op; inputs `[x, w_dw, w_pw]`. The
/// reverse pass is the two convolutions' own, pointwise first (the same backend calls as two
/// [`Conv2dOp`]s).
struct DepthwisePointwiseOp {
    dw_spec: Conv2dSpec,
    /// The depthwise output (the pointwise input).
    mid: Tensor,
}

impl DepthwisePointwiseOp {
    fn reverse(&self, ctx: &OpCtx, dy: &Tensor, square: bool) -> Result<Vec<Option<Tensor>>> {
        let (x, w_dw, w_pw) = (ctx.inputs[0], ctx.inputs[1], ctx.inputs[2]);
        let before = [ctx.needs_grad(0), ctx.needs_grad(1)];
        let [dmid, dw_pw] = conv_reverse(
            Conv2dSpec::new(),
            &self.mid,
            w_pw,
            dy,
            square,
            [before.contains(&true), ctx.needs_grad(2)],
        )?;
        let [dx, dw_dw] = match dmid {
            Some(dmid) => conv_reverse(self.dw_spec, x, w_dw, &dmid, square, before)?,
            None => [None, None],
        };
        Ok(vec![dx, dw_dw, dw_pw])
    }
}

impl TapeOp for DepthwisePointwiseOp {
    fn name(&self) -> &'static str {
        "depthwise_pointwise"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.reverse(ctx, dy, false)
    }
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

    /// A depthwise convolution of `x` with `w_dw` under `dw_spec` (`groups = C_in = C_out`)
    /// followed by the pointwise convolution with `w_pw: [C_out, C_in, 1, 1]` (stride 1, no
    /// padding), as one op: the values, gradients and curvatures of [`Tape::conv2d`] twice
    /// (bit for bit on the CPU), with the forward in one launch
    /// ([`crate::Backend::depthwise_pointwise_forward`]).
    ///
    /// # Errors
    /// Those of [`Tape::conv2d`], and [`Error::Invalid`] when the first convolution is not
    /// depthwise or `w_pw` is not pointwise.
    pub fn depthwise_pointwise(
        &mut self,
        x: Var,
        w_dw: Var,
        dw_spec: Conv2dSpec,
        w_pw: Var,
    ) -> Result<Var> {
        let (xv, wd, wp) = (self.value(x), self.value(w_dw), self.value(w_pw));
        if xv.device() != wd.device() || xv.device() != wp.device() {
            return Err(Error::Device(format!(
                "depthwise_pointwise: input on {} but weights on {} and {}",
                xv.device(),
                wd.device(),
                wp.device()
            )));
        }
        let (mid, y) = be(xv)?.depthwise_pointwise_forward(xv, wd, dw_spec, wp)?;
        Ok(self.push(y, &[x, w_dw, w_pw], DepthwisePointwiseOp { dw_spec, mid }))
    }
}
