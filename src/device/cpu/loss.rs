//! Softmax cross-entropy.

use rayon::prelude::*;

use crate::device::shape;
use crate::error::Result;
use crate::tensor::Tensor;

pub(crate) fn softmax_cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<(Tensor, f32)> {
    let (b, k) = shape::rows("softmax_cross_entropy", logits, Some(labels))?;
    let z = logits.cpu();
    let mut probs = vec![0.0f32; b * k];
    let nll: Vec<f64> = probs
        .par_chunks_mut(k)
        .enumerate()
        .map(|(i, p)| {
            let row = &z[i * k..(i + 1) * k];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for (p, &v) in p.iter_mut().zip(row) {
                let e = ((v - m) as f64).exp();
                *p = e as f32;
                sum += e;
            }
            for p in p.iter_mut() {
                *p = (*p as f64 / sum) as f32;
            }
            // -log softmax = log(sum) + m - z_y, computed stably.
            sum.ln() + (m - row[labels[i] as usize]) as f64
        })
        .collect();
    let loss = (nll.iter().sum::<f64>() / b as f64) as f32;
    Ok((Tensor::from_vec(probs, &[b, k])?, loss))
}

/// `(probs - onehot(labels)) / B`.
pub(crate) fn softmax_cross_entropy_backward(probs: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let (b, k) = shape::rows("softmax_cross_entropy_backward", probs, Some(labels))?;
    let inv_b = 1.0f32 / b as f32;
    let mut d = probs.cpu().to_vec();
    d.par_chunks_mut(k.max(1))
        .zip(labels)
        .for_each(|(row, &l)| {
            for (j, v) in row.iter_mut().enumerate() {
                let t = if j == l as usize { 1.0 } else { 0.0 };
                *v = (*v - t) * inv_b;
            }
        });
    Tensor::from_vec(d, &[b, k])
}

/// `(p - p^2) / B`.
pub(crate) fn softmax_cross_entropy_curvature(probs: &Tensor) -> Result<Tensor> {
    let (b, k) = shape::rows("softmax_cross_entropy_curvature", probs, None)?;
    let inv_b = 1.0f32 / b as f32;
    let mut h = probs.cpu().to_vec();
    h.par_iter_mut().for_each(|q| *q = (*q - *q * *q) * inv_b);
    Tensor::from_vec(h, &[b, k])
}

/// Rows whose first largest logit is at the label.
pub(crate) fn count_correct(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    let (b, k) = shape::rows("count_correct", logits, Some(labels))?;
    let z = logits.cpu();
    let mut n = 0usize;
    for (r, &label) in labels.iter().enumerate().take(b) {
        let row = &z[r * k..(r + 1) * k];
        let mut best = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = j;
            }
        }
        if best == label as usize {
            n += 1;
        }
    }
    Tensor::from_vec(vec![n as f32], &[1])
}
