//! Matrix products through cuBLAS.

use super::CudaBackend;
use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;

pub(super) fn matmul(
    be: &CudaBackend,
    a: &Tensor,
    trans_a: bool,
    b: &Tensor,
    trans_b: bool,
) -> Result<Tensor> {
    let (&[ar, ac], &[br, bc]) = (a.shape(), b.shape()) else {
        return shape_err(
            "matmul",
            "2-D operands",
            if a.rank() != 2 { a.shape() } else { b.shape() },
        );
    };
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != k2 {
        return Err(Error::Shape {
            op: "matmul",
            expected: format!("inner dimensions to agree ({k})"),
            found: format!("{k2} (a {:?}, b {:?})", a.shape(), b.shape()),
        });
    }
    let c = be.wrap(be.alloc_zeros(m * n)?, &[m, n]);
    if m * n > 0 && k > 0 {
        let (ap, bp, cp) = (
            be.ptr("matmul a", a)?,
            be.ptr("matmul b", b)?,
            be.ptr("matmul", &c)?,
        );
        be.gemm(trans_a, trans_b, (m, n, k), ap, bp, cp, 0.0, None)?;
    }
    Ok(c)
}
