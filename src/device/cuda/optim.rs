//! SGD with momentum (`kernels/optim.cu`).

use super::params::*;
use super::CudaBackend;
use crate::device::{shape, LassoGroups, SgdStep};
use crate::error::Result;
use crate::tensor::Tensor;

pub(super) fn sgd_momentum(
    be: &CudaBackend,
    w: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    step: SgdStep,
) -> Result<()> {
    shape::sgd_momentum(w, g, m)?;
    let n = w.numel();
    if n == 0 {
        return Ok(());
    }
    let gp = be.ptr("sgd grad", g)?;
    let wp = be.ptr_mut("sgd weight", w)?;
    let mp = be.ptr_mut("sgd momentum", m)?;
    let prm = SgdParams {
        n: n as i64,
        lr: step.lr,
        momentum: step.momentum,
        weight_decay: step.weight_decay,
        grad_scale: step.grad_scale,
    };
    be.launch("sgd_momentum", be.grid_stride(n), &[wp, gp, mp], &prm)
}

pub(super) fn sgd_momentum_multi(
    be: &CudaBackend,
    ws: &mut [&mut Tensor],
    gs: &[&Tensor],
    ms: &mut [&mut Tensor],
    step: SgdStep,
) -> Result<()> {
    shape::sgd_momentum_multi(ws, gs, ms)?;
    let mut offsets = Vec::with_capacity(ws.len() + 1);
    let mut total = 0usize;
    for w in ws.iter() {
        offsets.push(total as i64);
        total += w.numel();
    }
    offsets.push(total as i64);
    if total == 0 {
        return Ok(());
    }
    let wp = be.cached_u64(
        ws.iter_mut()
            .map(|w| be.ptr_mut("sgd weight", w))
            .collect::<Result<_>>()?,
    )?;
    let gp = be.cached_u64(
        gs.iter()
            .map(|g| be.ptr("sgd grad", g))
            .collect::<Result<_>>()?,
    )?;
    let mp = be.cached_u64(
        ms.iter_mut()
            .map(|m| be.ptr_mut("sgd momentum", m))
            .collect::<Result<_>>()?,
    )?;
    // The offsets are the same step after step: cached on the device by content.
    let off = be.cached_u64(offsets.iter().map(|&o| o as u64).collect())?;
    let prm = SgdMultiParams {
        tensors: ws.len() as i64,
        total: total as i64,
        lr: step.lr,
        momentum: step.momentum,
        weight_decay: step.weight_decay,
        grad_scale: step.grad_scale,
    };
    let p = [be.raw(&wp), be.raw(&gp), be.raw(&mp), be.raw(&off)];
    be.launch("sgd_momentum_multi", be.grid_stride(total), &p, &prm)
}

pub(super) fn group_lasso_grad(
    be: &CudaBackend,
    values: &[&Tensor],
    grads: &mut [&mut Tensor],
    g: &LassoGroups,
) -> Result<Tensor> {
    shape::group_lasso(values, grads, g)?;
    let penalty = be.wrap(be.alloc_zeros(1)?, &[1]);
    if g.is_empty() {
        return Ok(penalty);
    }
    let vals = be.cached_u64(
        values
            .iter()
            .map(|v| be.ptr("group_lasso_grad value", v))
            .collect::<Result<_>>()?,
    )?;
    let gps = be.cached_u64(
        grads
            .iter_mut()
            .map(|d| be.ptr_mut("group_lasso_grad gradient", d))
            .collect::<Result<_>>()?,
    )?;
    // The member tables (int64 on the device) and the coefficients (f64, changed by each
    // prior update) are the same step after step: cached on the device by content (bits).
    let as_u64 = |v: &[usize]| v.iter().map(|&x| x as u64).collect::<Vec<u64>>();
    let start = be.cached_u64(as_u64(&g.start))?;
    let tensor = be.cached_u64(as_u64(&g.tensor))?;
    let elem = be.cached_u64(as_u64(&g.elem))?;
    let coef = be.cached_u64(g.coef.iter().map(|c| c.to_bits()).collect())?;
    let contrib = be.alloc_f64(g.len())?;
    let prm = LassoParams {
        groups: g.len() as i64,
        members: g.tensor.len() as i64,
    };
    let p = [
        be.raw(&vals),
        be.raw(&gps),
        be.raw(&start),
        be.raw(&tensor),
        be.raw(&elem),
        be.raw(&coef),
        be.raw(&contrib),
        be.ptr("", &penalty)?,
    ];
    be.launch("group_lasso_grad", be.blocks(1), &p, &prm)?;
    Ok(penalty)
}
