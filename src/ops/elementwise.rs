//! ReLU, n-ary sum and scaling by a constant.

use super::be;
use crate::device::{Binary, Unary};
use crate::error::{Error, Result};
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

struct ReluOp;

impl TapeOp for ReluOp {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(dy)?.binary(
            ctx.inputs[0],
            dy,
            Binary::ReluMask,
        )?)])
    }
    // f'' = 0, f'^2 = f' = 1[x > 0].
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

struct SumOp(usize);

impl TapeOp for SumOp {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn backward(&self, _ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok((0..self.0).map(|_| Some(dy.clone())).collect())
    }
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

struct ScaleOp(f32);

impl TapeOp for ScaleOp {
    fn name(&self) -> &'static str {
        "scale"
    }
    fn backward(&self, _ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(dy)?.unary(dy, Unary::Scale(self.0))?)])
    }
    fn curvature(&self, _ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(
            be(hy)?.unary(hy, Unary::Scale(self.0 * self.0))?,
        )])
    }
}

impl Tape {
    /// `max(x, 0)`.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        let v = self.value(x);
        let y = be(v)?.unary(v, Unary::Relu)?;
        Ok(self.push(y, &[x], ReluOp))
    }

    /// Elementwise sum of same-shape tensors (a node summing its incoming edges).
    pub fn sum(&mut self, xs: &[Var]) -> Result<Var> {
        let Some((&first, rest)) = xs.split_first() else {
            return Err(Error::Invalid("sum: no inputs".into()));
        };
        let mut y = self.value(first).clone();
        for &x in rest {
            let v = self.value(x);
            be(v)?.axpy(1.0, v, &mut y)?;
        }
        Ok(self.push(y, xs, SumOp(xs.len())))
    }

    /// `a + b`.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.sum(&[a, b])
    }

    /// `c * x` for a constant `c`.
    pub fn scale(&mut self, x: Var, c: f32) -> Result<Var> {
        let v = self.value(x);
        let y = be(v)?.unary(v, Unary::Scale(c))?;
        Ok(self.push(y, &[x], ScaleOp(c)))
    }
}
