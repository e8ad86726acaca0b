//! Channel concat/split, the shifted crop and column selection (`kernels/structure.cu`).

use super::params::*;
use super::{i64c, CudaBackend};
use crate::device::shape;
use crate::error::Result;
use crate::tensor::{numel, Tensor};

impl CudaBackend {
    /// Channel-block copy between a `[n, c_block, hw]` block and channels
    /// `[c_off, c_off + c_block)` of an `[n, c_big, hw]` tensor (`dir`: `COPY_INTO_CHANNELS`
    /// block -> big, `COPY_FROM_CHANNELS` big -> block).
    fn copy_params(
        n: usize,
        hw: usize,
        c_block: usize,
        c_big: usize,
        c_off: usize,
        dir: i32,
    ) -> CopyParams {
        CopyParams {
            n: i64c(n),
            hw: i64c(hw),
            c_src: i64c(c_block),
            c_dst: i64c(c_big),
            c_off: i64c(c_off),
            direction: dir,
            _pad: 0,
        }
    }
}

/// Parameters of the shifted crop of an `[n, c, h, w]` input and of its adjoint.
fn shift_params(n: usize, c: usize, h: usize, w: usize) -> ShiftParams {
    ShiftParams {
        n: i64c(n),
        c: i64c(c),
        h: i64c(h),
        w: i64c(w),
    }
}

/// Parameters of the selection of `m` of the `cols` columns of `[n, cols]` and its adjoint.
fn columns_params(n: usize, cols: usize, m: usize) -> ColumnsParams {
    ColumnsParams {
        n: i64c(n),
        cols: i64c(cols),
        m: i64c(m),
    }
}

pub(super) fn concat_channels(be: &CudaBackend, xs: &[&Tensor]) -> Result<Tensor> {
    let ((n, h, w), cs) = shape::concat_channels(xs)?;
    let ctot: usize = cs.iter().sum();
    let y = be.wrap(be.alloc(n * ctot * h * w)?, &[n, ctot, h, w]);
    let yp = be.ptr("", &y)?;
    let mut off = 0;
    for (x, &c) in xs.iter().zip(&cs) {
        if c * n * h * w > 0 {
            let prm = CudaBackend::copy_params(n, h * w, c, ctot, off, COPY_INTO_CHANNELS);
            let p = [be.ptr("concat_channels", x)?, yp];
            be.launch("copy_channels", be.grid_stride(n * c * h * w), &p, &prm)?;
        }
        off += c;
    }
    Ok(y)
}

pub(super) fn split_channels(be: &CudaBackend, y: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
    let (n, c, h, w) = shape::split_channels(y, sizes)?;
    let yp = be.ptr("split_channels", y)?;
    let mut off = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &ci in sizes {
        let o = be.wrap(be.alloc(n * ci * h * w)?, &[n, ci, h, w]);
        if o.numel() > 0 {
            let prm = CudaBackend::copy_params(n, h * w, ci, c, off, COPY_FROM_CHANNELS);
            let p = [yp, be.ptr("", &o)?];
            be.launch("copy_channels", be.grid_stride(o.numel()), &p, &prm)?;
        }
        outs.push(o);
        off += ci;
    }
    Ok(outs)
}

pub(super) fn shift_crop(be: &CudaBackend, x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = shape::shift_crop(x)?;
    let ys = [n, c, h - 1, w - 1];
    let y = be.wrap(be.alloc(numel(&ys))?, &ys);
    if y.numel() > 0 {
        let prm = shift_params(n, c, h, w);
        let p = [be.ptr("shift_crop", x)?, be.ptr("", &y)?];
        be.launch("shift_crop", be.grid_stride(y.numel()), &p, &prm)?;
    }
    Ok(y)
}

pub(super) fn shift_crop_backward(
    be: &CudaBackend,
    dy: &Tensor,
    x_shape: &[usize],
) -> Result<Tensor> {
    let (n, c, h, w) = shape::shift_crop_backward(dy, x_shape)?;
    let dx = be.wrap(be.alloc(numel(x_shape))?, x_shape);
    if dx.numel() > 0 {
        let prm = shift_params(n, c, h, w);
        let p = [be.ptr("shift_crop_backward", dy)?, be.ptr("", &dx)?];
        be.launch("shift_crop_bwd", be.grid_stride(dx.numel()), &p, &prm)?;
    }
    Ok(dx)
}

pub(super) fn select_columns(be: &CudaBackend, x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let (n, cols) = shape::select_columns(x.shape(), idx)?;
    let m = idx.len();
    let y = be.wrap(be.alloc(n * m)?, &[n, m]);
    if y.numel() > 0 {
        let map: Vec<i64> = idx.iter().map(|&i| i64c(i)).collect();
        let map = be.htod(&map)?;
        let prm = columns_params(n, cols, m);
        let p = [be.ptr("select_columns", x)?, be.raw(&map), be.ptr("", &y)?];
        be.launch("select_columns", be.grid_stride(y.numel()), &p, &prm)?;
    }
    Ok(y)
}

pub(super) fn select_columns_backward(
    be: &CudaBackend,
    dy: &Tensor,
    idx: &[usize],
    cols: usize,
) -> Result<Tensor> {
    let n = shape::select_columns_backward(dy.shape(), idx, cols)?;
    let m = idx.len();
    let dx = be.wrap(be.alloc(n * cols)?, &[n, cols]);
    if dx.numel() > 0 {
        // pos[i] = j where idx[j] = i, else -1: one thread per dx entry, no scatter.
        let mut pos = vec![-1i64; cols];
        for (j, &i) in idx.iter().enumerate() {
            pos[i] = i64c(j);
        }
        let pos = be.htod(&pos)?;
        let prm = columns_params(n, cols, m);
        let p = [
            be.ptr("select_columns_backward", dy)?,
            be.raw(&pos),
            be.ptr("", &dx)?,
        ];
        be.launch("select_columns_bwd", be.grid_stride(dx.numel()), &p, &prm)?;
    }
    Ok(dx)
}
