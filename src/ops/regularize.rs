//! Dropout, drop-path and the group norm of the reweighted group-lasso penalty.

use super::be;
use crate::device::{Binary, Unary};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tape::{OpCtx, Tape, TapeOp, Var};
use crate::tensor::Tensor;

/// `y = x * m` with a fixed mask `m` (dropout: `m = keep / (1 - p)`).
struct MaskOp {
    mask: Tensor,
}

impl TapeOp for MaskOp {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn backward(&self, _ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(dy)?.binary(dy, &self.mask, Binary::Mul)?)])
    }
    fn curvature(&self, _ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let b = be(hy)?;
        let m2 = b.unary(&self.mask, Unary::Square)?;
        Ok(vec![Some(b.binary(hy, &m2, Binary::Mul)?)])
    }
}

/// `y[n] = x[n] * scale[n]` per sample (drop-path).
struct SampleScaleOp {
    scale: Vec<f32>,
}

impl TapeOp for SampleScaleOp {
    fn name(&self) -> &'static str {
        "drop_path"
    }
    fn backward(&self, _ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(be(dy)?.scale_samples(dy, &self.scale)?)])
    }
    fn curvature(&self, _ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let sq: Vec<f32> = self.scale.iter().map(|s| s * s).collect();
        Ok(vec![Some(be(hy)?.scale_samples(hy, &sq)?)])
    }
}

/// `y = sqrt(sum_i ||v_i||^2)` over several tensors.
struct GroupNormOp {
    n: usize,
}

impl TapeOp for GroupNormOp {
    fn name(&self) -> &'static str {
        "group_l2_norm"
    }
    // d||v|| / dv = v / ||v|| (the subgradient 0 at the origin).
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let norm = ctx.output.item()?;
        let c = if norm > 0.0 { dy.item()? / norm } else { 0.0 };
        (0..self.n)
            .map(|i| Ok(Some(be(dy)?.unary(ctx.inputs[i], Unary::Scale(c))?)))
            .collect()
    }
    // A penalty, not a loss: it adds no Gauss-Newton curvature (see Tape::curvature_backward).
    fn curvature(&self, _ctx: &OpCtx, _hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok((0..self.n).map(|_| None).collect())
    }
}

fn check_p(p: f32, what: &str) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Invalid(format!(
            "{what}: probability {p} not in [0, 1)"
        )));
    }
    Ok(())
}

impl Tape {
    /// Inverted dropout with drop probability `p` (identity in evaluation mode or for p = 0).
    pub fn dropout(&mut self, x: Var, p: f32, rng: &mut Rng) -> Result<Var> {
        check_p(p, "dropout")?;
        if !self.is_training() || p == 0.0 {
            return Ok(x);
        }
        let v = self.value(x);
        let keep = 1.0 / (1.0 - p);
        let m: Vec<f32> = (0..v.numel())
            .map(|_| if rng.bernoulli(p as f64) { 0.0 } else { keep })
            .collect();
        let b = be(v)?;
        let mask = b.upload(m, v.shape())?;
        let y = b.binary(v, &mask, Binary::Mul)?;
        Ok(self.push(y, &[x], MaskOp { mask }))
    }

    /// Drop-path: each sample's whole tensor is zeroed with probability `p`, survivors are
    /// scaled by `1 / (1 - p)` (identity in evaluation mode or for p = 0).
    pub fn drop_path(&mut self, x: Var, p: f32, rng: &mut Rng) -> Result<Var> {
        check_p(p, "drop_path")?;
        if !self.is_training() || p == 0.0 {
            return Ok(x);
        }
        let v = self.value(x);
        let n = v.shape()[0];
        let scale: Vec<f32> = (0..n)
            .map(|_| {
                if rng.bernoulli(p as f64) {
                    0.0
                } else {
                    1.0 / (1.0 - p)
                }
            })
            .collect();
        let y = be(v)?.scale_samples(v, &scale)?;
        Ok(self.push(y, &[x], SampleScaleOp { scale }))
    }

    /// `sqrt(sum_i ||xs_i||^2)`: the norm of one group of the group-lasso penalty.
    pub fn group_l2_norm(&mut self, xs: &[Var]) -> Result<Var> {
        if xs.is_empty() {
            return Err(Error::Invalid("group_l2_norm: empty group".into()));
        }
        let mut s = 0.0f64;
        for &x in xs {
            let v = self.value(x);
            s += be(v)?.dot(v, v)?;
        }
        let y = be(self.value(xs[0]))?.upload(vec![s.sqrt() as f32], &[1])?;
        Ok(self.push(y, xs, GroupNormOp { n: xs.len() }))
    }
}
