//! [`CompressNet`]: a compressible network built from a [`Model`]'s layout, its forward pass
//! (on the tape, with the gather of surviving inputs after a flatten), its weight count and
//! the store it is saved as.

use bayesnas_engine::prelude::*;

use super::model::{Kind, Link, Model};
use super::prune::positions;

/// Optimiser group of the compressed networks' weights and biases.
pub const WEIGHTS: &str = "weights";

/// The units between two layers, by their original indices (ascending).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Boundary {
    pub(super) name: &'static str,
    pub(super) size: usize,
    pub(super) alive: Vec<usize>,
}

/// One layer: its parameters and the boundaries it reads and writes.
#[derive(Clone, Debug)]
pub struct Layer {
    /// `conv1`, `fc1`, ...
    pub name: &'static str,
    pub(super) kind: Kind,
    pub(super) input: usize,
    pub(super) output: usize,
    /// `[out, in, k, k]` or `[out, in]`.
    pub weight: ParamId,
    /// `[out]`.
    pub bias: ParamId,
}

impl Layer {
    /// Whether the layer is a convolution (its groups are its filters).
    pub(super) fn is_conv(&self) -> bool {
        matches!(self.kind, Kind::Conv { .. })
    }
}

/// A compressible network; its parameters live in a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct CompressNet {
    /// Which model.
    pub model: Model,
    pub(super) boundaries: Vec<Boundary>,
    /// Layers in order.
    pub layers: Vec<Layer>,
    pub(super) link: Option<Link>,
}

impl CompressNet {
    /// Builds `model` with PyTorch's default initialisation and registers `{layer}.weight`,
    /// `{layer}.bias` in `store` (group [`WEIGHTS`]).
    pub fn new(model: Model, store: &mut ParamStore, rng: &mut Rng) -> Result<CompressNet> {
        let layout = model.layout();
        let boundaries: Vec<Boundary> = layout
            .boundaries
            .into_iter()
            .map(|(name, size)| Boundary {
                name,
                size,
                alive: (0..size).collect(),
            })
            .collect();
        let mut layers = Vec::new();
        for (name, kind, input, output) in layout.layers {
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
            link: layout.link,
        })
    }

    /// The boundary whose units are layer `li`'s groups: a conv layer's filters (its
    /// output), a fully connected layer's input neurons (its input).
    pub(super) fn grouped(&self, li: usize) -> usize {
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

    /// The original feature indices the flatten of `link` produces: every pixel of every
    /// surviving conv channel.
    fn link_features(&self, link: Link) -> Vec<usize> {
        self.boundaries[link.channels]
            .alive
            .iter()
            .flat_map(|&c| (0..link.per).map(move |p| c * link.per + p))
            .collect()
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
                            Some(l) if l.features == layer.input => self.link_features(l),
                            _ => (0..self.boundaries[layer.input].size).collect(),
                        };
                        h = t.flatten(h)?;
                        if t.value(h).shape()[1] != cols.len() {
                            return Err(Error::Shape {
                                op: "compress net flatten",
                                expected: format!("{} features", cols.len()),
                                found: format!("{:?}", t.value(h).shape()),
                            });
                        }
                        let want = &self.boundaries[layer.input].alive;
                        if cols != *want {
                            h = t.select_columns(h, &positions(&cols, want))?;
                        }
                    }
                    let y = t.linear(h, w, Some(b))?;
                    h = if li < last { t.relu(y)? } else { y };
                }
            }
        }
        Ok(h)
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
                Some(k) if k.features == l.input => Some(self.link_features(k)),
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
