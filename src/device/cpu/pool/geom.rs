//! Pooling geometry and the polyphase plane layout the kernels work in.

use super::*;

/// Pooling geometry of one call and the layout of its polyphase planes.
///
/// A plane padded by `p` on every side is split by the stride `s` into `s * s` phases:
/// padded pixel `(pr, pc)` lives in phase `(pr % s, pc % s)` at row `pr / s`, column
/// `pc / s`, each phase being `rh` rows of `len` columns. Window element `(dr, dc)` of output
/// `(oh, ow)`, padded pixel `(oh s + dr, ow s + dc)`, is then at flat index
/// `tap(dr, dc) + oh * len + ow`. Outputs are therefore computed over the flat range
/// `0..ho * len`; the `len - wo` extra columns of each row are dropped.
#[derive(Clone, Copy)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    pub(super) k: usize,
    pub(super) s: usize,
    pub(super) p: usize,
    /// Columns of a phase row.
    pub(super) len: usize,
    /// Rows of a phase.
    pub(super) rh: usize,
}

impl Geom {
    pub(super) fn new(op: &'static str, shape: &[usize], spec: Pool2dSpec) -> Result<Geom> {
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

    pub(super) fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }

    /// Number of flat outputs `ho * len` (dropped columns included).
    pub(super) fn flat(&self) -> usize {
        self.ho * self.len
    }

    /// Length of the flat range a vertical pass produces (the horizontal pass reads up to
    /// `(k - 1) / s` past the outputs).
    pub(super) fn vflat(&self) -> usize {
        self.flat() + (self.k - 1) / self.s
    }

    /// Size of a polyphase plane.
    pub(super) fn plane(&self) -> usize {
        self.s * self.s * self.rh * self.len
    }

    /// Start of row `row` of phase `(qr, qc)`.
    #[inline(always)]
    pub(super) fn phase_row(&self, qr: usize, qc: usize, row: usize) -> usize {
        ((qr * self.s + qc) * self.rh + row) * self.len
    }

    /// Offset of window row `dr` within column phase `qc`: flat outputs `o` read
    /// `tap_row(dr, qc) + o`.
    #[inline(always)]
    pub(super) fn tap_row(&self, dr: usize, qc: usize) -> usize {
        self.phase_row(dr % self.s, qc, dr / self.s)
    }

    /// Rows `[lo, hi)` of the image inside the window of output row `oh`.
    #[inline(always)]
    pub(super) fn rows(&self, oh: usize) -> (usize, usize) {
        clip(oh, self.s, self.p, self.k, self.h)
    }

    /// `1 / count^power` of every output window (count excludes padding), row-major.
    pub(super) fn inv_counts(&self, power: i32) -> Vec<f32> {
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
    pub(super) fn planes_per_task(&self) -> usize {
        (TASK_ELEMS / (self.h * self.w)).max(1)
    }

    /// Phase columns `[lo, hi)` of column phase `qc` that hold image columns, and the image
    /// column of `lo`; `s` is the stride (a constant in the specialised copies).
    #[inline(always)]
    pub(super) fn cols(&self, qc: usize, s: usize) -> (usize, usize, usize) {
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
    pub(super) fn image_row(&self, qr: usize, ir: usize, s: usize) -> Option<usize> {
        let pr = ir * s + qr;
        (pr >= self.p && pr - self.p < self.h).then(|| pr - self.p)
    }

    /// Copies plane `x` into polyphase form `dst`, padding with `fill`.
    #[inline(always)]
    pub(super) fn split(&self, x: &[f32], dst: &mut [f32], fill: f32) {
        match self.s {
            1 => self.split_strided::<1>(x, dst, fill),
            2 => self.split_strided::<2>(x, dst, fill),
            _ => self.split_strided::<0>(x, dst, fill),
        }
    }

    /// [`Geom::split`] for stride `S` (0: the run-time stride).
    #[inline(always)]
    pub(super) fn split_strided<const S: usize>(&self, x: &[f32], dst: &mut [f32], fill: f32) {
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
    pub(super) fn merge(&self, src: &[f32], x: &mut [f32]) {
        match self.s {
            1 => self.merge_strided::<1>(src, x),
            2 => self.merge_strided::<2>(src, x),
            _ => self.merge_strided::<0>(src, x),
        }
    }

    /// [`Geom::merge`] for stride `S` (0: the run-time stride).
    #[inline(always)]
    pub(super) fn merge_strided<const S: usize>(&self, src: &[f32], x: &mut [f32]) {
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
pub(super) fn clip(o: usize, s: usize, p: usize, k: usize, len: usize) -> (usize, usize) {
    let start = (o * s) as isize - p as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).max(0) as usize).min(len);
    (lo, hi)
}
