//! Batch norm and per-channel maps and sums (`kernels/batchnorm.cu`).

use cudarc::driver::LaunchConfig;

use super::params::*;
use super::{i32c, i64c, CudaBackend, TARGET_BLOCKS};
use crate::device::Backend;
use crate::device::{shape, BatchNormForward, BatchNormGrads, RunningStats};
use crate::error::Result;
use crate::tensor::Tensor;

/// Parameters of the kernels over `[n, c, s]`.
fn bn_params((n, c, s): (usize, usize, usize), eps: f32) -> Result<BnParams> {
    Ok(BnParams {
        n: i64c(n),
        c: i64c(c),
        s: i64c(s),
        eps,
        // Sample splits of the split reductions, from the shape only.
        splits: i32c(TARGET_BLOCKS.div_ceil(c.max(1)).clamp(1, n.max(1)))?,
        // No running-statistics update unless a training forward sets them.
        momentum: 0.0,
        var_factor: 0.0,
    })
}

impl CudaBackend {
    /// Grid `(c, splits)` of 256-thread blocks (the split per-channel reductions).
    fn split_grid(&self, c: usize, splits: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (c as u32, splits as u32, 1),
            block_dim: (super::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Training-mode batch norm; with `relu`, its output rectified in the apply pass
/// (`bn_relu_fwd_apply`).
pub(super) fn batch_norm_train_forward(
    be: &CudaBackend,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    running: Option<RunningStats<'_>>,
    relu: bool,
) -> Result<BatchNormForward> {
    let ncs = shape::batch_norm_train(x, weight, bias, eps)?;
    let (mut prm, c) = (bn_params(ncs, eps)?, ncs.1);
    if let Some(r) = &running {
        shape::batch_norm_running_of(r, c)?;
    }
    // The running statistics are updated by the statistics kernel itself (null: none).
    let (rmp, rvp) = match running {
        Some(r) if c > 0 => {
            prm.momentum = r.momentum;
            prm.var_factor = r.var_factor;
            (
                be.ptr_mut("batch_norm running mean", r.mean)?,
                be.ptr_mut("batch_norm running var", r.var)?,
            )
        }
        _ => (0, 0),
    };
    if c == 0 {
        return Ok(BatchNormForward {
            y: be.zeros(x.shape())?,
            mean: be.zeros(&[0])?,
            var: be.zeros(&[0])?,
            invstd: be.zeros(&[0])?,
        });
    }
    let (mean, var, invstd) = (be.alloc(c)?, be.alloc(c)?, be.alloc(c)?);
    let (mean, var, invstd) = (
        be.wrap(mean, &[c]),
        be.wrap(var, &[c]),
        be.wrap(invstd, &[c]),
    );
    let p = [
        be.ptr("batch_norm", x)?,
        be.ptr("bn", &mean)?,
        be.ptr("bn", &var)?,
        be.ptr("bn", &invstd)?,
    ];
    if prm.splits > 1 {
        let sp = prm.splits as usize;
        let partials = be.alloc_f64(c * sp * 2)?;
        let pp = be.raw(&partials);
        be.launch("bn_stats_partial", be.split_grid(c, sp), &[p[0], pp], &prm)?;
        let q = [p[0], pp, p[1], p[2], p[3], rmp, rvp];
        be.launch("bn_stats_finalize", be.grid_stride(c), &q, &prm)?;
    } else {
        let q = [p[0], p[1], p[2], p[3], rmp, rvp];
        be.launch("bn_stats", be.blocks(c), &q, &prm)?;
    }
    let y = be.wrap(be.alloc(x.numel())?, x.shape());
    let opt = |t: Option<&Tensor>| t.map_or(Ok(0), |t| be.ptr("batch_norm affine", t));
    let p = [
        be.ptr("batch_norm", x)?,
        be.ptr("", &mean)?,
        be.ptr("", &invstd)?,
        opt(weight)?,
        opt(bias)?,
        be.ptr("", &y)?,
    ];
    let entry = if relu {
        "bn_relu_fwd_apply"
    } else {
        "bn_fwd_apply"
    };
    be.launch(entry, be.grid_stride(x.numel()), &p, &prm)?;
    Ok(BatchNormForward {
        y,
        mean,
        var,
        invstd,
    })
}

/// The curvature rule of batch norm; with `ymask` (the rectified output of a batch norm fused
/// with ReLU), `hy` masked by `ymask > 0` in the same pass (`bn_relu_curvature_input`).
pub(super) fn batch_norm_curvature(
    be: &CudaBackend,
    hy: &Tensor,
    ymask: Option<&Tensor>,
    invstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<Tensor> {
    let ncs = shape::batch_norm_curvature(hy, invstd, weight)?;
    if let Some(y) = ymask {
        shape::same_shape("batch_norm_relu_curvature y", y, hy)?;
    }
    let (prm, c) = (bn_params(ncs, 0.0)?, ncs.1);
    let len = hy.numel();
    let hx = be.wrap(be.alloc(len)?, hy.shape());
    if len > 0 && c > 0 {
        let wp = match weight {
            Some(t) => be.ptr("batch_norm_curvature weight", t)?,
            None => 0,
        };
        let (hyp, ip, hxp) = (
            be.ptr("batch_norm_curvature hy", hy)?,
            be.ptr("batch_norm_curvature invstd", invstd)?,
            be.ptr("hx", &hx)?,
        );
        match ymask {
            Some(y) => {
                let p = [hyp, be.ptr("batch_norm_relu_curvature y", y)?, ip, wp, hxp];
                be.launch("bn_relu_curvature_input", be.grid_stride(len), &p, &prm)?;
            }
            None => {
                let p = [hyp, ip, wp, hxp];
                be.launch("bn_curvature_input", be.grid_stride(len), &p, &prm)?;
            }
        }
    }
    Ok(hx)
}

pub(super) fn channel_affine(
    be: &CudaBackend,
    x: &Tensor,
    scale: &Tensor,
    shift: Option<&Tensor>,
) -> Result<Tensor> {
    let ncs = shape::channel_affine(x, scale, shift)?;
    let prm = bn_params(ncs, 0.0)?;
    let len = x.numel();
    let y = be.wrap(be.alloc(len)?, x.shape());
    if len > 0 {
        let sp = match shift {
            Some(t) => be.ptr("channel_affine shift", t)?,
            None => 0,
        };
        let p = [
            be.ptr("channel_affine", x)?,
            be.ptr("channel_affine scale", scale)?,
            sp,
            be.ptr("y", &y)?,
        ];
        be.launch("channel_affine", be.grid_stride(len), &p, &prm)?;
    }
    Ok(y)
}

/// Training-mode batch-norm backward; with `ymask` (the rectified output of a batch norm
/// fused with ReLU), `dy` masked by `ymask > 0` inside each kernel (the `bn_relu_bwd_*`
/// variants).
pub(super) fn batch_norm_backward(
    be: &CudaBackend,
    dy: &Tensor,
    ymask: Option<&Tensor>,
    x: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<BatchNormGrads> {
    let ncs = shape::batch_norm_backward(dy, x, mean, invstd, weight)?;
    if let Some(y) = ymask {
        shape::same_shape("batch_norm_relu_backward y", y, dy)?;
    }
    let (prm, c) = (bn_params(ncs, 0.0)?, ncs.1);
    if c == 0 {
        return Ok(BatchNormGrads {
            dx: be.zeros(x.shape())?,
            dweight: be.zeros(&[0])?,
            dbias: be.zeros(&[0])?,
        });
    }
    let dbias = be.wrap(be.alloc(c)?, &[c]);
    let dweight = be.wrap(be.alloc(c)?, &[c]);
    let (dyp, xp) = (be.ptr("bn dy", dy)?, be.ptr("bn x", x)?);
    let (mp, ip) = (be.ptr("bn mean", mean)?, be.ptr("bn invstd", invstd)?);
    let (sd, sdx) = (be.ptr("", &dbias)?, be.ptr("", &dweight)?);
    // The masked variants take the mask pointer right after dy.
    let yp = match ymask {
        Some(y) => Some(be.ptr("batch_norm_relu_backward y", y)?),
        None => None,
    };
    let with_mask = |rest: &[u64]| -> Vec<u64> {
        let mut v = vec![dyp];
        v.extend(yp);
        v.extend_from_slice(rest);
        v
    };
    let name = |plain: &'static str, masked: &'static str| match yp {
        Some(_) => masked,
        None => plain,
    };
    if prm.splits > 1 {
        let sp = prm.splits as usize;
        let partials = be.alloc_f64(c * sp * 2)?;
        let pp = be.raw(&partials);
        be.launch(
            name("bn_bwd_partial", "bn_relu_bwd_partial"),
            be.split_grid(c, sp),
            &with_mask(&[xp, mp, pp]),
            &prm,
        )?;
        let q = [pp, ip, sd, sdx];
        be.launch("bn_bwd_finalize", be.grid_stride(c), &q, &prm)?;
    } else {
        be.launch(
            name("bn_bwd_reduce", "bn_relu_bwd_reduce"),
            be.blocks(c),
            &with_mask(&[xp, mp, ip, sd, sdx]),
            &prm,
        )?;
    }
    let wp = match weight {
        Some(w) => be.ptr("bn weight", w)?,
        None => 0,
    };
    let dx = be.wrap(be.alloc(x.numel())?, x.shape());
    let p = with_mask(&[xp, mp, ip, wp, sd, sdx, be.ptr("", &dx)?]);
    be.launch(
        name("bn_bwd_apply", "bn_relu_bwd_apply"),
        be.grid_stride(x.numel()),
        &p,
        &prm,
    )?;
    Ok(BatchNormGrads { dx, dweight, dbias })
}

pub(super) fn channel_sums(be: &CudaBackend, x: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
    let ncs = shape::channel_sums(x, y)?;
    let (prm, c) = (bn_params(ncs, 0.0)?, ncs.1);
    let out = be.wrap(be.alloc_zeros(c)?, &[c]);
    if x.numel() > 0 {
        let yp = match y {
            Some(t) => be.ptr("channel_sums y", t)?,
            None => 0,
        };
        let p = [be.ptr("channel_sums x", x)?, yp, be.ptr("", &out)?];
        if prm.splits > 1 {
            let sp = prm.splits as usize;
            let partials = be.alloc_f64(c * sp)?;
            let pp = be.raw(&partials);
            let q = [p[0], p[1], pp];
            be.launch("channel_sums_partial", be.split_grid(c, sp), &q, &prm)?;
            be.launch(
                "channel_sums_finalize",
                be.grid_stride(c),
                &[pp, p[2]],
                &prm,
            )?;
        } else {
            be.launch("channel_sums", be.blocks(c), &p, &prm)?;
        }
    }
    Ok(out)
}

pub(super) fn batch_norm_running_update(
    be: &CudaBackend,
    rm: &mut Tensor,
    rv: &mut Tensor,
    mean: &Tensor,
    var: &Tensor,
    momentum: f32,
    var_factor: f32,
) -> Result<()> {
    let c = shape::batch_norm_running(rm, rv, mean, var)?;
    if c == 0 {
        return Ok(());
    }
    let prm = BnRunningParams {
        c: c as i64,
        momentum,
        var_factor,
    };
    let p = [
        be.ptr_mut("batch_norm running mean", rm)?,
        be.ptr_mut("batch_norm running var", rv)?,
        be.ptr("batch mean", mean)?,
        be.ptr("batch var", var)?,
    ];
    be.launch("bn_running_update", be.grid_stride(c), &p, &prm)
}

pub(super) fn batch_norm_eval_constants(
    be: &CudaBackend,
    rm: &Tensor,
    rv: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = shape::batch_norm_eval(rm, rv, weight, bias)?;
    let (slope, shift, invstd) = (
        be.wrap(be.alloc_zeros(c)?, &[c]),
        be.wrap(be.alloc_zeros(c)?, &[c]),
        be.wrap(be.alloc_zeros(c)?, &[c]),
    );
    if c == 0 {
        return Ok((slope, shift, invstd));
    }
    let prm = bn_params((1, c, 1), eps)?;
    let opt = |t: Option<&Tensor>| t.map_or(Ok(0), |t| be.ptr("batch_norm affine", t));
    let p = [
        be.ptr("batch_norm running mean", rm)?,
        be.ptr("batch_norm running var", rv)?,
        opt(weight)?,
        opt(bias)?,
        be.ptr("", &slope)?,
        be.ptr("", &shift)?,
        be.ptr("", &invstd)?,
    ];
    be.launch("bn_eval_constants", be.grid_stride(c), &p, &prm)?;
    Ok((slope, shift, invstd))
}
