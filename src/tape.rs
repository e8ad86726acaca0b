//! Define-by-run tape autograd with a gradient pass and a diagonal-curvature pass.
//!
//! Every op call appends a node holding its output value, its input [`Var`]s and a boxed
//! [`TapeOp`] that knows its backward and its curvature backward. [`Tape::backward`] walks the
//! nodes in reverse propagating gradients; [`Tape::curvature_backward`] walks them in reverse
//! propagating the diagonal Gauss-Newton curvature `h` of the method note (section 6):
//! linear maps square their coefficients, ReLU masks, loss ops seed `h` with the diagonal of
//! their own Hessian. Both passes read only what the forward stored; neither runs a forward.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::params::{ParamId, ParamStore};
use crate::tensor::Tensor;

/// Handle to a value recorded on a [`Tape`]. Cheap to copy; only valid on its own tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub(crate) usize);

impl Var {
    /// Position of the node on its tape.
    pub fn index(self) -> usize {
        self.0
    }
}

/// What an op sees in its backward passes: the values of its inputs and its output, as the
/// forward recorded them.
pub struct OpCtx<'a> {
    /// Input values, in the order the op was recorded with.
    pub inputs: Vec<&'a Tensor>,
    /// The op's output value.
    pub output: &'a Tensor,
    needs_grad: Vec<bool>,
    per_sample: RefCell<Option<Tensor>>,
    known_seed: Option<f32>,
}

impl OpCtx<'_> {
    /// Whether input `i` needs a gradient (or curvature): ops may skip the work and return
    /// `None` for inputs that do not (the tape ignores what it returns for them anyway).
    pub fn needs_grad(&self, i: usize) -> bool {
        self.needs_grad.get(i).copied().unwrap_or(false)
    }

    /// The value of the incoming `dy` (or `hy`) when the host knows it without reading the
    /// device: the unit seed at the root of [`Tape::backward`] and
    /// [`Tape::curvature_backward`]. Loss ops use it to scale without a host read.
    pub fn known_seed(&self) -> Option<f32> {
        self.known_seed
    }

    /// Record per-sample reductions computed during this op's backward (the fused mixed op
    /// records `sum(x_k dy)` per sample and branch); they are returned in [`Gradients`].
    pub fn record_per_sample(&self, t: Tensor) {
        *self.per_sample.borrow_mut() = Some(t);
    }
}

/// An operation's backward rules. Implement this to add an op from outside the crate and
/// record it with [`Tape::push`].
pub trait TapeOp: Send + Sync {
    /// Short name for errors and debugging.
    fn name(&self) -> &'static str;
    /// Gradients with respect to each input given the output gradient `dy`
    /// (`None` for inputs that are not differentiable, such as labels).
    fn backward(&self, ctx: &OpCtx, dy: &Tensor) -> Result<Vec<Option<Tensor>>>;
    /// Diagonal curvature with respect to each input given the output curvature `hy`
    /// (Gauss-Newton: second derivatives of the op itself are dropped, except that loss ops
    /// seed `hy` times the diagonal of their own Hessian).
    fn curvature(&self, ctx: &OpCtx, hy: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

struct Node {
    value: Tensor,
    inputs: Vec<Var>,
    op: Option<Box<dyn TapeOp>>,
    param: Option<ParamId>,
    needs_grad: bool,
}

/// Gradients (or curvatures) of the leaves after a backward pass.
#[derive(Debug, Default)]
pub struct Gradients {
    params: Vec<(ParamId, Tensor)>,
    leaves: HashMap<Var, Tensor>,
    per_sample: HashMap<Var, Tensor>,
}

impl Gradients {
    /// The parameter gradients (or curvatures), each parameter once, by value.
    pub fn into_params(self) -> Vec<(ParamId, Tensor)> {
        self.params
    }

    /// Gradient (or curvature) of parameter `id`, if it took part in the loss.
    pub fn param(&self, id: ParamId) -> Option<&Tensor> {
        self.params.iter().find(|(p, _)| *p == id).map(|(_, t)| t)
    }
    /// All parameter entries.
    pub fn params(&self) -> &[(ParamId, Tensor)] {
        &self.params
    }
    /// Gradient (or curvature) of a leaf created with [`Tape::leaf`].
    pub fn leaf(&self, v: Var) -> Option<&Tensor> {
        self.leaves.get(&v)
    }
    /// Per-sample reductions an op recorded (see [`OpCtx::record_per_sample`]), keyed by the
    /// op's output var. For a mixed-op node: `[N, K]` with `sum(x_k dy)` per sample; the
    /// per-sample gradient of child switch `k` is `s0 * r[n, k]` and of the parent
    /// `sum_k s_k r[n, k]`.
    pub fn per_sample(&self, v: Var) -> Option<&Tensor> {
        self.per_sample.get(&v)
    }
    /// Every recorded per-sample reduction, keyed by the recording op's output var, in var
    /// order.
    pub fn per_sample_all(&self) -> Vec<(Var, &Tensor)> {
        let mut v: Vec<(Var, &Tensor)> = self.per_sample.iter().map(|(k, t)| (*k, t)).collect();
        v.sort_by_key(|(k, _)| k.0);
        v
    }
}

/// Which pass a reverse walk computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Gradient,
    Curvature,
}

/// The tape: a forward computation recorded for reverse passes.
#[derive(Default)]
pub struct Tape {
    nodes: Vec<Node>,
    training: bool,
}

impl Tape {
    /// An empty tape in training mode.
    pub fn new() -> Tape {
        Tape {
            nodes: Vec::new(),
            training: true,
        }
    }

    /// An empty tape in evaluation mode (batch norm uses running statistics, dropout and
    /// drop-path are the identity).
    pub fn new_eval() -> Tape {
        Tape {
            nodes: Vec::new(),
            training: false,
        }
    }

    /// Whether ops run in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A constant input (no gradient).
    pub fn input(&mut self, value: Tensor) -> Var {
        self.push_leaf(value, None, false)
    }

    /// An input whose gradient and curvature are reported in [`Gradients::leaf`].
    pub fn leaf(&mut self, value: Tensor) -> Var {
        self.push_leaf(value, None, true)
    }

    /// The current value of parameter `id` as a leaf whose gradient goes to that parameter.
    pub fn param(&mut self, store: &ParamStore, id: ParamId) -> Var {
        self.push_leaf(store.value(id).clone(), Some(id), true)
    }

    fn push_leaf(&mut self, value: Tensor, param: Option<ParamId>, needs_grad: bool) -> Var {
        self.nodes.push(Node {
            value,
            inputs: Vec::new(),
            op: None,
            param,
            needs_grad,
        });
        Var(self.nodes.len() - 1)
    }

    /// The value of `v`.
    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    /// Record an op's output. `inputs` are the vars whose values the op's [`OpCtx`] will see.
    pub fn push(&mut self, value: Tensor, inputs: &[Var], op: impl TapeOp + 'static) -> Var {
        let needs_grad = inputs.iter().any(|v| self.nodes[v.0].needs_grad);
        self.nodes.push(Node {
            value,
            inputs: inputs.to_vec(),
            op: Some(Box::new(op)),
            param: None,
            needs_grad,
        });
        Var(self.nodes.len() - 1)
    }

    /// Reverse-mode gradients of the scalar `loss` with respect to every parameter and
    /// gradient leaf it depends on.
    pub fn backward(&self, loss: Var) -> Result<Gradients> {
        self.reverse(loss, Pass::Gradient)
    }

    /// The diagonal Gauss-Newton curvature of the scalar `loss` with respect to every
    /// parameter and leaf (method note section 6). `loss` should be (a sum of) loss ops such
    /// as [`Tape::cross_entropy`]; terms without a loss Hessian (a group-lasso penalty)
    /// contribute nothing.
    pub fn curvature_backward(&self, loss: Var) -> Result<Gradients> {
        self.reverse(loss, Pass::Curvature)
    }

    /// [`Tape::backward`] restricted to the parameters for which `wanted` is true: the pass
    /// visits only the nodes that depend on one of them, so work that leads only to other
    /// parameters or leaves (a frozen stem, weights whose gradient is not used) is skipped.
    /// The gradients of the wanted parameters are bit for bit those of [`Tape::backward`];
    /// no other parameter or leaf gets one.
    pub fn backward_for(&self, loss: Var, wanted: impl Fn(ParamId) -> bool) -> Result<Gradients> {
        let mask = self.reaching(loss, wanted);
        self.reverse_masked(loss, Pass::Gradient, Some(&mask))
    }

    /// [`Tape::curvature_backward`] restricted to the parameters for which `wanted` is true
    /// (see [`Tape::backward_for`]): the search's curvature pass wants the switches only and
    /// so skips every weight-curvature correlation. The wanted curvatures are bit for bit
    /// those of [`Tape::curvature_backward`].
    pub fn curvature_backward_for(
        &self,
        loss: Var,
        wanted: impl Fn(ParamId) -> bool,
    ) -> Result<Gradients> {
        let mask = self.reaching(loss, wanted);
        self.reverse_masked(loss, Pass::Curvature, Some(&mask))
    }

    /// For each node up to `loss`: whether it depends on a parameter leaf for which `wanted`
    /// is true (a reverse pass must visit it to reach that parameter).
    fn reaching(&self, loss: Var, wanted: impl Fn(ParamId) -> bool) -> Vec<bool> {
        let mut mask = vec![false; loss.0 + 1];
        for i in 0..=loss.0 {
            let node = &self.nodes[i];
            mask[i] = match (&node.op, node.param) {
                (None, Some(p)) => node.needs_grad && wanted(p),
                (None, None) => false,
                (Some(_), _) => node.inputs.iter().any(|v| mask[v.0]),
            };
        }
        mask
    }

    /// Reverse-mode gradients of `sum(seed * root)` for a var of any shape: a vector-Jacobian
    /// product with `seed` (same shape and device as `root`'s value). With `root` the logits
    /// and `seed` a one-hot column this gives, through [`Gradients::per_sample`], the
    /// per-sample switch Jacobian rows of one class.
    pub fn backward_seeded(&self, root: Var, seed: Tensor) -> Result<Gradients> {
        let want = self.nodes[root.0].value.shape();
        if seed.shape() != want {
            return Err(Error::Invalid(format!(
                "backward_seeded: seed of shape {:?} for a var of shape {want:?}",
                seed.shape()
            )));
        }
        self.reverse_from(root, seed, None, Pass::Gradient, None)
    }

    /// The vars an op node was recorded with (empty for leaves).
    pub fn inputs_of(&self, v: Var) -> &[Var] {
        &self.nodes[v.0].inputs
    }

    /// The parameter a leaf stands for ([`Tape::param`]), if any.
    pub fn param_of(&self, v: Var) -> Option<ParamId> {
        self.nodes[v.0].param
    }

    fn reverse(&self, loss: Var, pass: Pass) -> Result<Gradients> {
        self.reverse_masked(loss, pass, None)
    }

    /// The unit-seeded reverse pass from the scalar `loss`, visiting only the nodes whose
    /// `mask` entry is true (every node that needs a gradient without a mask).
    fn reverse_masked(&self, loss: Var, pass: Pass, mask: Option<&[bool]>) -> Result<Gradients> {
        let root = &self.nodes[loss.0];
        if root.value.numel() != 1 {
            return Err(Error::Invalid(format!(
                "backward: loss must have one element, it has shape {:?}",
                root.value.shape()
            )));
        }
        let device = root.value.device();
        let seed = device.backend()?.upload(vec![1.0], root.value.shape())?;
        self.reverse_from(loss, seed, Some(1.0), pass, mask)
    }

    /// The reverse pass from `loss` seeded with `seed` (whose single value is `known`, when
    /// the host knows it).
    fn reverse_from(
        &self,
        loss: Var,
        seed: Tensor,
        known: Option<f32>,
        pass: Pass,
        mask: Option<&[bool]>,
    ) -> Result<Gradients> {
        let needs = |i: usize| mask.map_or(self.nodes[i].needs_grad, |m| m[i]);
        let mut acc: Vec<Option<Tensor>> = (0..=loss.0).map(|_| None).collect();
        // A node's contributions after its first wait here and are added to it together, in
        // arrival order, one `add_into` launch per ADD_INTO_MAX (the values of one axpy each;
        // at most ADD_INTO_MAX - 1 wait per node).
        let mut pending: Vec<Vec<Tensor>> = (0..=loss.0).map(|_| Vec::new()).collect();
        let flush = |a: &mut Tensor, waiting: &mut Vec<Tensor>| -> Result<()> {
            if !waiting.is_empty() {
                let xs: Vec<&Tensor> = waiting.iter().collect();
                a.device().backend()?.add_into(a, &xs)?;
                waiting.clear();
            }
            Ok(())
        };
        acc[loss.0] = Some(seed);
        let mut out = Gradients::default();
        for i in (0..=loss.0).rev() {
            let Some(mut g) = acc[i].take() else { continue };
            let node = &self.nodes[i];
            if !needs(i) {
                continue;
            }
            flush(&mut g, &mut pending[i])?;
            let Some(op) = &node.op else {
                if let Some(p) = node.param {
                    out.params.push((p, g));
                } else {
                    out.leaves.insert(Var(i), g);
                }
                continue;
            };
            let ctx = OpCtx {
                inputs: node.inputs.iter().map(|v| &self.nodes[v.0].value).collect(),
                output: &node.value,
                needs_grad: node.inputs.iter().map(|v| needs(v.0)).collect(),
                per_sample: RefCell::new(None),
                known_seed: if i == loss.0 { known } else { None },
            };
            let grads = match pass {
                Pass::Gradient => op.backward(&ctx, &g)?,
                Pass::Curvature => op.curvature(&ctx, &g)?,
            };
            if let Some(t) = ctx.per_sample.into_inner() {
                out.per_sample.insert(Var(i), t);
            }
            if grads.len() != node.inputs.len() {
                return Err(Error::Invalid(format!(
                    "op {} returned {} gradients for {} inputs",
                    op.name(),
                    grads.len(),
                    node.inputs.len()
                )));
            }
            for (v, gi) in node.inputs.iter().zip(grads) {
                let Some(gi) = gi else { continue };
                if !needs(v.0) {
                    continue;
                }
                if gi.shape() != self.nodes[v.0].value.shape() {
                    return Err(Error::Invalid(format!(
                        "op {} returned a gradient of shape {:?} for an input of shape {:?}",
                        op.name(),
                        gi.shape(),
                        self.nodes[v.0].value.shape()
                    )));
                }
                match &mut acc[v.0] {
                    Some(a) => {
                        pending[v.0].push(gi);
                        if pending[v.0].len() == crate::device::ADD_INTO_MAX {
                            flush(a, &mut pending[v.0])?;
                        }
                    }
                    slot @ None => *slot = Some(gi),
                }
            }
        }
        // Parameters used several times on the tape appear once, summed.
        let mut merged: Vec<(ParamId, Tensor)> = Vec::with_capacity(out.params.len());
        for (p, g) in out.params.drain(..).rev() {
            if let Some((_, a)) = merged.iter_mut().find(|(q, _)| *q == p) {
                g.device().backend()?.axpy(1.0, &g, a)?;
            } else {
                merged.push((p, g));
            }
        }
        out.params = merged;
        Ok(out)
    }
}
