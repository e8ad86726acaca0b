//! Channel concat/split, the shifted crop of factorized reduce and column selection.

use rayon::prelude::*;

use crate::device::shape;
use crate::error::Result;
use crate::tensor::Tensor;

pub(crate) fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    let ((n, h, w), cs) = shape::concat_channels(xs)?;
    let ctot: usize = cs.iter().sum();
    let hw = h * w;
    let mut out = vec![0.0f32; n * ctot * hw];
    out.par_chunks_mut(ctot * hw)
        .enumerate()
        .for_each(|(i, o)| {
            let mut off = 0;
            for (x, &c) in xs.iter().zip(&cs) {
                let src = &x.cpu()[i * c * hw..(i + 1) * c * hw];
                o[off..off + c * hw].copy_from_slice(src);
                off += c * hw;
            }
        });
    Tensor::from_vec(out, &[n, ctot, h, w])
}

pub(crate) fn split_channels(y: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
    let (n, c, h, w) = shape::split_channels(y, sizes)?;
    let hw = h * w;
    let ys = y.cpu();
    let mut off = 0;
    let mut outs = Vec::with_capacity(sizes.len());
    for &ci in sizes {
        let mut o = vec![0.0f32; n * ci * hw];
        o.par_chunks_mut(ci * hw).enumerate().for_each(|(i, o)| {
            let start = i * c * hw + off * hw;
            o.copy_from_slice(&ys[start..start + ci * hw]);
        });
        outs.push(Tensor::from_vec(o, &[n, ci, h, w])?);
        off += ci;
    }
    Ok(outs)
}

pub(crate) fn shift_crop(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = shape::shift_crop(x)?;
    let out = shift_planes(x.cpu(), n * c, h, w, true);
    Tensor::from_vec(out, &[n, c, h - 1, w - 1])
}

pub(crate) fn shift_crop_backward(dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    let (n, c, h, w) = shape::shift_crop_backward(dy, x_shape)?;
    let out = shift_planes(dy.cpu(), n * c, h, w, false);
    Tensor::from_vec(out, x_shape)
}

/// Copies, for each of `planes` planes, the bottom-right `(h - 1) x (w - 1)` corner of an
/// `h x w` plane: out of it into a plane of its own (`crop`), or back into a zero `h x w`
/// plane (the adjoint).
fn shift_planes(src: &[f32], planes: usize, h: usize, w: usize, crop: bool) -> Vec<f32> {
    let (ho, wo) = (h - 1, w - 1);
    let (src_len, out_len) = if crop {
        (h * w, ho * wo)
    } else {
        (ho * wo, h * w)
    };
    let mut out = vec![0.0f32; planes * out_len];
    out.par_chunks_mut(out_len).enumerate().for_each(|(p, o)| {
        let src = &src[p * src_len..(p + 1) * src_len];
        for i in 0..ho {
            let (corner, row) = (i * wo..(i + 1) * wo, (i + 1) * w + 1..(i + 1) * w + w);
            if crop {
                o[corner].copy_from_slice(&src[row]);
            } else {
                o[row].copy_from_slice(&src[corner]);
            }
        }
    });
    out
}

pub(crate) fn select_columns(x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let (n, cols) = shape::select_columns(x.shape(), idx)?;
    let xs = x.cpu();
    let mut out = Vec::with_capacity(n * idx.len());
    for row in xs.chunks(cols.max(1)).take(n) {
        out.extend(idx.iter().map(|&i| row[i]));
    }
    Tensor::from_vec(out, &[n, idx.len()])
}

/// `dx[r, idx[j]] = 0 + dy[r, j]`, zeros elsewhere (the sum into zeros, so -0 becomes +0).
pub(crate) fn select_columns_backward(dy: &Tensor, idx: &[usize], cols: usize) -> Result<Tensor> {
    let n = shape::select_columns_backward(dy.shape(), idx, cols)?;
    let (d, m) = (dy.cpu(), idx.len());
    let mut dx = vec![0f32; n * cols];
    for r in 0..n {
        for (j, &i) in idx.iter().enumerate() {
            dx[r * cols + i] += d[r * m + j];
        }
    }
    Tensor::from_vec(dx, &[n, cols])
}
