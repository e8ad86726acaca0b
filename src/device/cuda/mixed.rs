//! The fused mixed op (`kernels/mixed.cu`).

use super::params::*;
use super::{i32c, i64c, CudaBackend, TARGET_BLOCKS};
use crate::device::shape;
use crate::error::Result;
use crate::tensor::Tensor;

impl CudaBackend {
    /// Mixed-op parameters: `chunks` partial-sum chunks per sample, so that the reduction
    /// kernels get `n * chunks` blocks.
    fn mixed_params(&self, n: usize, k: usize, per: usize) -> Result<MixedParams> {
        // From the shape only (the sum order must not depend on the device): enough blocks
        // to fill a large GPU, at least 256 elements per block, at most 64 chunks.
        let want = per.div_ceil(8192).max(TARGET_BLOCKS.div_ceil(n.max(1)));
        let chunks = want.clamp(1, per.div_ceil(super::BLOCK as usize).clamp(1, 64));
        Ok(MixedParams {
            n: i64c(n),
            inner: i64c(per),
            chunks: i64c(chunks),
            k: i32c(k)?,
            _pad: 0,
        })
    }

    /// One output of the branches' shape per branch (the kernels write each one whole).
    fn branch_outputs(&self, xs: &[&Tensor]) -> Result<Vec<Tensor>> {
        xs.iter()
            .map(|_| Ok(self.wrap(self.alloc(xs[0].numel())?, xs[0].shape())))
            .collect()
    }

    fn ptr_array(
        &self,
        what: &'static str,
        xs: &[&Tensor],
    ) -> Result<std::sync::Arc<cudarc::driver::CudaSlice<u64>>> {
        let ptrs: Vec<u64> = xs
            .iter()
            .map(|x| self.ptr(what, x))
            .collect::<Result<_>>()?;
        self.cached_u64(ptrs)
    }
}

pub(super) fn mixed_forward(
    be: &CudaBackend,
    xs: &[&Tensor],
    s0: &Tensor,
    s: &Tensor,
) -> Result<Tensor> {
    let (n, per) = shape::mixed_shapes(xs, s0, s)?;
    let k = xs.len();
    let y = be.wrap(be.alloc(xs[0].numel())?, xs[0].shape());
    if y.numel() > 0 {
        let arr = be.ptr_array("mixed_forward", xs)?;
        let prm = be.mixed_params(n, k, per)?;
        let p = [
            be.raw(&arr),
            be.ptr("s0", s0)?,
            be.ptr("s", s)?,
            be.ptr("", &y)?,
        ];
        be.launch("mixed_fwd", be.grid_stride(y.numel()), &p, &prm)?;
    }
    Ok(y)
}

pub(super) fn mixed_backward(
    be: &CudaBackend,
    xs: &[&Tensor],
    dy: &Tensor,
    s0: &Tensor,
    s: &Tensor,
) -> Result<(Vec<Tensor>, Tensor)> {
    let (n, per) = shape::mixed_seed("mixed op dy", xs, s0, s, dy)?;
    let k = xs.len();
    let prm = be.mixed_params(n, k, per)?;
    let parts = prm.chunks as usize;
    let dxs = be.branch_outputs(xs)?;
    let r = be.wrap(be.alloc_zeros(n * k)?, &[n, k]);
    if per > 0 {
        let xa = be.ptr_array("mixed_backward", xs)?;
        let dxr: Vec<&Tensor> = dxs.iter().collect();
        let da = be.ptr_array("mixed_backward", &dxr)?;
        let partials = be.alloc_f64(n * k * parts)?;
        let pp = be.raw(&partials);
        let p = [
            be.raw(&xa),
            be.ptr("dy", dy)?,
            be.ptr("s0", s0)?,
            be.ptr("s", s)?,
            be.raw(&da),
            pp,
        ];
        be.launch("mixed_bwd", be.blocks(n * parts), &p, &prm)?;
        be.launch(
            "mixed_reduce_finalize",
            be.grid_stride(n * k),
            &[pp, be.ptr("", &r)?],
            &prm,
        )?;
    }
    Ok((dxs, r))
}

pub(super) fn mixed_switch_grads(
    be: &CudaBackend,
    r: &Tensor,
    s0: &Tensor,
    s: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (n, k) = shape::mixed_switch_grads(r, s0, s)?;
    let ds = be.wrap(be.alloc_zeros(k)?, &[k]);
    let ds0 = be.wrap(be.alloc_zeros(1)?, &[1]);
    let prm = MixedParams {
        n: i64c(n),
        inner: 0,
        chunks: 1,
        k: i32c(k)?,
        _pad: 0,
    };
    let p = [
        be.ptr("r", r)?,
        be.ptr("s0", s0)?,
        be.ptr("s", s)?,
        be.ptr("", &ds)?,
        be.ptr("", &ds0)?,
    ];
    be.launch("mixed_switch_grads", be.blocks(1), &p, &prm)?;
    Ok((ds, ds0))
}

pub(super) fn mixed_curvature(
    be: &CudaBackend,
    xs: &[&Tensor],
    hy: &Tensor,
    s0: &Tensor,
    s: &Tensor,
) -> Result<(Vec<Tensor>, Tensor, Tensor)> {
    let (n, per) = shape::mixed_seed("mixed op hy", xs, s0, s, hy)?;
    let k = xs.len();
    let prm = be.mixed_params(n, k, per)?;
    let parts = prm.chunks as usize;
    let hxs = be.branch_outputs(xs)?;
    let hs = be.wrap(be.alloc_zeros(k)?, &[k]);
    let hs0 = be.wrap(be.alloc_zeros(1)?, &[1]);
    if xs[0].numel() > 0 {
        let xa = be.ptr_array("mixed_curvature", xs)?;
        let hr: Vec<&Tensor> = hxs.iter().collect();
        let ha = be.ptr_array("mixed_curvature", &hr)?;
        // Partials [n * chunks, k + 1]: per block, k branch sums then the z^2 hy sum.
        let partials = be.alloc_f64((k + 1) * n * parts)?;
        let pp = be.raw(&partials);
        let (s0p, sp) = (be.ptr("s0", s0)?, be.ptr("s", s)?);
        let p = [be.raw(&xa), be.ptr("hy", hy)?, s0p, sp, be.raw(&ha), pp];
        be.launch("mixed_curv", be.blocks(n * parts), &p, &prm)?;
        let p = [pp, s0p, be.ptr("", &hs)?, be.ptr("", &hs0)?];
        be.launch("mixed_curv_finalize", be.blocks(1), &p, &prm)?;
    }
    Ok((hxs, hs, hs0))
}
