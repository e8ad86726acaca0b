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
//! order, so the same bits), and picked at run time; the dispatch is shared with the pooling
//! kernels.

use std::mem::MaybeUninit;

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

/// Which compiled copy of a plane kernel runs. All copies are the same code (no fused
/// multiply-add, same operation order, reductions over explicit lanes), so their results are
/// bitwise identical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2 and AVX-512F (16-wide vectors).
    #[cfg(target_arch = "x86_64")]
    Avx512,
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

    /// [`Isa::detect`], or the AVX-512F copy where the CPU has it: for the kernels whose
    /// AVX-512 copy measured faster (the max-pool forward; the batch-norm reductions and
    /// the others measured slower or equal).
    pub(super) fn detect_wide() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx2 && std::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        Isa::detect()
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

/// Defines `$name(isa, args..)` running `$imp` or, on AVX2 (AVX-512F) CPUs, the copy of
/// `$imp` compiled with AVX2 (and AVX-512F) enabled (`$imp` should be `#[inline(always)]`).
/// `$avx` names the AVX2 copy.
macro_rules! isa_dispatch {
    ($vis:vis fn $name:ident / $avx:ident => $imp:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            fn $avx($($arg: $ty),*) $(-> $ret)? {
                $imp($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,avx512f")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                $imp($($arg),*)
            }

            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::Avx2` is only produced after detecting AVX2.
                Isa::Avx2 => unsafe { $avx($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Isa::Avx512` is only produced after detecting AVX2 and AVX-512F.
                Isa::Avx512 => unsafe { avx512($($arg),*) },
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
    fn forward_channel / forward_channel_avx2 =>
        forward_channel_impl(x: &[&[f32]], y: &mut [&mut [MaybeUninit<f32>]], eps: f64, w: f32, b: f32) -> ChannelStats
}
isa_dispatch! {
    fn backward_channel / backward_channel_avx2 =>
        backward_channel_impl(p: Planes, ch: usize, dy: &[f32], x: &[f32], dx: &mut [&mut [MaybeUninit<f32>]], off: usize, mu: f32, is: f64, w: f64) -> (f64, f64)
}
isa_dispatch! {
    pub(super) fn plane_sum / plane_sum_avx2 => plane_sum_impl(x: &[f32], y: Option<&[f32]>) -> f64
}
isa_dispatch! {
    fn affine / affine_avx2 => affine_impl(x: &[f32], out: &mut [f32], a: f32, b: Option<f32>)
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
        o.iter_mut().zip(v.iter()).for_each(|(o, &v)| {
            o.write(((v - hi) - lo) * a + b);
        });
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

/// An output buffer of `len` elements left uninitialised (no zero fill): every element must
/// be written before [`assume_init`].
pub(super) fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation and the capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

/// The buffer of [`uninit`] as initialised values.
///
/// # Safety
/// Every element of `v` has been written.
pub(super) unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, layout of `MaybeUninit<f32>` is that of `f32`, and the caller
    // guarantees that all `len` elements are initialised.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
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

/// Threads [`static_map`] uses for `len` items and `work` elements in all.
pub(super) fn team_size(len: usize, work: usize) -> usize {
    rayon::current_num_threads()
        .min(len)
        .min(work / TASK_ELEMS)
        .max(1)
}

/// `0 = b[0] <= b[1] <= .. <= b[parts] = len`: `len` split into `parts` contiguous, equal
/// (within one) shares.
pub(super) fn share_bounds(len: usize, parts: usize) -> Vec<usize> {
    (0..=parts).map(|k| k * len / parts).collect()
}

/// `f(i, items[i])` for every item, in parallel: the items are split into contiguous, equal
/// shares, one per thread of the current pool, as an OpenMP static schedule: share `k`, and
/// so the data it touches, goes to the same thread on every call with the same length
/// (called from outside the pool: pool thread `k`; from inside: the caller runs share 0).
/// With `work` (elements in all) below a couple of tasks' worth, runs on the calling thread. Which thread computes an
/// item never changes its result. Returns the results in item order.
pub(super) fn static_map<T: Send, R: Send>(
    items: Vec<T>,
    work: usize,
    f: impl Fn(usize, T) -> R + Sync,
) -> Vec<R> {
    static_map_init(items, work, || (), |_, i, t| f(i, t))
}

/// [`static_map`] with per-thread scratch state made by `init` (once per thread and call).
pub(super) fn static_map_init<T: Send, R: Send, S>(
    items: Vec<T>,
    work: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, T) -> R + Sync,
) -> Vec<R> {
    let len = items.len();
    let threads = team_size(len, work);
    if threads == 1 {
        let mut st = init();
        return items
            .into_iter()
            .enumerate()
            .map(|(i, t)| f(&mut st, i, t))
            .collect();
    }
    let mut shares: Vec<std::sync::Mutex<Vec<(usize, T)>>> = Vec::with_capacity(threads);
    let mut it = items.into_iter().enumerate();
    for k in 0..threads {
        let take = (k + 1) * len / threads - k * len / threads;
        shares.push(std::sync::Mutex::new(it.by_ref().take(take).collect()));
    }
    let out: Vec<std::sync::Mutex<Vec<R>>> = (0..threads)
        .map(|_| std::sync::Mutex::new(Vec::new()))
        .collect();
    let run = |k: usize| {
        let share = std::mem::take(&mut *shares[k].lock().unwrap_or_else(|e| e.into_inner()));
        let mut st = init();
        let r: Vec<R> = share.into_iter().map(|(i, t)| f(&mut st, i, t)).collect();
        *out[k].lock().unwrap_or_else(|e| e.into_inner()) = r;
    };
    if rayon::current_thread_index().is_none() {
        // Called from outside the pool (the usual case: a training loop or a benchmark on
        // the main thread): pool thread `k` runs share `k`. A thread then touches the same
        // data on every call of the same shape, which stays in its core's cache between
        // calls (measured: ~15% faster batch-norm backward at 1 MB per tensor than running
        // the first share on the caller and the others on whichever pool thread steals
        // them); the caller sleeps meanwhile, so no more threads are busy than the pool has.
        rayon::broadcast(|ctx| {
            if ctx.index() < threads {
                run(ctx.index())
            }
        });
    } else {
        // Inside the pool: the calling thread runs the first share (like an OpenMP master
        // thread) and other pool threads the rest.
        rayon::in_place_scope(|scope| {
            for k in 1..threads {
                let run = &run;
                scope.spawn(move |_| run(k));
            }
            run(0);
        });
    }
    let out: Vec<Vec<R>> = out
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    out.into_iter().flatten().collect()
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

/// `sum(x)` or `sum(x * y)` in f64.
#[inline(always)]
fn plane_sum_impl(x: &[f32], y: Option<&[f32]>) -> f64 {
    match y {
        None => lane_sum(x, x, |a, _| a),
        Some(y) => lane_sum(x, y, |a, b| a * b),
    }
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
    let (wv, bv) = (weight.map(|t| t.cpu()), bias.map(|t| t.cpu()));
    let isa = Isa::detect();
    let mut y = uninit(xs.len());
    let xp = by_channel(xs.chunks(s), c, n);
    let mut yp = by_channel(y.chunks_mut(s), c, n);
    let stats: Vec<ChannelStats> = static_map(
        xp.into_iter().zip(yp.iter_mut()).collect(),
        xs.len(),
        |ch, (xv, yv)| {
            let w = wv.map_or(1.0, |w| w[ch]);
            let b = bv.map_or(0.0, |b| b[ch]);
            forward_channel(isa, &xv, yv, eps as f64, w, b)
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
    let wv = weight.map(|t| t.cpu());
    let isa = Isa::detect();
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
