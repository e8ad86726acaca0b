//! Structured Bayesian compression of plain networks with the BayesNAS machinery (method
//! note, section 10).
//!
//! Models (MNIST, ReLU after every hidden layer):
//! * `lenet-300-100`: fc 784 -> 300 -> 100 -> 10.
//! * `lenet5` (LeNet-5-Caffe): conv 20@5x5 (no padding) -> max pool 2 -> conv 50@5x5 ->
//!   max pool 2 -> fc 800 -> 500 -> fc 500 -> 10.
//!
//! Groups: every input neuron of a fully connected layer (a column of `W`) and every filter
//! (output channel) of a conv layer. The objective is the data loss plus the reweighted group
//! lasso `sum_g lambda omega_g ||w_g||_2`. After each loop of training, the curvature `h` of
//! every weight (the engine's diagonal curvature pass, `hW = x^2 (.) hy`, averaged over the
//! last K batches) gives the closed-form update of section 5 with `w` in place of the
//! switches: `H = h / lambda`, `omega_g = sqrt(sum_i H_i / (1 + gamma_g H_i))`,
//! `gamma_g = ||w_g|| / omega_g`. Groups whose `gamma_g` falls under a threshold are pruned
//! ("dynamic pruning"): the network is physically shrunk at once, so later loops train a
//! smaller, faster network. A pruned filter takes its bias with it, a pruned input neuron
//! the unit that produced it (its row of the previous layer), a conv channel whose flattened
//! features were all pruned its filter, so the pruned network computes exactly what the
//! unpruned network computes with those weights masked to zero ([`CompressNet::mask`] vs
//! [`CompressNet::shrink`]).
//!
//! The penalty is applied either as a proximal step after each SGD step (group soft
//! thresholding, `w_g <- w_g max(0, 1 - lr lambda omega_g / ||w_g||)`: stable for any
//! `omega`, and it makes groups exactly zero) or as its gradient added to the weight
//! gradients (as the search does for switches).
//!
//! # Weight-level phase (optional)
//! After the group loops, [`Compressor::begin_weight_phase`] gives every surviving weight its
//! own `gamma` and `omega` and repeats the same loop with groups of one weight (penalty
//! `sum_i lambda_w omega_i |w_i|`, soft thresholding of single weights, the same closed-form
//! update): weights whose `gamma` collapses are held at zero from then on (the fine-tune
//! included), and a unit left without any weight (a filter or input column all zero, a conv
//! channel that no filter of the next conv layer reads) is removed as in the group loops.
//! The surviving structure only shrinks; the non-zero count drops inside the kept tensors.
//!
//! # Surviving structure
//! `lenet-300-100`: the surviving input neurons of fc1, fc2, fc3 (`784-300-100 -> a-b-c`).
//! `lenet5`: surviving filters of conv1 and conv2 and surviving inputs of fc1 and fc2
//! (`20-50-800-500 -> a-b-c-d`).
//!
//! # Pruned model file
//! F32 tensors: `{layer}.weight` (`conv1`, `conv2`: `[out, in, 5, 5]`; `fc1`.. : `[out, in]`)
//! and `{layer}.bias` of the shrunk layers (after a weight-level phase, pruned single
//! weights are zeros inside them); `kept.{boundary}` the original indices of the
//! surviving units of each boundary (`input`, `conv1`, `conv2`, `fc1_in`, `fc1`, ... as
//! floats); and `{fc}.input_index` for a fully connected layer whose input must be gathered
//! from the flattened previous output: PyTorch's `x.flatten(1)[:, input_index.long()]`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use bayesnas_engine::ard;
use bayesnas_engine::io::save_store;
use bayesnas_engine::prelude::*;
use bayesnas_engine::tape::{Op as TapeOp, OpCtx};
use serde::{Deserialize, Serialize};

use super::{argmax_rows, flatten, move_store};

/// Optimiser group of the compressed networks' weights and biases.
pub const WEIGHTS: &str = "weights";

/// The networks `bayesnas compress` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Model {
    /// LeNet-300-100: fc 784-300-100-10.
    #[serde(rename = "lenet-300-100")]
    Lenet300100,
    /// LeNet-5-Caffe: conv 20, conv 50, fc 500, fc 10.
    #[serde(rename = "lenet5")]
    Lenet5,
}

impl Model {
    /// Every model.
    pub const ALL: [Model; 2] = [Model::Lenet300100, Model::Lenet5];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Model::Lenet300100 => "lenet-300-100",
            Model::Lenet5 => "lenet5",
        }
    }

    /// The structure before compression (what [`CompressNet::structure`] counts).
    pub fn original_structure(self) -> Vec<usize> {
        match self {
            Model::Lenet300100 => vec![784, 300, 100],
            Model::Lenet5 => vec![20, 50, 800, 500],
        }
    }

    /// Louizos et al. (2017), Bayesian Compression: (method, structure, test error %,
    /// non-zero weights %).
    pub fn reference(self) -> (&'static str, Vec<usize>, f64, f64) {
        match self {
            Model::Lenet300100 => ("BC-GNJ", vec![278, 98, 13], 1.8, 10.8),
            Model::Lenet5 => ("BC-GHS", vec![5, 10, 76, 16], 1.0, 0.6),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = Error;
    fn from_str(s: &str) -> Result<Model> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown model '{s}' (valid: lenet-300-100, lenet5)"
                ))
            })
    }
}

/// `"784-300-100"`.
pub fn structure_string(s: &[usize]) -> String {
    s.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// The units between two layers, by their original indices (ascending).
#[derive(Clone, Debug, PartialEq)]
struct Boundary {
    name: &'static str,
    size: usize,
    alive: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `k x k` conv, stride 1, no padding, + bias, ReLU, 2x2 max pool.
    Conv { k: usize },
    /// Linear + bias (+ ReLU unless last).
    Fc,
}

/// One layer: its parameters and the boundaries it reads and writes.
#[derive(Clone, Debug)]
pub struct Layer {
    /// `conv1`, `fc1`, ...
    pub name: &'static str,
    kind: Kind,
    input: usize,
    output: usize,
    /// `[out, in, k, k]` or `[out, in]`.
    pub weight: ParamId,
    /// `[out]`.
    pub bias: ParamId,
}

/// The flatten between a conv output (channels) and a fully connected input (features
/// `channel * per + pixel`).
#[derive(Clone, Copy, Debug)]
struct Link {
    channels: usize,
    features: usize,
    per: usize,
}

/// Which units survive a pruning decision, per boundary (see [`CompressNet::plan`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    alive: Vec<Vec<usize>>,
}

/// A compressible network; its parameters live in a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct CompressNet {
    /// Which model.
    pub model: Model,
    boundaries: Vec<Boundary>,
    /// Layers in order.
    pub layers: Vec<Layer>,
    link: Option<Link>,
}

/// `y = x[:, idx]` for `x: [N, cols]`: gathers the surviving inputs of a pruned layer.
struct SelectColumnsOp {
    idx: Vec<usize>,
}

fn select_columns_host(x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let (n, cols) = (x.shape()[0], x.shape()[1]);
    let v = x.to_vec();
    let mut out = Vec::with_capacity(n * idx.len());
    for row in v.chunks(cols.max(1)).take(n) {
        out.extend(idx.iter().map(|&i| row[i]));
    }
    Tensor::from_vec(out, &[n, idx.len()])?.to_device(x.device())
}

impl TapeOp for SelectColumnsOp {
    fn name(&self) -> &'static str {
        "select_columns"
    }
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (n, cols) = (ctx.inputs[0].shape()[0], ctx.inputs[0].shape()[1]);
        let d = dy.to_vec();
        let m = self.idx.len();
        let mut dx = vec![0f32; n * cols];
        for r in 0..n {
            for (j, &i) in self.idx.iter().enumerate() {
                dx[r * cols + i] += d[r * m + j];
            }
        }
        Ok(vec![Some(
            Tensor::from_vec(dx, &[n, cols])?.to_device(dy.device())?,
        )])
    }
    // Every output copies one input with coefficient 1.
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        self.backward(ctx, hy)
    }
}

fn select_columns(t: &mut Tape, x: Var, idx: Vec<usize>) -> Result<Var> {
    let v = t.value(x);
    if v.rank() != 2 || idx.iter().any(|&i| i >= v.shape()[1]) {
        return Err(Error::Shape {
            op: "select_columns",
            expected: format!("[N, > {}]", idx.iter().max().copied().unwrap_or(0)),
            found: format!("{:?}", v.shape()),
        });
    }
    let y = select_columns_host(v, &idx)?;
    Ok(t.push(y, &[x], SelectColumnsOp { idx }))
}

/// The entries of `v` (laid out as a tensor of `shape`) at positions `rows` of dim 0 and
/// `cols` of dim 1 (all of dim 1 when `None`; a rank-1 `shape` has no dim 1).
fn slice_rows_cols_vec<T: Copy>(
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

/// Positions of `subset` (a subsequence) inside `of`.
fn positions(of: &[usize], subset: &[usize]) -> Vec<usize> {
    let index: HashMap<usize, usize> = of.iter().enumerate().map(|(p, &u)| (u, p)).collect();
    subset
        .iter()
        .filter_map(|u| index.get(u).copied())
        .collect()
}

impl CompressNet {
    /// Builds `model` with PyTorch's default initialisation and registers `{layer}.weight`,
    /// `{layer}.bias` in `store` (group [`WEIGHTS`]).
    pub fn new(model: Model, store: &mut ParamStore, rng: &mut Rng) -> Result<CompressNet> {
        let b = |name: &'static str, size: usize| Boundary {
            name,
            size,
            alive: (0..size).collect(),
        };
        let (boundaries, specs, link) = match model {
            Model::Lenet300100 => (
                vec![
                    b("input", 784),
                    b("fc1", 300),
                    b("fc2", 100),
                    b("classes", 10),
                ],
                vec![
                    ("fc1", Kind::Fc, 0, 1),
                    ("fc2", Kind::Fc, 1, 2),
                    ("fc3", Kind::Fc, 2, 3),
                ],
                None,
            ),
            Model::Lenet5 => (
                vec![
                    b("input", 1),
                    b("conv1", 20),
                    b("conv2", 50),
                    b("fc1_in", 800),
                    b("fc1", 500),
                    b("classes", 10),
                ],
                vec![
                    ("conv1", Kind::Conv { k: 5 }, 0, 1),
                    ("conv2", Kind::Conv { k: 5 }, 1, 2),
                    ("fc1", Kind::Fc, 3, 4),
                    ("fc2", Kind::Fc, 4, 5),
                ],
                Some(Link {
                    channels: 2,
                    features: 3,
                    per: 16,
                }),
            ),
        };
        let mut layers = Vec::new();
        for (name, kind, input, output) in specs {
            let (cin, cout) = (boundaries[input].size, boundaries[output].size);
            let shape = match kind {
                Kind::Conv { k } => vec![cout, cin, k, k],
                Kind::Fc => vec![cout, cin],
            };
            let fan_in: usize = shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            let weight = store.add(
                &format!("{name}.weight"),
                WEIGHTS,
                Tensor::kaiming_uniform(&shape, rng),
            )?;
            let bias = store.add(
                &format!("{name}.bias"),
                WEIGHTS,
                Tensor::rand_uniform(&[cout], -bound, bound, rng),
            )?;
            layers.push(Layer {
                name,
                kind,
                input,
                output,
                weight,
                bias,
            });
        }
        Ok(CompressNet {
            model,
            boundaries,
            layers,
            link,
        })
    }

    /// The boundary whose units are layer `li`'s groups: a conv layer's filters (its
    /// output), a fully connected layer's input neurons (its input).
    fn grouped(&self, li: usize) -> usize {
        let l = &self.layers[li];
        match l.kind {
            Kind::Conv { .. } => l.output,
            Kind::Fc => l.input,
        }
    }

    /// Number of groups of each layer now.
    pub fn group_counts(&self) -> Vec<usize> {
        (0..self.layers.len())
            .map(|li| self.boundaries[self.grouped(li)].alive.len())
            .collect()
    }

    /// The surviving structure (see the module documentation).
    pub fn structure(&self) -> Vec<usize> {
        self.group_counts()
    }

    /// Original indices of the groups of layer `li`, in position order.
    pub fn group_units(&self, li: usize) -> &[usize] {
        &self.boundaries[self.grouped(li)].alive
    }

    /// Logits `[B, 10]` for images `[B, 1, 28, 28]`.
    pub fn forward(&self, t: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let mut h = x;
        let last = self.layers.len() - 1;
        for (li, layer) in self.layers.iter().enumerate() {
            let w = t.param(store, layer.weight);
            let b = t.param(store, layer.bias);
            match layer.kind {
                Kind::Conv { .. } => {
                    let y = t.conv2d(h, w, Conv2dSpec::new())?;
                    let y = t.add_channel_bias(y, b)?;
                    let y = t.relu(y)?;
                    h = t.max_pool2d(
                        y,
                        Pool2dSpec {
                            kernel: 2,
                            stride: 2,
                            padding: 0,
                        },
                    )?;
                }
                Kind::Fc => {
                    if t.value(h).rank() != 2 {
                        let cols: Vec<usize> = match self.link {
                            Some(l) if l.features == layer.input => self.boundaries[l.channels]
                                .alive
                                .iter()
                                .flat_map(|&c| (0..l.per).map(move |p| c * l.per + p))
                                .collect(),
                            _ => (0..self.boundaries[layer.input].size).collect(),
                        };
                        h = flatten(t, h)?;
                        if t.value(h).shape()[1] != cols.len() {
                            return Err(Error::Shape {
                                op: "compress net flatten",
                                expected: format!("{} features", cols.len()),
                                found: format!("{:?}", t.value(h).shape()),
                            });
                        }
                        let want = &self.boundaries[layer.input].alive;
                        if cols != *want {
                            h = select_columns(t, h, positions(&cols, want))?;
                        }
                    }
                    let y = t.linear(h, w, Some(b))?;
                    h = if li < last { t.relu(y)? } else { y };
                }
            }
        }
        Ok(h)
    }

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
            let chans: std::collections::BTreeSet<usize> =
                alive[l.channels].iter().copied().collect();
            alive[l.features].retain(|f| chans.contains(&(f / l.per)));
            let used: std::collections::BTreeSet<usize> =
                alive[l.features].iter().map(|f| f / l.per).collect();
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
    fn cuts(&self, plan: &Plan) -> Vec<(Vec<usize>, Vec<usize>)> {
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

    /// (non-zero weights, all weights of the original network); biases not counted.
    pub fn nonzero_weights(&self, store: &ParamStore) -> (usize, usize) {
        let nonzero = self
            .layers
            .iter()
            .map(|l| {
                store
                    .value(l.weight)
                    .to_vec()
                    .iter()
                    .filter(|&&v| v != 0.0)
                    .count()
            })
            .sum();
        let total = self
            .layers
            .iter()
            .map(|l| {
                let (o, i) = (
                    self.boundaries[l.output].size,
                    self.boundaries[l.input].size,
                );
                match l.kind {
                    Kind::Conv { k } => o * i * k * k,
                    Kind::Fc => o * i,
                }
            })
            .sum();
        (nonzero, total)
    }

    /// A store for saving: the layers' tensors plus `kept.{boundary}` (original indices of
    /// the surviving units) and `{fc}.input_index` where a layer gathers its inputs.
    pub fn export_store(&self, store: &ParamStore) -> Result<ParamStore> {
        let mut out = ParamStore::new();
        for l in &self.layers {
            for id in [l.weight, l.bias] {
                let p = store.get(id);
                out.add(&p.name, WEIGHTS, p.value.to_device(Device::Cpu)?)?;
            }
        }
        for b in &self.boundaries {
            let v: Vec<f32> = b.alive.iter().map(|&u| u as f32).collect();
            let n = v.len();
            out.add_buffer(&format!("kept.{}", b.name), Tensor::from_vec(v, &[n])?)?;
        }
        for l in &self.layers {
            if l.kind != Kind::Fc {
                continue;
            }
            let cols: Option<Vec<usize>> = match self.link {
                Some(k) if k.features == l.input => Some(
                    self.boundaries[k.channels]
                        .alive
                        .iter()
                        .flat_map(|&c| (0..k.per).map(move |p| c * k.per + p))
                        .collect(),
                ),
                _ if l.input == 0 => Some((0..self.boundaries[0].size).collect()),
                _ => None,
            };
            if let Some(cols) = cols {
                let want = &self.boundaries[l.input].alive;
                if cols != *want {
                    let idx: Vec<f32> = positions(&cols, want).iter().map(|&p| p as f32).collect();
                    let n = idx.len();
                    out.add_buffer(
                        &format!("{}.input_index", l.name),
                        Tensor::from_vec(idx, &[n])?,
                    )?;
                }
            }
        }
        Ok(out)
    }
}

/// How the group-lasso term acts on the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyMode {
    /// Group soft thresholding after each SGD step.
    Proximal,
    /// The penalty's gradient added to the weight gradients.
    Gradient,
}

/// Settings of a compression run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CompressSettings {
    /// Group-lasso strength: one value for every layer, or one per layer (the method's
    /// lambda per kind of group, here per layer).
    pub lambda: Vec<f64>,
    /// Groups whose `gamma` falls under this are pruned.
    pub threshold: f64,
    /// Loops of (training, curvature, update, pruning).
    pub loops: usize,
    /// Training epochs per loop.
    pub epochs_per_loop: usize,
    /// Epochs without penalty before the loops, ending with an update (0: none).
    pub warmup_epochs: usize,
    /// Epochs of the final fine-tune (no penalty, cosine learning rate).
    pub finetune_epochs: usize,
    /// Learning rate during the loops (constant).
    pub lr: f32,
    /// Initial learning rate of the fine-tune (cosine-annealed to 0).
    pub finetune_lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Weight decay of the fine-tune (the caller switches [`CompressSettings::weight_decay`]
    /// to it when the fine-tune starts).
    pub finetune_weight_decay: f32,
    /// Curvature is averaged over the last K batches of each loop.
    pub curvature_batches: usize,
    pub penalty: PenaltyMode,
    pub seed: u64,
    /// Loops of the weight-level phase after the group loops (0: none): the same update
    /// with every surviving weight as its own group (see [`Compressor::begin_weight_phase`]).
    #[serde(default)]
    pub weight_loops: usize,
    /// Lambda of the weight-level phase: one value, or one per layer.
    #[serde(default)]
    pub weight_lambda: Vec<f64>,
}

impl Default for CompressSettings {
    fn default() -> Self {
        CompressSettings {
            lambda: vec![1e-2],
            threshold: 1e-6,
            loops: 4,
            epochs_per_loop: 2,
            warmup_epochs: 1,
            finetune_epochs: 4,
            lr: 0.05,
            finetune_lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            finetune_weight_decay: 0.0,
            curvature_batches: 50,
            penalty: PenaltyMode::Proximal,
            seed: 0,
            weight_loops: 0,
            weight_lambda: Vec::new(),
        }
    }
}

/// Value `li` of a per-layer list whose last value repeats (0 for an empty list).
fn per_layer(values: &[f64], li: usize) -> f64 {
    values.get(li).or(values.last()).copied().unwrap_or(0.0)
}

impl CompressSettings {
    /// Lambda of layer `li` (the last value repeats).
    pub fn lambda_of(&self, li: usize) -> f64 {
        per_layer(&self.lambda, li)
    }

    /// Lambda of layer `li` in the weight-level phase (the last value repeats).
    pub fn weight_lambda_of(&self, li: usize) -> f64 {
        per_layer(&self.weight_lambda, li)
    }

    /// Checks values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.lambda.is_empty() || !self.lambda.iter().all(|l| l.is_finite() && *l > 0.0) {
            return bad(format!("lambda must be positive, got {:?}", self.lambda));
        }
        if self.weight_loops > 0
            && (self.weight_lambda.is_empty()
                || !self.weight_lambda.iter().all(|l| l.is_finite() && *l > 0.0))
        {
            return bad(format!(
                "weight lambda must be positive when there are weight loops, got {:?}",
                self.weight_lambda
            ));
        }
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return bad(format!("threshold must be >= 0, got {}", self.threshold));
        }
        if self.loops == 0 || self.epochs_per_loop == 0 || self.curvature_batches == 0 {
            return bad("loops, epochs per loop and curvature batches must be at least 1".into());
        }
        for (n, v) in [
            ("learning rate", self.lr),
            ("fine-tune learning rate", self.finetune_lr),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{n} must be positive, got {v}"));
            }
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        for wd in [self.weight_decay, self.finetune_weight_decay] {
            if !(wd.is_finite() && wd >= 0.0) {
                return bad(format!("weight decay must be >= 0, got {wd}"));
            }
        }
        Ok(())
    }
}

/// What one epoch did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochStats {
    pub loss: f64,
    pub penalty: f64,
    pub accuracy: f64,
    pub images_per_s: f64,
    pub curvature_batches: usize,
}

/// Per-layer summary of an update and pruning.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerUpdate {
    pub layer: String,
    /// Groups before the prune; in the weight-level phase, free (not yet pruned) weights.
    pub groups: usize,
    /// Statistics over those groups (or free weights).
    pub gamma_min: f64,
    pub gamma_median: f64,
    pub gamma_max: f64,
    pub omega_median: f64,
    /// Groups (or single weights) this prune removed; in the weight-level phase, weights that
    /// went with a removed unit are not counted.
    pub pruned: usize,
}

/// What an update-and-prune step did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PruneSummary {
    pub layers: Vec<LayerUpdate>,
    /// Structure after pruning.
    pub structure: Vec<usize>,
}

/// What one pair of prior hyperparameters (`gamma`, `omega`) covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// A group: a conv filter or the column of an input neuron (the structured loops).
    Group,
    /// A single weight (the weight-level phase).
    Weight,
}

/// The compression state: network, parameters, prior hyperparameters per group.
pub struct Compressor {
    pub net: CompressNet,
    pub store: ParamStore,
    pub settings: CompressSettings,
    pub device: Device,
    /// What `gamma` and `omega` are kept for: groups until
    /// [`Compressor::begin_weight_phase`], single weights after it.
    pub granularity: Granularity,
    /// `gamma` per layer and group position (initially 1); per layer and flat weight
    /// index in the weight-level phase.
    pub gamma: Vec<Vec<f64>>,
    /// `omega`, indexed as `gamma`.
    pub omega: Vec<Vec<f64>>,
    /// Per layer and flat weight index: whether the weight is still free (the weight-level
    /// phase prunes single weights by holding them at zero from then on).
    masks: Option<Vec<Vec<bool>>>,
    curv_batches: usize,
}

/// Which group position a weight (flat index of a layer's weight tensor) belongs to.
#[derive(Clone, Copy, Debug)]
enum Grouping {
    /// `[out, in, k, k]`: one group per output filter of `block = in * k * k` weights.
    Filter { block: usize },
    /// `[out, in]`: one group per input column.
    Column { n_in: usize },
    /// Every weight its own group.
    Element,
}

impl Grouping {
    fn of(self, i: usize) -> usize {
        match self {
            Grouping::Filter { block } => i / block,
            Grouping::Column { n_in } => i % n_in,
            Grouping::Element => i,
        }
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

impl Compressor {
    /// A fresh `model` (initialised from `settings.seed`) on `device`.
    pub fn new(model: Model, settings: CompressSettings, device: Device) -> Result<Compressor> {
        settings.validate()?;
        let mut store = ParamStore::new();
        let net = CompressNet::new(model, &mut store, &mut Rng::new(settings.seed))?;
        move_store(&mut store, device)?;
        let counts = net.group_counts();
        Ok(Compressor {
            gamma: counts.iter().map(|&n| vec![1.0; n]).collect(),
            omega: counts.iter().map(|&n| vec![1.0; n]).collect(),
            net,
            store,
            settings,
            device,
            granularity: Granularity::Group,
            masks: None,
            curv_batches: 0,
        })
    }

    fn is_conv(&self, li: usize) -> bool {
        matches!(self.net.layers[li].kind, Kind::Conv { .. })
    }

    /// The structural groups of layer `li` (filters or input columns) for its weight shape.
    fn unit_grouping(&self, li: usize, shape: &[usize]) -> Grouping {
        if self.is_conv(li) {
            Grouping::Filter {
                block: shape[1..].iter().product(),
            }
        } else {
            Grouping::Column { n_in: shape[1] }
        }
    }

    /// What one hyperparameter pair of layer `li` covers now.
    fn grouping(&self, li: usize, shape: &[usize]) -> Grouping {
        match self.granularity {
            Granularity::Group => self.unit_grouping(li, shape),
            Granularity::Weight => Grouping::Element,
        }
    }

    /// Lambda of layer `li` for the current granularity.
    fn lambda(&self, li: usize) -> f64 {
        match self.granularity {
            Granularity::Group => self.settings.lambda_of(li),
            Granularity::Weight => self.settings.weight_lambda_of(li),
        }
    }

    /// Norms of layer `li`'s weights per hyperparameter pair (`units: false`) or per
    /// structural group (`units: true`).
    fn norms(&self, li: usize, units: bool) -> Vec<f64> {
        let w = self.store.value(self.net.layers[li].weight);
        let (grouping, count) = if units {
            (
                self.unit_grouping(li, w.shape()),
                self.net.group_counts()[li],
            )
        } else {
            (self.grouping(li, w.shape()), self.gamma[li].len())
        };
        let mut s = vec![0.0f64; count];
        for (i, &v) in w.to_vec().iter().enumerate() {
            s[grouping.of(i)] += (v as f64) * (v as f64);
        }
        s.into_iter().map(f64::sqrt).collect()
    }

    /// Norms `||w_g||` of layer `li` per hyperparameter pair: per group (or, in the
    /// weight-level phase, `|w_i|` per weight).
    pub fn group_norms(&self, li: usize) -> Vec<f64> {
        self.norms(li, false)
    }

    /// Norms of the structural groups (filters, input columns) of layer `li`, whatever the
    /// granularity.
    pub fn unit_norms(&self, li: usize) -> Vec<f64> {
        self.norms(li, true)
    }

    /// The penalty `sum_g lambda omega_g ||w_g||`.
    pub fn penalty(&self) -> f64 {
        (0..self.net.layers.len())
            .map(|li| {
                self.group_norms(li)
                    .iter()
                    .zip(&self.omega[li])
                    .map(|(n, o)| self.lambda(li) * o * n)
                    .sum::<f64>()
            })
            .sum()
    }

    /// Multiplies every group of layer `li` by `factor(group, norm)`.
    fn scale_groups(&mut self, li: usize, factor: &dyn Fn(usize, f64) -> f64) -> Result<()> {
        let norms = self.group_norms(li);
        let f: Vec<f32> = norms
            .iter()
            .enumerate()
            .map(|(g, &n)| factor(g, n) as f32)
            .collect();
        if f.iter().all(|&x| x == 1.0) {
            return Ok(());
        }
        let id = self.net.layers[li].weight;
        let w = self.store.value(id);
        let shape = w.shape().to_vec();
        let gi = self.grouping(li, &shape);
        let mut v = w.to_vec();
        for (i, x) in v.iter_mut().enumerate() {
            *x *= f[gi.of(i)];
        }
        *self.store.value_mut(id) = Tensor::from_vec(v, &shape)?.to_device(self.device)?;
        Ok(())
    }

    /// Adds `lambda omega_g w_g / ||w_g||` to the weight gradients.
    fn add_penalty_gradient(&mut self) -> Result<()> {
        for li in 0..self.net.layers.len() {
            let norms = self.group_norms(li);
            let id = self.net.layers[li].weight;
            let w = self.store.value(id).to_vec();
            let shape = self.store.value(id).shape().to_vec();
            let gi = self.grouping(li, &shape);
            let mut g = self.store.get(id).grad.to_vec();
            for (i, gv) in g.iter_mut().enumerate() {
                let grp = gi.of(i);
                if norms[grp] > 0.0 {
                    *gv +=
                        (self.lambda(li) * self.omega[li][grp] * w[i] as f64 / norms[grp]) as f32;
                }
            }
            self.store.get_mut(id).grad = Tensor::from_vec(g, &shape)?.to_device(self.device)?;
        }
        Ok(())
    }

    /// One SGD step on a batch with learning rate `lr`; with `penalty`, the group lasso acts
    /// (see [`PenaltyMode`]); with `curvature`, the curvature pass runs and accumulates.
    /// Returns (loss, correct).
    pub fn step(
        &mut self,
        x: Tensor,
        labels: &[u32],
        lr: f32,
        penalty: bool,
        curvature: bool,
    ) -> Result<(f64, usize)> {
        let mut tape = Tape::new();
        let xv = tape.input(x.to_device(self.device)?);
        let logits = self.net.forward(&mut tape, &self.store, xv)?;
        let ce = tape.cross_entropy(logits, labels)?;
        let loss = tape.value(ce).item()? as f64;
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }
        let correct = argmax_rows(tape.value(logits))
            .iter()
            .zip(labels)
            .filter(|(p, &l)| **p == l as usize)
            .count();
        self.store.zero_grads()?;
        let grads = tape.backward(ce)?;
        self.store.accumulate_grads(&grads)?;
        drop(grads);
        if curvature {
            let h = tape.curvature_backward(ce)?;
            self.store.accumulate_curvature(&h)?;
            self.curv_batches += 1;
        }
        drop(tape);
        if penalty && self.settings.penalty == PenaltyMode::Gradient {
            self.add_penalty_gradient()?;
        }
        if !grad_norm(&self.store, &[WEIGHTS])?.is_finite() {
            return Err(Error::NonFinite("gradient norm is not finite".into()));
        }
        Sgd::new()
            .group(
                WEIGHTS,
                SgdGroup {
                    lr,
                    momentum: self.settings.momentum,
                    weight_decay: self.settings.weight_decay,
                },
            )
            .step(&mut self.store, 1.0, 1.0)?;
        if penalty && self.settings.penalty == PenaltyMode::Proximal {
            for li in 0..self.net.layers.len() {
                let omega = self.omega[li].clone();
                let t = lr as f64 * self.lambda(li);
                self.scale_groups(li, &|g, n| {
                    if n <= 0.0 {
                        1.0
                    } else {
                        (1.0 - t * omega[g] / n).max(0.0)
                    }
                })?;
            }
        }
        self.apply_masks()?;
        Ok((loss, correct))
    }

    /// Holds every pruned single weight at zero. (Its momentum is left alone: SGD is
    /// elementwise, so it only ever moves the weight that is zeroed here after each step.)
    fn apply_masks(&mut self) -> Result<()> {
        let Some(masks) = &self.masks else {
            return Ok(());
        };
        for (layer, mask) in self.net.layers.iter().zip(masks) {
            if mask.iter().all(|&k| k) {
                continue;
            }
            let t = self.store.value_mut(layer.weight);
            let mut v = t.to_vec();
            if v.len() != mask.len() {
                return Err(Error::Invalid(format!(
                    "weight mask of {} has {} entries for {} weights",
                    layer.name,
                    mask.len(),
                    v.len()
                )));
            }
            for (x, &k) in v.iter_mut().zip(mask) {
                if !k {
                    *x = 0.0;
                }
            }
            *t = Tensor::from_vec(v, t.shape())?.to_device(t.device())?;
        }
        Ok(())
    }

    /// Switches to the weight-level phase: from now on every weight has its own `gamma`
    /// and `omega` (both 1 to start, as at the start of the group loops), the penalty is
    /// `sum_i lambda_w omega_i |w_i|` (soft thresholding of single weights), [`update`]
    /// is the same closed form with groups of one weight, and [`prune`] holds the weights
    /// whose `gamma` collapses at zero, then removes the units left without any weight.
    /// Curvature accumulated so far is dropped.
    ///
    /// [`update`]: Compressor::update
    /// [`prune`]: Compressor::prune
    pub fn begin_weight_phase(&mut self) -> Result<()> {
        if self.granularity == Granularity::Weight {
            return Err(Error::Invalid(
                "the weight-level phase has already begun".into(),
            ));
        }
        if self.settings.weight_lambda.is_empty() {
            return Err(Error::Invalid(
                "the weight-level phase needs a weight lambda".into(),
            ));
        }
        let values: Vec<Vec<f32>> = self
            .net
            .layers
            .iter()
            .map(|l| self.store.value(l.weight).to_vec())
            .collect();
        self.gamma = values.iter().map(|v| vec![1.0; v.len()]).collect();
        self.omega = self.gamma.clone();
        self.masks = Some(
            values
                .iter()
                .map(|v| v.iter().map(|&x| x != 0.0).collect())
                .collect(),
        );
        self.granularity = Granularity::Weight;
        self.store.zero_curvature()?;
        self.curv_batches = 0;
        Ok(())
    }

    /// Trains one epoch on `batches` with learning rate `lr`; the curvature pass runs from
    /// batch `curvature_from` on. `on_step(step, mean loss, accuracy, images)`.
    pub fn train_epoch(
        &mut self,
        batches: &mut dyn Iterator<Item = Result<(Tensor, Vec<u32>)>>,
        lr: f32,
        penalty: bool,
        curvature_from: usize,
        on_step: &mut dyn FnMut(usize, f64, f64, usize),
    ) -> Result<EpochStats> {
        let (mut loss_sum, mut correct, mut seen, mut curv) = (0.0f64, 0usize, 0usize, 0usize);
        let start = Instant::now();
        for (step, batch) in batches.enumerate() {
            let (x, labels) = batch?;
            let with_curv = step >= curvature_from;
            let (loss, c) = self
                .step(x, &labels, lr, penalty, with_curv)
                .map_err(|e| match e {
                    Error::NonFinite(m) => Error::NonFinite(format!("{m} at batch {step}")),
                    other => other,
                })?;
            curv += usize::from(with_curv);
            loss_sum += loss * labels.len() as f64;
            correct += c;
            seen += labels.len();
            on_step(
                step + 1,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                labels.len(),
            );
        }
        if seen == 0 {
            return Err(Error::Invalid("an epoch had no batches".into()));
        }
        Ok(EpochStats {
            loss: loss_sum / seen as f64,
            penalty: if penalty { self.penalty() } else { 0.0 },
            accuracy: correct as f64 / seen as f64,
            images_per_s: seen as f64 / start.elapsed().as_secs_f64().max(1e-9),
            curvature_batches: curv,
        })
    }

    /// The closed-form update of every group from the curvature accumulated since the last
    /// update (method note section 5 with `w` for `s`, [`ard::GroupArd`]): `H = h / lambda`,
    /// `omega = sqrt(sum_i H_i / (1 + gamma H_i))`, `gamma = ||w|| / omega`; under
    /// [`ard::Evidence::Vanish`] a zero group and a group whose curvature is exactly zero (the
    /// data never reaches it: an input that was 0 in every curvature batch, a unit whose ReLU
    /// never fired) get `gamma = 0`: nothing holds their variance up.
    pub fn update(&mut self) -> Result<()> {
        if self.curv_batches == 0 {
            return Err(Error::Invalid(
                "update: no curvature was accumulated (train with curvature first)".into(),
            ));
        }
        for li in 0..self.net.layers.len() {
            let lambda = self.lambda(li);
            let id = self.net.layers[li].weight;
            let norms = self.group_norms(li);
            let p = self.store.get(id);
            let gi = self.grouping(li, p.value.shape());
            let mut groups: Vec<ard::GroupArd> = self.gamma[li]
                .iter()
                .map(|&gamma| ard::GroupArd::new(gamma, lambda, ard::Evidence::Vanish))
                .collect();
            for (i, &hv) in p.curvature.to_vec().iter().enumerate() {
                groups[gi.of(i)].add((hv as f64 / self.curv_batches as f64).max(0.0));
            }
            for (g, group) in groups.into_iter().enumerate() {
                let r = group.finish(norms[g], self.gamma[li][g]);
                self.omega[li][g] = r.omega;
                self.gamma[li][g] = r.gamma;
            }
        }
        self.store.zero_curvature()?;
        self.curv_batches = 0;
        Ok(())
    }

    /// Prunes every group whose `gamma` is under the threshold (or whose weights are all
    /// zero), propagates, and shrinks the network and the per-group state. In the
    /// weight-level phase: see [`Compressor::begin_weight_phase`].
    pub fn prune(&mut self) -> Result<PruneSummary> {
        if self.granularity == Granularity::Weight {
            return self.prune_weights();
        }
        let thr = self.settings.threshold;
        let flags: Vec<Vec<bool>> = (0..self.net.layers.len())
            .map(|li| {
                let norms = self.group_norms(li);
                self.gamma[li]
                    .iter()
                    .zip(&norms)
                    .map(|(&g, &n)| g < thr || n == 0.0)
                    .collect()
            })
            .collect();
        let plan = self.net.plan(&flags, &self.gamma)?;
        let mut layers = Vec::new();
        for li in 0..self.net.layers.len() {
            let g = &self.gamma[li];
            let finite: Vec<f64> = g.iter().copied().filter(|v| v.is_finite()).collect();
            let units = self.net.group_units(li).to_vec();
            let kept = positions(&units, &plan.alive[self.net.grouped(li)]);
            layers.push(LayerUpdate {
                layer: self.net.layers[li].name.to_string(),
                groups: g.len(),
                gamma_min: finite.iter().copied().fold(f64::INFINITY, f64::min),
                gamma_median: median(&finite),
                gamma_max: finite.iter().copied().fold(0.0, f64::max),
                omega_median: median(&self.omega[li]),
                pruned: g.len() - kept.len(),
            });
            self.gamma[li] = kept.iter().map(|&p| self.gamma[li][p]).collect();
            self.omega[li] = kept.iter().map(|&p| self.omega[li][p]).collect();
        }
        self.net.shrink(&mut self.store, &plan)?;
        Ok(PruneSummary {
            layers,
            structure: self.net.structure(),
        })
    }

    /// The weight-level prune: holds every free weight whose `gamma` is under the threshold
    /// (or that is zero) at zero, then removes the units that have no weight left: a filter
    /// or an input column all zero, and a conv filter whose channel no filter of the next
    /// conv layer reads any more. The per-weight state is cut with the network.
    fn prune_weights(&mut self) -> Result<PruneSummary> {
        let thr = self.settings.threshold;
        let n_layers = self.net.layers.len();
        let mut masks = self
            .masks
            .take()
            .ok_or_else(|| Error::Invalid("weight-level prune without weight masks".into()))?;
        let mut layers = Vec::new();
        for (li, mask) in masks.iter_mut().enumerate() {
            let v = self.store.value(self.net.layers[li].weight).to_vec();
            let free: Vec<f64> = mask
                .iter()
                .zip(&self.gamma[li])
                .filter(|(&k, _)| k)
                .map(|(_, &g)| g)
                .collect();
            let mut pruned = 0;
            for (i, k) in mask.iter_mut().enumerate() {
                if *k && (self.gamma[li][i] < thr || v[i] == 0.0) {
                    *k = false;
                    pruned += 1;
                }
            }
            let free_omega: Vec<f64> = self.omega[li]
                .iter()
                .zip(mask.iter())
                .filter(|(_, &k)| k)
                .map(|(&o, _)| o)
                .collect();
            layers.push(LayerUpdate {
                layer: self.net.layers[li].name.to_string(),
                groups: free.len(),
                gamma_min: free.iter().copied().fold(f64::INFINITY, f64::min),
                gamma_median: median(&free),
                gamma_max: free.iter().copied().fold(0.0, f64::max),
                omega_median: median(&free_omega),
                pruned,
            });
        }
        self.masks = Some(masks);
        self.apply_masks()?;

        // Units with no weight left.
        let norms: Vec<Vec<f64>> = (0..n_layers).map(|li| self.unit_norms(li)).collect();
        let mut flags: Vec<Vec<bool>> = norms
            .iter()
            .map(|n| n.iter().map(|&x| x == 0.0).collect())
            .collect();
        for (li, layer_flags) in flags.iter_mut().enumerate().take(n_layers - 1) {
            if !(self.is_conv(li) && self.is_conv(li + 1)) {
                continue;
            }
            let next = self.store.value(self.net.layers[li + 1].weight);
            let shape = next.shape().to_vec();
            let inner: usize = shape[2..].iter().product();
            let v = next.to_vec();
            for (c, flag) in layer_flags.iter_mut().enumerate() {
                let read = (0..shape[0]).any(|o| {
                    let s = (o * shape[1] + c) * inner;
                    v[s..s + inner].iter().any(|&x| x != 0.0)
                });
                *flag |= !read;
            }
        }
        if flags.iter().any(|f| f.iter().any(|&x| x)) {
            let plan = self.net.plan(&flags, &norms)?;
            let shapes: Vec<Vec<usize>> = (self.net.layers.iter())
                .map(|l| self.store.value(l.weight).shape().to_vec())
                .collect();
            let cuts = self.net.cuts(&plan);
            self.net.shrink(&mut self.store, &plan)?;
            let masks = self.masks.as_mut().expect("set above");
            for (li, ((rows, cols), shape)) in cuts.iter().zip(&shapes).enumerate() {
                let cols = Some(cols.as_slice());
                self.gamma[li] = slice_rows_cols_vec(&self.gamma[li], shape, rows, cols);
                self.omega[li] = slice_rows_cols_vec(&self.omega[li], shape, rows, cols);
                masks[li] = slice_rows_cols_vec(&masks[li], shape, rows, cols);
            }
        }
        Ok(PruneSummary {
            layers,
            structure: self.net.structure(),
        })
    }

    /// Mean loss and accuracy over `batches` (evaluation tape).
    pub fn evaluate(
        &self,
        batches: &mut dyn Iterator<Item = Result<(Tensor, Vec<u32>)>>,
    ) -> Result<(f64, f64)> {
        let (mut loss, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for batch in batches {
            let (x, labels) = batch?;
            let mut tape = Tape::new_eval();
            let xv = tape.input(x.to_device(self.device)?);
            let logits = self.net.forward(&mut tape, &self.store, xv)?;
            let l = tape.cross_entropy(logits, &labels)?;
            loss += tape.value(l).item()? as f64 * labels.len() as f64;
            correct += argmax_rows(tape.value(logits))
                .iter()
                .zip(&labels)
                .filter(|(p, &l)| **p == l as usize)
                .count();
            seen += labels.len();
        }
        if seen == 0 {
            return Err(Error::Invalid("evaluation on an empty set".into()));
        }
        Ok((loss / seen as f64, correct as f64 / seen as f64))
    }

    /// Saves the pruned network (see the module documentation) atomically.
    pub fn save_pruned(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
        let out = self.net.export_store(&self.store)?;
        save_store(&out, path, false, metadata)
    }
}
