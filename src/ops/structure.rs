//! Structure ops: channel concat, the shifted crop of factorized reduce, reshape and column
//! selection.

use super::be;
use crate::error::Result;
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

struct ConcatOp {
    sizes: Vec<usize>,
}

impl TapeOp for ConcatOp {
    fn name(&self) -> &'static str {
        "concat_channels"
    }
    fn backward(&self, _ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(be(dy)?
            .split_channels(dy, &self.sizes)?
            .into_iter()
            .map(Some)
            .collect())
    }
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

struct ShiftCropOp;

impl TapeOp for ShiftCropOp {
    fn name(&self) -> &'static str {
        "shift_crop"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(
            be(dy)?.shift_crop_backward(dy, ctx.inputs[0].shape())?,
        )])
    }
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

struct ReshapeOp;

impl TapeOp for ReshapeOp {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(dy.clone().reshape(ctx.inputs[0].shape())?)])
    }
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

struct SelectColumnsOp {
    idx: Vec<usize>,
}

impl TapeOp for SelectColumnsOp {
    fn name(&self) -> &'static str {
        "select_columns"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let cols = ctx.inputs[0].shape()[1];
        Ok(vec![Some(
            be(dy)?.select_columns_backward(dy, &self.idx, cols)?,
        )])
    }
    // Every output copies one input with coefficient 1.
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

impl Tape {
    /// Concatenate NCHW tensors along channels.
    pub fn concat_channels(&mut self, xs: &[Var]) -> Result<Var> {
        let vals: Vec<&Tensor> = xs.iter().map(|&x| self.value(x)).collect();
        let first = vals
            .first()
            .ok_or_else(|| crate::Error::Invalid("concat_channels: no inputs".into()))?;
        let y = be(first)?.concat_channels(&vals)?;
        let sizes = vals.iter().map(|v| v.shape()[1]).collect();
        Ok(self.push(y, xs, ConcatOp { sizes }))
    }

    /// `x[:, :, 1:, 1:]`: the input of factorized reduce's second, pixel-shifted 1x1 conv.
    pub fn shift_crop(&mut self, x: Var) -> Result<Var> {
        let v = self.value(x);
        let y = be(v)?.shift_crop(v)?;
        Ok(self.push(y, &[x], ShiftCropOp))
    }

    /// The value of `x` under a new shape of as many elements (no data moves); gradient and
    /// curvature take the shape of `x` back.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let y = self.value(x).clone().reshape(shape)?;
        Ok(self.push(y, &[x], ReshapeOp))
    }

    /// `[N, ...] -> [N, prod(...)]`: [`Tape::reshape`] keeping the first dimension.
    pub fn flatten(&mut self, x: Var) -> Result<Var> {
        let v = self.value(x);
        let n = *v.shape().first().ok_or_else(|| crate::Error::Shape {
            op: "flatten",
            expected: "[N, ...]".into(),
            found: format!("{:?}", v.shape()),
        })?;
        let rest = v.numel() / n.max(1);
        self.reshape(x, &[n, rest])
    }

    /// `x[:, idx]` for `x` of shape `[N, cols]` and unique column indices `idx` (on the
    /// device of `x`). The gradient puts `dy` back into the selected columns, zeros
    /// elsewhere; the curvature does the same (every output is one input times 1).
    pub fn select_columns(&mut self, x: Var, idx: &[usize]) -> Result<Var> {
        let v = self.value(x);
        let y = be(v)?.select_columns(v, idx)?;
        Ok(self.push(y, &[x], SelectColumnsOp { idx: idx.to_vec() }))
    }
}
