//! Fully connected layer `y = x W^T + b`.

use super::be;
use crate::device::Unary;
use crate::error::{shape_err, Result};
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

struct LinearOp {
    has_bias: bool,
}

/// A `[rows, 1]` column of ones on the device of `like`.
fn ones_col(rows: usize, like: &Tensor) -> Result<Tensor> {
    be(like)?.upload(vec![1.0; rows], &[rows, 1])
}

impl LinearOp {
    fn reverse(&self, ctx: &OpCtx, dy: &Tensor, square: bool) -> Result<Vec<Option<Tensor>>> {
        let b = be(dy)?;
        let (x, w) = (ctx.inputs[0], ctx.inputs[1]);
        let (w_eff, x_eff) = if square {
            (b.unary(w, Unary::Square)?, b.unary(x, Unary::Square)?)
        } else {
            (w.clone(), x.clone())
        };
        // dx = dy W, dW = dy^T x, db = dy^T 1.
        let dx = b.matmul(dy, false, &w_eff, false)?;
        let dw = b.matmul(dy, true, &x_eff, false)?;
        let mut out = vec![Some(dx), Some(dw)];
        if self.has_bias {
            let n = dy.shape()[0];
            let db = b.matmul(dy, true, &ones_col(n, dy)?, false)?;
            out.push(Some(db.reshape(&[dy.shape()[1]])?));
        }
        Ok(out)
    }
}

impl TapeOp for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.reverse(ctx, dy, false)
    }
    // hx = hy (W.W), hW = hy^T (x.x), hb = sum hy.
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.reverse(ctx, hy, true)
    }
}

impl Tape {
    /// `x W^T + b` with `x: [B, in]`, `W: [out, in]`, `b: [out]`.
    pub fn linear(&mut self, x: Var, w: Var, bias: Option<Var>) -> Result<Var> {
        let (xv, wv) = (self.value(x), self.value(w));
        let (bsz, din) = match *xv.shape() {
            [b, d] => (b, d),
            _ => return shape_err("linear input", "[B, in]", xv.shape()),
        };
        if wv.rank() != 2 || wv.shape()[1] != din {
            return shape_err("linear weight", format!("[out, {din}]"), wv.shape());
        }
        let dout = wv.shape()[0];
        let b = be(xv)?;
        let mut y = b.matmul(xv, false, wv, true)?;
        let mut inputs = vec![x, w];
        if let Some(bias) = bias {
            let bv = self.value(bias);
            if bv.shape() != [dout] {
                return shape_err("linear bias", format!("[{dout}]"), bv.shape());
            }
            let row = bv.clone().reshape(&[1, dout])?;
            let bb = b.matmul(&ones_col(bsz, xv)?, false, &row, false)?;
            b.axpy(1.0, &bb, &mut y)?;
            inputs.push(bias);
        }
        Ok(self.push(
            y,
            &inputs,
            LinearOp {
                has_bias: bias.is_some(),
            },
        ))
    }
}
