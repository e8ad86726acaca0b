//! Optimiser updates.

use rayon::prelude::*;

use crate::device::same_shape;
use crate::error::Result;
use crate::tensor::Tensor;

const CHUNK: usize = 1 << 14;

pub(crate) fn sgd_momentum(
    w: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    grad_scale: f32,
) -> Result<()> {
    same_shape("sgd_momentum grad", w, g)?;
    same_shape("sgd_momentum momentum", w, m)?;
    let gs = g.cpu();
    w.cpu_mut()
        .par_chunks_mut(CHUNK)
        .zip(m.cpu_mut().par_chunks_mut(CHUNK))
        .zip(gs.par_chunks(CHUNK))
        .for_each(|((w, m), g)| {
            for ((w, m), &g) in w.iter_mut().zip(m.iter_mut()).zip(g) {
                let d = grad_scale * g + weight_decay * *w;
                *m = momentum * *m + d;
                *w -= lr * *m;
            }
        });
    Ok(())
}
