//! Batch-norm kernels: per-channel statistics over the batch and spatial dimensions.
//!
//! Tensors are `[N, C, ...]` (NCHW for images; `[N, C]` works too): one *plane* is the
//! contiguous `[...]` block of one sample and one channel.
//!
//! Training forward and backward run one parallel task per channel (or per group of small
//! channels): the task reduces over the `N` planes of its channel and then makes the
//! elementwise pass over the same planes while they are still in cache, so the data comes
//! from memory once. Reductions accumulate in f32 SIMD lanes over blocks of at most
//! [`BLOCK`] elements (a short, accurate f32 sum) and add each block's lanes, in a fixed
//! order, into f64 totals. The order depends only on the shape, never on the number of
//! threads. Outputs are written once, without zero-filling first.
//!
//! `channel_sums` reduces per plane in f64 (with several lane accumulators so that the loop
//! vectorises), then combines the plane partials of a channel in sample order; elementwise
//! passes run over planes in parallel with the per-channel constants hoisted out of the inner
//! loop. All kernels are compiled twice, portable and with AVX2 (same operations in the same
//! order, so the same bits), and picked at run time (see `simd`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::plane::{
    assume_init, plane_sum, share_bounds, static_map, team_size, uninit, TASK_ELEMS,
};
use super::simd::{isa_dispatch, Isa};
use crate::device::{shape, BatchNormForward, BatchNormGrads, RunningStats};
use crate::error::Result;
use crate::tensor::Tensor;

/// Planes per parallel task for planes of `s` elements.
fn planes_per_task(s: usize) -> usize {
    (TASK_ELEMS / s.max(1)).max(1)
}

// ------------------------------------------------------------------------------------------
// Plane kernels
// ------------------------------------------------------------------------------------------

isa_dispatch! {
    fn forward_channel =>
        forward_channel_impl(x: &[&[f32]], y: &mut [&mut [MaybeUninit<f32>]], eps: f64, w: f32, b: f32, relu: bool) -> ChannelStats
}
isa_dispatch! {
    fn backward_channel =>
        backward_channel_impl(p: Planes, ch: usize, dy: &[f32], x: &[f32], dx: &mut [&mut [MaybeUninit<f32>]], off: usize, mu: f32, is: f64, w: f64) -> (f64, f64)
}
isa_dispatch! {
    fn affine => affine_impl(x: &[f32], out: &mut [f32], a: f32, b: Option<f32>)
}

/// f32 lanes of the blocked reductions (four AVX2 registers per sum).
const F32_LANES: usize = 32;

/// Elements summed in f32 lanes before the lanes are added into the f64 totals (each lane
/// then adds at most `BLOCK / F32_LANES` = 32 terms). A multiple of [`F32_LANES`].
const BLOCK: usize = 1024;

/// `K` sums of `f(a[i], b[i])` over a stream of slices: f32 lanes over blocks of at most
/// [`BLOCK`] elements, each block's lanes added in lane order into f64 totals; elements
/// left over at the end of a slice (fewer than [`F32_LANES`]) go straight into the totals.
/// The result depends only on the slices, in order.
struct BlockSums<const K: usize> {
    lanes: [[f32; F32_LANES]; K],
    /// Elements in `lanes` since the last flush (a multiple of [`F32_LANES`]).
    count: usize,
    tot: [f64; K],
}

impl<const K: usize> BlockSums<K> {
    #[inline(always)]
    fn new() -> Self {
        BlockSums {
            lanes: [[0.0; F32_LANES]; K],
            count: 0,
            tot: [0.0; K],
        }
    }

    #[inline(always)]
    fn flush(&mut self) {
        for (t, l) in self.tot.iter_mut().zip(&mut self.lanes) {
            for v in l.iter_mut() {
                *t += *v as f64;
                *v = 0.0;
            }
        }
        self.count = 0;
    }

    #[inline(always)]
    fn add(&mut self, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> [f32; K]) {
        let n = a.len().min(b.len());
        let full = n / F32_LANES * F32_LANES;
        let mut start = 0;
        while start < full {
            let end = (start + BLOCK - self.count).min(full);
            let mut lanes = self.lanes;
            for (x, y) in a[start..end]
                .chunks_exact(F32_LANES)
                .zip(b[start..end].chunks_exact(F32_LANES))
            {
                let x: &[f32; F32_LANES] = x.try_into().expect("F32_LANES elements");
                let y: &[f32; F32_LANES] = y.try_into().expect("F32_LANES elements");
                for i in 0..F32_LANES {
                    let r = f(x[i], y[i]);
                    for k in 0..K {
                        lanes[k][i] += r[k];
                    }
                }
            }
            self.lanes = lanes;
            self.count += end - start;
            start = end;
            if self.count >= BLOCK {
                self.flush();
            }
        }
        for (&x, &y) in a[full..n].iter().zip(&b[full..n]) {
            for (t, r) in self.tot.iter_mut().zip(f(x, y)) {
                *t += r as f64;
            }
        }
    }

    #[inline(always)]
    fn finish(mut self) -> [f64; K] {
        self.flush();
        self.tot
    }
}

/// Batch statistics of one channel.
#[derive(Clone, Copy, Default)]
struct ChannelStats {
    mean: f64,
    var: f64,
    invstd: f64,
}

/// Training forward of one channel, planes `x` into planes `y`: the mean (as a shift `k`, a
/// sample of the channel, plus the mean of `x - k`, so that a large mean costs no
/// precision), then the centred sums `sum(e)`, `sum(e^2)` of `e = x - mean` (the first
/// corrects the second for the rounding of the mean), then `y = e * (invstd w) + b`. The
/// mean is used as an f32 pair `hi + lo`: `x - hi` is exact when `x` is near the mean.
#[inline(always)]
fn forward_channel_impl(
    x: &[&[f32]],
    y: &mut [&mut [MaybeUninit<f32>]],
    eps: f64,
    w: f32,
    b: f32,
    relu: bool,
) -> ChannelStats {
    let m: usize = x.iter().map(|v| v.len()).sum();
    let inv_m = 1.0 / m as f64;
    let k = x.iter().find_map(|v| v.first().copied()).unwrap_or(0.0);
    let mut acc = BlockSums::<1>::new();
    for v in x {
        acc.add(v, v, |a, _| [a - k]);
    }
    let mean = k as f64 + acc.finish()[0] * inv_m;
    let hi = mean as f32;
    let lo = (mean - hi as f64) as f32;
    let mut acc = BlockSums::<2>::new();
    for v in x {
        acc.add(v, v, |a, _| {
            let e = (a - hi) - lo;
            [e, e * e]
        });
    }
    let [se, sq] = acc.finish();
    let var = ((sq - se * se * inv_m) * inv_m).max(0.0);
    let invstd = 1.0 / (var + eps).sqrt();
    let a = (invstd * w as f64) as f32;
    for (v, o) in x.iter().zip(y.iter_mut()) {
        if relu {
            o.iter_mut().zip(v.iter()).for_each(|(o, &v)| {
                o.write((((v - hi) - lo) * a + b).max(0.0));
            });
        } else {
            o.iter_mut().zip(v.iter()).for_each(|(o, &v)| {
                o.write(((v - hi) - lo) * a + b);
            });
        }
    }
    ChannelStats { mean, var, invstd }
}

/// Where the planes of one channel lie in `[N, C, S]` data: plane `i` (sample `i`) of
/// channel `ch` is `v[(i c + ch) s..][..s]`. Lets a kernel walk a channel without building
/// a list of plane slices per call.
#[derive(Clone, Copy)]
struct Planes {
    n: usize,
    c: usize,
    s: usize,
}

impl Planes {
    #[inline(always)]
    fn plane<'a>(&self, v: &'a [f32], i: usize, ch: usize) -> &'a [f32] {
        &v[(i * self.c + ch) * self.s..][..self.s]
    }
}

/// Training backward of channel `ch`: `(sum(dy), sum(dy (x - mu)))` over its planes, then
/// `dx = g dy + k1 (x - mu) + k0` with `g = w invstd`, `xhat = (x - mu) invstd` and
/// `dx = g (dy - mean(dy) - xhat mean(dy xhat))`. `dx[i]` is the part of sample `i` that
/// holds this channel's plane at `off`. Returns the two sums.
///
/// Two passes over the channel's planes: the reduction, then the elementwise pass, which
/// finds the planes still in cache (a channel is at most a few hundred KB at supernet
/// shapes), so `x` and `dy` come from memory once.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_channel_impl(
    p: Planes,
    ch: usize,
    dy: &[f32],
    x: &[f32],
    dx: &mut [&mut [MaybeUninit<f32>]],
    off: usize,
    mu: f32,
    is: f64,
    w: f64,
) -> (f64, f64) {
    let inv_m = 1.0 / (p.n * p.s) as f64;
    let mut acc = BlockSums::<2>::new();
    for i in 0..p.n {
        acc.add(p.plane(dy, i, ch), p.plane(x, i, ch), |d, v| {
            [d, d * (v - mu)]
        });
    }
    let [sum_dy, sum_dy_xmu] = acc.finish();
    let gc = is * w;
    let g = gc as f32;
    let k0 = (-gc * sum_dy * inv_m) as f32;
    let k1 = (-gc * is * is * sum_dy_xmu * inv_m) as f32;
    for (i, o) in dx.iter_mut().enumerate() {
        let o = &mut o[off..][..p.s];
        let (d, v) = (p.plane(dy, i, ch), p.plane(x, i, ch));
        o.iter_mut()
            .zip(d.iter().zip(v.iter()))
            .for_each(|(o, (&d, &v))| {
                o.write(g * d + k1 * (v - mu) + k0);
            });
    }
    (sum_dy, sum_dy_xmu)
}

/// The planes (chunks of `s`) of `v`, grouped by channel: plane `p` goes to channel `p % c`,
/// in sample order.
fn by_channel<T>(planes: impl Iterator<Item = T>, c: usize, n: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..c).map(|_| Vec::with_capacity(n)).collect();
    for (p, v) in planes.enumerate() {
        out[p % c].push(v);
    }
    out
}

/// `out = x * a (+ b)`.
#[inline(always)]
fn affine_impl(x: &[f32], out: &mut [f32], a: f32, b: Option<f32>) {
    match b {
        Some(b) => out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * a + b),
        None => out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * a),
    }
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

/// Training forward, its output rectified (`max(y, 0)`, the values of `unary(Relu)`) in the
/// same pass when `relu`; with `running`, then the running-statistics update from the
/// returned statistics (`running_update`), its operands checked before anything is computed.
pub(crate) fn train_forward_with(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    running: Option<RunningStats<'_>>,
    relu: bool,
) -> Result<BatchNormForward> {
    let c = shape::batch_norm_train(x, weight, bias, eps)?.1;
    if let Some(r) = &running {
        shape::batch_norm_running_of(r, c)?;
    }
    let f = train_forward(x, weight, bias, eps, relu)?;
    if let Some(r) = running {
        running_update(r.mean, r.var, &f.mean, &f.var, r.momentum, r.var_factor)?;
    }
    Ok(f)
}

/// `hx = hy * (g * g)`, `g = weight * invstd` per channel (`Backend::batch_norm_curvature`):
/// the f32 products of `binary(Mul)` and `unary(Square)`, then `channel_affine`.
pub(crate) fn curvature_input(
    hy: &Tensor,
    invstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<Tensor> {
    let c = shape::batch_norm_curvature(hy, invstd, weight)?.1;
    let is = invstd.cpu();
    let w = weight.map(|t| t.cpu());
    let g2: Vec<f32> = (0..c)
        .map(|k| {
            let g = w.map_or(is[k], |w| w[k] * is[k]);
            g * g
        })
        .collect();
    channel_affine(hy, &Tensor::from_vec(g2, &[c])?, None)
}

fn train_forward(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    relu: bool,
) -> Result<BatchNormForward> {
    let (n, c, s) = shape::batch_norm_train(x, weight, bias, eps)?;
    if c == 0 {
        let empty = || Tensor::from_vec(Vec::new(), &[0]);
        return Ok(BatchNormForward {
            y: Tensor::from_vec(Vec::new(), x.shape())?,
            mean: empty()?,
            var: empty()?,
            invstd: empty()?,
        });
    }
    let xs = x.cpu();
    let (wv, bv) = (weight.map(|t| t.cpu()), bias.map(|t| t.cpu()));
    let isa = Isa::detect().at_most_avx2();
    let mut y = uninit(xs.len());
    let xp = by_channel(xs.chunks(s), c, n);
    let mut yp = by_channel(y.chunks_mut(s), c, n);
    let stats: Vec<ChannelStats> = static_map(
        xp.into_iter().zip(yp.iter_mut()).collect(),
        xs.len(),
        |ch, (xv, yv)| {
            let w = wv.map_or(1.0, |w| w[ch]);
            let b = bv.map_or(0.0, |b| b[ch]);
            forward_channel(isa, &xv, yv, eps as f64, w, b, relu)
        },
    );
    drop(yp);
    // SAFETY: the channels' planes cover `y` and every element of a plane is written.
    let y = unsafe { assume_init(y) };
    let col = |f: fn(&ChannelStats) -> f64| stats.iter().map(|st| f(st) as f32).collect();
    Ok(BatchNormForward {
        y: Tensor::from_vec(y, x.shape())?,
        mean: Tensor::from_vec(col(|st| st.mean), &[c])?,
        var: Tensor::from_vec(col(|st| st.var), &[c])?,
        invstd: Tensor::from_vec(col(|st| st.invstd), &[c])?,
    })
}

pub(crate) fn channel_affine(x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
    let (_, c, s) = shape::channel_affine(x, scale, shift)?;
    let xs = x.cpu();
    let mut y = vec![0.0f32; xs.len()];
    if s == 0 {
        return Tensor::from_vec(y, x.shape());
    }
    let (a, b) = (scale.cpu(), shift.map(|t| t.cpu()));
    let isa = Isa::detect().at_most_avx2();
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
    let (n, c, s) = shape::batch_norm_backward(dy, x, mean, invstd, weight)?;
    if c == 0 {
        let empty = || Tensor::from_vec(Vec::new(), &[0]);
        return Ok(BatchNormGrads {
            dx: Tensor::from_vec(Vec::new(), x.shape())?,
            dweight: empty()?,
            dbias: empty()?,
        });
    }
    let (xs, ds) = (x.cpu(), dy.cpu());
    let (mv, iv) = (mean.cpu(), invstd.cpu());
    let wv = weight.map(|t| t.cpu());
    let isa = Isa::detect().at_most_avx2();
    let p = Planes { n, c, s };
    let mut dx = uninit(xs.len());
    // One task per thread, each a contiguous range of channels (an OpenMP-style static
    // schedule, see `static_map`): the share of thread `k` is, in every sample, the
    // contiguous block of its channels' planes, so the output splits into `n` slices per
    // share without a list of planes per channel.
    let bounds = share_bounds(c, team_size(c, xs.len()));
    let mut shares: Vec<Vec<&mut [MaybeUninit<f32>]>> =
        bounds.windows(2).map(|_| Vec::with_capacity(n)).collect();
    for mut sample in dx.chunks_mut(c * s) {
        for (share, b) in shares.iter_mut().zip(bounds.windows(2)) {
            let (part, rest) = sample.split_at_mut((b[1] - b[0]) * s);
            share.push(part);
            sample = rest;
        }
    }
    let sums: Vec<(f64, f64)> = static_map(shares, xs.len(), |k, mut rows| {
        (bounds[k]..bounds[k + 1])
            .map(|ch| {
                let w = wv.map_or(1.0, |w| w[ch] as f64);
                let off = (ch - bounds[k]) * s;
                backward_channel(isa, p, ch, ds, xs, &mut rows, off, mv[ch], iv[ch] as f64, w)
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    // SAFETY: the channels' planes cover `dx` and every element of a plane is written.
    let dx = unsafe { assume_init(dx) };
    let dweight = sums
        .iter()
        .zip(iv)
        .map(|(&(_, sdx), &is)| (sdx * is as f64) as f32)
        .collect();
    let dbias = sums.iter().map(|&(sd, _)| sd as f32).collect();
    Ok(BatchNormGrads {
        dx: Tensor::from_vec(dx, x.shape())?,
        dweight: Tensor::from_vec(dweight, &[c])?,
        dbias: Tensor::from_vec(dbias, &[c])?,
    })
}

pub(crate) fn channel_sums(x: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
    let (_, c, s) = shape::channel_sums(x, y)?;
    if s == 0 {
        return Tensor::from_vec(vec![0.0; c], &[c]);
    }
    let xs = x.cpu();
    let ys = y.map(|t| t.cpu());
    let isa = Isa::detect().at_most_avx2();
    let partials: Vec<f64> = xs
        .par_chunks(s)
        .enumerate()
        .with_min_len(planes_per_task(s))
        .map(|(p, v)| plane_sum(isa, v, ys.map(|ys| &ys[p * s..(p + 1) * s])))
        .collect();
    let tot = combine(&partials, c, 0.0, |a, b| a + b);
    Tensor::from_vec(tot.iter().map(|&v| v as f32).collect(), &[c])
}

/// `rm = rm (1 - momentum) + momentum mean`, `rv = rv (1 - momentum) + var_factor var`.
pub(crate) fn running_update(
    rm: &mut Tensor,
    rv: &mut Tensor,
    mean: &Tensor,
    var: &Tensor,
    momentum: f32,
    var_factor: f32,
) -> Result<()> {
    shape::batch_norm_running(rm, rv, mean, var)?;
    let keep = 1.0 - momentum;
    for (r, &m) in rm.cpu_mut().iter_mut().zip(mean.cpu()) {
        *r = *r * keep + momentum * m;
    }
    for (r, &v) in rv.cpu_mut().iter_mut().zip(var.cpu()) {
        *r = *r * keep + var_factor * v;
    }
    Ok(())
}

/// Evaluation-mode constants (see `Backend::batch_norm_eval_constants`).
pub(crate) fn eval_constants(
    rm: &Tensor,
    rv: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = shape::batch_norm_eval(rm, rv, weight, bias)?;
    let (rmh, rvh) = (rm.cpu(), rv.cpu());
    let (wh, bh) = (weight.map(|t| t.cpu()), bias.map(|t| t.cpu()));
    let mut invstd = Vec::with_capacity(c);
    let mut slope = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for ch in 0..c {
        let is = 1.0 / (rvh[ch] as f64 + eps as f64).sqrt();
        let a = is * wh.map_or(1.0, |w| w[ch] as f64);
        invstd.push(is as f32);
        slope.push(a as f32);
        shift.push((bh.map_or(0.0, |b| b[ch] as f64) - rmh[ch] as f64 * a) as f32);
    }
    Ok((
        Tensor::from_vec(slope, &[c])?,
        Tensor::from_vec(shift, &[c])?,
        Tensor::from_vec(invstd, &[c])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::simd::with_portable_kernels;
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
                let f = train_forward(&x, Some(&w), Some(&b), 1e-5, false).unwrap();
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
