//! Shape checks of the backend operands, shared by every backend so that each op reports
//! the same error on every device.

use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;

/// Checks that two tensors have the same shape.
pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape {
            op,
            expected: format!("{:?}", a.shape()),
            found: format!("{:?}", b.shape()),
        });
    }
    Ok(())
}

/// Checks that `x` is 4-D and returns `(n, c, h, w)`.
pub(crate) fn nchw(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match *x.shape() {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => shape_err(op, "[N, C, H, W]", x.shape()),
    }
}

/// Validates the operands of the fused mixed op (K equal-shape branches, `s0` of one element,
/// `s` of K) and returns `(N, elements per sample)`.
pub(crate) fn mixed_shapes(xs: &[&Tensor], s0: &Tensor, s: &Tensor) -> Result<(usize, usize)> {
    if xs.is_empty() {
        return Err(Error::Invalid("mixed op: no branches".into()));
    }
    if s0.numel() != 1 {
        return shape_err("mixed op s0", "[1]", s0.shape());
    }
    if s.numel() != xs.len() {
        return shape_err("mixed op s", format!("[{}]", xs.len()), s.shape());
    }
    let shape = xs[0].shape();
    for x in xs {
        if x.shape() != shape {
            return shape_err("mixed op branch", format!("{shape:?}"), x.shape());
        }
    }
    let n = shape.first().copied().unwrap_or(1).max(1);
    Ok((n, xs[0].numel() / n))
}

/// Validates `select_columns` operands: `x` of shape `[N, cols]` and column indices below
/// `cols`, each at most once. Returns `(N, cols)`.
pub(crate) fn select_columns(x: &[usize], idx: &[usize]) -> Result<(usize, usize)> {
    let &[n, cols] = x else {
        return select_columns_err(x, idx);
    };
    if idx.iter().any(|&i| i >= cols) {
        return select_columns_err(x, idx);
    }
    let mut seen = vec![false; cols];
    for &i in idx {
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::Invalid(format!(
                "select_columns: column {i} is selected more than once"
            )));
        }
    }
    Ok((n, cols))
}

fn select_columns_err<T>(x: &[usize], idx: &[usize]) -> Result<T> {
    let max = idx.iter().max().copied().unwrap_or(0);
    shape_err("select_columns", format!("[N, > {max}]"), x)
}

/// Validates `select_columns_backward` operands: `dy` of shape `[N, idx.len()]` and `idx`
/// valid for `[N, cols]` inputs. Returns `N`.
pub(crate) fn select_columns_backward(dy: &[usize], idx: &[usize], cols: usize) -> Result<usize> {
    let m = idx.len();
    let &[n, m2] = dy else {
        return shape_err("select_columns_backward dy", format!("[N, {m}]"), dy);
    };
    if m2 != m {
        return shape_err("select_columns_backward dy", format!("[N, {m}]"), dy);
    }
    select_columns(&[n, cols], idx)?;
    Ok(n)
}
