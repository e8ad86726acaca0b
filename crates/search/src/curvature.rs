//! Estimators of the switch curvature `h` that the closed-form update needs (method note
//! section 6), for the ablation in docs/search-quality.md.
//!
//! * [`CurvatureEstimator::Recursion`]: the engine's diagonal back-propagation
//!   ([`Tape::curvature_backward`]), the method note's choice.
//! * [`CurvatureEstimator::McFisher`]: Monte-Carlo Fisher. One label per image is drawn from
//!   the model's own softmax, one extra backward pass of the cross-entropy to those labels
//!   gives per-sample switch gradients `g_n` (from the per-sample reductions the mixed op
//!   records), and `h = (1/B) sum_n g_n^2`. Unbiased for the GGN diagonal when the per-sample
//!   gradients are exact.
//! * [`CurvatureEstimator::Ggn`]: the generalised Gauss-Newton diagonal
//!   `h = (1/B) sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n`, with the rows `J_n[c] = d logit_nc /
//!   d s` from one backward pass per class (seed: a one-hot column of the logits).
//!
//! In both sample-based estimators the per-sample switch gradient of image `n` is read from
//! the mixed op's reduction `r[n, k] = sum(x_k dy)` over that image's positions: `s0 r[n, k]`
//! for child switch `k`, `sum_k s_k r[n, k]` for the parent. Train-mode batch norm couples the
//! images of a batch, so this is the image's share of the batch gradient rather than its own
//! gradient (the same approximation the recursion makes by treating BN as affine).

use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

/// How the switch curvature is estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurvatureEstimator {
    /// The diagonal recursion of the engine (method note).
    #[default]
    Recursion,
    /// Monte-Carlo Fisher with labels sampled from the model (one extra backward pass).
    McFisher,
    /// The exact per-switch Gauss-Newton diagonal from one backward pass per class.
    Ggn,
}

/// Curvature of one switch tensor (`s`: `[K]`, or `s0`: `[1]`).
pub type SwitchCurvature = (ParamId, Vec<f64>);

fn softmax_rows(logits: &Tensor) -> Result<(usize, usize, Vec<f64>)> {
    let shape = logits.shape();
    if shape.len() != 2 {
        return Err(Error::Invalid(format!(
            "switch curvature: logits must be [B, classes], got {shape:?}"
        )));
    }
    let (b, c) = (shape[0], shape[1]);
    let v = logits.try_to_vec()?;
    let mut p = vec![0.0f64; b * c];
    for n in 0..b {
        let row = &v[n * c..(n + 1) * c];
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
        for j in 0..c {
            p[n * c + j] = (row[j] as f64 - m).exp() / z;
        }
    }
    Ok((b, c, p))
}

/// One mixed-op node: its switch params and values.
struct Node {
    s: ParamId,
    s0: ParamId,
    sv: Vec<f64>,
}

/// Per-sample switch gradients of one backward pass: per node `[N][K + 1]` (children, then
/// the parent).
fn per_sample_switch_grads(tape: &Tape, grads: &Gradients) -> Result<Vec<(Node, Vec<f64>)>> {
    let mut out = Vec::new();
    for (var, r) in grads.per_sample_all() {
        let inputs = tape.inputs_of(var);
        let (n, k) = match r.shape() {
            [n, k] => (*n, *k),
            other => {
                return Err(Error::Invalid(format!(
                    "switch curvature: per-sample reduction of shape {other:?}"
                )))
            }
        };
        if inputs.len() != k + 2 {
            continue; // not a mixed-op node
        }
        let (Some(s), Some(s0)) = (tape.param_of(inputs[k]), tape.param_of(inputs[k + 1])) else {
            continue; // switches that are not parameters (a constant parent)
        };
        let sv: Vec<f64> = tape
            .value(inputs[k])
            .try_to_vec()?
            .into_iter()
            .map(f64::from)
            .collect();
        let s0v = tape.value(inputs[k + 1]).try_to_vec()?[0] as f64;
        let rv = r.try_to_vec()?;
        let mut g = vec![0.0f64; n * (k + 1)];
        for i in 0..n {
            let row = &rv[i * k..(i + 1) * k];
            let mut parent = 0.0;
            for j in 0..k {
                g[i * (k + 1) + j] = s0v * row[j] as f64;
                parent += sv[j] * row[j] as f64;
            }
            g[i * (k + 1) + k] = parent;
        }
        out.push((Node { s, s0, sv }, g));
    }
    Ok(out)
}

fn split(node: &Node, h: Vec<f64>) -> [SwitchCurvature; 2] {
    let k = node.sv.len();
    [(node.s, h[..k].to_vec()), (node.s0, vec![h[k]])]
}

/// The diagonal curvature of the batch-mean cross-entropy at `logits` with respect to every
/// switch on `tape`, by `estimator` (which must not be [`CurvatureEstimator::Recursion`]: that
/// one is [`Tape::curvature_backward`]). `rng` draws the MC-Fisher labels.
pub fn switch_curvature(
    tape: &Tape,
    logits: Var,
    estimator: CurvatureEstimator,
    rng: &mut Rng,
) -> Result<Vec<SwitchCurvature>> {
    let lv = tape.value(logits);
    let device = lv.device();
    let (b, c, p) = softmax_rows(lv)?;
    let upload = |v: Vec<f32>| -> Result<Tensor> {
        let t = Tensor::from_vec(v, &[b, c])?;
        if device == Device::Cpu {
            Ok(t)
        } else {
            t.to_device(device)
        }
    };
    let mut out = Vec::new();
    match estimator {
        CurvatureEstimator::Recursion => {
            return Err(Error::Invalid(
                "switch_curvature: the recursion is Tape::curvature_backward".into(),
            ))
        }
        CurvatureEstimator::McFisher => {
            // seed = d mean CE(sampled labels) / d logits = (p - onehot(y)) / B
            let mut seed = vec![0.0f32; b * c];
            for n in 0..b {
                let u = rng.uniform();
                let mut acc = 0.0;
                let mut y = c - 1;
                for j in 0..c {
                    acc += p[n * c + j];
                    if u < acc {
                        y = j;
                        break;
                    }
                }
                for j in 0..c {
                    let onehot = if j == y { 1.0 } else { 0.0 };
                    seed[n * c + j] = ((p[n * c + j] - onehot) / b as f64) as f32;
                }
            }
            let grads = tape.backward_seeded(logits, upload(seed)?)?;
            for (node, g) in per_sample_switch_grads(tape, &grads)? {
                let k1 = node.sv.len() + 1;
                // per-image gradient of its own loss is B times its share of the mean's
                let mut h = vec![0.0f64; k1];
                for i in 0..b {
                    for j in 0..k1 {
                        let gi = b as f64 * g[i * k1 + j];
                        h[j] += gi * gi / b as f64;
                    }
                }
                out.extend(split(&node, h));
            }
        }
        CurvatureEstimator::Ggn => {
            // J[class][node] = per-sample rows
            let mut nodes: Vec<Node> = Vec::new();
            let mut jac: Vec<Vec<Vec<f64>>> = Vec::new();
            for class in 0..c {
                let mut seed = vec![0.0f32; b * c];
                for n in 0..b {
                    seed[n * c + class] = 1.0;
                }
                let grads = tape.backward_seeded(logits, upload(seed)?)?;
                let rows = per_sample_switch_grads(tape, &grads)?;
                if class == 0 {
                    jac = vec![Vec::new(); rows.len()];
                    nodes = Vec::with_capacity(rows.len());
                }
                if rows.len() != jac.len() {
                    return Err(Error::Invalid(
                        "switch curvature: mixed nodes differ between passes".into(),
                    ));
                }
                for (i, (node, g)) in rows.into_iter().enumerate() {
                    jac[i].push(g);
                    if class == 0 {
                        nodes.push(node);
                    }
                }
            }
            for (node, per_class) in nodes.iter().zip(&jac) {
                let k1 = node.sv.len() + 1;
                let mut h = vec![0.0f64; k1];
                for n in 0..b {
                    for j in 0..k1 {
                        let (mut first, mut second) = (0.0f64, 0.0f64);
                        for (class, g) in per_class.iter().enumerate() {
                            let jc = g[n * k1 + j];
                            let pc = p[n * c + class];
                            first += pc * jc * jc;
                            second += pc * jc;
                        }
                        h[j] += (first - second * second) / b as f64;
                    }
                }
                out.extend(split(node, h));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny switch network: x -> two branches (linear maps) -> mixed -> linear -> logits.
    /// Without batch norm the per-sample reductions are exact per-sample gradients, so both
    /// estimators can be checked against an f64 computation by finite differences.
    fn net(
        x: &[f32],
        b: usize,
        w: &[Vec<f32>],
        sv: &[f32],
        s0v: f32,
    ) -> (Tape, Var, ParamId, ParamId) {
        let mut store = ParamStore::new();
        let s = store
            .add(
                "s",
                "switches",
                Tensor::from_vec(sv.to_vec(), &[2]).unwrap(),
            )
            .unwrap();
        let s0 = store
            .add("s0", "switches", Tensor::from_vec(vec![s0v], &[1]).unwrap())
            .unwrap();
        let mut t = Tape::new();
        let xv = t.input(Tensor::from_vec(x.to_vec(), &[b, 3]).unwrap());
        let a = t.input(Tensor::from_vec(w[0].clone(), &[4, 3]).unwrap());
        let bb = t.input(Tensor::from_vec(w[1].clone(), &[4, 3]).unwrap());
        let head = t.input(Tensor::from_vec(w[2].clone(), &[3, 4]).unwrap());
        let y1 = t.linear(xv, a, None).unwrap();
        let y2 = t.linear(xv, bb, None).unwrap();
        let y1 = t.relu(y1).unwrap();
        let (sp, s0p) = (t.param(&store, s), t.param(&store, s0));
        let m = t.mixed(&[y1, y2], sp, s0p).unwrap();
        let logits = t.linear(m, head, None).unwrap();
        (t, logits, s, s0)
    }

    fn logits_f64(x: &[f32], b: usize, w: &[Vec<f32>], sw: [f64; 3]) -> Vec<f64> {
        let lin = |m: &[f32], rows: usize, cols: usize, v: &[f64]| -> Vec<f64> {
            (0..rows)
                .map(|r| (0..cols).map(|c| m[r * cols + c] as f64 * v[c]).sum())
                .collect()
        };
        let mut out = Vec::new();
        for n in 0..b {
            let xn: Vec<f64> = x[n * 3..n * 3 + 3].iter().map(|&v| v as f64).collect();
            let y1: Vec<f64> = lin(&w[0], 4, 3, &xn)
                .into_iter()
                .map(|v| v.max(0.0))
                .collect();
            let y2 = lin(&w[1], 4, 3, &xn);
            let m: Vec<f64> = (0..4)
                .map(|i| sw[2] * (sw[0] * y1[i] + sw[1] * y2[i]))
                .collect();
            out.extend(lin(&w[2], 3, 4, &m));
        }
        out
    }

    #[test]
    fn ggn_and_mc_fisher_match_the_f64_gauss_newton_diagonal() {
        let mut rng = Rng::new(11);
        let b = 5;
        let x = Tensor::randn(&[b, 3], 1.0, &mut rng).into_vec();
        let w: Vec<Vec<f32>> = [12, 12, 12]
            .iter()
            .map(|&n| Tensor::randn(&[n], 0.7, &mut rng).into_vec())
            .collect();
        let (sv, s0v) = ([0.8f32, 1.3], 0.9f32);
        let (tape, logits, s, s0) = net(&x, b, &w, &sv, s0v);

        // reference: J by central differences in f64, G = (1/B) sum_n J^T (diag p - p p^T) J
        let base = [sv[0] as f64, sv[1] as f64, s0v as f64];
        let z = logits_f64(&x, b, &w, base);
        let p: Vec<f64> = (0..b)
            .flat_map(|n| {
                let row = &z[n * 3..n * 3 + 3];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
                let t: f64 = e.iter().sum();
                e.into_iter().map(move |v| v / t)
            })
            .collect();
        let mut want = [0.0f64; 3];
        for (i, w_i) in want.iter_mut().enumerate() {
            let eps = 1e-6;
            let (mut up, mut dn) = (base, base);
            up[i] += eps;
            dn[i] -= eps;
            let (zu, zd) = (logits_f64(&x, b, &w, up), logits_f64(&x, b, &w, dn));
            for n in 0..b {
                let j: Vec<f64> = (0..3)
                    .map(|c| (zu[n * 3 + c] - zd[n * 3 + c]) / (2.0 * eps))
                    .collect();
                let first: f64 = (0..3).map(|c| p[n * 3 + c] * j[c] * j[c]).sum();
                let second: f64 = (0..3).map(|c| p[n * 3 + c] * j[c]).sum();
                *w_i += (first - second * second) / b as f64;
            }
        }
        assert!(want.iter().all(|&v| v > 1e-4), "{want:?}");

        let got = switch_curvature(&tape, logits, CurvatureEstimator::Ggn, &mut rng).unwrap();
        let find = |got: &[SwitchCurvature], id: ParamId| {
            got.iter().find(|(p, _)| *p == id).unwrap().1.clone()
        };
        let (hs, hs0) = (find(&got, s), find(&got, s0));
        for (g, w) in [(hs[0], want[0]), (hs[1], want[1]), (hs0[0], want[2])] {
            assert!((g - w).abs() <= 1e-4 * w.abs() + 1e-7, "GGN {g} vs {w}");
        }

        // MC-Fisher is unbiased: its average over many draws approaches the GGN.
        let mut avg = [0.0f64; 3];
        let draws = 4000;
        for _ in 0..draws {
            let h =
                switch_curvature(&tape, logits, CurvatureEstimator::McFisher, &mut rng).unwrap();
            let (a, c) = (find(&h, s), find(&h, s0));
            for (acc, v) in avg.iter_mut().zip([a[0], a[1], c[0]]) {
                *acc += v / draws as f64;
            }
        }
        for (g, w) in avg.iter().zip(want) {
            assert!((g - w).abs() <= 0.08 * w, "MC-Fisher mean {g} vs {w}");
        }
        assert!(switch_curvature(&tape, logits, CurvatureEstimator::Recursion, &mut rng).is_err());
    }
}
