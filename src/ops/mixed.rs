//! Switches: the fused mixed-op node `y = s0 * sum_k s_k x_k` and a single switch `y = s x`.

use super::be;
use crate::error::{shape_err, Result};
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

/// Inputs are `[x_1 .. x_K, s (shape [K]), s0 (shape [1])]`.
struct MixedOp {
    k: usize,
}

impl TapeOp for MixedOp {
    fn name(&self) -> &'static str {
        "mixed"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (xs, s, s0) = (
            &ctx.inputs[..self.k],
            ctx.inputs[self.k],
            ctx.inputs[self.k + 1],
        );
        let b = be(dy)?;
        let (dxs, r) = b.mixed_backward(xs, dy, s0, s)?;
        // Switch gradients from the per-sample reductions r[n, k] = sum(x_k dy), reduced on
        // the device: ds_k = s0 sum_n r[n,k], ds0 = sum_k s_k sum_n r[n,k] (skipped when no
        // switch wants one).
        let (ds, ds0) = if ctx.needs_grad(self.k) || ctx.needs_grad(self.k + 1) {
            let (ds, ds0) = b.mixed_switch_grads(&r, s0, s)?;
            (Some(ds), Some(ds0))
        } else {
            (None, None)
        };
        ctx.record_per_sample(r);
        let mut out: Vec<Option<Tensor>> = dxs.into_iter().map(Some).collect();
        out.push(ds);
        out.push(ds0);
        Ok(out)
    }
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (xs, s, s0) = (
            &ctx.inputs[..self.k],
            ctx.inputs[self.k],
            ctx.inputs[self.k + 1],
        );
        let (hxs, hs, hs0) = be(hy)?.mixed_curvature(xs, hy, s0, s)?;
        let mut out: Vec<Option<Tensor>> = hxs.into_iter().map(Some).collect();
        out.push(Some(hs));
        out.push(Some(hs0));
        Ok(out)
    }
}

impl Tape {
    /// The fused mixed-op node of an edge: `y = s0 * sum_k s[k] * xs[k]` with child switches
    /// `s` of shape `[K]` and the parent switch `s0` of shape `[1]`.
    pub fn mixed(&mut self, xs: &[Var], s: Var, s0: Var) -> Result<Var> {
        let k = xs.len();
        let (sv, s0v) = (self.value(s), self.value(s0));
        if sv.shape() != [k] {
            return shape_err("mixed child switches", format!("[{k}]"), sv.shape());
        }
        if s0v.shape() != [1] {
            return shape_err("mixed parent switch", "[1]", s0v.shape());
        }
        let vals: Vec<&Tensor> = xs.iter().map(|&x| self.value(x)).collect();
        let y = be(sv)?.mixed_forward(&vals, s0v, sv)?;
        let mut inputs = xs.to_vec();
        inputs.push(s);
        inputs.push(s0);
        Ok(self.push(y, &inputs, MixedOp { k }))
    }

    /// Scalar switch multiply `y = s * x` with `s` of shape `[1]`
    /// (gradient `sum(x dy)`, curvature `sum(x^2 hy)`).
    pub fn switch(&mut self, x: Var, s: Var) -> Result<Var> {
        let one = be(self.value(s))?.upload(vec![1.0], &[1])?;
        let one = self.input(one);
        // y = 1 * (s * x): the mixed node with K = 1 and the constant parent 1.
        self.mixed(&[x], s, one)
    }
}
