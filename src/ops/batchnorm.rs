//! Batch norm over `[N, C, ...]` (per channel) and the per-channel bias add.
//!
//! Training mode normalises with the batch statistics (the gradient flows through them) and
//! optionally updates running statistics; evaluation mode is the per-channel affine map given
//! by the running statistics. The curvature rule of both modes treats batch norm as the
//! per-channel affine map with the statistics of that forward (method note, section 6).

use super::be;
use crate::device::{Backend, Binary, RunningStats, Unary};
use crate::error::{shape_err, Error, Result};
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

/// Inputs are `[x, weight?, bias?]`.
struct BatchNormOp {
    /// Whether the statistics are the batch's own (training), so that the gradient flows
    /// through them; otherwise they are constants (running statistics, evaluation).
    batch_stats: bool,
    /// Whether a ReLU follows in the same op (the output is `max(bn(x), 0)`): gradients and
    /// curvatures are first masked by `output > 0`, which is where the pre-ReLU value is
    /// positive.
    relu: bool,
    has_weight: bool,
    has_bias: bool,
    /// The statistics the forward normalised with, `[C]`.
    mean: Tensor,
    invstd: Tensor,
}

impl BatchNormOp {
    fn weight<'a>(&self, ctx: &OpCtx<'a>) -> Option<&'a Tensor> {
        self.has_weight.then(|| ctx.inputs[1])
    }

    /// The per-channel slope `weight * invstd` of the affine map (`invstd` without weight).
    fn slope(&self, b: &dyn Backend, ctx: &OpCtx) -> Result<Tensor> {
        match self.weight(ctx) {
            Some(w) => b.binary(w, &self.invstd, Binary::Mul),
            None => Ok(self.invstd.clone()),
        }
    }

    /// `x_hat = (x - mean) * invstd`.
    fn x_hat(&self, b: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let shift = b.unary(
            &b.binary(&self.mean, &self.invstd, Binary::Mul)?,
            Unary::Scale(-1.0),
        )?;
        b.channel_affine(x, &self.invstd, Some(&shift))
    }

    /// Assembles `[dx, dweight?, dbias?]` in input order.
    fn outputs(&self, dx: Tensor, dw: Option<Tensor>, db: Option<Tensor>) -> Vec<Option<Tensor>> {
        let mut out = vec![Some(dx)];
        if self.has_weight {
            out.push(dw);
        }
        if self.has_bias {
            out.push(db);
        }
        out
    }
}

impl TapeOp for BatchNormOp {
    fn name(&self) -> &'static str {
        "batch_norm"
    }

    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let b = be(dy)?;
        let x = ctx.inputs[0];
        if self.batch_stats {
            let (m, is, w) = (&self.mean, &self.invstd, self.weight(ctx));
            let g = match self.relu {
                true => b.batch_norm_relu_backward(dy, ctx.output, x, m, is, w)?,
                false => b.batch_norm_backward(dy, x, m, is, w)?,
            };
            return Ok(self.outputs(g.dx, Some(g.dweight), Some(g.dbias)));
        }
        let masked;
        let dy = match self.relu {
            true => {
                masked = b.binary(ctx.output, dy, Binary::ReluMask)?;
                &masked
            }
            false => dy,
        };
        // Constant statistics: y = x * slope + shift.
        let dx = b.channel_affine(dy, &self.slope(b, ctx)?, None)?;
        let dw = match self.has_weight {
            true => Some(b.channel_sums(&self.x_hat(b, x)?, Some(dy))?),
            false => None,
        };
        let db = match self.has_bias {
            true => Some(b.channel_sums(dy, None)?),
            false => None,
        };
        Ok(self.outputs(dx, dw, db))
    }

    // hx = hy * slope^2, hweight = sum(x_hat^2 hy), hbias = sum(hy), per channel.
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let b = be(hy)?;
        let (is, w) = (&self.invstd, self.weight(ctx));
        // With ReLU, the affine parameters see the masked hy too: then it is made once and
        // shared; otherwise the input map masks on the fly.
        let masked;
        let (hy, hx) = match (self.relu, self.has_weight || self.has_bias) {
            (true, true) => {
                masked = b.binary(ctx.output, hy, Binary::ReluMask)?;
                (&masked, b.batch_norm_curvature(&masked, is, w)?)
            }
            (true, false) => (hy, b.batch_norm_relu_curvature(hy, ctx.output, is, w)?),
            (false, _) => (hy, b.batch_norm_curvature(hy, is, w)?),
        };
        let hw = match self.has_weight {
            true => {
                let xh2 = b.unary(&self.x_hat(b, ctx.inputs[0])?, Unary::Square)?;
                Some(b.channel_sums(&xh2, Some(hy))?)
            }
            false => None,
        };
        let hb = match self.has_bias {
            true => Some(b.channel_sums(hy, None)?),
            false => None,
        };
        Ok(self.outputs(hx, hw, hb))
    }
}

/// `y = x + b[c]`; inputs `[x, b]`.
struct ChannelBiasOp;

impl TapeOp for ChannelBiasOp {
    fn name(&self) -> &'static str {
        "add_channel_bias"
    }
    fn backward(&self, _ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![
            Some(dy.clone()),
            Some(be(dy)?.channel_sums(dy, None)?),
        ])
    }
    // The map is linear with unit coefficients: hx = hy, hb = sum(hy) per channel.
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

/// Number of channels of an `[N, C, ...]` tensor.
fn channels(op: &'static str, x: &Tensor) -> Result<usize> {
    match x.shape() {
        [_, c, ..] => Ok(*c),
        _ => shape_err(op, "[N, C, ...]", x.shape()),
    }
}

fn check_vec(op: &'static str, t: &Tensor, c: usize) -> Result<()> {
    if t.shape() != [c] {
        return shape_err(op, format!("[{c}]"), t.shape());
    }
    Ok(())
}

impl Tape {
    /// Batch norm of `x: [N, C, ...]` (NCHW images, or `[N, C]`) per channel, with optional
    /// affine `weight` and `bias` of shape `[C]`.
    ///
    /// Training mode ([`Tape::is_training`]) normalises with the batch mean and biased
    /// variance; when `running = Some((mean, var))` is given those buffers are updated as in
    /// PyTorch: `r = (1 - momentum) r + momentum b` with the *unbiased* batch variance.
    /// Evaluation mode normalises with `running`, which is then required.
    pub fn batch_norm(
        &mut self,
        x: Var,
        weight: Option<Var>,
        bias: Option<Var>,
        running: Option<(&mut Tensor, &mut Tensor)>,
        momentum: f32,
        eps: f32,
    ) -> Result<Var> {
        self.batch_norm_impl(x, weight, bias, running, momentum, eps, false)
    }

    /// `max(batch_norm(x), 0)`: [`Tape::batch_norm`] followed by [`Tape::relu`] as one op,
    /// with the same values, gradients and curvatures (bit for bit on the CPU). In training
    /// mode the ReLU costs no launch of its own: the batch-norm kernels rectify the output
    /// and mask the gradient and curvature on the fly
    /// ([`Backend::batch_norm_relu_train_forward`]); the tape also keeps one tensor instead
    /// of two.
    pub fn batch_norm_relu(
        &mut self,
        x: Var,
        weight: Option<Var>,
        bias: Option<Var>,
        running: Option<(&mut Tensor, &mut Tensor)>,
        momentum: f32,
        eps: f32,
    ) -> Result<Var> {
        self.batch_norm_impl(x, weight, bias, running, momentum, eps, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_norm_impl(
        &mut self,
        x: Var,
        weight: Option<Var>,
        bias: Option<Var>,
        running: Option<(&mut Tensor, &mut Tensor)>,
        momentum: f32,
        eps: f32,
        relu: bool,
    ) -> Result<Var> {
        let xv = self.value(x);
        let b = be(xv)?;
        let c = channels("batch_norm input", xv)?;
        let (wv, bv) = (weight.map(|v| self.value(v)), bias.map(|v| self.value(v)));
        if let Some(w) = wv {
            check_vec("batch_norm weight", w, c)?;
        }
        if let Some(bb) = bv {
            check_vec("batch_norm bias", bb, c)?;
        }
        if let Some((rm, rv)) = &running {
            check_vec("batch_norm running mean", rm, c)?;
            check_vec("batch_norm running var", rv, c)?;
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::Invalid(format!(
                "batch_norm: eps must be finite and >= 0, got {eps}"
            )));
        }
        let (y, mean, invstd) = if self.is_training() {
            if running.is_some() && !(0.0..=1.0).contains(&momentum) {
                return Err(Error::Invalid(format!(
                    "batch_norm: momentum must be in [0, 1], got {momentum}"
                )));
            }
            // The running statistics are updated in the statistics launch itself.
            let running = running.map(|(rm, rv)| {
                // Values per channel (the forward refuses fewer than 2).
                let m = xv.numel() / c.max(1);
                let unbias = m as f64 / (m as f64 - 1.0);
                RunningStats {
                    mean: rm,
                    var: rv,
                    momentum,
                    var_factor: (momentum as f64 * unbias) as f32,
                }
            });
            let f = match relu {
                true => b.batch_norm_relu_train_forward(xv, wv, bv, eps, running)?,
                false => b.batch_norm_train_forward_with(xv, wv, bv, eps, running)?,
            };
            (f.y, f.mean, f.invstd)
        } else {
            let Some((rm, rv)) = running else {
                return Err(Error::Invalid(
                    "batch_norm: evaluation mode needs the running statistics".into(),
                ));
            };
            // Per-channel constants of the affine map, on the device:
            // slope = w / sqrt(var + eps), shift = bias - mean * slope.
            let (slope, shift, invstd) = b.batch_norm_eval_constants(rm, rv, wv, bv, eps)?;
            let mut y = b.channel_affine(xv, &slope, Some(&shift))?;
            if relu {
                y = b.unary(&y, Unary::Relu)?;
            }
            (y, rm.clone(), invstd)
        };
        let mut inputs = vec![x];
        inputs.extend(weight);
        inputs.extend(bias);
        let op = BatchNormOp {
            batch_stats: self.is_training(),
            relu,
            has_weight: weight.is_some(),
            has_bias: bias.is_some(),
            mean,
            invstd,
        };
        Ok(self.push(y, &inputs, op))
    }

    /// `y = x + b[c]` for `x: [N, C, ...]` and `b: [C]` (a per-channel bias).
    pub fn add_channel_bias(&mut self, x: Var, b: Var) -> Result<Var> {
        let (xv, bv) = (self.value(x), self.value(b));
        let c = channels("add_channel_bias input", xv)?;
        check_vec("add_channel_bias bias", bv, c)?;
        let be = be(xv)?;
        // x * 1 is exact, so this is exactly the f32 sum x + b.
        let ones = be.upload(vec![1.0; c], &[c])?;
        let y = be.channel_affine(xv, &ones, Some(bv))?;
        Ok(self.push(y, &[x, b], ChannelBiasOp))
    }
}
