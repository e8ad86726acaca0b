//! The direct depthwise kernels (`groups == c_in == c_out`) over zero-padded, stride-phased
//! scratch planes, compiled per instruction set.

use super::*;

/// Runs `f` on this thread's scratch holding the `ph x pw` plane copied into layout `pad`.
/// Consecutive planes of one convolution share the layout, so the padding (zeros) is
/// written only when the layout changes and each plane costs one copy of its own values.
/// With `square`, the plane's values are squared as they are copied.
pub(super) fn with_padded<R>(
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

isa_dispatch! {
    /// `out[oh * wo + ow] = sum_t w_t * src[base_t + oh * rs + ow]` over `taps = (w_t, base_t)`.
    fn gather => gather_impl::<Madd>(src: &[f32], taps: &[(f32, usize)], rs: usize, out: &mut [f32], wo: usize)
}

isa_dispatch! {
    /// `out[t] = sum_{oh, ow} dy[oh * wo + ow] * src[bases[t] + oh * rs + ow]`.
    fn dots => dots_impl::<Madd>(src: &[f32], bases: &[usize], rs: usize, dy: &[f32], wo: usize, out: &mut [f32])
}

#[inline(always)]
pub(super) fn gather_impl<M: Madd>(
    src: &[f32],
    taps: &[(f32, usize)],
    rs: usize,
    out: &mut [f32],
    wo: usize,
) {
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
pub(super) fn gather_columns<M: Madd, const B: usize, const R: usize>(
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
pub(super) fn gather_block<M: Madd, const B: usize, const R: usize>(
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
pub(super) fn dots_impl<M: Madd>(
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
pub(super) fn dots_rows<M: Madd, const K: usize>(
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
pub(super) fn square_in_place(vals: &mut [f32]) {
    for v in vals {
        *v *= *v;
    }
}

/// `dst.copy_from_slice(src)`, inline for the plane widths of the search space (a `memcpy`
/// call per row of 16 floats measured 13% of a small depthwise convolution).
#[inline(always)]
pub(super) fn copy_row(src: &[f32], dst: &mut [f32]) {
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
pub(super) fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
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
pub(super) fn copy_strided(src: &[f32], s: usize, dst: &mut [f32]) {
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
pub(super) fn copy_every<const S: usize>(src: &[f32], dst: &mut [f32]) {
    let (last, head) = dst.split_last_mut().expect("not empty");
    for (d, c) in head.iter_mut().zip(src.chunks_exact(S)) {
        *d = c[0];
    }
    *last = src[src.len() - 1];
}

/// `dst[j * s] = src[j]` for every `j < src.len()` (`src` not empty).
#[inline(always)]
pub(super) fn spread_strided(src: &[f32], s: usize, dst: &mut [f32]) {
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
pub(super) fn spread_every<const S: usize>(src: &[f32], dst: &mut [f32]) {
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
pub(super) struct Padded {
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
pub(super) fn planes_per_task(plane_elems: usize) -> usize {
    MIN_TASK_ELEMS.div_ceil(plane_elems).max(1)
}

pub(super) fn depthwise_forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    y: &mut [MaybeUninit<f32>],
    isa: Isa,
) {
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

pub(super) fn depthwise_backward_input(
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

pub(super) fn depthwise_backward_weight(
    g: &Geom,
    x: &[f32],
    dy: &[f32],
    square: bool,
    isa: Isa,
) -> Vec<f32> {
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
