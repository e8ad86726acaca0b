//! Ops recorded on the [`Tape`](crate::Tape). Each file holds one family: the tape method
//! (forward), and a [`TapeOp`](crate::TapeOp) implementation with its gradient and curvature
//! rules.
//! Kernels are called through the device's [`Backend`].

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod mixed;
pub mod pool;
pub mod regularize;
pub mod structure;

use crate::device::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// The backend of the device holding `t`.
pub(crate) fn be(t: &Tensor) -> Result<&'static dyn Backend> {
    t.device().backend()
}
