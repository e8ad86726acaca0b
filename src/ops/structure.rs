//! Channel concat and the shifted crop of factorized reduce.

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
}
