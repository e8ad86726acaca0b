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

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::plane::{
    assume_init, plane_sum, share_bounds, static_map_init, team_size, uninit, TASK_ELEMS,
};
use super::simd::{isa_dispatch, Isa};
use crate::device::{shape, Pool2dSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Pooling geometry of one call and the layout of its polyphase planes.
///
/// A plane padded by `p` on every side is split by the stride `s` into `s * s` phases:
/// padded pixel `(pr, pc)` lives in phase `(pr % s, pc % s)` at row `pr / s`, column
/// `pc / s`, each phase being `rh` rows of `len` columns. Window element `(dr, dc)` of output
/// `(oh, ow)`, padded pixel `(oh s + dr, ow s + dc)`, is then at flat index
/// `tap(dr, dc) + oh * len + ow`. Outputs are therefore computed over the flat range
/// `0..ho * len`; the `len - wo` extra columns of each row are dropped.
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
    /// Columns of a phase row.
    len: usize,
    /// Rows of a phase.
    rh: usize,
}

impl Geom {
    fn new(op: &'static str, shape: &[usize], spec: Pool2dSpec) -> Result<Geom> {
        let shape::Pool2dShape { n, c, h, w, ho, wo } = shape::pool2d(op, shape, spec)?;
        let (k, s, p) = (spec.kernel, spec.stride, spec.padding);
        let reach = (k - 1) / s;
        Ok(Geom {
            n,
            c,
            h,
            w,
            ho,
            wo,
            k,
            s,
            p,
            // Room for the widest tap; one more row absorbs the reads of the dropped columns.
            len: wo + reach,
            rh: ho + reach + 1,
        })
    }

    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }

    /// Number of flat outputs `ho * len` (dropped columns included).
    fn flat(&self) -> usize {
        self.ho * self.len
    }

    /// Length of the flat range a vertical pass produces (the horizontal pass reads up to
    /// `(k - 1) / s` past the outputs).
    fn vflat(&self) -> usize {
        self.flat() + (self.k - 1) / self.s
    }

    /// Size of a polyphase plane.
    fn plane(&self) -> usize {
        self.s * self.s * self.rh * self.len
    }

    /// Start of row `row` of phase `(qr, qc)`.
    #[inline(always)]
    fn phase_row(&self, qr: usize, qc: usize, row: usize) -> usize {
        ((qr * self.s + qc) * self.rh + row) * self.len
    }

    /// Offset of window row `dr` within column phase `qc`: flat outputs `o` read
    /// `tap_row(dr, qc) + o`.
    #[inline(always)]
    fn tap_row(&self, dr: usize, qc: usize) -> usize {
        self.phase_row(dr % self.s, qc, dr / self.s)
    }

    /// Rows `[lo, hi)` of the image inside the window of output row `oh`.
    #[inline(always)]
    fn rows(&self, oh: usize) -> (usize, usize) {
        clip(oh, self.s, self.p, self.k, self.h)
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

    /// Planes per parallel task.
    fn planes_per_task(&self) -> usize {
        (TASK_ELEMS / (self.h * self.w)).max(1)
    }

    /// Phase columns `[lo, hi)` of column phase `qc` that hold image columns, and the image
    /// column of `lo`; `s` is the stride (a constant in the specialised copies).
    #[inline(always)]
    fn cols(&self, qc: usize, s: usize) -> (usize, usize, usize) {
        let p = self.p;
        let lo = if p > qc { (p - qc).div_ceil(s) } else { 0 };
        let hi = (if p + self.w > qc {
            (p + self.w - qc).div_ceil(s)
        } else {
            0
        })
        .min(self.len);
        let lo = lo.min(hi);
        (lo, hi, (lo * s + qc).saturating_sub(p))
    }

    /// Image row of padded row `ir * s + qr`, if it is one.
    #[inline(always)]
    fn image_row(&self, qr: usize, ir: usize, s: usize) -> Option<usize> {
        let pr = ir * s + qr;
        (pr >= self.p && pr - self.p < self.h).then(|| pr - self.p)
    }

    /// Copies plane `x` into polyphase form `dst`, padding with `fill`.
    #[inline(always)]
    fn split(&self, x: &[f32], dst: &mut [f32], fill: f32) {
        match self.s {
            1 => self.split_strided::<1>(x, dst, fill),
            2 => self.split_strided::<2>(x, dst, fill),
            _ => self.split_strided::<0>(x, dst, fill),
        }
    }

    /// [`Geom::split`] for stride `S` (0: the run-time stride).
    #[inline(always)]
    fn split_strided<const S: usize>(&self, x: &[f32], dst: &mut [f32], fill: f32) {
        let s = if S == 0 { self.s } else { S };
        let (rh, len) = (self.rh, self.len);
        for qr in 0..s {
            for ir in 0..rh {
                let at = |qc: usize| ((qr * s + qc) * rh + ir) * len;
                let Some(i) = self.image_row(qr, ir, s) else {
                    for qc in 0..s {
                        dst[at(qc)..at(qc) + len].fill(fill);
                    }
                    continue;
                };
                let src = &x[i * self.w..(i + 1) * self.w];
                if S == 2 {
                    // Both column phases at once from pairs of image columns (a
                    // deinterleave the vectoriser handles): columns 2m, 2m + 1 are padded
                    // columns 2m + p, 2m + 1 + p.
                    let (head, tail) = dst.split_at_mut(at(1));
                    let (ph0, ph1) = (&mut head[at(0)..at(0) + len], &mut tail[..len]);
                    ph0.fill(fill);
                    ph1.fill(fill);
                    let (even, odd) = if self.p % 2 == 0 {
                        (ph0, ph1)
                    } else {
                        (ph1, ph0)
                    };
                    let (e0, o0) = (self.p / 2, self.p.div_ceil(2));
                    let pairs = (self.w / 2).min(len - e0).min(len - o0);
                    let dst_pairs = even[e0..e0 + pairs]
                        .iter_mut()
                        .zip(&mut odd[o0..o0 + pairs]);
                    for ((e, o), c) in dst_pairs.zip(src.chunks_exact(2)) {
                        *e = c[0];
                        *o = c[1];
                    }
                    if self.w % 2 == 1 && e0 + self.w / 2 < len {
                        even[e0 + self.w / 2] = src[self.w - 1];
                    }
                    continue;
                }
                for qc in 0..s {
                    let d = &mut dst[at(qc)..at(qc) + len];
                    let (lo, hi, first) = self.cols(qc, s);
                    d[..lo].fill(fill);
                    d[hi..].fill(fill);
                    if lo == hi {
                        continue;
                    }
                    if s == 1 {
                        d[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                        continue;
                    }
                    // Every s-th image column from `first` (the last one alone: its chunk may
                    // be short).
                    let (body, last) = d[lo..hi].split_at_mut(hi - lo - 1);
                    for (d, c) in body.iter_mut().zip(src[first..].chunks_exact(s)) {
                        *d = c[0];
                    }
                    last[0] = src[first + (hi - lo - 1) * s];
                }
            }
        }
    }

    /// The image part of polyphase plane `src`, written to plane `x` (padding dropped).
    #[inline(always)]
    fn merge(&self, src: &[f32], x: &mut [f32]) {
        match self.s {
            1 => self.merge_strided::<1>(src, x),
            2 => self.merge_strided::<2>(src, x),
            _ => self.merge_strided::<0>(src, x),
        }
    }

    /// [`Geom::merge`] for stride `S` (0: the run-time stride).
    #[inline(always)]
    fn merge_strided<const S: usize>(&self, src: &[f32], x: &mut [f32]) {
        let s = if S == 0 { self.s } else { S };
        let (rh, len) = (self.rh, self.len);
        for qr in 0..s {
            for ir in 0..rh {
                let Some(i) = self.image_row(qr, ir, s) else {
                    continue;
                };
                let dst = &mut x[i * self.w..(i + 1) * self.w];
                let at = |qc: usize| ((qr * s + qc) * rh + ir) * len;
                if S == 2 {
                    // The adjoint of the pair deinterleave of `split_strided`.
                    let (ph0, ph1) = (&src[at(0)..at(0) + len], &src[at(1)..at(1) + len]);
                    let (even, odd) = if self.p % 2 == 0 {
                        (ph0, ph1)
                    } else {
                        (ph1, ph0)
                    };
                    let (e0, o0) = (self.p / 2, self.p.div_ceil(2));
                    let pairs = (self.w / 2).min(len - e0).min(len - o0);
                    let src_pairs = even[e0..e0 + pairs].iter().zip(&odd[o0..o0 + pairs]);
                    for ((&e, &o), c) in src_pairs.zip(dst.chunks_exact_mut(2)) {
                        c[0] = e;
                        c[1] = o;
                    }
                    if self.w % 2 == 1 && e0 + self.w / 2 < len {
                        dst[self.w - 1] = even[e0 + self.w / 2];
                    }
                    continue;
                }
                for qc in 0..s {
                    let (lo, hi, first) = self.cols(qc, s);
                    if lo == hi {
                        continue;
                    }
                    let from = &src[at(qc) + lo..at(qc) + hi];
                    if s == 1 {
                        dst[first..first + (hi - lo)].copy_from_slice(from);
                        continue;
                    }
                    let (body, last) = from.split_at(hi - lo - 1);
                    for (c, &v) in dst[first..].chunks_exact_mut(s).zip(body) {
                        c[0] = v;
                    }
                    dst[first + (hi - lo - 1) * s] = last[0];
                }
            }
        }
    }
}

/// `[lo, hi)` of the image axis of length `len` covered by window `o`.
#[inline(always)]
fn clip(o: usize, s: usize, p: usize, k: usize, len: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).max(0) as usize).min(len);
    (lo, hi)
}

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
                let out = [
                    shape[0],
                    shape[1],
                    spec.out_size(shape[2]),
                    spec.out_size(shape[3]),
                ];
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
