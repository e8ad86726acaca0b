//! The candidate operations and cell pre-processing layers (DARTS' `OPS`, `ReLUConvBN` and
//! `FactorizedReduce`), shared by the search supernet ([`crate::supernet`]) and the
//! evaluation network ([`crate::retrain::network`]).
//!
//! The two networks build the same layers in two [`Flavour`]s: the supernet's batch norms
//! have no affine parameters and every pool is followed by one (DARTS' search `MixedOp`),
//! while the evaluation network has affine batch norms, bare pools, and DARTS' `model.py`
//! parameter names (so its trained weights load into the PyTorch model).

use std::collections::HashMap;

use bayesnas_engine::nn::{BatchNorm2d, Conv2d};
use bayesnas_engine::prelude::*;

use crate::space::{reduction_cells, CellType, Node, Op};
use crate::supernet::WEIGHTS;

/// Which network the layers belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// Search supernet: BN without affine parameters, a BN after each pool, our names.
    Search,
    /// Evaluation network: affine BN, bare pools, DARTS' parameter names.
    Eval,
}

impl Flavour {
    /// Convolution without bias, in parameter group [`WEIGHTS`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        self,
        store: &mut ParamStore,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        spec: Conv2dSpec,
        rng: &mut Rng,
    ) -> Result<Conv2d> {
        Conv2d::new(store, name, WEIGHTS, cin, cout, k, spec, false, rng)
    }

    /// Batch norm of the flavour (affine only when evaluating).
    pub(crate) fn bn(self, store: &mut ParamStore, name: &str, c: usize) -> Result<BatchNorm2d> {
        BatchNorm2d::new(store, name, WEIGHTS, c, self == Flavour::Eval)
    }

    /// `{prefix}.{ours}` in the search flavour, `{prefix}.{darts}` when evaluating.
    fn name(self, prefix: &str, ours: &str, darts: &str) -> String {
        match self {
            Flavour::Search => format!("{prefix}.{ours}"),
            Flavour::Eval => format!("{prefix}.{darts}"),
        }
    }
}

/// The stem: 3x3 conv from the image channels, then an affine BN (in both flavours).
#[derive(Clone, Debug)]
pub(crate) struct Stem {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Stem {
    pub(crate) fn new(
        f: Flavour,
        store: &mut ParamStore,
        in_channels: usize,
        stem_c: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let conv_name = f.name("stem", "conv", "0");
        let spec = Conv2dSpec::new().padding(1);
        let conv = f.conv(store, &conv_name, in_channels, stem_c, 3, spec, rng)?;
        let bn = BatchNorm2d::new(store, &f.name("stem", "bn", "1"), WEIGHTS, stem_c, true)?;
        Ok(Stem { conv, bn })
    }

    pub(crate) fn forward(&self, t: &mut Tape, store: &mut ParamStore, x: Var) -> Result<Var> {
        let s = self.conv.forward(t, store, x)?;
        self.bn.forward(t, store, s)
    }
}

/// Where a cell stands in its network (see [`build_cells`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CellSlot {
    /// Position in depth order; the cell's parameters are named `cells.{index}.*`.
    pub(crate) index: usize,
    pub(crate) cell_type: CellType,
    /// Channels per node of this cell.
    pub(crate) c: usize,
}

impl CellSlot {
    /// The name prefix of the cell's parameters.
    pub(crate) fn name(&self) -> String {
        format!("cells.{}", self.index)
    }
}

/// Builds the cells of a network of `cells` cells (reductions at 1/3 and 2/3 of the depth)
/// after a stem of `stem_c` channels, DARTS' channel bookkeeping: `c` channels per node in
/// the first stage, doubled at each reduction cell; `c_{k-2}` is factorized-reduced after a
/// reduction cell. For each cell, the pre-processing of its inputs is built, then
/// `build(store, slot, inputs, rng)` builds the rest and returns the cell with its output
/// width.
/// Returns the cells in depth order and the output width of the last one.
pub(crate) fn build_cells<C>(
    f: Flavour,
    store: &mut ParamStore,
    cells: usize,
    stem_c: usize,
    c: usize,
    rng: &mut Rng,
    mut build: impl FnMut(&mut ParamStore, CellSlot, CellInputs, &mut Rng) -> Result<(C, usize)>,
) -> Result<(Vec<C>, usize)> {
    let (mut c_pp, mut c_p, mut c_cur) = (stem_c, stem_c, c);
    let mut built = Vec::new();
    let mut reduction_prev = false;
    for (index, &red) in reduction_cells(cells).iter().enumerate() {
        if red {
            c_cur *= 2;
        }
        let cell_type = if red {
            CellType::Reduce
        } else {
            CellType::Normal
        };
        let name = format!("cells.{index}");
        let in1_name = f.name(&name, "pre_in1", "preprocess0");
        let in0_name = f.name(&name, "pre_in0", "preprocess1");
        let inputs = CellInputs {
            in1: Pre::new(f, store, &in1_name, reduction_prev, c_pp, c_cur, rng)?,
            in0: ReluConvBn::new(f, store, &in0_name, c_p, c_cur, rng)?,
        };
        let slot = CellSlot {
            index,
            cell_type,
            c: c_cur,
        };
        let (cell, width) = build(store, slot, inputs, rng)?;
        built.push(cell);
        reduction_prev = red;
        c_pp = c_p;
        c_p = width;
    }
    Ok((built, c_p))
}

/// The pre-processing of a cell's inputs: `c_{k-2}` (our `in1`, DARTS `preprocess0`) by
/// [`Pre`], `c_{k-1}` (our `in0`, DARTS `preprocess1`) by ReLU-conv-BN.
#[derive(Clone, Debug)]
pub(crate) struct CellInputs {
    in1: Pre,
    in0: ReluConvBn,
}

impl CellInputs {
    /// The states of the input nodes: `in1` from `prev_prev`, then `in0` from `prev`.
    pub(crate) fn forward(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        prev_prev: Var,
        prev: Var,
    ) -> Result<HashMap<Node, Var>> {
        let in1 = self.in1.forward(t, store, prev_prev)?;
        let in0 = self.in0.forward(t, store, prev)?;
        Ok(HashMap::from([(Node::In0, in0), (Node::In1, in1)]))
    }
}

/// `relu(x)` of the state `x` of `node`, taken once per cell (cached in `relus`): every op of
/// the cell that starts with a ReLU reads the same one.
pub(crate) fn relu_once(
    t: &mut Tape,
    relus: &mut HashMap<Node, Var>,
    node: Node,
    x: Var,
) -> Result<Var> {
    if let Some(&r) = relus.get(&node) {
        return Ok(r);
    }
    let r = t.relu(x)?;
    relus.insert(node, r);
    Ok(r)
}

/// The state of a node: the sum of its terms (the term itself when there is one).
pub(crate) fn sum_terms(t: &mut Tape, terms: &[Var]) -> Result<Var> {
    if terms.len() == 1 {
        Ok(terms[0])
    } else {
        t.sum(terms)
    }
}

/// ReLU -> 1x1 conv -> BN (DARTS `ReLUConvBN`).
#[derive(Clone, Debug)]
pub(crate) struct ReluConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ReluConvBn {
    pub(crate) fn new(
        f: Flavour,
        store: &mut ParamStore,
        name: &str,
        cin: usize,
        cout: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let conv_name = f.name(name, "conv", "op.1");
        Ok(ReluConvBn {
            conv: f.conv(store, &conv_name, cin, cout, 1, Conv2dSpec::new(), rng)?,
            bn: f.bn(store, &f.name(name, "bn", "op.2"), cout)?,
        })
    }

    pub(crate) fn forward(&self, t: &mut Tape, store: &mut ParamStore, x: Var) -> Result<Var> {
        let r = t.relu(x)?;
        let c = self.conv.forward(t, store, r)?;
        self.bn.forward(t, store, c)
    }
}

/// DARTS `FactorizedReduce`: ReLU, two 1x1 stride-2 convs of C/2 outputs (the second on the
/// input shifted by one pixel), concat, BN.
#[derive(Clone, Debug)]
pub(crate) struct FactorizedReduce {
    conv1: Conv2d,
    conv2: Conv2d,
    bn: BatchNorm2d,
}

impl FactorizedReduce {
    pub(crate) fn new(
        f: Flavour,
        store: &mut ParamStore,
        name: &str,
        cin: usize,
        cout: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        if cout % 2 != 0 {
            return Err(Error::Invalid(format!(
                "factorized reduce {name}: odd output channels {cout}"
            )));
        }
        let spec = Conv2dSpec::new().stride(2);
        let (n1, n2) = (
            f.name(name, "conv1", "conv_1"),
            f.name(name, "conv2", "conv_2"),
        );
        Ok(FactorizedReduce {
            conv1: f.conv(store, &n1, cin, cout / 2, 1, spec, rng)?,
            conv2: f.conv(store, &n2, cin, cout / 2, 1, spec, rng)?,
            bn: f.bn(store, &format!("{name}.bn"), cout)?,
        })
    }

    /// `relu_x` is the already rectified input.
    pub(crate) fn forward(&self, t: &mut Tape, store: &mut ParamStore, relu_x: Var) -> Result<Var> {
        let a = self.conv1.forward(t, store, relu_x)?;
        let shifted = t.shift_crop(relu_x)?;
        let b = self.conv2.forward(t, store, shifted)?;
        let c = t.concat_channels(&[a, b])?;
        self.bn.forward(t, store, c)
    }
}

/// Pre-processing of the cell input `c_{k-2}`: ReLU-conv-BN, or factorized reduce after a
/// reduction cell.
#[derive(Clone, Debug)]
pub(crate) enum Pre {
    Conv(ReluConvBn),
    Reduce(FactorizedReduce),
}

impl Pre {
    /// Factorized reduce when the previous cell was a reduction cell, ReLU-conv-BN otherwise.
    pub(crate) fn new(
        f: Flavour,
        store: &mut ParamStore,
        name: &str,
        reduction_prev: bool,
        cin: usize,
        cout: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(if reduction_prev {
            Pre::Reduce(FactorizedReduce::new(f, store, name, cin, cout, rng)?)
        } else {
            Pre::Conv(ReluConvBn::new(f, store, name, cin, cout, rng)?)
        })
    }

    pub(crate) fn forward(&self, t: &mut Tape, store: &mut ParamStore, x: Var) -> Result<Var> {
        match self {
            Pre::Conv(m) => m.forward(t, store, x),
            Pre::Reduce(m) => {
                let r = t.relu(x)?;
                m.forward(t, store, r)
            }
        }
    }
}

/// One candidate operation's layers.
#[derive(Clone, Debug)]
pub(crate) enum OpLayers {
    /// [dw k (stride s) -> pw -> BN -> ReLU -> dw k -> pw -> BN] after the shared ReLU.
    Sep {
        dw1: Conv2d,
        pw1: Conv2d,
        bn1: BatchNorm2d,
        dw2: Conv2d,
        pw2: Conv2d,
        bn2: BatchNorm2d,
    },
    /// dw k dilation 2 (stride s) -> pw -> BN after the shared ReLU.
    Dil {
        dw: Conv2d,
        pw: Conv2d,
        bn: BatchNorm2d,
    },
    /// 3x3 max pool, followed by a BN in the search flavour.
    MaxPool {
        spec: Pool2dSpec,
        bn: Option<BatchNorm2d>,
    },
    /// 3x3 average pool (padding not counted), followed by a BN in the search flavour.
    AvgPool {
        spec: Pool2dSpec,
        bn: Option<BatchNorm2d>,
    },
    Identity,
    /// The skip connection of a stride-2 edge.
    Reduce(FactorizedReduce),
}

/// `pw(dw(x))` for a depthwise `dw` and a pointwise `pw` (both without bias) as one op
/// ([`Tape::depthwise_pointwise`]): the values of `dw.forward` then `pw.forward`, with the
/// forward in one launch.
fn depthwise_pointwise(
    t: &mut Tape,
    store: &ParamStore,
    dw: &Conv2d,
    pw: &Conv2d,
    x: Var,
) -> Result<Var> {
    debug_assert!(dw.bias.is_none() && pw.bias.is_none());
    let (w_dw, w_pw) = (t.param(store, dw.weight), t.param(store, pw.weight));
    t.depthwise_pointwise(x, w_dw, dw.spec, w_pw)
}

impl OpLayers {
    /// The layers of `op` on `c` channels with `stride`, registered under `name`.
    pub(crate) fn new(
        f: Flavour,
        store: &mut ParamStore,
        name: &str,
        op: Op,
        c: usize,
        stride: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let dw =
            |store: &mut ParamStore, n: String, k: usize, s: usize, dil: usize, rng: &mut Rng| {
                let spec = Conv2dSpec::new()
                    .stride(s)
                    .padding(dil * (k - 1) / 2)
                    .dilation(dil)
                    .groups(c);
                f.conv(store, &n, c, c, k, spec, rng)
            };
        let pw = |store: &mut ParamStore, n: String, rng: &mut Rng| {
            f.conv(store, &n, c, c, 1, Conv2dSpec::new(), rng)
        };
        let pool = Pool2dSpec {
            kernel: 3,
            stride,
            padding: 1,
        };
        let pool_bn = |store: &mut ParamStore| -> Result<Option<BatchNorm2d>> {
            match f {
                Flavour::Search => Ok(Some(f.bn(store, &format!("{name}.bn"), c)?)),
                Flavour::Eval => Ok(None),
            }
        };
        let n = |ours: &str, darts: &str| f.name(name, ours, darts);
        Ok(match op {
            Op::SepConv3x3 | Op::SepConv5x5 => {
                let k = if op == Op::SepConv3x3 { 3 } else { 5 };
                OpLayers::Sep {
                    dw1: dw(store, n("dw1", "op.1"), k, stride, 1, rng)?,
                    pw1: pw(store, n("pw1", "op.2"), rng)?,
                    bn1: f.bn(store, &n("bn1", "op.3"), c)?,
                    dw2: dw(store, n("dw2", "op.5"), k, 1, 1, rng)?,
                    pw2: pw(store, n("pw2", "op.6"), rng)?,
                    bn2: f.bn(store, &n("bn2", "op.7"), c)?,
                }
            }
            Op::DilConv3x3 | Op::DilConv5x5 => {
                let k = if op == Op::DilConv3x3 { 3 } else { 5 };
                OpLayers::Dil {
                    dw: dw(store, n("dw", "op.1"), k, stride, 2, rng)?,
                    pw: pw(store, n("pw", "op.2"), rng)?,
                    bn: f.bn(store, &n("bn", "op.3"), c)?,
                }
            }
            Op::MaxPool3x3 => OpLayers::MaxPool {
                spec: pool,
                bn: pool_bn(store)?,
            },
            Op::AvgPool3x3 => OpLayers::AvgPool {
                spec: pool,
                bn: pool_bn(store)?,
            },
            Op::SkipConnect if stride == 1 => OpLayers::Identity,
            Op::SkipConnect => {
                let reduce_name = match f {
                    Flavour::Search => format!("{name}.reduce"),
                    Flavour::Eval => name.to_string(),
                };
                OpLayers::Reduce(FactorizedReduce::new(f, store, &reduce_name, c, c, rng)?)
            }
        })
    }

    /// Whether the op has no weights (pools with their weightless search-time BN, the
    /// identity); the stride-2 skip (factorized reduce) has weights.
    pub(crate) fn parameter_free(&self) -> bool {
        matches!(
            self,
            OpLayers::MaxPool { .. } | OpLayers::AvgPool { .. } | OpLayers::Identity
        )
    }

    /// Whether the op starts with a ReLU of its input (then it reads `relu_x`).
    pub(crate) fn needs_relu(&self) -> bool {
        matches!(
            self,
            OpLayers::Sep { .. } | OpLayers::Dil { .. } | OpLayers::Reduce(_)
        )
    }

    /// `x` is the node state, `relu_x` its rectified version (shared by all ops that start
    /// with a ReLU: mathematically identical to each op applying its own).
    pub(crate) fn forward(
        &self,
        t: &mut Tape,
        store: &mut ParamStore,
        x: Var,
        relu_x: Var,
    ) -> Result<Var> {
        let then_bn =
            |t: &mut Tape, store: &mut ParamStore, a: Var, bn: &Option<BatchNorm2d>| match bn {
                Some(bn) => bn.forward(t, store, a),
                None => Ok(a),
            };
        match self {
            OpLayers::Sep {
                dw1,
                pw1,
                bn1,
                dw2,
                pw2,
                bn2,
            } => {
                let a = depthwise_pointwise(t, store, dw1, pw1, relu_x)?;
                // bn1 then ReLU as one op (the same values; no ReLU launches).
                let a = bn1.forward_relu(t, store, a)?;
                let a = depthwise_pointwise(t, store, dw2, pw2, a)?;
                bn2.forward(t, store, a)
            }
            OpLayers::Dil { dw, pw, bn } => {
                let a = depthwise_pointwise(t, store, dw, pw, relu_x)?;
                bn.forward(t, store, a)
            }
            OpLayers::MaxPool { spec, bn } => {
                let a = t.max_pool2d(x, *spec)?;
                then_bn(t, store, a, bn)
            }
            OpLayers::AvgPool { spec, bn } => {
                let a = t.avg_pool2d(x, *spec)?;
                then_bn(t, store, a, bn)
            }
            OpLayers::Identity => Ok(x),
            OpLayers::Reduce(fr) => fr.forward(t, store, relu_x),
        }
    }
}
