//! SGD with momentum (`kernels/optim.cu`).

use super::params::*;
use super::CudaBackend;
use crate::device::{shape, SgdStep};
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
