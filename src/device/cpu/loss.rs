//! Softmax cross-entropy.

use rayon::prelude::*;

use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;

pub(crate) fn softmax_cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<(Tensor, f32)> {
    let (b, k) = match *logits.shape() {
        [b, k] => (b, k),
        _ => return shape_err("softmax_cross_entropy", "[B, K] logits", logits.shape()),
    };
    if labels.len() != b {
        return shape_err(
            "softmax_cross_entropy labels",
            format!("[{b}]"),
            &[labels.len()],
        );
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(Error::Invalid(format!(
            "softmax_cross_entropy: label {bad} out of range for {k} classes"
        )));
    }
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
