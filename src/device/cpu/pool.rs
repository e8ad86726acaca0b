//! Pooling kernels: max and average pooling over square windows, global average pooling.
//!
//! Every kernel works plane by plane (one sample, one channel); planes run in parallel and
//! each plane is owned by one task, so the backward kernels, which accumulate into the input
//! gradient of their own plane in a fixed order, are race-free and deterministic.
//!
//! Windows are rectangles clipped to the image, so both pools are separable: a vertical pass
//! combines the (clipped) rows of a window into one row, then a horizontal pass combines
//! columns. The horizontal pass runs once per window column offset `d` over the contiguous
//! range of outputs for which column `ow * stride + d - pad` is inside the image. Borders are
//! handled by those ranges, not by per-element tests, so the inner loops are branch-free and
//! vectorise (with stride 1 they are plain slice operations).

use rayon::prelude::*;

use super::batchnorm::plane_sum;
use crate::device::Pool2dSpec;
use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;

/// Elements a parallel task should at least cover (small planes are grouped).
const TASK_ELEMS: usize = 1 << 14;

/// Pooling geometry of one call.
#[derive(Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    k: usize,
    s: usize,
    p: usize,
}

impl Geom {
    fn new(op: &'static str, shape: &[usize], spec: Pool2dSpec) -> Result<Geom> {
        let &[n, c, h, w] = shape else {
            return shape_err(op, "[N, C, H, W]", shape);
        };
        let (k, s, p) = (spec.kernel, spec.stride, spec.padding);
        if k == 0 || s == 0 {
            return Err(Error::Invalid(format!(
                "{op}: kernel and stride must be positive, got {spec:?}"
            )));
        }
        // As PyTorch: this also guarantees that every window holds an element of the image.
        if 2 * p > k {
            return Err(Error::Invalid(format!(
                "{op}: padding must be at most half the kernel, got {spec:?}"
            )));
        }
        if h == 0 || w == 0 || h + 2 * p < k || w + 2 * p < k {
            return shape_err(op, format!("H, W >= max(1, {k} - 2 * {p})"), shape);
        }
        if h * w > u32::MAX as usize {
            return Err(Error::Invalid(format!(
                "{op}: planes of {h}x{w} are too large"
            )));
        }
        Ok(Geom {
            n,
            c,
            h,
            w,
            ho: spec.out_size(h),
            wo: spec.out_size(w),
            k,
            s,
            p,
        })
    }

    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }

    /// Rows `[lo, hi)` of the image inside the window of output row `oh`.
    #[inline]
    fn rows(&self, oh: usize) -> (usize, usize) {
        clip(oh, self.s, self.p, self.k, self.h)
    }

    /// For each window column offset `d`, the outputs `[lo, hi)` whose column
    /// `ow * s + d - p` is inside the image.
    fn col_ranges(&self) -> Vec<(usize, usize)> {
        (0..self.k)
            .map(|d| {
                let lo = if self.p > d {
                    (self.p - d).div_ceil(self.s)
                } else {
                    0
                };
                let hi = if self.w + self.p > d {
                    ((self.w - 1 + self.p - d) / self.s + 1).min(self.wo)
                } else {
                    0
                };
                (lo.min(hi), hi)
            })
            .collect()
    }

    /// `1 / count^power` of every output window (count excludes padding), row-major.
    fn inv_counts(&self, power: i32) -> Vec<f32> {
        let mut f = Vec::with_capacity(self.ho * self.wo);
        for oh in 0..self.ho {
            let (r0, r1) = self.rows(oh);
            for ow in 0..self.wo {
                let (c0, c1) = clip(ow, self.s, self.p, self.k, self.w);
                let count = ((r1 - r0) * (c1 - c0)) as f64;
                f.push((1.0 / count).powi(power) as f32);
            }
        }
        f
    }

    /// Output planes per parallel task.
    fn planes_per_task(&self) -> usize {
        (TASK_ELEMS / (self.h * self.w)).max(1)
    }
}

/// `[lo, hi)` of the image axis of length `len` covered by window `o`.
#[inline]
fn clip(o: usize, s: usize, p: usize, k: usize, len: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).max(0) as usize).min(len);
    (lo, hi)
}

/// Maximum that propagates NaN (like PyTorch): the result is NaN if any operand is, otherwise
/// the maximum, whatever the order of evaluation.
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// Applies `f(out[ow], t[ow * s + d - p])` over the in-image outputs of every column offset.
#[inline(always)]
fn horizontal(
    out: &mut [f32],
    t: &[f32],
    g: &Geom,
    ranges: &[(usize, usize)],
    f: impl Fn(&mut f32, f32),
) {
    for (d, &(lo, hi)) in ranges.iter().enumerate() {
        if lo >= hi {
            continue;
        }
        let c0 = lo * g.s + d - g.p;
        let o = &mut out[lo..hi];
        if g.s == 1 {
            o.iter_mut()
                .zip(&t[c0..c0 + (hi - lo)])
                .for_each(|(o, &v)| f(o, v));
        } else {
            o.iter_mut()
                .zip(t[c0..].iter().step_by(g.s))
                .for_each(|(o, &v)| f(o, v));
        }
    }
}

/// The vertical pass: `t = combine(rows r0..r1 of x)`.
#[inline(always)]
fn vertical(
    t: &mut [f32],
    x: &[f32],
    w: usize,
    (r0, r1): (usize, usize),
    f: impl Fn(&mut f32, f32),
) {
    t.copy_from_slice(&x[r0 * w..(r0 + 1) * w]);
    for r in r0 + 1..r1 {
        t.iter_mut()
            .zip(&x[r * w..(r + 1) * w])
            .for_each(|(t, &v)| f(t, v));
    }
}

pub(crate) fn max_forward(x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let g = Geom::new("max_pool2d", x.shape(), spec)?;
    let ranges = g.col_ranges();
    let mut out = vec![0.0f32; g.n * g.c * g.ho * g.wo];
    out.par_chunks_mut(g.ho * g.wo)
        .zip(x.cpu().par_chunks(g.h * g.w))
        .with_min_len(g.planes_per_task())
        .for_each_init(
            || vec![0.0f32; g.w],
            |t, (o, xp)| {
                for (oh, orow) in o.chunks_exact_mut(g.wo).enumerate() {
                    vertical(t, xp, g.w, g.rows(oh), |a, v| *a = max_nan(*a, v));
                    orow.fill(f32::NEG_INFINITY);
                    horizontal(orow, t, &g, &ranges, |a, v| *a = max_nan(*a, v));
                }
            },
        );
    Tensor::from_vec(out, &g.out_shape())
}

pub(crate) fn max_backward(x: &Tensor, dy: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let g = Geom::new("max_pool2d_backward", x.shape(), spec)?;
    if dy.shape() != g.out_shape() {
        return shape_err(
            "max_pool2d_backward dy",
            format!("{:?}", g.out_shape()),
            dy.shape(),
        );
    }
    let ranges = g.col_ranges();
    // First in-image column of each window: where its row-major scan starts.
    let first_col: Vec<u32> = (0..g.wo)
        .map(|ow| clip(ow, g.s, g.p, g.k, g.w).0 as u32)
        .collect();
    let mut dx = vec![0.0f32; x.numel()];
    dx.par_chunks_mut(g.h * g.w)
        .zip(
            x.cpu()
                .par_chunks(g.h * g.w)
                .zip(dy.cpu().par_chunks(g.ho * g.wo)),
        )
        .with_min_len(g.planes_per_task())
        .for_each_init(
            || (vec![0.0f32; g.wo], vec![0u32; g.wo]),
            |(best, arg), (dxp, (xp, dyp))| {
                for (oh, dyrow) in dyp.chunks_exact(g.wo).enumerate() {
                    // Argmax of every window of this output row, all columns at once: the
                    // window elements are visited in row-major order and only a strictly
                    // greater value (or a NaN) takes over, so the first maximum wins.
                    let (r0, r1) = g.rows(oh);
                    best.fill(f32::NEG_INFINITY);
                    let row0 = (r0 * g.w) as u32;
                    arg.iter_mut()
                        .zip(&first_col)
                        .for_each(|(a, &c)| *a = row0 + c);
                    for r in r0..r1 {
                        let row = &xp[r * g.w..(r + 1) * g.w];
                        for (d, &(lo, hi)) in ranges.iter().enumerate() {
                            if lo >= hi {
                                continue;
                            }
                            let c0 = lo * g.s + d - g.p;
                            let base = (r * g.w + c0) as u32;
                            let (b, a) = (&mut best[lo..hi], &mut arg[lo..hi]);
                            if g.s == 1 {
                                argmax_step(b, a, &row[c0..c0 + (hi - lo)], base, 1);
                            } else {
                                let vals = row[c0..].iter().step_by(g.s);
                                for (i, ((b, a), &v)) in
                                    b.iter_mut().zip(a.iter_mut()).zip(vals).enumerate()
                                {
                                    let take = v > *b || v.is_nan();
                                    *b = if take { v } else { *b };
                                    *a = if take { base + (i * g.s) as u32 } else { *a };
                                }
                            }
                        }
                    }
                    for (&a, &d) in arg.iter().zip(dyrow) {
                        dxp[a as usize] += d;
                    }
                }
            },
        );
    Tensor::from_vec(dx, x.shape())
}

/// One window element for a run of outputs whose candidates are contiguous in `vals`.
#[inline(always)]
fn argmax_step(best: &mut [f32], arg: &mut [u32], vals: &[f32], base: u32, step: u32) {
    let mut idx = base;
    for ((b, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(vals) {
        let take = v > *b || v.is_nan();
        *b = if take { v } else { *b };
        *a = if take { idx } else { *a };
        idx += step;
    }
}

pub(crate) fn avg_forward(x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let g = Geom::new("avg_pool2d", x.shape(), spec)?;
    let ranges = g.col_ranges();
    let inv = g.inv_counts(1);
    let mut out = vec![0.0f32; g.n * g.c * g.ho * g.wo];
    out.par_chunks_mut(g.ho * g.wo)
        .zip(x.cpu().par_chunks(g.h * g.w))
        .with_min_len(g.planes_per_task())
        .for_each_init(
            || vec![0.0f32; g.w],
            |t, (o, xp)| {
                for ((oh, orow), f) in o
                    .chunks_exact_mut(g.wo)
                    .enumerate()
                    .zip(inv.chunks_exact(g.wo))
                {
                    vertical(t, xp, g.w, g.rows(oh), |a, v| *a += v);
                    orow.fill(0.0);
                    horizontal(orow, t, &g, &ranges, |a, v| *a += v);
                    orow.iter_mut().zip(f).for_each(|(o, &f)| *o *= f);
                }
            },
        );
    Tensor::from_vec(out, &g.out_shape())
}

pub(crate) fn avg_backward(
    dy: &Tensor,
    spec: Pool2dSpec,
    x_shape: &[usize],
    power: i32,
) -> Result<Tensor> {
    let g = Geom::new("avg_pool2d_backward", x_shape, spec)?;
    if dy.shape() != g.out_shape() {
        return shape_err(
            "avg_pool2d_backward dy",
            format!("{:?}", g.out_shape()),
            dy.shape(),
        );
    }
    let ranges = g.col_ranges();
    let inv = g.inv_counts(power);
    let mut dx = vec![0.0f32; g.n * g.c * g.h * g.w];
    // dx[i, j] = sum over windows (oh, ow) holding (i, j) of dy[oh, ow] / count^power: per
    // output row, spread the scaled row horizontally into `t`, then add `t` to the rows of
    // the window.
    dx.par_chunks_mut(g.h * g.w)
        .zip(dy.cpu().par_chunks(g.ho * g.wo))
        .with_min_len(g.planes_per_task())
        .for_each_init(
            || (vec![0.0f32; g.w], vec![0.0f32; g.wo]),
            |(t, sd), (dxp, dyp)| {
                for ((oh, dyrow), f) in dyp
                    .chunks_exact(g.wo)
                    .enumerate()
                    .zip(inv.chunks_exact(g.wo))
                {
                    sd.iter_mut()
                        .zip(dyrow.iter().zip(f))
                        .for_each(|(s, (&d, &f))| *s = d * f);
                    t.fill(0.0);
                    for (d, &(lo, hi)) in ranges.iter().enumerate() {
                        if lo >= hi {
                            continue;
                        }
                        let c0 = lo * g.s + d - g.p;
                        let src = &sd[lo..hi];
                        if g.s == 1 {
                            t[c0..c0 + (hi - lo)]
                                .iter_mut()
                                .zip(src)
                                .for_each(|(t, &v)| *t += v);
                        } else {
                            t[c0..]
                                .iter_mut()
                                .step_by(g.s)
                                .zip(src)
                                .for_each(|(t, &v)| *t += v);
                        }
                    }
                    let (r0, r1) = g.rows(oh);
                    for r in r0..r1 {
                        dxp[r * g.w..(r + 1) * g.w]
                            .iter_mut()
                            .zip(t.iter())
                            .for_each(|(o, &v)| *o += v);
                    }
                }
            },
        );
    Tensor::from_vec(dx, x_shape)
}

pub(crate) fn global_avg_forward(x: &Tensor) -> Result<Tensor> {
    let &[n, c, h, w] = x.shape() else {
        return shape_err("global_avg_pool", "[N, C, H, W]", x.shape());
    };
    let hw = h * w;
    if hw == 0 {
        return shape_err("global_avg_pool", "H, W >= 1", x.shape());
    }
    let inv = 1.0 / hw as f64;
    let mut out = vec![0.0f32; n * c];
    out.par_iter_mut()
        .zip(x.cpu().par_chunks(hw))
        .with_min_len((TASK_ELEMS / hw).max(1))
        .for_each(|(o, v)| *o = (plane_sum(v, None) * inv) as f32);
    Tensor::from_vec(out, &[n, c])
}

pub(crate) fn global_avg_backward(dy: &Tensor, x_shape: &[usize], power: i32) -> Result<Tensor> {
    let &[n, c, h, w] = x_shape else {
        return shape_err("global_avg_pool_backward x", "[N, C, H, W]", x_shape);
    };
    let hw = h * w;
    if hw == 0 {
        return shape_err("global_avg_pool_backward x", "H, W >= 1", x_shape);
    }
    if dy.shape() != [n, c] {
        return shape_err(
            "global_avg_pool_backward dy",
            format!("[{n}, {c}]"),
            dy.shape(),
        );
    }
    let f = (1.0 / hw as f64).powi(power);
    let mut dx = vec![0.0f32; n * c * hw];
    dx.par_chunks_mut(hw)
        .zip(dy.cpu().par_iter())
        .with_min_len((TASK_ELEMS / hw).max(1))
        .for_each(|(o, &d)| o.fill((d as f64 * f) as f32));
    Tensor::from_vec(dx, x_shape)
}
