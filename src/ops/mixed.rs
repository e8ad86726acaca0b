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
        // Switch gradients from the per-sample reductions r[n, k] = sum(x_k dy):
        // ds_k = s0 sum_n r[n,k], ds0 = sum_k s_k sum_n r[n,k]. These are K + 1 numbers: read
        // them on the host.
        let rh = r.to_vec();
        let (s0v, sv) = (s0.to_vec()[0], s.to_vec());
        let mut tot = vec![0.0f64; self.k];
        for row in rh.chunks(self.k) {
            for (t, &v) in tot.iter_mut().zip(row) {
                *t += v as f64;
            }
        }
        let ds: Vec<f32> = tot.iter().map(|&t| (s0v as f64 * t) as f32).collect();
        let ds0: f64 = tot.iter().zip(&sv).map(|(&t, &s)| t * s as f64).sum();
        ctx.record_per_sample(r);
        let mut out: Vec<Option<Tensor>> = dxs.into_iter().map(Some).collect();
        out.push(Some(b.upload(ds, &[self.k])?));
        out.push(Some(b.upload(vec![ds0 as f32], &[1])?));
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
