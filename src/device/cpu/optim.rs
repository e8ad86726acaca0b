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
