//! Matrix products (filled in by the conv/GEMM work).

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub(crate) fn matmul(_a: &Tensor, _ta: bool, _b: &Tensor, _tb: bool) -> Result<Tensor> {
    Err(Error::Invalid("matmul: not implemented yet".into()))
}
