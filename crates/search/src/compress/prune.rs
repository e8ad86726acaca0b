//! Network surgery: which units a pruning decision keeps ([`Plan`], with its consequences
//! across layers), the masked network it describes ([`CompressNet::mask`]) and the
//! physically shrunk one ([`CompressNet::shrink`]), which computes exactly the same.

use std::collections::{BTreeSet, HashMap};

use bayesnas_engine::prelude::*;

use super::net::CompressNet;

/// Which units survive a pruning decision, per boundary (see [`CompressNet::plan`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub(super) alive: Vec<Vec<usize>>,
}

/// Positions of `subset` (a subsequence) inside `of`.
pub(super) fn positions(of: &[usize], subset: &[usize]) -> Vec<usize> {
    let index: HashMap<usize, usize> = of.iter().enumerate().map(|(p, &u)| (u, p)).collect();
    subset
        .iter()
        .filter_map(|u| index.get(u).copied())
        .collect()
}

/// The entries of `v` (laid out as a tensor of `shape`) at positions `rows` of dim 0 and
/// `cols` of dim 1 (all of dim 1 when `None`; a rank-1 `shape` has no dim 1).
pub(super) fn slice_rows_cols_vec<T: Copy>(
    v: &[T],
    shape: &[usize],
    rows: &[usize],
    cols: Option<&[usize]>,
) -> Vec<T> {
    let inner: usize = shape.iter().skip(2).product::<usize>().max(1);
    let n_in = shape.get(1).copied().unwrap_or(1);
    let all: Vec<usize> = (0..n_in).collect();
    let cols = cols.unwrap_or(&all);
    let mut out = Vec::with_capacity(rows.len() * cols.len() * inner);
    for &r in rows {
        for &c in cols {
            let start = (r * n_in + c) * inner;
            out.extend_from_slice(&v[start..start + inner]);
        }
    }
    out
}

/// Host copy of `t` with rows (dim 0) and columns (dim 1) picked by position.
fn slice_rows_cols(t: &Tensor, rows: &[usize], cols: Option<&[usize]>) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let out = slice_rows_cols_vec(&t.to_vec(), &shape, rows, cols);
    let mut new_shape = shape;
    new_shape[0] = rows.len();
    if let (Some(n), Some(c)) = (new_shape.get_mut(1), cols) {
        *n = c.len();
    }
    Tensor::from_vec(out, &new_shape)?.to_device(t.device())
}

impl CompressNet {
    /// The surviving units of every boundary if the groups flagged in `prune` (per layer,
    /// per group position) are removed, with the consequences propagated: a conv channel
    /// whose flattened features are all gone loses its filter, a feature whose channel is
    /// gone is gone. Never empties a layer: if every group of a layer is flagged, its group
    /// with the largest `keep_score` survives.
    pub fn plan(&self, prune: &[Vec<bool>], keep_score: &[Vec<f64>]) -> Result<Plan> {
        if prune.len() != self.layers.len() {
            return Err(Error::Invalid(format!(
                "plan: {} layers of flags for {} layers",
                prune.len(),
                self.layers.len()
            )));
        }
        let mut alive: Vec<Vec<usize>> = self.boundaries.iter().map(|b| b.alive.clone()).collect();
        for (li, flags) in prune.iter().enumerate() {
            let bi = self.grouped(li);
            let units = &self.boundaries[bi].alive;
            if flags.len() != units.len() {
                return Err(Error::Invalid(format!(
                    "plan: layer {} has {} groups, {} flags given",
                    self.layers[li].name,
                    units.len(),
                    flags.len()
                )));
            }
            let mut keep: Vec<usize> = units
                .iter()
                .zip(flags)
                .filter(|(_, &f)| !f)
                .map(|(&u, _)| u)
                .collect();
            if keep.is_empty() && !units.is_empty() {
                let scores = keep_score.get(li);
                let best = (0..units.len())
                    .max_by(|&a, &b| {
                        let s = |i: usize| scores.and_then(|s| s.get(i)).copied().unwrap_or(0.0);
                        s(a).total_cmp(&s(b))
                    })
                    .unwrap_or(0);
                keep.push(units[best]);
            }
            alive[bi] = keep;
        }
        if let Some(l) = self.link {
            let chans: BTreeSet<usize> = alive[l.channels].iter().copied().collect();
            alive[l.features].retain(|f| chans.contains(&(f / l.per)));
            let used: BTreeSet<usize> = alive[l.features].iter().map(|f| f / l.per).collect();
            alive[l.channels].retain(|c| used.contains(c));
            if alive[l.channels].is_empty() || alive[l.features].is_empty() {
                return Err(Error::Invalid(
                    "pruning would remove every unit between the conv and the fully connected layers; \
                     lower lambda or the threshold".into(),
                ));
            }
        }
        Ok(Plan { alive })
    }

    /// Zeroes, in place and without changing shapes, every weight and bias the plan
    /// removes: the masked network that [`CompressNet::shrink`] reproduces exactly.
    pub fn mask(&self, store: &mut ParamStore, plan: &Plan) -> Result<()> {
        for layer in &self.layers {
            let outs = &self.boundaries[layer.output].alive;
            let ins = &self.boundaries[layer.input].alive;
            let keep_out: Vec<bool> = outs
                .iter()
                .map(|u| plan.alive[layer.output].contains(u))
                .collect();
            let keep_in: Vec<bool> = ins
                .iter()
                .map(|u| plan.alive[layer.input].contains(u))
                .collect();
            let w = store.value(layer.weight);
            let shape = w.shape().to_vec();
            let inner: usize = shape[2..].iter().product::<usize>().max(1);
            let (n_out, n_in) = (shape[0], shape[1]);
            let mut v = w.to_vec();
            for (o, &ko) in keep_out.iter().enumerate().take(n_out) {
                for (i, &ki) in keep_in.iter().enumerate().take(n_in) {
                    if !(ko && ki) {
                        let s = (o * n_in + i) * inner;
                        v[s..s + inner].fill(0.0);
                    }
                }
            }
            let dev = w.device();
            *store.value_mut(layer.weight) = Tensor::from_vec(v, &shape)?.to_device(dev)?;
            let bias = store.value(layer.bias);
            let mut bv = bias.to_vec();
            for (o, k) in keep_out.iter().enumerate() {
                if !k {
                    bv[o] = 0.0;
                }
            }
            let bdev = bias.device();
            *store.value_mut(layer.bias) = Tensor::from_vec(bv, &[n_out])?.to_device(bdev)?;
        }
        Ok(())
    }

    /// Physically removes what the plan removes: every layer's tensors (values and
    /// momenta) are cut to the surviving rows and columns. Parameter ids are kept.
    pub fn shrink(&mut self, store: &mut ParamStore, plan: &Plan) -> Result<()> {
        for (layer, (rows, cols)) in self.layers.iter().zip(self.cuts(plan)) {
            for id in [layer.weight, layer.bias] {
                let is_weight = id == layer.weight;
                let p = store.get_mut(id);
                let c = if is_weight {
                    Some(cols.as_slice())
                } else {
                    None
                };
                p.value = slice_rows_cols(&p.value, &rows, c)?;
                p.momentum = slice_rows_cols(&p.momentum, &rows, c)?;
                p.grad = Tensor::zeros(p.value.shape(), p.value.device())?;
                p.curvature = Tensor::zeros(p.value.shape(), p.value.device())?;
            }
        }
        for (b, a) in self.boundaries.iter_mut().zip(&plan.alive) {
            b.alive = a.clone();
        }
        Ok(())
    }

    /// Per layer, the positions of the output rows and input columns that `plan` keeps.
    pub(super) fn cuts(&self, plan: &Plan) -> Vec<(Vec<usize>, Vec<usize>)> {
        self.layers
            .iter()
            .map(|l| {
                (
                    positions(&self.boundaries[l.output].alive, &plan.alive[l.output]),
                    positions(&self.boundaries[l.input].alive, &plan.alive[l.input]),
                )
            })
            .collect()
    }
}
