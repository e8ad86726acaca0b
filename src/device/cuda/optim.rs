//! SGD with momentum (`kernels/optim.cu`).

use super::params::*;
use super::CudaBackend;
use crate::device::same_shape;
use crate::error::Result;
use crate::tensor::Tensor;

#[allow(clippy::too_many_arguments)]
pub(super) fn sgd_momentum(
    be: &CudaBackend,
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
    let n = w.numel();
    if n == 0 {
        return Ok(());
    }
    let gp = be.ptr("sgd grad", g)?;
    let wp = be.ptr_mut("sgd weight", w)?;
    let mp = be.ptr_mut("sgd momentum", m)?;
    let prm = SgdParams {
        n: n as i64,
        lr,
        momentum,
        weight_decay,
        grad_scale,
    };
    be.launch("sgd_momentum", be.grid_stride(n), &[wp, gp, mp], &prm)
}
