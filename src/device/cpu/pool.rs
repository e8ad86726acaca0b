//! Pooling kernels (to be written).

use crate::device::Pool2dSpec;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn todo<T>() -> Result<T> {
    Err(Error::Invalid("pooling: not implemented yet".into()))
}
pub(crate) fn max_forward(_x: &Tensor, _spec: Pool2dSpec) -> Result<Tensor> {
    todo()
}
pub(crate) fn max_backward(_x: &Tensor, _dy: &Tensor, _spec: Pool2dSpec) -> Result<Tensor> {
    todo()
}
pub(crate) fn avg_forward(_x: &Tensor, _spec: Pool2dSpec) -> Result<Tensor> {
    todo()
}
pub(crate) fn avg_backward(_dy: &Tensor, _spec: Pool2dSpec, _x_shape: &[usize], _power: i32) -> Result<Tensor> {
    todo()
}
pub(crate) fn global_avg_forward(_x: &Tensor) -> Result<Tensor> {
    todo()
}
pub(crate) fn global_avg_backward(_dy: &Tensor, _x_shape: &[usize], _power: i32) -> Result<Tensor> {
    todo()
}
