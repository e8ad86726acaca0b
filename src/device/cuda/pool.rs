//! Max, average and global average pooling (`kernels/pool.cu`).

use super::params::*;
use super::{i32c, i64c, CudaBackend};
use crate::device::{shape, Pool2dSpec};
use crate::error::{shape_err, Error, Result};
use crate::tensor::{numel, Tensor};

fn pool_geom(
    op: &'static str,
    shape: &[usize],
    spec: Pool2dSpec,
    power: i32,
) -> Result<(PoolParams, [usize; 4])> {
    let shape::Pool2dShape { ho, wo, .. } = shape::pool2d(op, shape, spec)?;
    let p = PoolParams {
        n: i64c(shape[0]),
        c: i64c(shape[1]),
        h: i64c(shape[2]),
        w: i64c(shape[3]),
        ho: i64c(ho),
        wo: i64c(wo),
        k: i32c(spec.kernel)?,
        stride: i32c(spec.stride)?,
        padding: i32c(spec.padding)?,
        power,
    };
    Ok((p, [shape[0], shape[1], ho, wo]))
}

/// Parameters of the global average pooling of `[n, c, h, w]` (gradient `power` 1 or
/// curvature 2).
fn global_pool_params([n, c, h, w]: [usize; 4], power: i32) -> PoolParams {
    PoolParams {
        n: i64c(n),
        c: i64c(c),
        h: i64c(h),
        w: i64c(w),
        ho: 1,
        wo: 1,
        power,
        ..Default::default()
    }
}

impl CudaBackend {
    /// `max_pool2d_backward` for an argmax whose window is unknown: one thread per plane
    /// scatters in output order (the CPU's exact sums) and flags offsets outside the plane,
    /// which are an error as on the CPU (this path waits for the flag).
    fn max_pool_backward_scatter(
        &self,
        argmax: &Tensor,
        dy: &Tensor,
        x_shape: &[usize],
    ) -> Result<Tensor> {
        let (n, c, h, w) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
        let ds = dy.shape();
        let prm = PoolParams {
            n: i64c(n),
            c: i64c(c),
            h: i64c(h),
            w: i64c(w),
            ho: i64c(ds[2]),
            wo: i64c(ds[3]),
            ..Default::default()
        };
        let dx = self.wrap(self.alloc(numel(x_shape))?, x_shape);
        let bad = self
            .stream()
            .alloc_zeros::<i32>(1)
            .map_err(super::drv("allocation"))?;
        let p = [
            self.ptr("argmax", argmax)?,
            self.ptr("dy", dy)?,
            self.ptr("", &dx)?,
            self.raw(&bad),
        ];
        self.launch("maxpool_bwd_scatter", self.grid_stride(n * c), &p, &prm)?;
        crate::device::counters::host_read();
        let flag = self
            .stream()
            .clone_dtoh(&bad)
            .map_err(super::drv("copy to host"))?;
        if flag[0] != 0 {
            return Err(Error::Invalid(format!(
                "max_pool2d_backward: argmax holds an offset outside the {h}x{w} input plane"
            )));
        }
        Ok(dx)
    }
}

pub(super) fn max_pool2d_forward(
    be: &CudaBackend,
    x: &Tensor,
    spec: Pool2dSpec,
) -> Result<(Tensor, Tensor)> {
    // (The max-pool kernels ignore `power`.)
    let (prm, ys) = pool_geom("max_pool2d", x.shape(), spec, 0)?;
    shape::max_pool2d_plane(x.shape()[2], x.shape()[3])?;
    let len = numel(&ys);
    let (y, arg) = (be.wrap(be.alloc(len)?, &ys), be.wrap(be.alloc(len)?, &ys));
    let p = [be.ptr("max_pool2d", x)?, be.ptr("", &y)?, be.ptr("", &arg)?];
    be.launch("maxpool_fwd", be.grid_stride(len), &p, &prm)?;
    let mut arg = arg;
    if let crate::tensor::Storage::Cuda(b) = arg.storage_mut() {
        b.set_pool_spec(spec);
    }
    Ok((y, arg))
}

pub(super) fn max_pool2d_backward(
    be: &CudaBackend,
    argmax: &Tensor,
    dy: &Tensor,
    x_shape: &[usize],
) -> Result<Tensor> {
    shape::max_pool2d_backward(argmax, dy, x_shape)?;
    let ds = dy.shape();
    // The gather kernel needs the window geometry, which the forward recorded on the
    // argmax buffer (the trait passes only shapes).
    let Some(spec) = be.buf("max_pool2d_backward argmax", argmax)?.pool_spec() else {
        return be.max_pool_backward_scatter(argmax, dy, x_shape);
    };
    let (prm, ys) = pool_geom("max_pool2d_backward", x_shape, spec, POOL_GRADIENT)?;
    if ys != ds {
        return shape_err("max_pool2d_backward dy", format!("{ys:?}"), ds);
    }
    let dx = be.wrap(be.alloc(numel(x_shape))?, x_shape);
    if dy.numel() > 0 {
        let p = [
            be.ptr("argmax", argmax)?,
            be.ptr("dy", dy)?,
            be.ptr("", &dx)?,
        ];
        be.launch("maxpool_bwd", be.grid_stride(numel(x_shape)), &p, &prm)?;
    }
    Ok(dx)
}

pub(super) fn avg_pool2d_forward(be: &CudaBackend, x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let (prm, ys) = pool_geom("avg_pool2d", x.shape(), spec, POOL_GRADIENT)?;
    let y = be.wrap(be.alloc(numel(&ys))?, &ys);
    let p = [be.ptr("avg_pool2d", x)?, be.ptr("", &y)?];
    be.launch("avgpool_fwd", be.grid_stride(numel(&ys)), &p, &prm)?;
    Ok(y)
}

pub(super) fn avg_pool2d_backward(
    be: &CudaBackend,
    dy: &Tensor,
    spec: Pool2dSpec,
    x_shape: &[usize],
    power: i32,
) -> Result<Tensor> {
    let (prm, ys) = pool_geom("avg_pool2d_backward", x_shape, spec, power)?;
    shape::avg_pool2d_dy(dy, ys)?;
    let dx = be.wrap(be.alloc(numel(x_shape))?, x_shape);
    let p = [be.ptr("avg_pool2d_backward", dy)?, be.ptr("", &dx)?];
    be.launch("avgpool_bwd", be.grid_stride(numel(x_shape)), &p, &prm)?;
    Ok(dx)
}

pub(super) fn global_avg_pool_forward(be: &CudaBackend, x: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = shape::global_avg_pool(x.shape())?;
    let prm = global_pool_params([n, c, h, w], POOL_GRADIENT);
    let y = be.wrap(be.alloc(n * c)?, &[n, c]);
    if n * c > 0 {
        let p = [be.ptr("global_avg_pool", x)?, be.ptr("", &y)?];
        // One block per plane, blocks striding over the planes.
        let blocks = (n * c).min(32 * be.sms as usize);
        be.launch("gap_fwd", be.blocks(blocks), &p, &prm)?;
    }
    Ok(y)
}

pub(super) fn global_avg_pool_backward(
    be: &CudaBackend,
    dy: &Tensor,
    x_shape: &[usize],
    power: i32,
) -> Result<Tensor> {
    let [n, c, h, w] = shape::global_avg_pool_backward(dy, x_shape)?;
    let prm = global_pool_params([n, c, h, w], power);
    let dx = be.wrap(be.alloc(numel(x_shape))?, x_shape);
    if dx.numel() > 0 {
        let p = [be.ptr("global_avg_pool_backward", dy)?, be.ptr("", &dx)?];
        be.launch("gap_bwd", be.grid_stride(numel(x_shape)), &p, &prm)?;
    }
    Ok(dx)
}
