//! Max, average and global average pooling.

use super::be;
use crate::device::Pool2dSpec;
use crate::error::Result;
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

/// Max pooling; keeps the argmax offsets of the forward (see
/// [`crate::Backend::max_pool2d_forward`]), through which gradients and curvatures flow.
struct MaxPoolOp {
    argmax: Tensor,
}

impl TapeOp for MaxPoolOp {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(dy)?.max_pool2d_backward(
            &self.argmax,
            dy,
            ctx.inputs[0].shape(),
        )?)])
    }
    // Each output selects one input with coefficient 1: hy is routed through the same
    // indices (summed where overlapping windows select the same input).
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

struct AvgPoolOp(Pool2dSpec);

impl TapeOp for AvgPoolOp {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(dy)?.avg_pool2d_backward(
            dy,
            self.0,
            ctx.inputs[0].shape(),
            1,
        )?)])
    }
    // Coefficients 1/n square to 1/n^2: hx = sum over windows of hy / n^2.
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(hy)?.avg_pool2d_backward(
            hy,
            self.0,
            ctx.inputs[0].shape(),
            2,
        )?)])
    }
}

struct GlobalAvgPoolOp;

impl TapeOp for GlobalAvgPoolOp {
    fn name(&self) -> &'static str {
        "global_avg_pool"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(dy)?.global_avg_pool_backward(
            dy,
            ctx.inputs[0].shape(),
            1,
        )?)])
    }
    // hx = hy / (HW)^2.
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(hy)?.global_avg_pool_backward(
            hy,
            ctx.inputs[0].shape(),
            2,
        )?)])
    }
}

impl Tape {
    /// Max pooling of `x: [N, C, H, W]`; padding never wins, ties go to the first maximum
    /// of the window in row-major order, NaN propagates. `spec.padding <= spec.kernel / 2`.
    pub fn max_pool2d(&mut self, x: Var, spec: Pool2dSpec) -> Result<Var> {
        let v = self.value(x);
        let (y, argmax) = be(v)?.max_pool2d_forward(v, spec)?;
        Ok(self.push(y, &[x], MaxPoolOp { argmax }))
    }

    /// Average pooling of `x: [N, C, H, W]`; padding is not counted (each window averages
    /// its in-image elements). `spec.padding <= spec.kernel / 2`.
    pub fn avg_pool2d(&mut self, x: Var, spec: Pool2dSpec) -> Result<Var> {
        let v = self.value(x);
        let y = be(v)?.avg_pool2d_forward(v, spec)?;
        Ok(self.push(y, &[x], AvgPoolOp(spec)))
    }

    /// Mean over the spatial dimensions: `[N, C, H, W] -> [N, C]`.
    pub fn global_avg_pool(&mut self, x: Var) -> Result<Var> {
        let v = self.value(x);
        let y = be(v)?.global_avg_pool_forward(v)?;
        Ok(self.push(y, &[x], GlobalAvgPoolOp))
    }
}
