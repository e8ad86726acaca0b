//! Convolution kernels (to be written).

use crate::device::Conv2dSpec;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) fn forward(_x: &Tensor, _w: &Tensor, _spec: Conv2dSpec) -> Result<Tensor> {
    Err(Error::Invalid("conv2d: not implemented yet".into()))
}
pub(crate) fn backward_input(_dy: &Tensor, _w: &Tensor, _spec: Conv2dSpec, _x_shape: &[usize]) -> Result<Tensor> {
    Err(Error::Invalid("conv2d: not implemented yet".into()))
}
pub(crate) fn backward_weight(_x: &Tensor, _dy: &Tensor, _spec: Conv2dSpec, _w_shape: &[usize]) -> Result<Tensor> {
    Err(Error::Invalid("conv2d: not implemented yet".into()))
}
