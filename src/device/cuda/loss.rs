//! Softmax cross-entropy (`kernels/loss.cu`).

use super::params::*;
use super::{i64c, CudaBackend};
use crate::device::shape;
use crate::error::Result;
use crate::tensor::Tensor;

pub(super) fn softmax_cross_entropy(
    be: &CudaBackend,
    logits: &Tensor,
    labels: &[u32],
) -> Result<(Tensor, Tensor)> {
    let (b, k) = shape::rows("softmax_cross_entropy", logits, Some(labels))?;
    let probs = be.wrap(be.alloc(b * k)?, &[b, k]);
    if b == 0 {
        // The mean over no rows (the CPU's 0 / 0).
        let nan = crate::device::Backend::upload(be, vec![f32::NAN], &[1])?;
        return Ok((probs, nan));
    }
    let lab = be.htod(labels)?;
    let rows = be.alloc_f64(b)?;
    let prm = LossParams {
        b: i64c(b),
        k: i64c(k),
    };
    let p = [
        be.ptr("logits", logits)?,
        be.raw(&lab),
        be.ptr("", &probs)?,
        be.raw(&rows),
    ];
    be.launch("softmax_ce_fwd", be.grid_stride(b), &p, &prm)?;
    let loss = be.wrap(be.alloc(1)?, &[1]);
    let p = [be.raw(&rows), be.ptr("", &loss)?];
    be.launch("softmax_ce_loss", be.blocks(1), &p, &prm)?;
    Ok((probs, loss))
}

pub(super) fn softmax_cross_entropy_backward(
    be: &CudaBackend,
    probs: &Tensor,
    labels: &[u32],
) -> Result<Tensor> {
    let (b, k) = shape::rows("softmax_cross_entropy_backward", probs, Some(labels))?;
    let d = be.wrap(be.alloc(b * k)?, &[b, k]);
    if b * k == 0 {
        return Ok(d);
    }
    let lab = be.htod(labels)?;
    let prm = LossParams {
        b: i64c(b),
        k: i64c(k),
    };
    let p = [be.ptr("probs", probs)?, be.raw(&lab), be.ptr("", &d)?];
    be.launch("softmax_ce_bwd", be.grid_stride(b * k), &p, &prm)?;
    Ok(d)
}

pub(super) fn softmax_cross_entropy_curvature(be: &CudaBackend, probs: &Tensor) -> Result<Tensor> {
    let (b, k) = shape::rows("softmax_cross_entropy_curvature", probs, None)?;
    let h = be.wrap(be.alloc(b * k)?, &[b, k]);
    if b * k == 0 {
        return Ok(h);
    }
    let prm = LossParams {
        b: i64c(b),
        k: i64c(k),
    };
    let p = [be.ptr("probs", probs)?, be.ptr("", &h)?];
    be.launch("softmax_ce_curv_seed", be.grid_stride(b * k), &p, &prm)?;
    Ok(h)
}

pub(super) fn count_correct(be: &CudaBackend, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let (b, k) = shape::rows("count_correct", logits, Some(labels))?;
    let correct = be.wrap(be.alloc_zeros(1)?, &[1]);
    if b == 0 || k == 0 {
        return Ok(correct);
    }
    let lab = be.htod(labels)?;
    let prm = LossParams {
        b: i64c(b),
        k: i64c(k),
    };
    let p = [
        be.ptr("logits", logits)?,
        be.raw(&lab),
        be.ptr("", &correct)?,
    ];
    be.launch("count_correct", be.blocks(1), &p, &prm)?;
    Ok(correct)
}
