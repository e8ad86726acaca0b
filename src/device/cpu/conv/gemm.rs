//! The GEMM kernels (dense, pointwise, grouped): `Y = W col(X)` per sample and group.

use super::*;

/// At most this many per-chunk partial weight gradients (bounds their memory); the chunks
/// depend on the batch size only, never on the number of threads.
pub(super) const MAX_WEIGHT_PARTIALS: usize = 32;

/// Whether a per-image GEMM should itself use the pool (when there are fewer images than
/// threads). `gemm` splits over output blocks only, so this does not change any result.
pub(super) fn inner_parallel(tasks: usize) -> bool {
    tasks < rayon::current_num_threads()
}

/// `col[(ci * k + kh) * k + kw][oh * wo + ow] = x[ci][oh s + kh d - p][ow s + kw d - p]`,
/// zero outside the input. `x` holds the group's `c_in / groups` planes. With `square`, the
/// copied values are squared (`col(X (.) X)`).
pub(super) fn im2col(g: &Geom, x: &[f32], col: &mut [f32], square: bool) {
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
pub(super) fn col2im_add(g: &Geom, col: &[f32], x: &mut [f32]) {
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

pub(super) fn gemm_forward(g: &Geom, x: &[f32], w: &[f32], y: &mut [MaybeUninit<f32>]) {
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

pub(super) fn gemm_backward_input(g: &Geom, dy: &[f32], w: &[f32], dx: &mut [MaybeUninit<f32>]) {
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
pub(super) fn gemm_backward_weight(g: &Geom, x: &[f32], dy: &[f32], square: bool) -> Vec<f32> {
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
