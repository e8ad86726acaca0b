//! Parameters (with gradient, curvature and momentum slots) and non-trainable buffers.

use crate::error::{Error, Result};
use crate::tape::Gradients;
use crate::tensor::Tensor;

/// Handle to a parameter or buffer in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub(crate) usize);

impl ParamId {
    /// Position in the store.
    pub fn index(self) -> usize {
        self.0
    }
}

/// One named tensor of a model.
#[derive(Clone, Debug)]
pub struct Param {
    /// Unique name (`cells.0.edges.3.sep_conv_3x3.dw1.weight`, ...).
    pub name: String,
    /// Optimiser group (`"weights"`, `"switches"`, ...); buffers have group `""`.
    pub group: String,
    /// Whether the optimiser trains it (false for running statistics).
    pub trainable: bool,
    pub value: Tensor,
    /// Accumulated gradient.
    pub grad: Tensor,
    /// Accumulated diagonal curvature.
    pub curvature: Tensor,
    /// Optimiser momentum buffer.
    pub momentum: Tensor,
}

/// Every parameter and buffer of a model, in creation order.
#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(
        &mut self,
        name: &str,
        group: &str,
        trainable: bool,
        value: Tensor,
    ) -> Result<ParamId> {
        if self.params.iter().any(|p| p.name == name) {
            return Err(Error::Invalid(format!(
                "parameter name {name:?} used twice"
            )));
        }
        let zeros = Tensor::zeros(value.shape(), value.device())?;
        self.params.push(Param {
            name: name.to_string(),
            group: group.to_string(),
            trainable,
            grad: zeros.clone(),
            curvature: zeros.clone(),
            momentum: zeros,
            value,
        });
        Ok(ParamId(self.params.len() - 1))
    }

    /// Add a trainable parameter to optimiser group `group`.
    pub fn add(&mut self, name: &str, group: &str, value: Tensor) -> Result<ParamId> {
        self.insert(name, group, true, value)
    }

    /// Add a non-trainable buffer (batch-norm running statistics).
    pub fn add_buffer(&mut self, name: &str, value: Tensor) -> Result<ParamId> {
        self.insert(name, "", false, value)
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }
    pub fn get_mut(&mut self, id: ParamId) -> &mut Param {
        &mut self.params[id.0]
    }
    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }
    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.params[id.0].value
    }
    /// Two distinct values mutably at once (batch-norm running mean and variance).
    ///
    /// # Panics
    /// When `a == b`.
    pub fn values_mut2(&mut self, a: ParamId, b: ParamId) -> (&mut Tensor, &mut Tensor) {
        assert_ne!(a, b, "values_mut2 needs two different parameters");
        if a.0 < b.0 {
            let (lo, hi) = self.params.split_at_mut(b.0);
            (&mut lo[a.0].value, &mut hi[0].value)
        } else {
            let (lo, hi) = self.params.split_at_mut(a.0);
            (&mut hi[0].value, &mut lo[b.0].value)
        }
    }
    /// Id of the parameter called `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }
    /// All ids in creation order.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.params.len()).map(ParamId)
    }
    /// All parameters and buffers.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Param)> {
        self.params.iter().enumerate().map(|(i, p)| (ParamId(i), p))
    }
    pub(crate) fn params_mut(&mut self) -> &mut [Param] {
        &mut self.params
    }

    /// Number of trainable scalars, optionally restricted to one group.
    pub fn count(&self, group: Option<&str>) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable && group.is_none_or(|g| p.group == g))
            .map(|p| p.value.numel())
            .sum()
    }

    /// Add the parameter gradients of a backward pass to the accumulated gradients (one
    /// multi-tensor launch per device).
    pub fn accumulate_grads(&mut self, g: &Gradients) -> Result<()> {
        self.accumulate(g, |p| &mut p.grad)
    }

    /// `slot(param) += t` for every `(param, t)` of `g`, one `axpy_multi` per device.
    fn accumulate(
        &mut self,
        g: &Gradients,
        slot: impl Fn(&mut Param) -> &mut Tensor,
    ) -> Result<()> {
        let mut by_param: Vec<Option<&Tensor>> = vec![None; self.params.len()];
        for (id, t) in g.params() {
            by_param[id.0] = Some(t);
        }
        let mut batches: Vec<(crate::device::Device, Vec<&Tensor>, Vec<&mut Tensor>)> = Vec::new();
        for (p, t) in self.params.iter_mut().zip(by_param) {
            let Some(t) = t else { continue };
            let dev = t.device();
            let y = slot(p);
            match batches.iter_mut().find(|(d, _, _)| *d == dev) {
                Some((_, xs, ys)) => {
                    xs.push(t);
                    ys.push(y);
                }
                None => batches.push((dev, vec![t], vec![y])),
            }
        }
        for (dev, xs, mut ys) in batches {
            dev.backend()?.axpy_multi(1.0, &xs, &mut ys)?;
        }
        Ok(())
    }

    /// Make the gradients of a backward pass the accumulated gradients, without a zeroing
    /// pass: each parameter in `g` takes its tensor (moved, no copy and no launch); a
    /// trainable parameter that is not in `g` gets zeros. Non-trainable buffers are left as
    /// they are (no optimiser reads them). The same result as [`ParamStore::zero_grads`]
    /// followed by [`ParamStore::accumulate_grads`].
    pub fn set_grads(&mut self, g: Gradients) -> Result<()> {
        self.set_grads_except(g, |_| false)
    }

    /// [`ParamStore::set_grads`] that leaves the gradient of every parameter for which
    /// `untouched` is true as it is (neither replaced nor zeroed), for a step that updates
    /// only the other parameters and so computed only their gradients (a search's weight
    /// step leaves the switches' alone). `g` must hold no gradient of such a parameter.
    pub fn set_grads_except(
        &mut self,
        g: Gradients,
        untouched: impl Fn(&Param) -> bool,
    ) -> Result<()> {
        let grads = g.into_params();
        // Every gradient is checked before any is moved in: an error changes nothing.
        for (id, t) in &grads {
            let p = &self.params[id.0];
            if t.shape() != p.value.shape() || t.device() != p.value.device() {
                return Err(Error::Invalid(format!(
                    "set_grads: gradient {:?} on {} for parameter {} of shape {:?} on {}",
                    t.shape(),
                    t.device(),
                    p.name,
                    p.value.shape(),
                    p.value.device()
                )));
            }
            if untouched(p) {
                return Err(Error::Invalid(format!(
                    "set_grads_except: a gradient for parameter {}, which is to stay untouched",
                    p.name
                )));
            }
        }
        let mut got = vec![false; self.params.len()];
        for (id, t) in grads {
            self.params[id.0].grad = t;
            got[id.0] = true;
        }
        for (p, got) in self.params.iter_mut().zip(got) {
            if p.trainable && !got && !untouched(p) {
                p.grad = Tensor::zeros(p.value.shape(), p.value.device())?;
            }
        }
        Ok(())
    }

    /// Add the parameter curvatures of a curvature pass to the accumulated curvatures (one
    /// multi-tensor launch per device).
    pub fn accumulate_curvature(&mut self, c: &Gradients) -> Result<()> {
        self.accumulate(c, |p| &mut p.curvature)
    }

    /// Adds the gradient of the group-lasso penalty `sum_g coef_g ||(v_m)_{m in g}||` to the
    /// accumulated gradients, on the device, in one backend call; returns the penalty as a
    /// `[1]` tensor on the device. Each group is `(coef, members)`, a member `(param,
    /// element)`; a member may be in one group only. Every parameter involved must live on
    /// one device.
    pub fn add_group_lasso_gradient(
        &mut self,
        groups: &[(f64, Vec<(ParamId, usize)>)],
    ) -> Result<Tensor> {
        let mut order: Vec<usize> = Vec::new();
        let mut slot = std::collections::HashMap::new();
        let mut spec = crate::device::LassoGroups {
            start: vec![0],
            ..Default::default()
        };
        for (coef, members) in groups {
            for &(p, e) in members {
                if p.0 >= self.params.len() {
                    return Err(Error::Invalid(format!("group lasso: no parameter {}", p.0)));
                }
                let t = *slot.entry(p.0).or_insert_with(|| {
                    order.push(p.0);
                    order.len() - 1
                });
                spec.tensor.push(t);
                spec.elem.push(e);
            }
            spec.start.push(spec.tensor.len());
            spec.coef.push(*coef);
        }
        let device = match order.first() {
            Some(&i) => self.params[i].value.device(),
            None => crate::device::Device::Cpu,
        };
        let mut picked: Vec<Option<&mut Param>> = self.params.iter_mut().map(Some).collect();
        let mut chosen: Vec<&mut Param> = order
            .iter()
            .map(|&i| picked[i].take().expect("each parameter once"))
            .collect();
        let mut values = Vec::with_capacity(chosen.len());
        let mut grads = Vec::with_capacity(chosen.len());
        for p in chosen.iter_mut() {
            if p.value.device() != device {
                return Err(Error::Invalid(format!(
                    "group lasso: parameter {} on {} and others on {device}",
                    p.name,
                    p.value.device()
                )));
            }
            let Param { value, grad, .. } = &mut **p;
            values.push(&*value);
            grads.push(grad);
        }
        device
            .backend()?
            .group_lasso_grad(&values, &mut grads, &spec)
    }

    /// Zero every accumulated gradient.
    pub fn zero_grads(&mut self) -> Result<()> {
        for p in &mut self.params {
            p.grad = Tensor::zeros(p.value.shape(), p.value.device())?;
        }
        Ok(())
    }

    /// Zero every accumulated curvature.
    pub fn zero_curvature(&mut self) -> Result<()> {
        for p in &mut self.params {
            p.curvature = Tensor::zeros(p.value.shape(), p.value.device())?;
        }
        Ok(())
    }
}
