//! DARTS' evaluation network (`NetworkCIFAR` of DARTS' `model.py`) built from a derived
//! [`Genotype`] (method note, section 9).
//!
//! Stem: 3x3 conv to `3C` channels + affine BN. Then `cells` cells with reduction cells at
//! `cells / 3` and `2 cells / 3` (the channel count doubles at each). Each cell
//! pre-processes `c_{k-2}` (our `in1`) with ReLU-1x1 conv-BN, or factorized reduce when the
//! previous cell was a reduction cell, and `c_{k-1}` (our `in0`) with ReLU-1x1 conv-BN; each
//! live intermediate node sums one term per kept (edge, op) pair, and the cell outputs the
//! channel concatenation of its `concat` nodes. Operations are the supernet's (crate
//! [`supernet`](crate::supernet)) with affine BN and without the BN after pools (DARTS'
//! evaluation ops). During training, drop-path zeroes whole samples of every term whose op is
//! not the identity. An optional auxiliary head reads the output of the second reduction
//! cell; global average pooling and a linear classifier end the network.
//!
//! Our genotypes may keep several ops per edge and drop nodes: every kept op on an edge is
//! one summand of its node, and a cell's output width is `len(concat) x C`.
//!
//! # Tensor names (the safetensors files `bayesnas train` writes)
//!
//! Names and shapes are those of DARTS' PyTorch `NetworkCIFAR` / `AuxiliaryHeadCIFAR`, so
//! `model.load_state_dict(safetensors.torch.load_file(path), strict=False)` fills a DARTS
//! model built from the same genotype (`strict=False` only because BN's
//! `num_batches_tracked` counters are not stored). All tensors are F32; convolutions are
//! `[out, in/groups, k, k]`, linear layers `[out, in]`; every BN has `weight`, `bias`,
//! `running_mean`, `running_var` of shape `[C]`.
//!
//! | name | shape |
//! |------|-------|
//! | `stem.0.weight` | `[3C, in_channels, 3, 3]` |
//! | `stem.1.{weight,bias,running_mean,running_var}` | `[3C]` |
//! | `cells.{i}.preprocess0.op.1.weight` (ReLU-conv-BN of `c_{k-2}`) | `[C_i, C_pp, 1, 1]` |
//! | `cells.{i}.preprocess0.op.2.*` | `[C_i]` |
//! | `cells.{i}.preprocess0.conv_1.weight`, `.conv_2.weight` (after a reduction cell) | `[C_i/2, C_pp, 1, 1]` |
//! | `cells.{i}.preprocess0.bn.*` (after a reduction cell) | `[C_i]` |
//! | `cells.{i}.preprocess1.op.1.weight` (ReLU-conv-BN of `c_{k-1}`) | `[C_i, C_p, 1, 1]` |
//! | `cells.{i}.preprocess1.op.2.*` | `[C_i]` |
//! | `cells.{i}._ops.{j}.op.{1,5}.weight` (sep_conv_k depthwise) | `[C_i, 1, k, k]` |
//! | `cells.{i}._ops.{j}.op.{2,6}.weight` (sep_conv pointwise) | `[C_i, C_i, 1, 1]` |
//! | `cells.{i}._ops.{j}.op.{3,7}.*` (sep_conv BN) | `[C_i]` |
//! | `cells.{i}._ops.{j}.op.1.weight` (dil_conv_k depthwise) | `[C_i, 1, k, k]` |
//! | `cells.{i}._ops.{j}.op.2.weight` (dil_conv pointwise) | `[C_i, C_i, 1, 1]` |
//! | `cells.{i}._ops.{j}.op.3.*` (dil_conv BN) | `[C_i]` |
//! | `cells.{i}._ops.{j}.conv_1.weight`, `.conv_2.weight`, `.bn.*` (skip_connect, stride 2) | as preprocess0 |
//! | `auxiliary_head.features.2.weight` | `[128, C_aux, 1, 1]` |
//! | `auxiliary_head.features.3.*` | `[128]` |
//! | `auxiliary_head.features.5.weight` | `[768, 128, k, k]` (k = 2 on CIFAR) |
//! | `auxiliary_head.features.6.*` | `[768]` |
//! | `auxiliary_head.classifier.{weight,bias}` | `[classes, 768]`, `[classes]` |
//! | `classifier.weight`, `classifier.bias` | `[classes, C_last]`, `[classes]` |
//!
//! `C_i` is the cell's channel count (C, 2C after the first reduction, 4C after the second),
//! `C_pp`/`C_p` the widths of `c_{k-2}`/`c_{k-1}`. `j` numbers the kept (edge, op) pairs node
//! by node (`n0` first), in the genotype's edge order and each edge's op order: for a DARTS
//! genotype string that is exactly DARTS' pair order. Pools and the identity have no
//! parameters (their `j` is simply absent). The auxiliary head's second conv is 2x2 as in
//! DARTS when its pooled input is at least 2x2 (CIFAR's 8x8 maps), and 1x1 otherwise (the
//! 7x7 maps of 28x28 images pool to 1x1).
//!
//! The file's metadata holds `genotype` (our JSON), `darts_genotype` (when the cells have
//! two pairs per node), `progress` (network shape, settings, per-epoch history) and `layout`.
//! Loading into DARTS' code (`cnn/model.py`, `cnn/genotypes.py`):
//!
//! ```text
//! from safetensors import safe_open
//! from safetensors.torch import load_file
//! from genotypes import Genotype
//! from model import NetworkCIFAR
//! meta = safe_open("weights.safetensors", "pt").metadata()
//! net = NetworkCIFAR(36, 10, 20, False, eval(meta["darts_genotype"]))
//! net.load_state_dict(load_file("weights.safetensors"), strict=False)  # no num_batches_tracked
//! ```
//!
//! Genotypes with several ops on an edge or dropped nodes have no DARTS string; a model
//! whose cell builds `_ops` in the order described above loads the same names.

use std::collections::HashMap;

use bayesnas_engine::nn::{BatchNorm2d, Conv2d, Linear};
use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use crate::genotype::Genotype;
use crate::layers::{
    build_cells, relu_once, sum_terms, CellInputs, CellSlot, Flavour, OpLayers, Stem,
};
use crate::space::{reduction_cells, CellType, Node};

/// Optimiser group of every trainable tensor of the evaluation network.
pub const WEIGHTS: &str = "weights";
/// Name prefix of the auxiliary head (excluded from the reported parameter count, as in
/// DARTS' `count_parameters_in_MB`).
pub const AUX_PREFIX: &str = "auxiliary_head.";

/// Shape of an evaluation network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Initial channel count C (stem `3C`, doubled at each reduction).
    pub channels: usize,
    /// Number of cells; reductions at `cells / 3` and `2 cells / 3`.
    pub cells: usize,
    /// Image channels (1 for (Fashion-)MNIST, 3 for CIFAR-10).
    pub in_channels: usize,
    /// Image side (28 or 32).
    pub image: usize,
    /// Number of classes.
    pub classes: usize,
    /// Build the auxiliary head after the second reduction cell.
    pub auxiliary: bool,
}

impl EvalConfig {
    /// DARTS' CIFAR-10 evaluation network: 20 cells, C = 36, 3x32x32 inputs, 10 classes.
    pub fn cifar(auxiliary: bool) -> EvalConfig {
        EvalConfig {
            channels: 36,
            cells: 20,
            in_channels: 3,
            image: 32,
            classes: 10,
            auxiliary,
        }
    }

    /// Spatial size of the feature maps after cell `i`.
    fn size_after(&self, i: usize) -> usize {
        let reds = reduction_cells(self.cells)[..=i]
            .iter()
            .filter(|&&r| r)
            .count();
        self.image >> reds
    }

    /// Checks that the network can be built.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.cells < 3 {
            return bad(format!(
                "evaluation network: {} cells; at least 3 are needed (normal cells and two reductions)",
                self.cells
            ));
        }
        if self.channels < 2 || self.channels % 2 != 0 {
            return bad(format!(
                "evaluation network: channels {} must be even and at least 2 (factorized reduce halves them)",
                self.channels
            ));
        }
        if self.in_channels == 0 || self.classes < 2 {
            return bad(format!(
                "evaluation network: {} input channels and {} classes (need at least 1 and 2)",
                self.in_channels, self.classes
            ));
        }
        let mut s = self.image;
        for &red in &reduction_cells(self.cells) {
            if red {
                if s < 2 || s % 2 != 0 {
                    return bad(format!(
                        "evaluation network: spatial size {s} at a reduction cell must be even and \
                         at least 2 (image size {})",
                        self.image
                    ));
                }
                s /= 2;
            }
        }
        if self.auxiliary {
            let s = self.size_after(2 * self.cells / 3);
            if s < 5 {
                return bad(format!(
                    "auxiliary head: the feature maps after the second reduction are {s}x{s}; \
                     its 5x5 pooling needs at least 5x5 (use larger images or no auxiliary head)"
                ));
            }
        }
        Ok(())
    }
}

/// One summand of a node: a kept op applied to a source node.
#[derive(Clone, Debug)]
struct Term {
    from: Node,
    module: OpLayers,
}

/// One cell of the evaluation network.
#[derive(Clone, Debug)]
pub struct EvalCell {
    /// Normal or reduction.
    pub cell_type: CellType,
    /// DARTS `preprocess0` and `preprocess1`, for `c_{k-2}` (our `in1`) and `c_{k-1}` (our
    /// `in0`).
    inputs: CellInputs,
    /// Live intermediate nodes in order, with their terms.
    nodes: Vec<(usize, Vec<Term>)>,
    concat: Vec<usize>,
    /// Channels per node.
    pub channels: usize,
}

impl EvalCell {
    fn new(
        store: &mut ParamStore,
        slot: CellSlot,
        inputs: CellInputs,
        genotype: &Genotype,
        rng: &mut Rng,
    ) -> Result<Self> {
        let (name, cell_type, c) = (slot.name(), slot.cell_type, slot.c);
        let f = Flavour::Eval;
        let cell = genotype.cell(cell_type);
        let mut nodes = Vec::new();
        let mut j = 0usize;
        for node in cell.live_nodes() {
            let mut terms = Vec::new();
            for e in cell.incoming(node) {
                let stride = if cell_type == CellType::Reduce && e.from.is_input() {
                    2
                } else {
                    1
                };
                for kept in &e.ops {
                    let module = OpLayers::new(
                        f,
                        store,
                        &format!("{name}._ops.{j}"),
                        kept.op,
                        c,
                        stride,
                        rng,
                    )?;
                    terms.push(Term {
                        from: e.from,
                        module,
                    });
                    j += 1;
                }
            }
            nodes.push((node, terms));
        }
        Ok(EvalCell {
            cell_type,
            inputs,
            nodes,
            concat: cell.concat.clone(),
            channels: c,
        })
    }

    fn forward(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        s0: Var,
        s1: Var,
        drop_prob: f32,
        rng: &mut Rng,
    ) -> Result<Var> {
        let mut states = self.inputs.forward(t, store, s0, s1)?;
        let mut relus: HashMap<Node, Var> = HashMap::new();
        for (node, terms) in &self.nodes {
            let mut outs = Vec::with_capacity(terms.len());
            for term in terms {
                let x = *states.get(&term.from).ok_or_else(|| {
                    Error::Invalid(format!(
                        "cell reads node {} before it is computed",
                        term.from
                    ))
                })?;
                let rx = if term.module.needs_relu() {
                    relu_once(t, &mut relus, term.from, x)?
                } else {
                    x
                };
                let mut h = term.module.forward(t, store, x, rx)?;
                if !matches!(term.module, OpLayers::Identity) && drop_prob > 0.0 {
                    h = t.drop_path(h, drop_prob, rng)?;
                }
                outs.push(h);
            }
            let state = sum_terms(t, &outs)?;
            states.insert(Node::Inter(*node), state);
        }
        let outs = self
            .concat
            .iter()
            .map(|&j| {
                states.get(&Node::Inter(j)).copied().ok_or_else(|| {
                    Error::Invalid(format!("concat names n{j}, which has no inputs"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if outs.len() == 1 {
            Ok(outs[0])
        } else {
            t.concat_channels(&outs)
        }
    }
}

/// DARTS `AuxiliaryHeadCIFAR`: ReLU, 5x5 average pool (stride 3, padding not counted),
/// 1x1 conv to 128 + BN + ReLU, 2x2 conv to 768 + BN + ReLU, linear classifier.
#[derive(Clone, Debug)]
struct AuxHead {
    pool: Pool2dSpec,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    classifier: Linear,
}

impl AuxHead {
    fn new(
        store: &mut ParamStore,
        c: usize,
        size: usize,
        classes: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let pool = Pool2dSpec {
            kernel: 5,
            stride: 3,
            padding: 0,
        };
        let k2 = pool.out_size(size).min(2);
        let p = "auxiliary_head";
        Ok(AuxHead {
            pool,
            conv1: Flavour::Eval.conv(
                store,
                &format!("{p}.features.2"),
                c,
                128,
                1,
                Conv2dSpec::new(),
                rng,
            )?,
            bn1: Flavour::Eval.bn(store, &format!("{p}.features.3"), 128)?,
            conv2: Flavour::Eval.conv(
                store,
                &format!("{p}.features.5"),
                128,
                768,
                k2,
                Conv2dSpec::new(),
                rng,
            )?,
            bn2: Flavour::Eval.bn(store, &format!("{p}.features.6"), 768)?,
            classifier: Linear::new(
                store,
                &format!("{p}.classifier"),
                WEIGHTS,
                768,
                classes,
                true,
                rng,
            )?,
        })
    }

    fn forward(&self, t: &mut Tape, store: &mut ParamStore, x: Var) -> Result<Var> {
        let a = t.relu(x)?;
        let a = t.avg_pool2d(a, self.pool)?;
        let a = self.conv1.forward(t, store, a)?;
        let a = self.bn1.forward(t, store, a)?;
        let a = t.relu(a)?;
        let a = self.conv2.forward(t, store, a)?;
        let a = self.bn2.forward(t, store, a)?;
        let a = t.relu(a)?;
        // [N, 768, s, s] -> [N, 768]: the mean over the (1x1 on CIFAR) map, as DARTS' view.
        let a = if t.value(a).shape()[2] * t.value(a).shape()[3] == 1 {
            t.global_avg_pool(a)?
        } else {
            t.flatten(a)?
        };
        self.classifier.forward(t, store, a)
    }
}

/// The evaluation network; its parameters live in a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct EvalNetwork {
    /// The shape it was built with.
    pub config: EvalConfig,
    /// The architecture it was built from.
    pub genotype: Genotype,
    stem: Stem,
    /// The cells in depth order.
    pub cells: Vec<EvalCell>,
    aux: Option<AuxHead>,
    aux_after: usize,
    classifier: Linear,
}

/// Logits of one forward pass.
#[derive(Clone, Copy, Debug)]
pub struct EvalOutput {
    /// Main classifier, `[B, classes]`.
    pub logits: Var,
    /// Auxiliary head, on training tapes of networks that have one.
    pub aux_logits: Option<Var>,
}

impl EvalNetwork {
    /// Builds the network of `genotype` (validated first) and registers its parameters in
    /// `store` (group [`WEIGHTS`], DARTS names; see the module documentation).
    pub fn new(
        config: EvalConfig,
        genotype: &Genotype,
        store: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<EvalNetwork> {
        config.validate()?;
        genotype
            .validate()
            .map_err(|e| Error::Invalid(format!("genotype: {e}")))?;
        let stem_c = 3 * config.channels;
        let stem = Stem::new(Flavour::Eval, store, config.in_channels, stem_c, rng)?;
        let aux_after = 2 * config.cells / 3;
        let mut aux = None;
        let (cells, c_p) = build_cells(
            Flavour::Eval,
            store,
            config.cells,
            stem_c,
            config.channels,
            rng,
            |store, slot, inputs, rng| {
                let index = slot.index;
                let cell = EvalCell::new(store, slot, inputs, genotype, rng)?;
                let width = cell.concat.len() * cell.channels;
                if index == aux_after && config.auxiliary {
                    aux = Some(AuxHead::new(
                        store,
                        width,
                        config.size_after(index),
                        config.classes,
                        rng,
                    )?);
                }
                Ok((cell, width))
            },
        )?;
        let classifier = Linear::new(store, "classifier", WEIGHTS, c_p, config.classes, true, rng)?;
        Ok(EvalNetwork {
            config,
            genotype: genotype.clone(),
            stem,
            cells,
            aux,
            aux_after,
            classifier,
        })
    }

    /// Trainable parameters without the auxiliary head (the count DARTS reports).
    pub fn param_count(store: &ParamStore) -> usize {
        store
            .iter()
            .filter(|(_, p)| p.trainable && !p.name.starts_with(AUX_PREFIX))
            .map(|(_, p)| p.value.numel())
            .sum()
    }

    /// Trainable parameters of the auxiliary head.
    pub fn aux_param_count(store: &ParamStore) -> usize {
        store
            .iter()
            .filter(|(_, p)| p.trainable && p.name.starts_with(AUX_PREFIX))
            .map(|(_, p)| p.value.numel())
            .sum()
    }

    /// Whether the network has an auxiliary head.
    pub fn has_aux(&self) -> bool {
        self.aux.is_some()
    }

    /// Forward pass on images `[B, in_channels, image, image]`. On a training tape,
    /// `drop_prob` is the drop-path probability of every non-identity term and the auxiliary
    /// logits are computed when the network has a head; on an evaluation tape both are off.
    pub fn forward(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        x: Var,
        drop_prob: f32,
        rng: &mut Rng,
    ) -> Result<EvalOutput> {
        let drop = if t.is_training() { drop_prob } else { 0.0 };
        let s = self.stem.forward(t, store, x)?;
        let (mut s0, mut s1) = (s, s);
        let mut aux_logits = None;
        for (i, cell) in self.cells.iter().enumerate() {
            let out = cell.forward(t, store, s0, s1, drop, rng)?;
            s0 = s1;
            s1 = out;
            if i == self.aux_after && t.is_training() {
                if let Some(head) = &self.aux {
                    aux_logits = Some(head.forward(t, store, s1)?);
                }
            }
        }
        let pooled = t.global_avg_pool(s1)?;
        let logits = self.classifier.forward(t, store, pooled)?;
        Ok(EvalOutput { logits, aux_logits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genotype::DARTS_V2;

    #[test]
    fn darts_v2_names_match_darts_model() {
        let g = Genotype::from_darts_string(DARTS_V2).unwrap();
        let cfg = EvalConfig {
            channels: 4,
            cells: 3,
            in_channels: 1,
            image: 28,
            classes: 10,
            auxiliary: false,
        };
        let mut store = ParamStore::new();
        EvalNetwork::new(cfg, &g, &mut store, &mut Rng::new(0)).unwrap();
        for name in [
            "stem.0.weight",
            "stem.1.running_var",
            "cells.0.preprocess0.op.1.weight",
            "cells.0._ops.0.op.7.bias",
            "cells.0._ops.7.op.1.weight",
            "cells.1.preprocess1.op.2.weight",
            "cells.2.preprocess0.conv_1.weight",
            "classifier.bias",
        ] {
            assert!(store.find(name).is_some(), "{name} missing");
        }
        // dil_conv_3x3 is the 8th pair of the normal cell
        let dw = store.find("cells.0._ops.7.op.1.weight").unwrap();
        assert_eq!(store.value(dw).shape(), &[4, 1, 3, 3]);
    }
}
