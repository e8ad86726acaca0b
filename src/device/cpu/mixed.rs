//! The fused mixed-op node `y = s0 * sum_k s_k x_k` of the supernet.
//!
//! One pass over the K branch outputs computes the output; one pass computes every branch
//! gradient and all per-sample switch reductions; one pass computes every curvature.

use rayon::prelude::*;

use crate::device::shape;
use crate::error::Result;
use crate::tensor::Tensor;

pub(crate) fn forward(xs: &[&Tensor], s0: &Tensor, s: &Tensor) -> Result<Tensor> {
    let (_, per) = shape::mixed_shapes(xs, s0, s)?;
    let s0v = s0.cpu()[0];
    let coef: Vec<f32> = s.cpu().iter().map(|&sk| s0v * sk).collect();
    let mut out = vec![0.0f32; xs[0].numel()];
    out.par_chunks_mut(per).enumerate().for_each(|(n, o)| {
        let r = n * per..(n + 1) * per;
        for (k, x) in xs.iter().enumerate() {
            let (c, xk) = (coef[k], &x.cpu()[r.clone()]);
            o.iter_mut().zip(xk).for_each(|(o, &v)| *o += c * v);
        }
    });
    Tensor::from_vec(out, xs[0].shape())
}

pub(crate) fn backward(
    xs: &[&Tensor],
    dy: &Tensor,
    s0: &Tensor,
    s: &Tensor,
) -> Result<(Vec<Tensor>, Tensor)> {
    let (n, per) = shape::mixed_seed("mixed op dy", xs, s0, s, dy)?;
    let k = xs.len();
    let s0v = s0.cpu()[0];
    let coef: Vec<f32> = s.cpu().iter().map(|&sk| s0v * sk).collect();
    let mut dxs: Vec<Vec<f32>> = (0..k).map(|_| vec![0.0f32; n * per]).collect();
    // Split every branch gradient by sample so one task owns sample n of all K outputs.
    let mut per_sample: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::with_capacity(k)).collect();
    for dx in dxs.iter_mut() {
        for (i, chunk) in dx.chunks_mut(per).enumerate() {
            per_sample[i].push(chunk);
        }
    }
    let dys = dy.cpu();
    let red: Vec<f32> = per_sample
        .into_par_iter()
        .enumerate()
        .flat_map_iter(|(i, mut outs)| {
            let d = &dys[i * per..(i + 1) * per];
            let mut r = vec![0.0f32; k];
            for (kk, out) in outs.iter_mut().enumerate() {
                let x = &xs[kk].cpu()[i * per..(i + 1) * per];
                let c = coef[kk];
                let mut acc = 0.0f64;
                for ((o, &dv), &xv) in out.iter_mut().zip(d).zip(x) {
                    *o = c * dv;
                    acc += (xv * dv) as f64;
                }
                r[kk] = acc as f32;
            }
            r
        })
        .collect();
    let shape = xs[0].shape().to_vec();
    let dxs = dxs
        .into_iter()
        .map(|v| Tensor::from_vec(v, &shape))
        .collect::<Result<Vec<_>>>()?;
    Ok((dxs, Tensor::from_vec(red, &[n, k])?))
}

pub(crate) fn curvature(
    xs: &[&Tensor],
    hy: &Tensor,
    s0: &Tensor,
    s: &Tensor,
) -> Result<(Vec<Tensor>, Tensor, Tensor)> {
    let (n, per) = shape::mixed_seed("mixed op hy", xs, s0, s, hy)?;
    let k = xs.len();
    let s0v = s0.cpu()[0];
    let sv = s.cpu().to_vec();
    let hs = hy.cpu();
    let mut hxs: Vec<Vec<f32>> = (0..k).map(|_| vec![0.0f32; n * per]).collect();
    let mut per_sample: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::with_capacity(k)).collect();
    for hx in hxs.iter_mut() {
        for (i, chunk) in hx.chunks_mut(per).enumerate() {
            per_sample[i].push(chunk);
        }
    }
    // Per sample: [h_s[0..k], h_s0] partial sums.
    let partials: Vec<Vec<f64>> = per_sample
        .into_par_iter()
        .enumerate()
        .map(|(i, mut outs)| {
            let r = i * per..(i + 1) * per;
            let h = &hs[r.clone()];
            let mut acc = vec![0.0f64; k + 1];
            for (kk, out) in outs.iter_mut().enumerate() {
                let c2 = (s0v * sv[kk]) * (s0v * sv[kk]);
                let x = &xs[kk].cpu()[r.clone()];
                let mut a = 0.0f64;
                for ((o, &hv), &xv) in out.iter_mut().zip(h).zip(x) {
                    *o = c2 * hv;
                    a += (xv * xv * hv) as f64;
                }
                acc[kk] = a * (s0v * s0v) as f64;
            }
            // z = sum_k s_k x_k, elementwise, for the parent switch (vectorised per branch).
            let mut z = vec![0.0f32; per];
            for (kk, x) in xs.iter().enumerate() {
                let xk = &x.cpu()[r.clone()];
                let c = sv[kk];
                z.iter_mut().zip(xk).for_each(|(z, &v)| *z += c * v);
            }
            let a0: f64 = z.iter().zip(h).map(|(&z, &hv)| (z * z * hv) as f64).sum();
            acc[k] = a0;
            acc
        })
        .collect();
    let mut tot = vec![0.0f64; k + 1];
    for p in &partials {
        for (t, v) in tot.iter_mut().zip(p) {
            *t += v;
        }
    }
    let shape = xs[0].shape().to_vec();
    let hxs = hxs
        .into_iter()
        .map(|v| Tensor::from_vec(v, &shape))
        .collect::<Result<Vec<_>>>()?;
    let h_s = Tensor::from_vec(tot[..k].iter().map(|&v| v as f32).collect(), &[k])?;
    let h_s0 = Tensor::from_vec(vec![tot[k] as f32], &[1])?;
    Ok((hxs, h_s, h_s0))
}

/// `ds[k] = s0 * sum_n r[n, k]`, `ds0 = sum_k s[k] * sum_n r[n, k]` (f64, `n` then `k` in
/// order).
pub(crate) fn switch_grads(r: &Tensor, s0: &Tensor, s: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, k) = shape::mixed_switch_grads(r, s0, s)?;
    let (s0v, sv) = (s0.cpu()[0] as f64, s.cpu());
    let mut tot = vec![0.0f64; k];
    if k > 0 {
        for row in r.cpu().chunks(k) {
            for (t, &v) in tot.iter_mut().zip(row) {
                *t += v as f64;
            }
        }
    }
    let ds: Vec<f32> = tot.iter().map(|&t| (s0v * t) as f32).collect();
    let ds0: f64 = tot.iter().zip(sv).map(|(&t, &s)| t * s as f64).sum();
    Ok((
        Tensor::from_vec(ds, &[k])?,
        Tensor::from_vec(vec![ds0 as f32], &[1])?,
    ))
}
