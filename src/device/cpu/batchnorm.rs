//! Batch-norm kernels: per-channel statistics over the batch and spatial dimensions.
//!
//! Tensors are `[N, C, ...]` (NCHW for images; `[N, C]` works too): one *plane* is the
//! contiguous `[...]` block of one sample and one channel. Every reduction is computed per
//! plane in f64 (with several lane accumulators so that the loop vectorises), then the plane
//! partials of a channel are combined in sample order. Planes are fixed, so the results do not
//! depend on the number of threads. Elementwise passes run over planes in parallel with the
//! per-channel constants hoisted out of the inner loop. The plane kernels are compiled twice,
//! portable and with AVX2 (same operations in the same order, so the same bits), and picked at
//! run time; the dispatch is shared with the pooling kernels.

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

// ------------------------------------------------------------------------------------------
// Instruction-set dispatch (shared with the pooling kernels)
// ------------------------------------------------------------------------------------------

/// Which compiled copy of a plane kernel runs. Both copies are the same code (no fused
/// multiply-add, same operation order), so their results are bitwise identical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    pub(super) fn detect() -> Isa {
        #[cfg(test)]
        if FORCE_BASE.with(|f| f.get()) {
            return Isa::Base;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
        Isa::Base
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: make [`Isa::detect`] pick the portable copies (for calls from this thread).
    static FORCE_BASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: runs `f` with the portable copies of the kernels.
#[cfg(test)]
pub(super) fn with_portable_kernels<R>(f: impl FnOnce() -> R) -> R {
    FORCE_BASE.with(|b| b.set(true));
    let r = f();
    FORCE_BASE.with(|b| b.set(false));
    r
}

/// Defines `$name(isa, args..)` running `$imp` or, on AVX2 CPUs, the copy of `$imp`
/// compiled with AVX2 enabled (`$imp` should be `#[inline(always)]`).
macro_rules! isa_dispatch {
    ($vis:vis fn $name:ident / $avx:ident => $imp:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        fn $avx($($arg: $ty),*) $(-> $ret)? {
            $imp($($arg),*)
        }

        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: Isa, $($arg: $ty),*) $(-> $ret)? {
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::Avx2` is only produced after detecting AVX2.
                Isa::Avx2 => unsafe { $avx($($arg),*) },
                Isa::Base => $imp($($arg),*),
            }
        }
    };
}
pub(super) use isa_dispatch;

// ------------------------------------------------------------------------------------------
// Plane kernels
// ------------------------------------------------------------------------------------------

isa_dispatch! {
    fn shifted_moments / shifted_moments_avx2 => shifted_moments_impl(v: &[f32], k: f64) -> (f64, f64)
}
isa_dispatch! {
    fn grad_moments / grad_moments_avx2 => grad_moments_impl(dy: &[f32], x: &[f32], m: f64) -> (f64, f64)
}
isa_dispatch! {
    pub(super) fn plane_sum / plane_sum_avx2 => plane_sum_impl(x: &[f32], y: Option<&[f32]>) -> f64
}
isa_dispatch! {
    fn normalize / normalize_avx2 => normalize_impl(x: &[f32], out: &mut [f32], hi: f32, lo: f32, a: f32, b: f32)
}
isa_dispatch! {
    fn affine / affine_avx2 => affine_impl(x: &[f32], out: &mut [f32], a: f32, b: Option<f32>)
}
isa_dispatch! {
    fn input_grad / input_grad_avx2 => input_grad_impl(dy: &[f32], x: &[f32], out: &mut [f32], mu: f32, g: f32, k0: f32, k1: f32)
}

/// `sum(f(x[i], y[i]))` in f64 over `LANES` independent accumulators (one operation per
/// pass: the vectoriser then maps lanes to SIMD lanes), combined in a fixed order.
#[inline(always)]
fn lane_sum(x: &[f32], y: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
    let n = x.len().min(y.len());
    let full = n / LANES * LANES;
    let mut acc = [0.0f64; LANES];
    for (a, b) in x[..full]
        .chunks_exact(LANES)
        .zip(y[..full].chunks_exact(LANES))
    {
        let a: &[f32; LANES] = a.try_into().expect("LANES elements");
        let b: &[f32; LANES] = b.try_into().expect("LANES elements");
        for i in 0..LANES {
            acc[i] += f(a[i] as f64, b[i] as f64);
        }
    }
    let mut tot: f64 = acc.iter().sum();
    for (&a, &b) in x[full..n].iter().zip(&y[full..n]) {
        tot += f(a as f64, b as f64);
    }
    tot
}

/// `(sum(x - k), sum((x - k)^2))` in f64. Shifting by a sample of the channel `k` keeps the
/// one-pass variance `E[(x-k)^2] - E[x-k]^2` free of cancellation unless the spread is many
/// orders of magnitude below `|mean - k|`. (Two passes over a plane that stays in cache.)
#[inline(always)]
fn shifted_moments_impl(v: &[f32], k: f64) -> (f64, f64) {
    (
        lane_sum(v, v, |x, _| x - k),
        lane_sum(v, v, |x, _| (x - k) * (x - k)),
    )
}

/// `(sum(dy), sum(dy * (x - m)))` in f64.
#[inline(always)]
fn grad_moments_impl(dy: &[f32], x: &[f32], m: f64) -> (f64, f64) {
    (
        lane_sum(dy, dy, |g, _| g),
        lane_sum(dy, x, |g, v| g * (v - m)),
    )
}

/// `sum(x)` or `sum(x * y)` in f64.
#[inline(always)]
fn plane_sum_impl(x: &[f32], y: Option<&[f32]>) -> f64 {
    match y {
        None => lane_sum(x, x, |a, _| a),
        Some(y) => lane_sum(x, y, |a, b| a * b),
    }
}

/// `out = ((x - hi) - lo) * a + b`.
#[inline(always)]
fn normalize_impl(x: &[f32], out: &mut [f32], hi: f32, lo: f32, a: f32, b: f32) {
    out.iter_mut()
        .zip(x)
        .for_each(|(o, &v)| *o = ((v - hi) - lo) * a + b);
}

/// `out = x * a (+ b)`.
#[inline(always)]
fn affine_impl(x: &[f32], out: &mut [f32], a: f32, b: Option<f32>) {
    match b {
        Some(b) => out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * a + b),
        None => out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * a),
    }
}

/// `out = g dy + k1 (x - mu) + k0`.
#[inline(always)]
fn input_grad_impl(dy: &[f32], x: &[f32], out: &mut [f32], mu: f32, g: f32, k0: f32, k1: f32) {
    out.iter_mut()
        .zip(dy.iter().zip(x))
        .for_each(|(o, (&d, &v))| *o = g * d + k1 * (v - mu) + k0);
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
    let isa = Isa::detect();
    let partials: Vec<(f64, f64)> = xs
        .par_chunks(s)
        .enumerate()
        .with_min_len(per_task)
        .map(|(p, v)| shifted_moments(isa, v, pivot[p % c]))
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
            normalize(isa, v, o, mean32[ch], mean_lo[ch], scale[ch], shift[ch]);
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
    let isa = Isa::detect();
    y.par_chunks_mut(s)
        .zip(xs.par_chunks(s))
        .enumerate()
        .with_min_len(planes_per_task(s))
        .for_each(|(p, (o, v))| affine(isa, v, o, a[p % c], b.map(|b| b[p % c])));
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
    let isa = Isa::detect();
    let partials: Vec<(f64, f64)> = ds
        .par_chunks(s)
        .zip(xs.par_chunks(s))
        .enumerate()
        .with_min_len(per_task)
        .map(|(p, (d, v))| grad_moments(isa, d, v, mv[p % c] as f64))
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
            input_grad(isa, d, v, o, mv[ch], g[ch], k0[ch], k1[ch]);
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
    let isa = Isa::detect();
    let partials: Vec<f64> = xs
        .par_chunks(s)
        .enumerate()
        .with_min_len(planes_per_task(s))
        .map(|(p, v)| plane_sum(isa, v, ys.map(|ys| &ys[p * s..(p + 1) * s])))
        .collect();
    let tot = combine(&partials, c, 0.0, |a, b| a + b);
    Tensor::from_vec(tot.iter().map(|&v| v as f32).collect(), &[c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The AVX2 and the portable copies give bitwise identical results (the integration tests
    /// check the values; they run whichever copy the CPU selects).
    #[test]
    fn instruction_sets_agree_bitwise() {
        let mut rng = Rng::new(5);
        for shape in [[3usize, 5, 7, 9], [4, 3, 16, 16], [2, 3, 1, 5]] {
            let c = shape[1];
            let x = Tensor::randn(&shape, 2.0, &mut rng);
            let dy = Tensor::randn(&shape, 1.0, &mut rng);
            let w = Tensor::randn(&[c], 1.0, &mut rng);
            let b = Tensor::randn(&[c], 1.0, &mut rng);
            let run = || {
                let f = train_forward(&x, Some(&w), Some(&b), 1e-5).unwrap();
                let g = backward(&dy, &x, &f.mean, &f.invstd, Some(&w)).unwrap();
                [
                    f.y,
                    f.mean,
                    f.var,
                    f.invstd,
                    g.dx,
                    g.dweight,
                    g.dbias,
                    channel_affine(&x, &w, Some(&b)).unwrap(),
                    channel_affine(&x, &w, None).unwrap(),
                    channel_sums(&x, None).unwrap(),
                    channel_sums(&x, Some(&dy)).unwrap(),
                ]
                .map(|t| t.into_vec())
            };
            let fast = run();
            let portable = with_portable_kernels(run);
            assert_eq!(fast, portable, "{shape:?}");
        }
    }
}
