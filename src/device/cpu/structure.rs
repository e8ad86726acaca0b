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
    let (ho, wo) = (h - 1, w - 1);
    let xs = x.cpu();
    let mut out = vec![0.0f32; n * c * ho * wo];
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(p, o)| {
        let src = &xs[p * h * w..(p + 1) * h * w];
        for i in 0..ho {
            o[i * wo..(i + 1) * wo].copy_from_slice(&src[(i + 1) * w + 1..(i + 1) * w + w]);
        }
    });
    Tensor::from_vec(out, &[n, c, ho, wo])
}

pub(crate) fn shift_crop_backward(dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    let (n, c, h, w) = shape::shift_crop_backward(dy, x_shape)?;
    let (ho, wo) = (h - 1, w - 1);
    let ds = dy.cpu();
    let mut out = vec![0.0f32; n * c * h * w];
    out.par_chunks_mut(h * w).enumerate().for_each(|(p, o)| {
        let src = &ds[p * ho * wo..(p + 1) * ho * wo];
        for i in 0..ho {
            o[(i + 1) * w + 1..(i + 1) * w + w].copy_from_slice(&src[i * wo..(i + 1) * wo]);
        }
    });
    Tensor::from_vec(out, x_shape)
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
