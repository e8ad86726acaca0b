//! Batch-norm kernels: per-channel statistics over the batch and spatial dimensions.
//!
//! Tensors are `[N, C, ...]` (NCHW for images; `[N, C]` works too): one *plane* is the
//! contiguous `[...]` block of one sample and one channel. Every reduction is computed per
//! plane in f64 (with several lane accumulators so that the loop vectorises), then the plane
//! partials of a channel are combined in sample order. Planes are fixed, so the results do not
//! depend on the number of threads. Elementwise passes run over planes in parallel with the
//! per-channel constants hoisted out of the inner loop.

use rayon::prelude::*;

use crate::device::{BatchNormForward, BatchNormGrads};
use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;

/// Independent f64 accumulators per reduction (breaks the add dependency chain so that the
/// loop vectorises; combined in a fixed order afterwards).
const LANES: usize = 8;

/// Elements a parallel task should at least cover (small planes are grouped).
const TASK_ELEMS: usize = 1 << 14;

/// `(n, c, s)`: batch, channels and plane size (product of the dimensions after the first two).
fn ncs(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match x.shape() {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => shape_err(op, "[N, C, ...]", x.shape()),
    }
}

/// Checks that an optional per-channel vector has shape `[c]`.
fn check_channel_vec(op: &'static str, t: Option<&Tensor>, c: usize) -> Result<()> {
    match t {
        Some(t) if t.shape() != [c] => shape_err(op, format!("[{c}]"), t.shape()),
        _ => Ok(()),
    }
}

/// Planes per parallel task for planes of `s` elements.
fn planes_per_task(s: usize) -> usize {
    (TASK_ELEMS / s.max(1)).max(1)
}

/// `(sum(x - k), sum((x - k)^2))` in f64. Shifting by a sample of the channel `k` keeps the
/// one-pass variance `E[(x-k)^2] - E[x-k]^2` free of cancellation unless the spread is many
/// orders of magnitude below `|mean - k|`.
#[inline]
fn shifted_moments(v: &[f32], k: f64) -> (f64, f64) {
    let mut s = [0.0f64; LANES];
    let mut q = [0.0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let rem = chunks.remainder();
    for ch in chunks {
        for i in 0..LANES {
            let d = ch[i] as f64 - k;
            s[i] += d;
            q[i] += d * d;
        }
    }
    let (mut st, mut qt) = (0.0, 0.0);
    for i in 0..LANES {
        st += s[i];
        qt += q[i];
    }
    for &x in rem {
        let d = x as f64 - k;
        st += d;
        qt += d * d;
    }
    (st, qt)
}

/// `(sum(dy), sum(dy * (x - m)))` in f64.
#[inline]
fn grad_moments(dy: &[f32], x: &[f32], m: f64) -> (f64, f64) {
    let mut s = [0.0f64; LANES];
    let mut q = [0.0f64; LANES];
    let dc = dy.chunks_exact(LANES);
    let xc = x.chunks_exact(LANES);
    let (drem, xrem) = (dc.remainder(), xc.remainder());
    for (d, x) in dc.zip(xc) {
        for i in 0..LANES {
            let g = d[i] as f64;
            s[i] += g;
            q[i] += g * (x[i] as f64 - m);
        }
    }
    let (mut st, mut qt) = (0.0, 0.0);
    for i in 0..LANES {
        st += s[i];
        qt += q[i];
    }
    for (&d, &x) in drem.iter().zip(xrem) {
        st += d as f64;
        qt += d as f64 * (x as f64 - m);
    }
    (st, qt)
}

/// `sum(x)` or `sum(x * y)` in f64.
#[inline]
pub(super) fn plane_sum(x: &[f32], y: Option<&[f32]>) -> f64 {
    let mut s = [0.0f64; LANES];
    let mut tot = 0.0;
    match y {
        None => {
            let xc = x.chunks_exact(LANES);
            let rem = xc.remainder();
            for ch in xc {
                for i in 0..LANES {
                    s[i] += ch[i] as f64;
                }
            }
            for &v in rem {
                tot += v as f64;
            }
        }
        Some(y) => {
            let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
            let (xr, yr) = (xc.remainder(), yc.remainder());
            for (a, b) in xc.zip(yc) {
                for i in 0..LANES {
                    s[i] += a[i] as f64 * b[i] as f64;
                }
            }
            for (&a, &b) in xr.iter().zip(yr) {
                tot += a as f64 * b as f64;
            }
        }
    }
    s.iter().sum::<f64>() + tot
}

/// Sums per-plane partials (plane `p = n * c + ch`) into per-channel totals in sample order.
fn combine<T: Copy>(partials: &[T], c: usize, zero: T, add: impl Fn(T, T) -> T) -> Vec<T> {
    let mut tot = vec![zero; c];
    if c == 0 {
        return tot;
    }
    for row in partials.chunks(c) {
        for (t, &p) in tot.iter_mut().zip(row) {
            *t = add(*t, p);
        }
    }
    tot
}

pub(crate) fn train_forward(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<BatchNormForward> {
    let (n, c, s) = ncs("batch_norm input", x)?;
    check_channel_vec("batch_norm weight", weight, c)?;
    check_channel_vec("batch_norm bias", bias, c)?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::Invalid(format!(
            "batch_norm: eps must be finite and >= 0, got {eps}"
        )));
    }
    let m = n * s;
    if c == 0 {
        let empty = || Tensor::from_vec(Vec::new(), &[0]);
        return Ok(BatchNormForward {
            y: Tensor::from_vec(Vec::new(), x.shape())?,
            mean: empty()?,
            var: empty()?,
            invstd: empty()?,
        });
    }
    if m < 2 {
        return Err(Error::Invalid(format!(
            "batch_norm: training needs more than one value per channel, input has shape {:?}",
            x.shape()
        )));
    }
    let xs = x.cpu();
    let per_task = planes_per_task(s);
    // Shift of each channel: its first element.
    let pivot: Vec<f64> = (0..c).map(|ch| xs[ch * s] as f64).collect();
    let partials: Vec<(f64, f64)> = xs
        .par_chunks(s)
        .enumerate()
        .with_min_len(per_task)
        .map(|(p, v)| shifted_moments(v, pivot[p % c]))
        .collect();
    let tot = combine(&partials, c, (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let inv_m = 1.0 / m as f64;
    let mut mean = Vec::with_capacity(c);
    let mut var = Vec::with_capacity(c);
    let mut invstd = Vec::with_capacity(c);
    for (ch, &(st, qt)) in tot.iter().enumerate() {
        let dm = st * inv_m;
        let v = (qt * inv_m - dm * dm).max(0.0);
        mean.push(pivot[ch] + dm);
        var.push(v);
        invstd.push(1.0 / (v + eps as f64).sqrt());
    }
    // y = (x - mean) * (invstd * w) + b, with the mean as an f32 pair hi + lo: x - hi is
    // exact when x is near the mean, so a large mean costs no precision.
    let wv = weight.map(|t| t.cpu());
    let bv = bias.map(|t| t.cpu());
    let mean32: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    let mean_lo: Vec<f32> = mean
        .iter()
        .zip(&mean32)
        .map(|(&m, &hi)| (m - hi as f64) as f32)
        .collect();
    let scale: Vec<f32> = (0..c)
        .map(|ch| (invstd[ch] * wv.map_or(1.0, |w| w[ch] as f64)) as f32)
        .collect();
    let shift: Vec<f32> = (0..c).map(|ch| bv.map_or(0.0, |b| b[ch])).collect();
    let mut y = vec![0.0f32; xs.len()];
    y.par_chunks_mut(s)
        .zip(xs.par_chunks(s))
        .enumerate()
        .with_min_len(per_task)
        .for_each(|(p, (o, v))| {
            let ch = p % c;
            let (hi, lo, a, b) = (mean32[ch], mean_lo[ch], scale[ch], shift[ch]);
            o.iter_mut()
                .zip(v)
                .for_each(|(o, &v)| *o = ((v - hi) - lo) * a + b);
        });
    let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    Ok(BatchNormForward {
        y: Tensor::from_vec(y, x.shape())?,
        mean: Tensor::from_vec(mean32, &[c])?,
        var: Tensor::from_vec(to32(&var), &[c])?,
        invstd: Tensor::from_vec(to32(&invstd), &[c])?,
    })
}

pub(crate) fn channel_affine(x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
    let (_, c, s) = ncs("channel_affine input", x)?;
    check_channel_vec("channel_affine scale", Some(scale), c)?;
    check_channel_vec("channel_affine shift", shift, c)?;
    let xs = x.cpu();
    let mut y = vec![0.0f32; xs.len()];
    if s == 0 {
        return Tensor::from_vec(y, x.shape());
    }
    let (a, b) = (scale.cpu(), shift.map(|t| t.cpu()));
    y.par_chunks_mut(s)
        .zip(xs.par_chunks(s))
        .enumerate()
        .with_min_len(planes_per_task(s))
        .for_each(|(p, (o, v))| {
            let ch = p % c;
            let a = a[ch];
            match b {
                Some(b) => {
                    let b = b[ch];
                    o.iter_mut().zip(v).for_each(|(o, &v)| *o = v * a + b);
                }
                None => o.iter_mut().zip(v).for_each(|(o, &v)| *o = v * a),
            }
        });
    Tensor::from_vec(y, x.shape())
}

pub(crate) fn backward(
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<BatchNormGrads> {
    let (n, c, s) = ncs("batch_norm_backward x", x)?;
    if dy.shape() != x.shape() {
        return shape_err(
            "batch_norm_backward dy",
            format!("{:?}", x.shape()),
            dy.shape(),
        );
    }
    check_channel_vec("batch_norm_backward mean", Some(mean), c)?;
    check_channel_vec("batch_norm_backward invstd", Some(invstd), c)?;
    check_channel_vec("batch_norm_backward weight", weight, c)?;
    let m = n * s;
    if c == 0 {
        let empty = || Tensor::from_vec(Vec::new(), &[0]);
        return Ok(BatchNormGrads {
            dx: Tensor::from_vec(Vec::new(), x.shape())?,
            dweight: empty()?,
            dbias: empty()?,
        });
    }
    if m == 0 {
        return Err(Error::Invalid(format!(
            "batch_norm_backward: no values per channel in shape {:?}",
            x.shape()
        )));
    }
    let (xs, ds) = (x.cpu(), dy.cpu());
    let (mv, iv) = (mean.cpu(), invstd.cpu());
    let per_task = planes_per_task(s);
    let partials: Vec<(f64, f64)> = ds
        .par_chunks(s)
        .zip(xs.par_chunks(s))
        .enumerate()
        .with_min_len(per_task)
        .map(|(p, (d, v))| grad_moments(d, v, mv[p % c] as f64))
        .collect();
    let tot = combine(&partials, c, (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    // dx = g (dy - mean(dy) - xhat mean(dy xhat)) with g = w invstd, xhat = (x - mean) invstd:
    // dx = g dy + k1 (x - mean) + k0.
    let inv_m = 1.0 / m as f64;
    let mut g = Vec::with_capacity(c);
    let mut k0 = Vec::with_capacity(c);
    let mut k1 = Vec::with_capacity(c);
    let mut dweight = Vec::with_capacity(c);
    let mut dbias = Vec::with_capacity(c);
    for (ch, &(sum_dy, sum_dy_xmu)) in tot.iter().enumerate() {
        let is = iv[ch] as f64;
        let gc = is * weight.map_or(1.0, |w| w.cpu()[ch] as f64);
        g.push(gc as f32);
        k0.push((-gc * sum_dy * inv_m) as f32);
        k1.push((-gc * is * is * sum_dy_xmu * inv_m) as f32);
        dweight.push((sum_dy_xmu * is) as f32);
        dbias.push(sum_dy as f32);
    }
    let mut dx = vec![0.0f32; xs.len()];
    dx.par_chunks_mut(s)
        .zip(ds.par_chunks(s).zip(xs.par_chunks(s)))
        .enumerate()
        .with_min_len(per_task)
        .for_each(|(p, (o, (d, v)))| {
            let ch = p % c;
            let (mu, g, k0, k1) = (mv[ch], g[ch], k0[ch], k1[ch]);
            o.iter_mut()
                .zip(d.iter().zip(v))
                .for_each(|(o, (&d, &v))| *o = g * d + k1 * (v - mu) + k0);
        });
    Ok(BatchNormGrads {
        dx: Tensor::from_vec(dx, x.shape())?,
        dweight: Tensor::from_vec(dweight, &[c])?,
        dbias: Tensor::from_vec(dbias, &[c])?,
    })
}

pub(crate) fn channel_sums(x: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
    let (_, c, s) = ncs("channel_sums x", x)?;
    if let Some(y) = y {
        if y.shape() != x.shape() {
            return shape_err("channel_sums y", format!("{:?}", x.shape()), y.shape());
        }
    }
    if s == 0 {
        return Tensor::from_vec(vec![0.0; c], &[c]);
    }
    let xs = x.cpu();
    let ys = y.map(|t| t.cpu());
    let partials: Vec<f64> = xs
        .par_chunks(s)
        .enumerate()
        .with_min_len(planes_per_task(s))
        .map(|(p, v)| plane_sum(v, ys.map(|ys| &ys[p * s..(p + 1) * s])))
        .collect();
    let tot = combine(&partials, c, 0.0, |a, b| a + b);
    Tensor::from_vec(tot.iter().map(|&v| v as f32).collect(), &[c])
}
