//! 2-D convolution on the CPU: NCHW activations, square kernels, weights
//! `[c_out, c_in / groups, k, k]`, any stride, padding, dilation and groups.
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
//! ([`backward_weight_sq`]) squares `x` while copying it into the scratch.
//!
//! Determinism: every output element is computed by one task in a fixed order. Weight
//! gradients are reduced over the batch through per-plane (depthwise) or per-image-chunk
//! (GEMM; chunks depend on the batch size only) partials that are summed in index order in
//! f64, so results never depend on thread scheduling or on the number of threads.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::gemm::{sgemm, sgemm_into, Mat};
use super::simd::{isa_dispatch, Isa, Madd};
use crate::device::{shape, Conv2dSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

// ------------------------------------------------------------------------------------------
// Geometry and validation
// ------------------------------------------------------------------------------------------

/// Validated geometry of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    ho: usize,
    wo: usize,
    s: usize,
    p: usize,
    d: usize,
    groups: usize,
}

impl Geom {
    fn cig(&self) -> usize {
        self.c_in / self.groups
    }
    fn cog(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of `col(X)` per group: `c_in / groups * k * k`.
    fn ckk(&self) -> usize {
        self.cig() * self.k * self.k
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn howo(&self) -> usize {
        self.ho * self.wo
    }
    fn y_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.ho, self.wo]
    }
    fn w_len(&self) -> usize {
        self.c_out * self.ckk()
    }
    fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.c_out == self.c_in
    }
    /// A 1x1, stride-1, unpadded convolution: `col(X)` is `X` itself.
    fn col_is_input(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }
}

fn geometry(op: &'static str, x: &[usize], w: &[usize], spec: Conv2dSpec) -> Result<Geom> {
    let c = shape::conv2d(op, x, w, spec)?;
    Ok(Geom {
        n: c.n,
        c_in: c.c_in,
        h: c.h,
        w: c.w,
        c_out: c.c_out,
        k: c.k,
        ho: c.ho,
        wo: c.wo,
        s: spec.stride,
        p: spec.padding,
        d: spec.dilation,
        groups: spec.groups,
    })
}

fn expect_shape(op: &'static str, what: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return Err(Error::Shape {
            op,
            expected: format!("{what} {want:?}"),
            found: format!("{:?}", t.shape()),
        });
    }
    Ok(())
}

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

pub(crate) fn backward_weight(
    x: &Tensor,
    dy: &Tensor,
    spec: Conv2dSpec,
    w_shape: &[usize],
) -> Result<Tensor> {
    weight_correlation("conv2d_backward_weight", x, dy, spec, w_shape, false)
}

/// The weight curvature: [`backward_weight`] of `x (.) x`, squaring each value as the
/// kernels copy it into their scratch (the padded plane or `col(X)`), so no squared copy
/// of `x` is ever made. Bit-identical to `backward_weight` on a squared input.
pub(crate) fn backward_weight_sq(
    x: &Tensor,
    hy: &Tensor,
    spec: Conv2dSpec,
    w_shape: &[usize],
) -> Result<Tensor> {
    weight_correlation("conv2d_backward_weight_sq", x, hy, spec, w_shape, true)
}

/// The correlation of `x` (squared elementwise when `square`) with `dy`, summed over the
/// batch.
fn weight_correlation(
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
struct Scratch {
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
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
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

/// Runs `f` on this thread's scratch holding the `ph x pw` plane copied into layout `pad`.
/// Consecutive planes of one convolution share the layout, so the padding (zeros) is
/// written only when the layout changes and each plane costs one copy of its own values.
/// With `square`, the plane's values are squared as they are copied.
fn with_padded<R>(
    pad: Padded,
    plane: &[f32],
    ph: usize,
    pw: usize,
    square: bool,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let scratch = &mut *scratch;
            let len = pad.len();
            if scratch.buf.len() < len {
                scratch.buf.resize(len, 0.0);
            }
            let buf = &mut scratch.buf[..len];
            let zero_padding = scratch.padded != Some((pad, ph, pw));
            pad.fill(plane, ph, pw, buf, zero_padding, square);
            scratch.padded = Some((pad, ph, pw));
            f(buf)
        }
        Err(_) => {
            let mut buf = vec![0.0; pad.len()];
            pad.fill(plane, ph, pw, &mut buf, false, square);
            f(&buf)
        }
    })
}

/// A fresh output of `len` floats, filled by `fill` from uninitialised memory. Every kernel
/// splits the whole slice into parallel tasks, each of which starts with [`zeroed`] on its
/// part: the zeros are written by the task that then overwrites them, in parallel and while
/// the part is hot in cache, instead of by a single-threaded `calloc` of the whole output
/// (which measured 7-15% of a small convolution).
fn output(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `fill` initialised all `len` elements: each kernel covers the slice with
    // `par_chunks_mut`, and every chunk goes through `zeroed` before anything else, or is
    // written whole by `sgemm_into` (the GEMM forward).
    unsafe { v.set_len(len) };
    v
}

/// Writes zeros to one task's part of a fresh output and views it as floats.
fn zeroed(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    part.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just initialised, and `MaybeUninit<f32>` has the layout of
    // `f32`.
    unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The outputs `o` in `[0, n_out)` with `0 <= o * s + off < n_in`, as a range `lo..hi`.
fn valid_range(off: isize, s: usize, n_out: usize, n_in: usize) -> (usize, usize) {
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
fn sum_partials_in_order(parts: &[f32], count: usize, len: usize) -> Vec<f32> {
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
const MIN_TASK_ELEMS: usize = 1 << 12;

// ------------------------------------------------------------------------------------------
// Direct (depthwise) kernels
// ------------------------------------------------------------------------------------------

isa_dispatch! {
    /// `out[oh * wo + ow] = sum_t w_t * src[base_t + oh * rs + ow]` over `taps = (w_t, base_t)`.
    fn gather => gather_impl::<Madd>(src: &[f32], taps: &[(f32, usize)], rs: usize, out: &mut [f32], wo: usize)
}

isa_dispatch! {
    /// `out[t] = sum_{oh, ow} dy[oh * wo + ow] * src[bases[t] + oh * rs + ow]`.
    fn dots => dots_impl::<Madd>(src: &[f32], bases: &[usize], rs: usize, dy: &[f32], wo: usize, out: &mut [f32])
}

#[inline(always)]
fn gather_impl<M: Madd>(src: &[f32], taps: &[(f32, usize)], rs: usize, out: &mut [f32], wo: usize) {
    // Column blocks of 32/16/8 outputs, `R` rows at a time so that a block keeps eight
    // independent 8-wide accumulators: one row of 16 (two chains) measured latency-bound on
    // the fused multiply-add at the 16x16 planes.
    // With 16-wide vectors, twice the rows (and 32 columns as 4 rows of 2 vectors).
    let mut ow = 0;
    while ow + 32 <= wo {
        if M::WIDE {
            gather_columns::<M, 32, 4>(src, taps, rs, out, wo, ow);
        } else {
            gather_columns::<M, 32, 2>(src, taps, rs, out, wo, ow);
        }
        ow += 32;
    }
    if ow + 16 <= wo {
        if M::WIDE {
            gather_columns::<M, 16, 8>(src, taps, rs, out, wo, ow);
        } else {
            gather_columns::<M, 16, 4>(src, taps, rs, out, wo, ow);
        }
        ow += 16;
    }
    if ow + 8 <= wo {
        gather_columns::<M, 8, 8>(src, taps, rs, out, wo, ow);
        ow += 8;
    }
    if ow < wo {
        for (oh, row) in out.chunks_exact_mut(wo).enumerate() {
            let at = oh * rs;
            for (o, y) in row.iter_mut().enumerate().skip(ow) {
                let mut acc = 0.0f32;
                for &(wt, base) in taps {
                    acc = M::madd(wt, src[base + at + o], acc);
                }
                *y = acc;
            }
        }
    }
}

/// Columns `ow..ow + B` of every output row, `R` rows per block (then single rows).
#[inline(always)]
fn gather_columns<M: Madd, const B: usize, const R: usize>(
    src: &[f32],
    taps: &[(f32, usize)],
    rs: usize,
    out: &mut [f32],
    wo: usize,
    ow: usize,
) {
    let ho = out.len() / wo;
    let mut oh = 0;
    while oh + R <= ho {
        gather_block::<M, B, R>(src, taps, rs, oh, ow, out, wo);
        oh += R;
    }
    while oh < ho {
        gather_block::<M, B, 1>(src, taps, rs, oh, ow, out, wo);
        oh += 1;
    }
}

/// `R x B` outputs from row `oh`, column `ow`, accumulated in registers over every tap (a
/// loop over taps whose body is `R B / 8` vector multiply-adds; spelling the taps out at
/// compile time measured slower). Each output sums its taps in kernel order.
#[inline(always)]
fn gather_block<M: Madd, const B: usize, const R: usize>(
    src: &[f32],
    taps: &[(f32, usize)],
    rs: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
    wo: usize,
) {
    let mut acc = [[0.0f32; B]; R];
    let at = oh * rs + ow;
    let span = (R - 1) * rs + B;
    for &(wt, base) in taps {
        // One bounds check per tap for its `R` rows (a check per row measured as many scalar
        // instructions as multiply-adds in the loop).
        let win = &src[base + at..][..span];
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `r * rs + B <= (R - 1) * rs + B = win.len()`.
            let x: &[f32; B] = unsafe { &*win.as_ptr().add(r * rs).cast::<[f32; B]>() };
            for l in 0..B {
                acc[l] = M::madd(wt, x[l], acc[l]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        out[(oh + r) * wo + ow..][..B].copy_from_slice(acc);
    }
}

#[inline(always)]
fn dots_impl<M: Madd>(
    src: &[f32],
    bases: &[usize],
    rs: usize,
    dy: &[f32],
    wo: usize,
    out: &mut [f32],
) {
    match bases.len() {
        9 => dots_rows::<M, 3>(src, bases, rs, dy, wo, out),
        25 => dots_rows::<M, 5>(src, bases, rs, dy, wo, out),
        _ => {
            for (o, &base) in out.iter_mut().zip(bases) {
                dots_rows::<M, 1>(src, &[base], rs, dy, wo, std::slice::from_mut(o));
            }
        }
    }
}

/// Dot products of `dy` with `K` taps at once (one kernel row of a `K x K` kernel, or a
/// single tap for `K = 1`): each 8-wide piece of `dy` is loaded once for the `K` taps, and
/// two output rows alternate between two sets of accumulators, giving `2 K` independent
/// chains. `bases` holds `K` taps per kernel row, for `bases.len() / K` rows. (16-wide
/// pieces measured several times slower for `K = 5`: the accumulators no longer fit in
/// registers.)
#[inline(always)]
fn dots_rows<M: Madd, const K: usize>(
    src: &[f32],
    bases: &[usize],
    rs: usize,
    dy: &[f32],
    wo: usize,
    out: &mut [f32],
) {
    const L: usize = 8;
    let full = wo - wo % L;
    for (row_bases, out) in bases.chunks_exact(K).zip(out.chunks_exact_mut(K)) {
        let mut acc = [[[0.0f32; L]; K]; 2];
        let mut tail = [0.0f32; K];
        for (oh, g) in dy.chunks_exact(wo).enumerate() {
            let acc = &mut acc[oh % 2];
            let x: [&[f32]; K] = std::array::from_fn(|t| &src[row_bases[t] + oh * rs..][..wo]);
            for c0 in (0..full).step_by(L) {
                let gv: &[f32; L] = g[c0..c0 + L].try_into().expect("L elements");
                for t in 0..K {
                    let xv: &[f32; L] = x[t][c0..c0 + L].try_into().expect("L elements");
                    for l in 0..L {
                        acc[t][l] = M::madd(gv[l], xv[l], acc[t][l]);
                    }
                }
            }
            for c in full..wo {
                for t in 0..K {
                    tail[t] = M::madd(g[c], x[t][c], tail[t]);
                }
            }
        }
        for (t, o) in out.iter_mut().enumerate() {
            let lanes: f32 = (0..L).map(|l| acc[0][t][l] + acc[1][t][l]).sum();
            *o = lanes + tail[t];
        }
    }
}

/// `v = v * v` for every element (rounded like `Unary::Square`).
#[inline(always)]
fn square_in_place(vals: &mut [f32]) {
    for v in vals {
        *v *= *v;
    }
}

/// `dst.copy_from_slice(src)`, inline for the plane widths of the search space (a `memcpy`
/// call per row of 16 floats measured 13% of a small depthwise convolution).
#[inline(always)]
fn copy_row(src: &[f32], dst: &mut [f32]) {
    #[inline(always)]
    fn fixed<const L: usize>(src: &[f32], dst: &mut [f32]) {
        let src: &[f32; L] = src.try_into().expect("L elements");
        let dst: &mut [f32; L] = dst.try_into().expect("L elements");
        *dst = *src;
    }
    match dst.len() {
        8 => fixed::<8>(src, dst),
        16 => fixed::<16>(src, dst),
        32 => fixed::<32>(src, dst),
        _ => dst.copy_from_slice(src),
    }
}

/// `even[j] = src[2 j]`, `odd[j] = src[2 j + 1]` (`src` at least twice their length).
/// Four pairs at a time with SSE shuffles on x86-64 (the compiler leaves the portable loop
/// scalar).
#[inline(always)]
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let n = even.len();
    assert!(
        odd.len() == n && src.len() >= 2 * n,
        "deinterleave: lengths"
    );
    let mut j = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_shuffle_ps, _mm_storeu_ps};
        while j + 4 <= n {
            // SAFETY: `2 j + 8 <= src.len()` and `j + 4 <= n` (checked above and by the
            // loop condition); unaligned loads and stores.
            unsafe {
                let a = _mm_loadu_ps(src.as_ptr().add(2 * j));
                let b = _mm_loadu_ps(src.as_ptr().add(2 * j + 4));
                _mm_storeu_ps(
                    even.as_mut_ptr().add(j),
                    _mm_shuffle_ps::<0b10_00_10_00>(a, b),
                );
                _mm_storeu_ps(
                    odd.as_mut_ptr().add(j),
                    _mm_shuffle_ps::<0b11_01_11_01>(a, b),
                );
            }
            j += 4;
        }
    }
    for j in j..n {
        even[j] = src[2 * j];
        odd[j] = src[2 * j + 1];
    }
}

/// `dst[j] = src[j * s]` for every `j < dst.len()` (`dst` not empty).
#[inline(always)]
fn copy_strided(src: &[f32], s: usize, dst: &mut [f32]) {
    let n = dst.len();
    let src = &src[..(n - 1) * s + 1];
    match s {
        1 => copy_row(src, dst),
        // Constant strides let the compiler vectorise the de-interleave.
        2 => copy_every::<2>(src, dst),
        3 => copy_every::<3>(src, dst),
        _ => {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = src[j * s];
            }
        }
    }
}

#[inline(always)]
fn copy_every<const S: usize>(src: &[f32], dst: &mut [f32]) {
    let (last, head) = dst.split_last_mut().expect("not empty");
    for (d, c) in head.iter_mut().zip(src.chunks_exact(S)) {
        *d = c[0];
    }
    *last = src[src.len() - 1];
}

/// `dst[j * s] = src[j]` for every `j < src.len()` (`src` not empty).
#[inline(always)]
fn spread_strided(src: &[f32], s: usize, dst: &mut [f32]) {
    let n = src.len();
    let dst = &mut dst[..(n - 1) * s + 1];
    match s {
        1 => dst.copy_from_slice(src),
        2 => spread_every::<2>(src, dst),
        3 => spread_every::<3>(src, dst),
        _ => {
            for (j, &v) in src.iter().enumerate() {
                dst[j * s] = v;
            }
        }
    }
}

#[inline(always)]
fn spread_every<const S: usize>(src: &[f32], dst: &mut [f32]) {
    let (last, head) = src.split_last().expect("not empty");
    for (c, &v) in dst.chunks_exact_mut(S).zip(head) {
        c[0] = v;
    }
    dst[dst.len() - 1] = *last;
}

/// A plane copied with zero padding into `phases` column phases of `rows x cols`: padded
/// position `(u, v)` (plane position `(u - shift, v - shift)`) is stored in phase
/// `v % phases` at row `u`, column `v / phases`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Padded {
    phases: usize,
    rows: usize,
    cols: usize,
    shift: isize,
}

impl Padded {
    /// The layout a forward pass with geometry `g` reads: output `(oh, ow)` and tap
    /// `(kh, kw)` read padded position `(oh * s + kh * d, ow * s + kw * d)`.
    fn for_forward(g: &Geom) -> Padded {
        let span = (g.k - 1) * g.d;
        Padded {
            phases: g.s,
            rows: (g.ho - 1) * g.s + span + 1,
            cols: ((g.wo - 1) * g.s + span) / g.s + 1,
            shift: g.p as isize,
        }
    }

    fn len(&self) -> usize {
        self.phases * self.rows * self.cols
    }

    /// Offset of padded position `(u, v)`.
    fn offset(&self, u: usize, v: usize) -> usize {
        ((v % self.phases) * self.rows + u) * self.cols + v / self.phases
    }

    /// Offset of each tap `(kh, kw)` in kernel order, for a kernel of size `k`, dilation `d`.
    fn tap_offsets(&self, k: usize, d: usize) -> Vec<usize> {
        (0..k * k)
            .map(|t| self.offset(t / k * d, t % k * d))
            .collect()
    }

    /// For phase `r`: the columns `lo..hi` that hold plane values, and the plane column of
    /// `lo` (meaningful when `lo < hi`).
    fn phase_columns(&self, r: usize, pw: usize) -> (usize, usize, usize) {
        let off = r as isize - self.shift;
        let (lo, hi) = valid_range(off, self.phases, self.cols, pw);
        let first = ((lo * self.phases) as isize + off).max(0) as usize;
        (lo, hi, first)
    }

    /// Copies the `ph x pw` plane into `dst` (of [`Padded::len`]), squaring each value when
    /// `square`. With `zero_padding`, also writes the zeros of every padding position;
    /// without, they must already be zero.
    fn fill(
        &self,
        plane: &[f32],
        ph: usize,
        pw: usize,
        dst: &mut [f32],
        zero_padding: bool,
        square: bool,
    ) {
        let (u_lo, u_hi) = valid_range(-self.shift, 1, self.rows, ph);
        let pairs = self.pair_layout(pw);
        for (r, phase) in dst.chunks_exact_mut(self.rows * self.cols).enumerate() {
            let (lo, hi, first) = self.phase_columns(r, pw);
            if zero_padding {
                phase[..u_lo * self.cols].fill(0.0);
                phase[u_hi * self.cols..].fill(0.0);
            }
            for u in u_lo..u_hi {
                let row = &mut phase[u * self.cols..][..self.cols];
                if zero_padding {
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                }
                if lo < hi && pairs.is_none() {
                    let iu = (u as isize - self.shift) as usize;
                    copy_strided(&plane[iu * pw + first..], self.phases, &mut row[lo..hi]);
                    if square {
                        square_in_place(&mut row[lo..hi]);
                    }
                }
            }
        }
        if let Some((even, lo_even, lo_odd)) = pairs {
            let (len, half) = (self.rows * self.cols, pw / 2);
            let (p0, p1) = dst.split_at_mut(len);
            let (pe, po) = if even == 0 { (p0, p1) } else { (p1, p0) };
            for u in u_lo..u_hi {
                let iu = (u as isize - self.shift) as usize;
                let src = &plane[iu * pw..][..pw];
                let re = &mut pe[u * self.cols + lo_even..][..half];
                let ro = &mut po[u * self.cols + lo_odd..][..half];
                deinterleave(src, re, ro);
                if square {
                    square_in_place(re);
                    square_in_place(ro);
                }
            }
        }
    }

    /// For two phases holding every plane column between them (even plane columns in one,
    /// odd in the other, `pw` even): `(phase of the even columns, its column of plane
    /// column 0, the other phase's column of plane column 1)`. A row is then split into the
    /// two phases in one pass (the per-phase strided copy does not vectorise).
    fn pair_layout(&self, pw: usize) -> Option<(usize, usize, usize)> {
        if self.phases != 2 || pw % 2 != 0 {
            return None;
        }
        let (lo0, hi0, f0) = self.phase_columns(0, pw);
        let (lo1, hi1, f1) = self.phase_columns(1, pw);
        if hi0 - lo0 != pw / 2 || hi1 - lo1 != pw / 2 {
            return None;
        }
        match (f0, f1) {
            (0, 1) => Some((0, lo0, lo1)),
            (1, 0) => Some((1, lo1, lo0)),
            _ => None,
        }
    }
}

/// Tasks of `plane_elems` outputs each: batch tiny planes so that a task does real work.
fn planes_per_task(plane_elems: usize) -> usize {
    MIN_TASK_ELEMS.div_ceil(plane_elems).max(1)
}

fn depthwise_forward(g: &Geom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>], isa: Isa) {
    let pad = Padded::for_forward(g);
    let kk = g.k * g.k;
    let bases = pad.tap_offsets(g.k, g.d);
    let taps: Vec<(f32, usize)> = (0..g.c_in * kk).map(|i| (w[i], bases[i % kk])).collect();
    let rs = g.s * pad.cols;
    let (hw, howo) = (g.hw(), g.howo());
    y.par_chunks_mut(howo)
        .enumerate()
        .with_min_len(planes_per_task(howo))
        .for_each(|(plane, out)| {
            let out = zeroed(out);
            let c = plane % g.c_in;
            with_padded(pad, &x[plane * hw..][..hw], g.h, g.w, false, |buf| {
                gather(isa, buf, &taps[c * kk..][..kk], rs, out, g.wo);
            });
        });
}

fn depthwise_backward_input(
    g: &Geom,
    dy: &[f32],
    w: &[f32],
    dx: &mut [MaybeUninit<f32>],
    isa: Isa,
) {
    let kk = g.k * g.k;
    let (hw, howo) = (g.hw(), g.howo());
    if g.s == 1 {
        // dx[i][j] = sum w[kh][kw] dy[i + p - kh d][j + p - kw d]: a stride-1 correlation of
        // dy, zero-padded by (k - 1) d - p, with the flipped kernel.
        let span = (g.k - 1) * g.d;
        let pad = Padded {
            phases: 1,
            rows: g.h + span,
            cols: g.w + span,
            shift: span as isize - g.p as isize,
        };
        let bases = pad.tap_offsets(g.k, g.d);
        let taps: Vec<(f32, usize)> = (0..g.c_in * kk)
            .map(|i| {
                let (c, t) = (i / kk, i % kk);
                (w[c * kk + (kk - 1 - t)], bases[t])
            })
            .collect();
        dx.par_chunks_mut(hw)
            .enumerate()
            .with_min_len(planes_per_task(hw))
            .for_each(|(plane, out)| {
                let out = zeroed(out);
                let c = plane % g.c_in;
                with_padded(pad, &dy[plane * howo..][..howo], g.ho, g.wo, false, |buf| {
                    gather(isa, buf, &taps[c * kk..][..kk], pad.cols, out, g.w);
                });
            });
    } else {
        // Sub-pixel split: the rows of dx with `i % s == a` take the taps `kh` with
        // `(a + p - kh d) % s == 0`, reading dy row `i / s + (a + p - kh d) / s` (likewise
        // columns). Each of the `s^2` phases of dx is then a stride-1 gather over the
        // zero-padded dy with its own taps, spread back into dx (the adjoint scatter through
        // the forward's layout, a read-modify-write per tap, measured 1.3x as slow).
        let (s, k) = (g.s, g.k);
        let e = ((k - 1) * g.d + g.p) / s + 3;
        let pad = Padded {
            phases: 1,
            rows: g.ho + 2 * e,
            cols: g.wo + 2 * e,
            shift: e as isize,
        };
        // For each phase `a`: the taps `kh` it takes and their dy offsets, plus `e`.
        let phase_taps: Vec<Vec<(usize, usize)>> = (0..s)
            .map(|a| {
                (0..k)
                    .filter_map(|kh| {
                        let t = (a + g.p) as isize - (kh * g.d) as isize;
                        (t.rem_euclid(s as isize) == 0)
                            .then(|| (kh, (t.div_euclid(s as isize) + e as isize) as usize))
                    })
                    .collect()
            })
            .collect();
        // taps[(c * s + a) * s + b]: the `(w, base)` of phase `(a, b)` of channel `c`.
        let mut taps: Vec<Vec<(f32, usize)>> = Vec::with_capacity(g.c_in * s * s);
        for c in 0..g.c_in {
            for a in 0..s {
                for b in 0..s {
                    let mut t = Vec::new();
                    for &(kh, oh) in &phase_taps[a] {
                        for &(kw, ow) in &phase_taps[b] {
                            t.push((w[c * kk + kh * k + kw], oh * pad.cols + ow));
                        }
                    }
                    taps.push(t);
                }
            }
        }
        // Rows (columns) of dx in phase `a`: `i < h` with `i % s == a`.
        let count = |len: usize, a: usize| len.saturating_sub(a).div_ceil(s);
        let tmp_len = count(g.h, 0) * count(g.w, 0);
        dx.par_chunks_mut(hw)
            .enumerate()
            .with_min_len(planes_per_task(hw))
            .for_each_init(
                || vec![0.0f32; tmp_len],
                |tmp, (plane, out)| {
                    let out = zeroed(out);
                    let c = plane % g.c_in;
                    let dy_plane = &dy[plane * howo..][..howo];
                    with_padded(pad, dy_plane, g.ho, g.wo, false, |buf| {
                        for a in 0..s {
                            let rows = count(g.h, a);
                            for b in 0..s {
                                let (cols, t) = (count(g.w, b), &taps[(c * s + a) * s + b]);
                                if rows == 0 || cols == 0 || t.is_empty() {
                                    continue;
                                }
                                let ph = &mut tmp[..rows * cols];
                                gather(isa, buf, t, pad.cols, ph, cols);
                                for (i, vals) in ph.chunks_exact(cols).enumerate() {
                                    spread_strided(vals, s, &mut out[(i * s + a) * g.w + b..]);
                                }
                            }
                        }
                    });
                },
            );
    }
}

fn depthwise_backward_weight(g: &Geom, x: &[f32], dy: &[f32], square: bool, isa: Isa) -> Vec<f32> {
    let pad = Padded::for_forward(g);
    let kk = g.k * g.k;
    let bases = pad.tap_offsets(g.k, g.d);
    let rs = g.s * pad.cols;
    let (hw, howo) = (g.hw(), g.howo());
    // One partial per (sample, channel) plane, then an ordered sum over samples.
    let mut parts = vec![0.0f32; g.n * g.c_in * kk];
    parts
        .par_chunks_mut(kk)
        .enumerate()
        .with_min_len(planes_per_task(howo))
        .for_each(|(plane, part)| {
            with_padded(pad, &x[plane * hw..][..hw], g.h, g.w, square, |buf| {
                dots(
                    isa.at_most_avx2(),
                    buf,
                    &bases,
                    rs,
                    &dy[plane * howo..][..howo],
                    g.wo,
                    part,
                );
            });
        });
    sum_partials_in_order(&parts, g.n, g.c_in * kk)
}

// ------------------------------------------------------------------------------------------
// GEMM kernels (dense, pointwise, grouped)
// ------------------------------------------------------------------------------------------

/// At most this many per-chunk partial weight gradients (bounds their memory); the chunks
/// depend on the batch size only, never on the number of threads.
const MAX_WEIGHT_PARTIALS: usize = 32;

/// Whether a per-image GEMM should itself use the pool (when there are fewer images than
/// threads). `gemm` splits over output blocks only, so this does not change any result.
fn inner_parallel(tasks: usize) -> bool {
    tasks < rayon::current_num_threads()
}

/// `col[(ci * k + kh) * k + kw][oh * wo + ow] = x[ci][oh s + kh d - p][ow s + kw d - p]`,
/// zero outside the input. `x` holds the group's `c_in / groups` planes. With `square`, the
/// copied values are squared (`col(X (.) X)`).
fn im2col(g: &Geom, x: &[f32], col: &mut [f32], square: bool) {
    let (k, s, hw) = (g.k, g.s, g.hw());
    for (row, dst) in col.chunks_exact_mut(g.howo()).enumerate() {
        let (ci, kh, kw) = (row / (k * k), row / k % k, row % k);
        let plane = &x[ci * hw..][..hw];
        let off_w = (kw * g.d) as isize - g.p as isize;
        let off_h = (kh * g.d) as isize - g.p as isize;
        let (lo, hi) = valid_range(off_w, s, g.wo, g.w);
        let start = ((lo * s) as isize + off_w).max(0) as usize;
        for (oh, out) in dst.chunks_exact_mut(g.wo).enumerate() {
            let ih = (oh * s) as isize + off_h;
            if ih < 0 || ih >= g.h as isize || lo == hi {
                out.fill(0.0);
                continue;
            }
            let src = &plane[ih as usize * g.w..][..g.w];
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            if s == 1 {
                out[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
            } else {
                for (j, v) in out[lo..hi].iter_mut().enumerate() {
                    *v = src[start + j * s];
                }
            }
            if square {
                square_in_place(&mut out[lo..hi]);
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry into the input position it came from.
fn col2im_add(g: &Geom, col: &[f32], x: &mut [f32]) {
    let (k, s, hw) = (g.k, g.s, g.hw());
    for (row, src) in col.chunks_exact(g.howo()).enumerate() {
        let (ci, kh, kw) = (row / (k * k), row / k % k, row % k);
        let plane = &mut x[ci * hw..][..hw];
        let off_w = (kw * g.d) as isize - g.p as isize;
        let off_h = (kh * g.d) as isize - g.p as isize;
        let (lo, hi) = valid_range(off_w, s, g.wo, g.w);
        if lo == hi {
            continue;
        }
        let start = ((lo * s) as isize + off_w) as usize;
        for (oh, vals) in src.chunks_exact(g.wo).enumerate() {
            let ih = (oh * s) as isize + off_h;
            if ih < 0 || ih >= g.h as isize {
                continue;
            }
            let dst = &mut plane[ih as usize * g.w..][..g.w];
            if s == 1 {
                for (d, &v) in dst[start..start + (hi - lo)].iter_mut().zip(&vals[lo..hi]) {
                    *d += v;
                }
            } else {
                for (j, &v) in vals[lo..hi].iter().enumerate() {
                    dst[start + j * s] += v;
                }
            }
        }
    }
}

fn gemm_forward(g: &Geom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>]) {
    let (cig, cog, ckk, hw, howo) = (g.cig(), g.cog(), g.ckk(), g.hw(), g.howo());
    let par = inner_parallel(g.n);
    // Every group's GEMM writes its whole block of the output (no zeros needed first).
    y.par_chunks_mut(g.c_out * howo)
        .enumerate()
        .for_each(|(n, yn)| {
            for grp in 0..g.groups {
                let xg = &x[(n * g.c_in + grp * cig) * hw..][..cig * hw];
                let wg = Mat::row_major(&w[grp * cog * ckk..][..cog * ckk], cog, ckk);
                let yg = &mut yn[grp * cog * howo..][..cog * howo];
                if g.col_is_input() {
                    sgemm_into(yg, wg, Mat::row_major(xg, ckk, howo), par);
                } else {
                    with_scratch(ckk * howo, |col| {
                        im2col(g, xg, col, false);
                        sgemm_into(yg, wg, Mat::row_major(col, ckk, howo), par);
                    });
                }
            }
        });
}

fn gemm_backward_input(g: &Geom, dy: &[f32], w: &[f32], dx: &mut [MaybeUninit<f32>]) {
    let (cig, cog, ckk, hw, howo) = (g.cig(), g.cog(), g.ckk(), g.hw(), g.howo());
    let par = inner_parallel(g.n);
    dx.par_chunks_mut(g.c_in * hw)
        .enumerate()
        .for_each(|(n, dxn)| {
            let dxn = zeroed(dxn);
            for grp in 0..g.groups {
                let dyg = Mat::row_major(
                    &dy[(n * g.c_out + grp * cog) * howo..][..cog * howo],
                    cog,
                    howo,
                );
                let wt = Mat::row_major(&w[grp * cog * ckk..][..cog * ckk], cog, ckk).t();
                let dxg = &mut dxn[grp * cig * hw..][..cig * hw];
                if g.col_is_input() {
                    sgemm(dxg, wt, dyg, false, par);
                } else {
                    with_scratch(ckk * howo, |dcol| {
                        sgemm(dcol, wt, dyg, false, par);
                        col2im_add(g, dcol, dxg);
                    });
                }
            }
        });
}

/// The weight gradient, of `x (.) x` when `square` (the squares go into the scratch `col`).
fn gemm_backward_weight(g: &Geom, x: &[f32], dy: &[f32], square: bool) -> Vec<f32> {
    let (cig, cog, ckk, hw, howo) = (g.cig(), g.cog(), g.ckk(), g.hw(), g.howo());
    let w_len = g.w_len();
    let per_chunk = g.n.div_ceil(MAX_WEIGHT_PARTIALS);
    let chunks = g.n.div_ceil(per_chunk);
    let par = inner_parallel(chunks);
    let mut parts = vec![0.0f32; chunks * w_len];
    parts
        .par_chunks_mut(w_len)
        .enumerate()
        .for_each(|(chunk, part)| {
            let first = chunk * per_chunk;
            for n in first..(first + per_chunk).min(g.n) {
                let accumulate = n > first;
                for grp in 0..g.groups {
                    let xg = &x[(n * g.c_in + grp * cig) * hw..][..cig * hw];
                    let dyg = Mat::row_major(
                        &dy[(n * g.c_out + grp * cog) * howo..][..cog * howo],
                        cog,
                        howo,
                    );
                    let pg = &mut part[grp * cog * ckk..][..cog * ckk];
                    if g.col_is_input() && !square {
                        sgemm(pg, dyg, Mat::row_major(xg, ckk, howo).t(), accumulate, par);
                    } else if g.col_is_input() {
                        with_scratch(ckk * howo, |col| {
                            for (c, &v) in col.iter_mut().zip(xg) {
                                *c = v * v;
                            }
                            sgemm(pg, dyg, Mat::row_major(col, ckk, howo).t(), accumulate, par);
                        });
                    } else {
                        with_scratch(ckk * howo, |col| {
                            im2col(g, xg, col, square);
                            sgemm(pg, dyg, Mat::row_major(col, ckk, howo).t(), accumulate, par);
                        });
                    }
                }
            }
        });
    sum_partials_in_order(&parts, chunks, w_len)
}

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
