//! Elementwise maps and the deterministic reductions (`kernels/elementwise.cu`).

use super::params::*;
use cudarc::driver::LaunchConfig;

use super::CudaBackend;
use crate::device::{same_shape, shape};
use crate::device::{Binary, Unary};
use crate::error::Result;
use crate::tensor::Tensor;

/// Most f64 partials a reduction writes (fixed, so results do not depend on the GPU model).
const REDUCE_PARTS: usize = 1024;

/// Parameters of an elementwise kernel over `n` elements.
pub(super) fn ew(n: usize, op: i32, alpha: f32) -> EwParams {
    EwParams {
        n: n as i64,
        inner: 0,
        op,
        alpha,
    }
}

impl CudaBackend {
    fn ew_unary(&self, x: &Tensor, op: Unary) -> Result<Tensor> {
        let n = x.numel();
        let (code, alpha) = match op {
            Unary::Relu => (EW_UNARY_RELU, 0.0),
            Unary::Square => (EW_UNARY_SQUARE, 0.0),
            Unary::Scale(a) => (EW_UNARY_SCALE, a),
        };
        let y = self.alloc(n)?;
        let yt = self.wrap(y, x.shape());
        if n > 0 {
            let p = [self.ptr("unary", x)?, self.ptr("unary", &yt)?];
            self.launch("ew_unary", self.grid_stride(n), &p, &ew(n, code, alpha))?;
        }
        Ok(yt)
    }

    /// Reduction of `a` (or of `a * b`) to f64 partials, summed on the host.
    fn reduce(&self, a: &Tensor, b: Option<&Tensor>) -> Result<f64> {
        let n = a.numel();
        if n == 0 {
            return Ok(0.0);
        }
        let parts = n.div_ceil(4096).min(REDUCE_PARTS);
        let partials = self.alloc_f64(parts)?;
        let pp = {
            let (p, _s) = cudarc::driver::DevicePtr::device_ptr(&partials, self.stream());
            p
        };
        let bp = match b {
            Some(b) => self.ptr("dot", b)?,
            None => 0,
        };
        let p = [self.ptr("reduce", a)?, bp, pp];
        let prm = ReduceParams {
            n: n as i64,
            blocks: parts as i64,
        };
        self.launch("reduce_dot_partial", self.blocks(parts), &p, &prm)?;
        self.host_sum(&partials, parts)
    }

    /// Per group, `sum_i dot(xs[i], xs[i])`, with ONE synchronisation for all groups: every
    /// tensor's partials go to one buffer, read once; each tensor's partials are added in
    /// index order, then the group's tensors in order (the same f64 arithmetic as summing
    /// [`Backend::dot`](crate::Backend::dot)s).
    pub(super) fn sum_of_squares_groups(&self, groups: &[&[&Tensor]]) -> Result<Vec<f64>> {
        let parts: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|x| x.numel().div_ceil(4096).min(REDUCE_PARTS))
                    .collect()
            })
            .collect();
        let total: usize = parts.iter().flatten().sum();
        if total == 0 {
            return Ok(vec![0.0; groups.len()]);
        }
        let partials = self.alloc_f64(total)?;
        // One launch for every tensor: block (b, t) is block b of tensor t's
        // reduce_dot_partial (same partials, bit for bit). The table (elements, blocks,
        // first partial per tensor) depends on the shapes only; both it and the pointer
        // table are cached on the device by content.
        let (mut ptrs, mut table) = (Vec::new(), Vec::new());
        let mut off = 0;
        for (x, &np) in groups.iter().copied().flatten().zip(parts.iter().flatten()) {
            if np == 0 {
                continue;
            }
            ptrs.push(self.ptr("sum_of_squares", x)?);
            table.extend([x.numel() as u64, np as u64, off as u64]);
            off += np;
        }
        let max_blocks = parts.iter().flatten().copied().max().unwrap_or(1);
        // gridDim.y is at most 65,535: more tensors take one launch per 65,535.
        for (ptrs, table) in ptrs.chunks(65_535).zip(table.chunks(3 * 65_535)) {
            let prm = SumsqMultiParams {
                tensors: ptrs.len() as i64,
                max_blocks: max_blocks as i64,
            };
            let cfg = LaunchConfig {
                grid_dim: (max_blocks as u32, ptrs.len() as u32, 1),
                block_dim: (super::BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let (xp, tp) = (
                self.cached_u64(ptrs.to_vec())?,
                self.cached_u64(table.to_vec())?,
            );
            let p = [self.raw(&*xp), self.raw(&*tp), self.raw(&partials)];
            self.launch("reduce_sumsq_multi", cfg, &p, &prm)?;
        }
        crate::device::counters::host_read();
        let host = self
            .stream()
            .clone_dtoh(&partials)
            .map_err(super::drv("copy to host"))?;
        let mut off = 0;
        Ok(parts
            .iter()
            .map(|g| {
                let mut s = 0.0f64;
                for &np in g {
                    s += host[off..off + np].iter().sum::<f64>();
                    off += np;
                }
                s
            })
            .collect())
    }
}

pub(super) fn axpy_multi(
    be: &CudaBackend,
    alpha: f32,
    xs: &[&Tensor],
    ys: &mut [&mut Tensor],
) -> Result<()> {
    crate::device::shape::axpy_multi(xs, ys)?;
    let mut offsets = Vec::with_capacity(xs.len() + 1);
    let mut total = 0usize;
    for x in xs {
        offsets.push(total as i64);
        total += x.numel();
    }
    offsets.push(total as i64);
    if total == 0 {
        return Ok(());
    }
    let xp = be.cached_u64(
        xs.iter()
            .map(|x| be.ptr("axpy_multi x", x))
            .collect::<Result<_>>()?,
    )?;
    let yp = be.cached_u64(
        ys.iter_mut()
            .map(|y| be.ptr_mut("axpy_multi y", y))
            .collect::<Result<_>>()?,
    )?;
    // The offsets are the same step after step: cached on the device by content.
    let off = be.cached_u64(offsets.iter().map(|&o| o as u64).collect())?;
    let prm = AxpyMultiParams {
        tensors: xs.len() as i64,
        total: total as i64,
        alpha,
        _pad: 0,
    };
    let p = [be.raw(&xp), be.raw(&yp), be.raw(&off)];
    be.launch("ew_axpy_multi", be.grid_stride(total), &p, &prm)
}

pub(super) fn unary(be: &CudaBackend, x: &Tensor, op: Unary) -> Result<Tensor> {
    be.ew_unary(x, op)
}

pub(super) fn binary(be: &CudaBackend, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    same_shape("binary", a, b)?;
    let n = a.numel();
    let code = match op {
        Binary::Add => EW_BINARY_ADD,
        Binary::Sub => EW_BINARY_SUB,
        Binary::Mul => EW_BINARY_MUL,
        Binary::ReluMask => EW_BINARY_RELU_MASK,
    };
    let y = be.wrap(be.alloc(n)?, a.shape());
    if n > 0 {
        let p = [
            be.ptr("binary a", a)?,
            be.ptr("binary b", b)?,
            be.ptr("binary", &y)?,
        ];
        be.launch("ew_binary", be.grid_stride(n), &p, &ew(n, code, 0.0))?;
    }
    Ok(y)
}

pub(super) fn axpy(be: &CudaBackend, alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
    same_shape("axpy", x, y)?;
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let xp = be.ptr("axpy x", x)?;
    let yp = be.ptr_mut("axpy y", y)?;
    be.launch(
        "ew_axpy",
        be.grid_stride(n),
        &[xp, yp],
        &ew(n, EW_NO_OP, alpha),
    )
}

pub(super) fn add_into(be: &CudaBackend, y: &mut Tensor, xs: &[&Tensor]) -> Result<()> {
    for x in xs {
        same_shape("add_into", y, x)?;
    }
    let n = y.numel();
    if n == 0 || xs.is_empty() {
        return Ok(());
    }
    let yp = be.ptr_mut("add_into y", y)?;
    for chunk in xs.chunks(ADD_INTO_MAX as usize) {
        let mut p = AddIntoParams {
            xs: [std::ptr::null(); ADD_INTO_MAX as usize],
            n: n as i64,
            k: chunk.len() as i32,
            _pad: 0,
        };
        for (slot, x) in p.xs.iter_mut().zip(chunk) {
            *slot = be.ptr("add_into x", x)? as usize as *const f32;
        }
        be.launch("ew_add_into", be.grid_stride(n), &[yp], &p)?;
    }
    Ok(())
}

pub(super) fn sum_all(be: &CudaBackend, x: &Tensor) -> Result<f64> {
    be.reduce(x, None)
}

pub(super) fn dot(be: &CudaBackend, a: &Tensor, b: &Tensor) -> Result<f64> {
    same_shape("dot", a, b)?;
    be.reduce(a, Some(b))
}

pub(super) fn scale_samples(be: &CudaBackend, x: &Tensor, scale: &[f32]) -> Result<Tensor> {
    let n = shape::scale_samples(x, scale)?;
    let len = x.numel();
    let sc = be.htod(scale)?;
    let y = be.wrap(be.alloc(len)?, x.shape());
    if len > 0 {
        let p = [
            be.ptr("scale_samples", x)?,
            be.raw(&sc),
            be.ptr("scale_samples", &y)?,
        ];
        let mut prm = ew(len, EW_NO_OP, 0.0);
        prm.inner = (len / n) as i64;
        be.launch("scale_samples", be.grid_stride(len), &p, &prm)?;
    }
    Ok(y)
}
