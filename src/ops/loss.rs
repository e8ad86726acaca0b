//! Loss ops: softmax cross-entropy (mean over the batch) and half squared error.
//!
//! A loss op's curvature rule seeds the recursion: it returns the incoming scalar `hy`
//! (1 at the root) times the diagonal of the loss's own Hessian with respect to its input.

use super::be;
use crate::device::{Binary, Unary};
use crate::error::{shape_err, Result};
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

/// `c * t`, skipping the multiplication at the root of a pass (`c = 1`).
fn scaled(b: &dyn crate::device::Backend, t: Tensor, c: f32) -> Result<Tensor> {
    if c == 1.0 {
        Ok(t)
    } else {
        b.unary(&t, Unary::Scale(c))
    }
}

/// The incoming scalar seed: known on the host at the root of a pass, read otherwise.
fn seed(ctx: &OpCtx, s: &Tensor) -> Result<f32> {
    match ctx.known_seed() {
        Some(c) => Ok(c),
        None => s.item(),
    }
}

struct CrossEntropyOp {
    probs: Tensor,
    labels: Vec<u32>,
}

impl TapeOp for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    // dz = (p - onehot(y)) / B * dy
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let b = be(&self.probs)?;
        let d = b.softmax_cross_entropy_backward(&self.probs, &self.labels)?;
        Ok(vec![Some(scaled(b, d, seed(ctx, dy)?)?)])
    }
    // hz_i = p_i (1 - p_i) / B * hy  (all classes; see method note section 6)
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let b = be(&self.probs)?;
        let h = b.softmax_cross_entropy_curvature(&self.probs)?;
        Ok(vec![Some(scaled(b, h, seed(ctx, hy)?)?)])
    }
}

struct HalfSquaredErrorOp {
    target: Tensor,
    weights: Option<Tensor>,
}

impl TapeOp for HalfSquaredErrorOp {
    fn name(&self) -> &'static str {
        "half_squared_error"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let b = be(dy)?;
        let mut d = b.binary(ctx.inputs[0], &self.target, Binary::Sub)?;
        if let Some(w) = &self.weights {
            d = b.binary(&d, w, Binary::Mul)?;
        }
        Ok(vec![Some(b.unary(&d, Unary::Scale(seed(ctx, dy)?))?)])
    }
    // The Hessian of 0.5 * sum w (x - t)^2 is diag(w) (the identity without weights).
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = ctx.inputs[0];
        let b = be(hy)?;
        let h = match &self.weights {
            Some(w) => b.unary(w, Unary::Scale(seed(ctx, hy)?))?,
            None => b.upload(vec![seed(ctx, hy)?; x.numel()], x.shape())?,
        };
        Ok(vec![Some(h)])
    }
}

impl Tape {
    /// Mean softmax cross-entropy of `[B, K]` logits against class indices `labels`. The
    /// loss stays on the device (no host read); a caller that needs it reads the `[1]` value.
    pub fn cross_entropy(&mut self, logits: Var, labels: &[u32]) -> Result<Var> {
        let z = self.value(logits);
        let (probs, loss) = be(z)?.softmax_cross_entropy(z, labels)?;
        Ok(self.push(
            loss,
            &[logits],
            CrossEntropyOp {
                probs,
                labels: labels.to_vec(),
            },
        ))
    }

    /// `0.5 * sum(w * (x - target)^2)` with per-element weights `w` (all ones when `None`);
    /// its curvature seed is exactly `w` per element. Tests use random positive weights to
    /// drive each op's curvature rule with a random `hy`.
    pub fn half_squared_error(
        &mut self,
        x: Var,
        target: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<Var> {
        let xv = self.value(x);
        if xv.shape() != target.shape() {
            return shape_err(
                "half_squared_error target",
                format!("{:?}", xv.shape()),
                target.shape(),
            );
        }
        if let Some(w) = weights {
            if w.shape() != xv.shape() {
                return shape_err(
                    "half_squared_error weights",
                    format!("{:?}", xv.shape()),
                    w.shape(),
                );
            }
        }
        let b = be(xv)?;
        let d = b.binary(xv, target, Binary::Sub)?;
        let l = match weights {
            Some(w) => 0.5 * b.dot(&b.binary(&d, &d, Binary::Mul)?, w)?,
            None => 0.5 * b.dot(&d, &d)?,
        };
        let y = b.upload(vec![l as f32], &[1])?;
        Ok(self.push(
            y,
            &[x],
            HalfSquaredErrorOp {
                target: target.clone(),
                weights: weights.cloned(),
            },
        ))
    }
}
