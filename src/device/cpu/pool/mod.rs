//! Pooling kernels: max and average pooling over square windows, global average pooling.
//!
//! Every kernel works plane by plane (one sample, one channel); planes run in parallel and
//! each plane is owned by one task, so the backward kernels, which accumulate into the input
//! gradient of their own plane in a fixed order, are race-free and deterministic.
//!
//! Planes are first copied into a padded *polyphase* form (see [`Geom`]) in which window
//! element `(dr, dc)` of every output is the same constant offset away from the output's own
//! flat index, whatever the stride. Each step of a kernel is then one long, branch-free loop
//! over all outputs of the plane (rows included), the padding holds a neutral value (`-inf`
//! for max, 0 for sums) so borders need no tests, and every inner loop vectorises. The plane
//! kernels are compiled twice, portable and with AVX2, and picked at run time.
//!
//! Max pooling saves, per output, the flat in-plane offset of the window element it took
//! (as f32, see [`crate::device::Backend::max_pool2d_forward`]); its backward zeroes each
//! input-gradient plane and scatters `dy` through those offsets, in output order.

mod geom;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::plane::{
    assume_init, plane_sum, share_bounds, static_map_init, team_size, uninit, TASK_ELEMS,
};
use super::simd::{isa_dispatch, Isa};
use crate::device::{shape, Pool2dSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use geom::*;

/// `dst[i] = f(..f(src[offs[0] + i], src[offs[1] + i]).., src[offs[last] + i])`. Three taps
/// (the 3x3 pools) are fused into one pass; other counts fold one tap per pass.
#[inline(always)]
fn fold(dst: &mut [f32], src: &[f32], offs: &[usize], f: impl Fn(f32, f32) -> f32) {
    let n = dst.len();
    if let [a, b, c] = *offs {
        let (a, b, c) = (&src[a..a + n], &src[b..b + n], &src[c..c + n]);
        for (((d, &a), &b), &c) in dst.iter_mut().zip(a).zip(b).zip(c) {
            *d = f(f(a, b), c);
        }
        return;
    }
    dst.copy_from_slice(&src[offs[0]..offs[0] + n]);
    for &o in &offs[1..] {
        dst.iter_mut()
            .zip(&src[o..o + n])
            .for_each(|(d, &x)| *d = f(*d, x));
    }
}

/// Tap offsets of one call (shared by all planes).
struct Taps {
    /// Per column phase, the offsets in a polyphase plane of the window rows.
    rows: Vec<Vec<usize>>,
    /// Offsets in the vertical results (`s` flat ranges of `vflat`) of the window columns.
    cols: Vec<usize>,
}

impl Taps {
    fn new(g: &Geom) -> Taps {
        Taps {
            rows: (0..g.s)
                .map(|qc| (0..g.k).map(|dr| g.tap_row(dr, qc)).collect())
                .collect(),
            cols: (0..g.k)
                .map(|dc| (dc % g.s) * g.vflat() + dc / g.s)
                .collect(),
        }
    }
}

/// Separable window reduction of polyphase plane `pp` into the flat outputs `acc`: first
/// over the window rows into one flat range per column phase (`v`), then over the columns.
#[inline(always)]
fn reduce_windows(
    g: &Geom,
    t: &Taps,
    pp: &[f32],
    v: &mut [f32],
    acc: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Copy,
) {
    for (vq, offs) in v.chunks_exact_mut(g.vflat()).zip(&t.rows) {
        fold(vq, pp, offs, f);
    }
    fold(acc, v, &t.cols, f);
}

isa_dispatch! {
    fn max_forward_plane =>
        max_forward_plane_impl(g: &Geom, t: &ArgTables, x: &[f32], out: &mut [MaybeUninit<f32>], arg: &mut [MaybeUninit<f32>], s: &mut Scratch)
}
isa_dispatch! {
    fn avg_forward_plane =>
        avg_forward_plane_impl(g: &Geom, t: &Taps, inv: &[f32], x: &[f32], out: &mut [f32], s: &mut Scratch)
}
isa_dispatch! {
    fn max_backward_planes =>
        max_backward_planes_impl(arg: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>], hw: usize, howo: usize, idx: &mut Vec<u32>) -> bool
}
isa_dispatch! {
    fn avg_backward_plane =>
        avg_backward_plane_impl(g: &Geom, inv: &[f32], dy: &[f32], dx: &mut [f32], s: &mut Scratch)
}

// ------------------------------------------------------------------------------------------
// Plane kernels
// ------------------------------------------------------------------------------------------

/// Per-task buffers of the plane kernels.
struct Scratch {
    /// A polyphase plane.
    pp: Vec<f32>,
    /// Per column phase, a flat range of window-row results.
    v: Vec<f32>,
    /// Flat outputs.
    acc: Vec<f32>,
    /// Argmax offsets of the outputs (general windows).
    arg: Vec<f32>,
}

impl Scratch {
    fn new(g: &Geom) -> Scratch {
        Scratch {
            pp: vec![0.0; g.plane()],
            v: vec![0.0; g.s * g.vflat()],
            acc: vec![0.0; g.vflat()],
            arg: vec![0.0; g.flat()],
        }
    }
}

/// Argmax tables of max pooling (shared by all planes), over the flat outputs. Offsets are
/// in-plane image offsets `i w + j` held in f32 (exact: planes have fewer than 2^24
/// elements).
struct ArgTables {
    /// Image offset of window element (0, 0) of each flat output, `oh s w + ow s` (it lies
    /// in the padding when the window does).
    pos: Vec<f32>,
    /// Image offset of the first in-image element of each window in row-major order (the
    /// argmax when no element beats `-inf`).
    first: Vec<f32>,
    /// Per window element `(dr, dc)` in row-major order: its offset in a polyphase plane and
    /// its image offset from `pos`, `dr w + dc - p (w + 1)` (padding is never taken).
    taps: Vec<(usize, f32)>,
}

impl ArgTables {
    fn new(g: &Geom) -> ArgTables {
        let mut pos = Vec::with_capacity(g.flat());
        let mut first = Vec::with_capacity(g.flat());
        for oh in 0..g.ho {
            let r0 = g.rows(oh).0;
            for ow in 0..g.len {
                pos.push((oh * g.s * g.w + ow * g.s) as f32);
                let c0 = if ow < g.wo {
                    clip(ow, g.s, g.p, g.k, g.w).0
                } else {
                    0
                };
                first.push((r0 * g.w + c0) as f32);
            }
        }
        let mut taps = Vec::with_capacity(g.k * g.k);
        for dr in 0..g.k {
            for dc in 0..g.k {
                let at = g.tap_row(dr, dc % g.s) + dc / g.s;
                let off = (dr * g.w + dc) as f32 - (g.p * (g.w + 1)) as f32;
                taps.push((at, off));
            }
        }
        ArgTables { pos, first, taps }
    }
}

/// Max pooling of one plane with the argmax of every window. The window elements are
/// visited in row-major order and only a strictly greater value (or a NaN) takes over, so the
/// first maximum wins (the last NaN, if any); the `-inf` padding never does, and a window
/// with nothing above `-inf` keeps its first in-image element.
#[inline(always)]
fn max_forward_plane_impl(
    g: &Geom,
    t: &ArgTables,
    x: &[f32],
    out: &mut [MaybeUninit<f32>],
    arg: &mut [MaybeUninit<f32>],
    s: &mut Scratch,
) {
    g.split(x, &mut s.pp, f32::NEG_INFINITY);
    let n = g.flat();
    let (best, idx) = (&mut s.acc[..n], &mut s.arg[..n]);
    let (first, pos) = (&t.first[..n], &t.pos[..n]);
    if let Ok(taps) = <&[(usize, f32); 9]>::try_from(&t.taps[..]) {
        // 3x3: all nine elements of a window in registers, one pass.
        let v: [&[f32]; 9] = taps.map(|(at, _)| &s.pp[at..at + n]);
        let off: [f32; 9] = taps.map(|(_, off)| off);
        for i in 0..n {
            let (mut b, mut a) = (f32::NEG_INFINITY, first[i]);
            for j in 0..9 {
                let x = v[j][i];
                let take = (x > b) | x.is_nan();
                b = if take { x } else { b };
                a = if take { pos[i] + off[j] } else { a };
            }
            best[i] = b;
            idx[i] = a;
        }
    } else {
        best.fill(f32::NEG_INFINITY);
        idx.copy_from_slice(first);
        for &(at, off) in &t.taps {
            let v = &s.pp[at..at + n];
            for i in 0..n {
                let x = v[i];
                let take = (x > best[i]) | x.is_nan();
                best[i] = if take { x } else { best[i] };
                idx[i] = if take { pos[i] + off } else { idx[i] };
            }
        }
    }
    let rows = out.chunks_exact_mut(g.wo).zip(arg.chunks_exact_mut(g.wo));
    for ((o, a), (b, i)) in rows.zip(best.chunks_exact(g.len).zip(idx.chunks_exact(g.len))) {
        for (o, &b) in o.iter_mut().zip(b) {
            o.write(b);
        }
        for (a, &i) in a.iter_mut().zip(i) {
            a.write(i);
        }
    }
}

/// Planes of `dx` (`hw` elements each) zeroed, then `dx[arg[o]] += dy[o]` within each
/// plane, in output order (`howo` outputs a plane). Returns false (leaving `dx` zeroed and
/// partly accumulated) if an offset is not one of its plane's; `idx` is scratch.
///
/// One call covers a whole share of planes: at supernet shapes a plane has only 64 outputs,
/// so per-plane tasks, allocations and dispatch would cost as much as the scatter itself.
/// Each plane is zeroed just before its scatter, which then finds it in L1 (zeroing the
/// whole share first measured slower at 2 MB outputs).
#[inline(always)]
fn max_backward_planes_impl(
    arg: &[f32],
    dy: &[f32],
    dx: &mut [MaybeUninit<f32>],
    hw: usize,
    howo: usize,
    idx: &mut Vec<u32>,
) -> bool {
    let mut ok = true;
    for ((dx, arg), dy) in dx
        .chunks_exact_mut(hw)
        .zip(arg.chunks_exact(howo))
        .zip(dy.chunks_exact(howo))
    {
        dx.fill(MaybeUninit::new(0.0));
        // SAFETY: every element was just written.
        let dx = unsafe { &mut *(dx as *mut [MaybeUninit<f32>] as *mut [f32]) };
        ok &= max_backward_plane(arg, dy, dx, idx);
    }
    ok
}

/// `dx[arg[o]] += dy[o]` in output order, `dx` (not empty) zeroed by the caller. Returns
/// false, scattering nothing, if an offset is not one of the plane's.
#[inline(always)]
fn max_backward_plane(arg: &[f32], dy: &[f32], dx: &mut [f32], idx: &mut Vec<u32>) -> bool {
    // Validate and convert in one vectorised pass: NaN, negative and too large offsets fail
    // the check; the clamped value converts exactly (fractions are truncated). The
    // conversion goes through i32 (offsets are below 2^24): AVX2 has a single instruction
    // for f32 -> i32, but none for f32 -> u32.
    let hw = dx.len() as f32;
    let top = (dx.len() - 1) as f32;
    let mut ok = true;
    idx.clear();
    idx.extend(arg.iter().map(|&a| {
        ok &= (a >= 0.0) & (a < hw);
        // SAFETY: the clamped value is finite and in [0, 2^24], representable as i32.
        unsafe { a.max(0.0).min(top).to_int_unchecked::<i32>() as u32 }
    }));
    if !ok {
        return false;
    }
    for (&i, &d) in idx.iter().zip(dy) {
        // SAFETY: `i <= top = dx.len() - 1` by the clamp above.
        unsafe { *dx.get_unchecked_mut(i as usize) += d };
    }
    true
}

#[inline(always)]
fn avg_forward_plane_impl(
    g: &Geom,
    t: &Taps,
    inv: &[f32],
    x: &[f32],
    out: &mut [f32],
    s: &mut Scratch,
) {
    g.split(x, &mut s.pp, 0.0);
    reduce_windows(g, t, &s.pp, &mut s.v, &mut s.acc[..g.flat()], |a, b| a + b);
    for ((o, a), f) in out
        .chunks_exact_mut(g.wo)
        .zip(s.acc.chunks_exact(g.len))
        .zip(inv.chunks_exact(g.wo))
    {
        o.iter_mut()
            .zip(a.iter().zip(f))
            .for_each(|(o, (&a, &f))| *o = a * f);
    }
}

/// The adjoint of the separable window sum, scaled: `dy * inv` over the flat outputs is
/// spread over the window columns (`v`), then over the window rows into a polyphase plane,
/// whose image part is the result.
#[inline(always)]
fn avg_backward_plane_impl(g: &Geom, inv: &[f32], dy: &[f32], dx: &mut [f32], s: &mut Scratch) {
    let vf = g.vflat();
    let sd = &mut s.acc;
    sd.fill(0.0);
    for ((a, d), f) in sd
        .chunks_exact_mut(g.len)
        .zip(dy.chunks_exact(g.wo))
        .zip(inv.chunks_exact(g.wo))
    {
        a[..g.wo]
            .iter_mut()
            .zip(d.iter().zip(f))
            .for_each(|(a, (&d, &f))| *a = d * f);
    }
    s.v.fill(0.0);
    for dc in 0..g.k {
        let at = (dc % g.s) * vf + dc / g.s;
        s.v[at..at + g.flat()]
            .iter_mut()
            .zip(&sd[..g.flat()])
            .for_each(|(v, &x)| *v += x);
    }
    s.pp.fill(0.0);
    for (qc, vq) in s.v.chunks_exact(vf).enumerate() {
        for dr in 0..g.k {
            let at = g.tap_row(dr, qc);
            s.pp[at..at + vf]
                .iter_mut()
                .zip(vq)
                .for_each(|(p, &x)| *p += x);
        }
    }
    g.merge(&s.pp, dx);
}

// ------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------

pub(crate) fn max_forward(x: &Tensor, spec: Pool2dSpec) -> Result<(Tensor, Tensor)> {
    let g = Geom::new("max_pool2d", x.shape(), spec)?;
    shape::max_pool2d_plane(g.h, g.w)?;
    let (isa, tables) = (Isa::detect(), ArgTables::new(&g));
    let len = g.n * g.c * g.ho * g.wo;
    let (mut out, mut arg) = (uninit(len), uninit(len));
    let planes: Vec<_> = out
        .chunks_mut(g.ho * g.wo)
        .zip(arg.chunks_mut(g.ho * g.wo))
        .zip(x.cpu().chunks(g.h * g.w))
        .collect();
    static_map_init(
        planes,
        x.numel(),
        || Scratch::new(&g),
        |s, _, ((o, a), xp)| max_forward_plane(isa, &g, &tables, xp, o, a, s),
    );
    // SAFETY: the planes cover both buffers and the plane kernel writes every element.
    let (out, arg) = unsafe { (assume_init(out), assume_init(arg)) };
    Ok((
        Tensor::from_vec(out, &g.out_shape())?,
        Tensor::from_vec(arg, &g.out_shape())?,
    ))
}

pub(crate) fn max_backward(argmax: &Tensor, dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    let [n, c, h, w] = shape::max_pool2d_backward(argmax, dy, x_shape)?;
    let ds = dy.shape();
    let (hw, howo) = (h * w, ds[2] * ds[3]);
    let isa = Isa::detect().at_most_avx2();
    let mut dx = uninit(n * c * hw);
    let ok = if howo == 0 {
        dx.iter_mut().for_each(|d| {
            d.write(0.0);
        });
        true
    } else {
        // One task per thread, each a contiguous range of planes (see `static_map`).
        let planes = n * c;
        let bounds = share_bounds(planes, team_size(planes, n * c * (hw + howo)));
        let (mut rest, mut shares) = (&mut dx[..], Vec::with_capacity(bounds.len()));
        for b in bounds.windows(2) {
            let (share, r) = rest.split_at_mut((b[1] - b[0]) * hw);
            shares.push(share);
            rest = r;
        }
        let (arg, dys) = (argmax.cpu(), dy.cpu());
        static_map_init(shares, n * c * (hw + howo), Vec::new, |idx, k, dxs| {
            let outs = bounds[k] * howo..bounds[k + 1] * howo;
            let (a, d) = (&arg[outs.clone()], &dys[outs]);
            max_backward_planes(isa, a, d, dxs, hw, howo, idx)
        })
        .into_iter()
        .all(|ok| ok)
    };
    // SAFETY: every plane of `dx` is zeroed first by the plane kernel (or above).
    let dx = unsafe { assume_init(dx) };
    if !ok {
        return Err(Error::Invalid(format!(
            "max_pool2d_backward: argmax holds an offset outside the {h}x{w} input plane"
        )));
    }
    Tensor::from_vec(dx, x_shape)
}

pub(crate) fn avg_forward(x: &Tensor, spec: Pool2dSpec) -> Result<Tensor> {
    let g = Geom::new("avg_pool2d", x.shape(), spec)?;
    let (isa, taps) = (Isa::detect().at_most_avx2(), Taps::new(&g));
    let inv = g.inv_counts(1);
    let mut out = vec![0.0f32; g.n * g.c * g.ho * g.wo];
    out.par_chunks_mut(g.ho * g.wo)
        .zip(x.cpu().par_chunks(g.h * g.w))
        .with_min_len(g.planes_per_task())
        .for_each_init(
            || Scratch::new(&g),
            |s, (o, xp)| avg_forward_plane(isa, &g, &taps, &inv, xp, o, s),
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
    shape::avg_pool2d_dy(dy, g.out_shape())?;
    let isa = Isa::detect().at_most_avx2();
    let inv = g.inv_counts(power);
    let mut dx = vec![0.0f32; g.n * g.c * g.h * g.w];
    dx.par_chunks_mut(g.h * g.w)
        .zip(dy.cpu().par_chunks(g.ho * g.wo))
        .with_min_len(g.planes_per_task())
        .for_each_init(
            || Scratch::new(&g),
            |s, (dxp, dyp)| avg_backward_plane(isa, &g, &inv, dyp, dxp, s),
        );
    Tensor::from_vec(dx, x_shape)
}

pub(crate) fn global_avg_forward(x: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = shape::global_avg_pool(x.shape())?;
    let hw = h * w;
    let inv = 1.0 / hw as f64;
    let isa = Isa::detect().at_most_avx2();
    let mut out = vec![0.0f32; n * c];
    out.par_iter_mut()
        .zip(x.cpu().par_chunks(hw))
        .with_min_len((TASK_ELEMS / hw).max(1))
        .for_each(|(o, v)| *o = (plane_sum(isa, v, None) * inv) as f32);
    Tensor::from_vec(out, &[n, c])
}

pub(crate) fn global_avg_backward(dy: &Tensor, x_shape: &[usize], power: i32) -> Result<Tensor> {
    let [n, c, h, w] = shape::global_avg_pool_backward(dy, x_shape)?;
    let hw = h * w;
    let f = (1.0 / hw as f64).powi(power);
    let mut dx = vec![0.0f32; n * c * hw];
    dx.par_chunks_mut(hw)
        .zip(dy.cpu().par_iter())
        .with_min_len((TASK_ELEMS / hw).max(1))
        .for_each(|(o, &d)| o.fill((d as f64 * f) as f32));
    Tensor::from_vec(dx, x_shape)
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
        let mut rng = Rng::new(6);
        for shape in [[2usize, 3, 7, 9], [2, 4, 16, 16], [1, 2, 6, 5]] {
            let x = Tensor::randn(&shape, 1.0, &mut rng);
            for (k, s, p) in [
                (3, 1, 1),
                (3, 2, 1),
                (2, 2, 0),
                (5, 3, 2),
                (3, 1, 0),
                (5, 2, 2),
            ] {
                let spec = Pool2dSpec {
                    kernel: k,
                    stride: s,
                    padding: p,
                };
                let out = spec.out_shape(shape);
                let dy = Tensor::randn(&out, 1.0, &mut rng);
                let run = || {
                    let (y, arg) = max_forward(&x, spec).unwrap();
                    [
                        max_backward(&arg, &dy, &shape).unwrap(),
                        y,
                        arg,
                        avg_forward(&x, spec).unwrap(),
                        avg_backward(&dy, spec, &shape, 1).unwrap(),
                        avg_backward(&dy, spec, &shape, 2).unwrap(),
                        global_avg_forward(&x).unwrap(),
                    ]
                    .map(|t| t.into_vec())
                };
                let fast = run();
                let portable = with_portable_kernels(run);
                assert_eq!(fast, portable, "{shape:?} {spec:?}");
            }
        }
    }
}
