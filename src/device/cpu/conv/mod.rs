//! 2-D convolution on the CPU: NCHW activations, square kernels, weights
//! `[c_out, c_in / groups, k, k]`, any stride, padding, dilation and groups.
//!
//! This module holds the entry points and the scratch and output helpers; [`geom`] the
//! validated geometry, [`depthwise`] the direct kernels and [`gemm`] the GEMM kernels.
//!
//! Two families of kernels:
//!
//! - **Depthwise** (`groups == c_in == c_out`: the separable and dilated convolutions of the
//!   search space) runs direct kernels, in parallel over (sample, channel) planes. Each plane
//!   is first copied into a zero-padded thread-local scratch whose columns are split into
//!   `stride` phases (column `v` of the padded plane lands in phase `v % stride` at
//!   `v / stride`). In that layout every kernel tap of every output row reads one
//!   *contiguous* run of the scratch, at an offset that depends on the tap only. This takes
//!   the place of an interior/border split: the border is zeros in the data instead of
//!   branches in the code, one loop nest serves every output, and the zeros are written only
//!   when the layout changes (consecutive planes overwrite just the interior, one row copy
//!   each). The inner loops are fixed-width multiply-adds over contiguous rows, which the
//!   compiler vectorises; an AVX2+FMA (and an AVX-512) copy of each kernel is selected at
//!   run time (the portable copy is the same source). Row copies of the common widths are
//!   inline (no `memcpy` call per 16-float row) and a 2-phase split de-interleaves a row in
//!   one pass.
//!   - forward: blocks of 32/16/8 outputs of several rows at once (eight independent
//!     vector accumulators) are accumulated in registers over all taps (a gather: no
//!     read-modify-write of the output per tap);
//!   - input gradient, stride 1: the same gather on the zero-padded `dy` with the flipped
//!     kernel (the transposed correlation);
//!   - input gradient, stride > 1: split into the `stride^2` sub-pixel phases of `dx`, each a
//!     stride-1 gather over the zero-padded `dy` with the taps that reach it;
//!   - weight gradient: per plane, the dot products of `dy` with the taps' views of the
//!     padded input, the `k` taps of a kernel row at once (one load of `dy` for `k` taps).
//! - **GEMM** (dense, pointwise, grouped): per sample and group, `Y = W col(X)` with the
//!   `gemm` crate. A 1x1 convolution with stride 1 and no padding multiplies the input plane
//!   stack directly (no copy); anything else goes through `im2col` into a thread-local
//!   scratch (for a strided 1x1 that is just the subsampling gather). The input gradient is
//!   `W^T dY` followed by `col2im`, the weight gradient `dY col(X)^T`.
//!
//! Outputs are allocated uninitialised and zeroed by the task that fills each part (not by a
//! single-threaded `calloc` of the whole tensor). The weight curvature
//! ([`weight_correlation`] with `square`) squares `x` while copying it into the scratch.
//!
//! Determinism: every output element is computed by one task in a fixed order. Weight
//! gradients are reduced over the batch through per-plane (depthwise) or per-image-chunk
//! (GEMM; chunks depend on the batch size only) partials that are summed in index order in
//! f64, so results never depend on thread scheduling or on the number of threads.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

mod depthwise;
mod gemm;
mod geom;

use super::gemm::{sgemm, sgemm_into, Mat};
use super::simd::{isa_dispatch, Isa, Madd};
use crate::device::{shape, Conv2dSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use depthwise::*;
use gemm::*;
use geom::*;

// ------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------

pub(crate) fn forward(x: &Tensor, w: &Tensor, spec: Conv2dSpec) -> Result<Tensor> {
    let g = geometry("conv2d_forward", x.shape(), w.shape(), spec)?;
    let y_shape = g.y_shape();
    let y = output(y_shape.iter().product(), |y| {
        if g.is_depthwise() {
            depthwise_forward(&g, x.cpu(), w.cpu(), y, Isa::detect());
        } else {
            gemm_forward(&g, x.cpu(), w.cpu(), y);
        }
    });
    Tensor::from_vec(y, &y_shape)
}

pub(crate) fn backward_input(
    dy: &Tensor,
    w: &Tensor,
    spec: Conv2dSpec,
    x_shape: &[usize],
) -> Result<Tensor> {
    let op = "conv2d_backward_input";
    let g = geometry(op, x_shape, w.shape(), spec)?;
    expect_shape(op, "output gradient", dy, &g.y_shape())?;
    let dx = output(x_shape.iter().product(), |dx| {
        if g.is_depthwise() {
            depthwise_backward_input(&g, dy.cpu(), w.cpu(), dx, Isa::detect());
        } else {
            gemm_backward_input(&g, dy.cpu(), w.cpu(), dx);
        }
    });
    Tensor::from_vec(dx, x_shape)
}

/// The correlation of `x` (squared elementwise when `square`) with `dy`, summed over the
/// batch: the weight gradient, or with `square` the weight curvature (`x (.) x` correlated
/// with `hy`), squaring each value as the kernels copy it into their scratch (the padded
/// plane or `col(X)`), so no squared copy of `x` is ever made. Bit-identical to the gradient
/// of a squared input.
pub(crate) fn weight_correlation(
    op: &'static str,
    x: &Tensor,
    dy: &Tensor,
    spec: Conv2dSpec,
    w_shape: &[usize],
    square: bool,
) -> Result<Tensor> {
    let g = geometry(op, x.shape(), w_shape, spec)?;
    expect_shape(op, "output gradient", dy, &g.y_shape())?;
    let dw = if g.is_depthwise() {
        depthwise_backward_weight(&g, x.cpu(), dy.cpu(), square, Isa::detect())
    } else {
        gemm_backward_weight(&g, x.cpu(), dy.cpu(), square)
    };
    Tensor::from_vec(dw, w_shape)
}

// ------------------------------------------------------------------------------------------
// Shared helpers
// ------------------------------------------------------------------------------------------

/// Per-thread scratch (padded planes, im2col columns), grown to the largest size used.
pub(super) struct Scratch {
    buf: Vec<f32>,
    /// The padded-plane layout `buf` currently holds, whose padding positions are zeros;
    /// `None` after any other use.
    padded: Option<(Padded, usize, usize)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            buf: Vec::new(),
            padded: None,
        })
    };
}

/// Runs `f` on `len` floats of this thread's scratch. The contents are stale: `f` must
/// write before it reads. If the scratch is already borrowed on this thread (a rayon
/// worker that stole another convolution task while waiting inside a nested parallel
/// call), a fresh buffer is used instead.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.padded = None;
            if scratch.buf.len() < len {
                scratch.buf.resize(len, 0.0);
            }
            f(&mut scratch.buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// A fresh output of `len` floats, filled by `fill` from uninitialised memory. Every kernel
/// splits the whole slice into parallel tasks, each of which starts with [`zeroed`] on its
/// part: the zeros are written by the task that then overwrites them, in parallel and while
/// the part is hot in cache, instead of by a single-threaded `calloc` of the whole output
/// (which measured 7-15% of a small convolution).
pub(super) fn output(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `fill` initialised all `len` elements: each kernel covers the slice with
    // `par_chunks_mut`, and every chunk goes through `zeroed` before anything else, or is
    // written whole by `sgemm_into` (the GEMM forward).
    unsafe { v.set_len(len) };
    v
}

/// Writes zeros to one task's part of a fresh output and views it as floats.
pub(super) fn zeroed(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    part.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just initialised, and `MaybeUninit<f32>` has the layout of
    // `f32`.
    unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The outputs `o` in `[0, n_out)` with `0 <= o * s + off < n_in`, as a range `lo..hi`.
pub(super) fn valid_range(off: isize, s: usize, n_out: usize, n_in: usize) -> (usize, usize) {
    let lo = if off >= 0 {
        0
    } else {
        off.unsigned_abs().div_ceil(s)
    };
    let limit = n_in as isize - off;
    let hi = if limit <= 0 {
        0
    } else {
        (limit as usize).div_ceil(s)
    };
    let hi = hi.min(n_out);
    (lo.min(hi), hi)
}

/// `out[i] = sum_p parts[p * len + i]` over `count` partials, in order `p = 0, 1, ...` and
/// in f64: the batch reduction of weight gradients, independent of thread scheduling.
pub(super) fn sum_partials_in_order(parts: &[f32], count: usize, len: usize) -> Vec<f32> {
    const PIECE: usize = 1 << 12;
    let mut out = vec![0.0f32; len];
    out.par_chunks_mut(PIECE)
        .enumerate()
        .for_each(|(piece, o)| {
            let base = piece * PIECE;
            for (j, o) in o.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for p in 0..count {
                    acc += f64::from(parts[p * len + base + j]);
                }
                *o = acc as f32;
            }
        });
    out
}

/// Planes per parallel task at least this many output elements (tiny planes are batched).
pub(super) const MIN_TASK_ELEMS: usize = 1 << 12;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn spec(s: usize, p: usize, d: usize, groups: usize) -> Conv2dSpec {
        Conv2dSpec::new()
            .stride(s)
            .padding(p)
            .dilation(d)
            .groups(groups)
    }

    fn rand(len: usize, rng: &mut Rng) -> Vec<f32> {
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
            / scale
    }

    /// The depthwise direct kernels (both compiled copies) against the GEMM path, which
    /// handles the same geometry as a grouped convolution with one channel per group.
    #[test]
    fn depthwise_kernels_match_the_gemm_path() {
        let mut rng = Rng::new(11);
        let mut isas = vec![Isa::Base];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            isas.push(Isa::Avx2Fma);
        }
        isas.push(Isa::detect());
        for &(k, s, p, d, h, w) in &[
            (3, 1, 1, 1, 9, 13),
            (3, 2, 1, 1, 9, 12),
            (5, 1, 2, 1, 11, 7),
            (5, 2, 2, 1, 10, 11),
            (3, 1, 2, 2, 8, 37),
            (3, 2, 2, 2, 13, 9),
            (5, 1, 4, 2, 12, 12),
            (5, 2, 4, 2, 9, 17),
            (3, 3, 0, 1, 10, 11),
            (3, 1, 3, 1, 5, 6),
            (2, 2, 1, 3, 8, 9),
        ] {
            let (n, c) = (2, 3);
            let x_shape = [n, c, h, w];
            let g = geometry("test", &x_shape, &[c, 1, k, k], spec(s, p, d, c)).unwrap();
            let x = rand(n * c * h * w, &mut rng);
            let wt = rand(c * k * k, &mut rng);
            let dy = rand(n * c * g.howo(), &mut rng);
            let y_ref = output(dy.len(), |y| gemm_forward(&g, &x, &wt, y));
            let dx_ref = output(x.len(), |dx| gemm_backward_input(&g, &dy, &wt, dx));
            let dw_ref = gemm_backward_weight(&g, &x, &dy, false);
            for &isa in &isas {
                let what = format!("k{k} s{s} p{p} d{d} {h}x{w} {isa:?}");
                let y = output(dy.len(), |y| depthwise_forward(&g, &x, &wt, y, isa));
                assert!(max_rel_diff(&y, &y_ref) < 1e-5, "forward {what}");
                let dx = output(x.len(), |dx| {
                    depthwise_backward_input(&g, &dy, &wt, dx, isa)
                });
                assert!(max_rel_diff(&dx, &dx_ref) < 1e-5, "backward_input {what}");
                let dw = depthwise_backward_weight(&g, &x, &dy, false, isa);
                assert!(max_rel_diff(&dw, &dw_ref) < 1e-5, "backward_weight {what}");
            }
        }
    }

    #[test]
    fn valid_range_counts_in_bounds_outputs() {
        for off in -7isize..7 {
            for s in 1..4 {
                for n_in in 1..9 {
                    let n_out = 6;
                    let (lo, hi) = valid_range(off, s, n_out, n_in);
                    for o in 0..n_out {
                        let i = o as isize * s as isize + off;
                        let inside = i >= 0 && i < n_in as isize;
                        assert_eq!(
                            inside,
                            (lo..hi).contains(&o),
                            "off {off} s {s} n_in {n_in} o {o}"
                        );
                    }
                }
            }
        }
    }
}
