//! Elementwise maps and deterministic reductions.

use rayon::prelude::*;

use super::REDUCE_CHUNK;
use crate::device::{same_shape, shape, Binary, Unary};
use crate::error::Result;
use crate::tensor::Tensor;

/// Elements per parallel piece of an elementwise map: small arrays stay on one thread.
const MAP_CHUNK: usize = 1 << 15;

pub(crate) fn unary(x: &Tensor, op: Unary) -> Tensor {
    let xs = x.cpu();
    let mut out = vec![0.0f32; xs.len()];
    out.par_chunks_mut(MAP_CHUNK)
        .zip(xs.par_chunks(MAP_CHUNK))
        .for_each(|(o, i)| match op {
            Unary::Relu => o.iter_mut().zip(i).for_each(|(o, &v)| *o = v.max(0.0)),
            Unary::Square => o.iter_mut().zip(i).for_each(|(o, &v)| *o = v * v),
            Unary::Scale(s) => o.iter_mut().zip(i).for_each(|(o, &v)| *o = v * s),
        });
    Tensor::from_vec(out, x.shape()).expect("same length")
}

pub(crate) fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    same_shape("binary", a, b)?;
    let (av, bv) = (a.cpu(), b.cpu());
    let mut out = vec![0.0f32; av.len()];
    out.par_chunks_mut(MAP_CHUNK)
        .zip(av.par_chunks(MAP_CHUNK).zip(bv.par_chunks(MAP_CHUNK)))
        .for_each(|(o, (a, b))| {
            let it = o.iter_mut().zip(a.iter().zip(b));
            match op {
                Binary::Add => it.for_each(|(o, (&a, &b))| *o = a + b),
                Binary::Sub => it.for_each(|(o, (&a, &b))| *o = a - b),
                Binary::Mul => it.for_each(|(o, (&a, &b))| *o = a * b),
                Binary::ReluMask => it.for_each(|(o, (&a, &b))| *o = if a > 0.0 { b } else { 0.0 }),
            }
        });
    Tensor::from_vec(out, a.shape())
}

pub(crate) fn axpy(alpha: f32, x: &Tensor, y: &mut Tensor) -> Result<()> {
    same_shape("axpy", y, x)?;
    let xs = x.cpu();
    y.cpu_mut()
        .par_chunks_mut(MAP_CHUNK)
        .zip(xs.par_chunks(MAP_CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x));
    Ok(())
}

/// `y += xs[0] + xs[1] + ...` in order, in f32 (`Backend::add_into`).
pub(crate) fn add_into(y: &mut Tensor, xs: &[&Tensor]) -> Result<()> {
    for x in xs {
        same_shape("add_into", y, x)?;
    }
    let xs: Vec<&[f32]> = xs.iter().map(|x| x.cpu()).collect();
    if xs.is_empty() {
        return Ok(());
    }
    y.cpu_mut()
        .par_chunks_mut(MAP_CHUNK)
        .enumerate()
        .for_each(|(c, y)| {
            let at = c * MAP_CHUNK;
            for x in &xs {
                let x = &x[at..at + y.len()];
                y.iter_mut().zip(x).for_each(|(y, &x)| *y += x);
            }
        });
    Ok(())
}

/// Sum in f64 over fixed pieces, combined in order.
pub(crate) fn sum_all(x: &[f32]) -> f64 {
    let partials: Vec<f64> = x
        .par_chunks(REDUCE_CHUNK)
        .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
        .collect();
    partials.iter().sum()
}

pub(crate) fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    same_shape("dot", a, b)?;
    let partials: Vec<f64> = a
        .cpu()
        .par_chunks(REDUCE_CHUNK)
        .zip(b.cpu().par_chunks(REDUCE_CHUNK))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
        })
        .collect();
    Ok(partials.iter().sum())
}

pub(crate) fn scale_samples(x: &Tensor, scale: &[f32]) -> Result<Tensor> {
    let n = shape::scale_samples(x, scale)?;
    let per = x.numel() / n;
    let mut out = x.cpu().to_vec();
    out.par_chunks_mut(per)
        .zip(scale.par_iter())
        .for_each(|(o, &s)| o.iter_mut().for_each(|v| *v *= s));
    Tensor::from_vec(out, x.shape())
}
