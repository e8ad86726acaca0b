//! Optimiser updates.

use rayon::prelude::*;

use crate::device::{shape, SgdStep};
use crate::error::Result;
use crate::tensor::Tensor;

const CHUNK: usize = 1 << 14;

pub(crate) fn sgd_momentum(
    w: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    step: SgdStep,
) -> Result<()> {
    shape::sgd_momentum(w, g, m)?;
    let gs = g.cpu();
    w.cpu_mut()
        .par_chunks_mut(CHUNK)
        .zip(m.cpu_mut().par_chunks_mut(CHUNK))
        .zip(gs.par_chunks(CHUNK))
        .for_each(|((w, m), g)| {
            for ((w, m), &g) in w.iter_mut().zip(m.iter_mut()).zip(g) {
                let d = step.grad_scale * g + step.weight_decay * *w;
                *m = step.momentum * *m + d;
                *w -= step.lr * *m;
            }
        });
    Ok(())
}

/// `sgd_momentum` of each tensor in turn (one backend call).
pub(crate) fn sgd_momentum_multi(
    ws: &mut [&mut Tensor],
    gs: &[&Tensor],
    ms: &mut [&mut Tensor],
    step: SgdStep,
) -> Result<()> {
    shape::sgd_momentum_multi(ws, gs, ms)?;
    for ((w, g), m) in ws.iter_mut().zip(gs).zip(ms.iter_mut()) {
        sgd_momentum(w, g, m, step)?;
    }
    Ok(())
}

/// The group-lasso gradient and penalty (see `Backend::group_lasso_grad`).
pub(crate) fn group_lasso_grad(
    values: &[&Tensor],
    grads: &mut [&mut Tensor],
    g: &crate::device::LassoGroups,
) -> Result<Tensor> {
    shape::group_lasso(values, grads, g)?;
    let mut penalty = 0.0f64;
    for (gi, &coef) in g.coef.iter().enumerate() {
        let members = g.start[gi]..g.start[gi + 1];
        let vals: Vec<f64> = members
            .clone()
            .map(|m| values[g.tensor[m]].cpu()[g.elem[m]] as f64)
            .collect();
        let norm = vals.iter().map(|v| v * v).sum::<f64>().sqrt();
        penalty += coef * norm;
        if norm > 0.0 {
            for (m, v) in members.zip(&vals) {
                grads[g.tensor[m]].cpu_mut()[g.elem[m]] += (coef * v / norm) as f32;
            }
        }
    }
    Tensor::from_vec(vec![penalty as f32], &[1])
}
