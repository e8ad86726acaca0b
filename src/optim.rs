//! SGD with momentum and per-group settings, global-norm clipping, cosine schedule.

use std::collections::HashMap;

use crate::device::SgdStep;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Settings of one optimiser group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdGroup {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// SGD with momentum (PyTorch semantics: `m = mu m + (g + wd w); w -= lr m`) with settings
/// per parameter group; parameters of a group without settings are left untouched.
#[derive(Clone, Debug, Default)]
pub struct Sgd {
    groups: HashMap<String, SgdGroup>,
}

impl Sgd {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set (or replace) the settings of `group`.
    pub fn group(mut self, group: &str, settings: SgdGroup) -> Self {
        self.groups.insert(group.to_string(), settings);
        self
    }

    /// Settings of `group`.
    pub fn settings(&self, group: &str) -> Option<&SgdGroup> {
        self.groups.get(group)
    }

    /// One update of every trainable parameter from its accumulated gradient. `lr_factor`
    /// multiplies every group's learning rate (the schedule); `grad_scale` multiplies every
    /// gradient (clipping).
    pub fn step(&self, store: &mut ParamStore, lr_factor: f32, grad_scale: f32) -> Result<()> {
        // One multi-tensor update per (group, device): the parameters of a group share
        // their settings.
        let mut batches: Vec<(&str, crate::Device, Vec<&mut crate::params::Param>)> = Vec::new();
        for p in store.params_mut() {
            if !p.trainable || !self.groups.contains_key(&p.group) {
                continue;
            }
            let dev = p.value.device();
            match batches
                .iter_mut()
                .find(|(g, d, _)| *g == p.group.as_str() && *d == dev)
            {
                Some((_, _, v)) => v.push(p),
                None => {
                    let g = self
                        .groups
                        .get_key_value(&p.group)
                        .map(|(k, _)| k.as_str())
                        .expect("checked above");
                    batches.push((g, dev, vec![p]));
                }
            }
        }
        for (group, dev, params) in batches {
            let s = &self.groups[group];
            let step = SgdStep {
                lr: s.lr * lr_factor,
                momentum: s.momentum,
                weight_decay: s.weight_decay,
                grad_scale,
            };
            let mut ws = Vec::with_capacity(params.len());
            let mut gs = Vec::with_capacity(params.len());
            let mut ms = Vec::with_capacity(params.len());
            for p in params {
                let crate::params::Param {
                    value,
                    grad,
                    momentum,
                    ..
                } = p;
                ws.push(value);
                gs.push(&*grad);
                ms.push(momentum);
            }
            dev.backend()?
                .sgd_momentum_multi(&mut ws, &gs, &mut ms, step)?;
        }
        Ok(())
    }
}

/// Global L2 norm of the accumulated gradients of the given groups (all trainable
/// parameters when `groups` is empty): one host read.
pub fn grad_norm(store: &ParamStore, groups: &[&str]) -> Result<f64> {
    Ok(grad_norms(store, &[groups])?[0])
}

/// [`grad_norm`] of several selections of groups at once, with ONE host read for all of them
/// (the parameters of the first selection's device; every gradient must live there).
pub fn grad_norms(store: &ParamStore, selections: &[&[&str]]) -> Result<Vec<f64>> {
    let chosen: Vec<Vec<&crate::tensor::Tensor>> = selections
        .iter()
        .map(|groups| {
            store
                .iter()
                .filter(|(_, p)| {
                    p.trainable && (groups.is_empty() || groups.contains(&p.group.as_str()))
                })
                .map(|(_, p)| &p.grad)
                .collect()
        })
        .collect();
    let Some(first) = chosen.iter().flatten().next() else {
        return Ok(vec![0.0; selections.len()]);
    };
    let device = first.device();
    if let Some(g) = chosen.iter().flatten().find(|g| g.device() != device) {
        return Err(Error::Invalid(format!(
            "grad_norms: gradients on {device} and on {}",
            g.device()
        )));
    }
    let refs: Vec<&[&crate::tensor::Tensor]> = chosen.iter().map(|v| v.as_slice()).collect();
    Ok(device
        .backend()?
        .sum_of_squares(&refs)?
        .into_iter()
        .map(f64::sqrt)
        .collect())
}

/// Gradient scale that clips the global norm to `max_norm` (PyTorch `clip_grad_norm_`:
/// `min(1, max_norm / (norm + 1e-6))`). Errors when the norm is not finite.
pub fn clip_scale(norm: f64, max_norm: f64) -> Result<f32> {
    if !norm.is_finite() {
        return Err(Error::NonFinite(format!("gradient norm is {norm}")));
    }
    Ok((max_norm / (norm + 1e-6)).min(1.0) as f32)
}

/// Cosine-annealing factor at `step` of `total` steps, going from 1 to `min_factor`
/// (PyTorch `CosineAnnealingLR` with `eta_min = min_factor * lr`).
pub fn cosine_factor(step: usize, total: usize, min_factor: f32) -> f32 {
    if total == 0 {
        return 1.0;
    }
    let t = (step.min(total) as f64) / total as f64;
    let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
    (min_factor as f64 + (1.0 - min_factor as f64) * c) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn cosine_endpoints() {
        assert_eq!(cosine_factor(0, 10, 0.0), 1.0);
        assert!(cosine_factor(10, 10, 0.1) - 0.1 < 1e-6);
        assert!((cosine_factor(5, 10, 0.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn sgd_matches_hand_computation() {
        let mut store = ParamStore::new();
        let w = store
            .add(
                "w",
                "weights",
                Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap(),
            )
            .unwrap();
        let s = store
            .add("s", "switches", Tensor::from_vec(vec![0.5], &[1]).unwrap())
            .unwrap();
        store.get_mut(w).grad = Tensor::from_vec(vec![0.5, 0.25], &[2]).unwrap();
        store.get_mut(s).grad = Tensor::from_vec(vec![2.0], &[1]).unwrap();
        let opt = Sgd::new()
            .group(
                "weights",
                SgdGroup {
                    lr: 0.1,
                    momentum: 0.9,
                    weight_decay: 0.01,
                },
            )
            .group(
                "switches",
                SgdGroup {
                    lr: 1.0,
                    momentum: 0.0,
                    weight_decay: 0.0,
                },
            );
        opt.step(&mut store, 1.0, 1.0).unwrap();
        opt.step(&mut store, 1.0, 1.0).unwrap();
        // Hand: w0: d1 = 0.5 + 0.01 = 0.51, m1 = 0.51, w = 1 - 0.051 = 0.949;
        // d2 = 0.5 + 0.00949 = 0.50949, m2 = 0.9*0.51 + 0.50949 = 0.96849, w = 0.949 - 0.096849
        let v = store.value(w).to_vec();
        assert!((v[0] - 0.852151).abs() < 1e-5, "{}", v[0]);
        // s: 0.5 - 2 - 2 = -3.5
        assert!((store.value(s).to_vec()[0] + 3.5).abs() < 1e-6);
        let n = grad_norm(&store, &["weights"]).unwrap();
        assert!((n - (0.25f64 + 0.0625).sqrt()).abs() < 1e-6);
        assert!((clip_scale(10.0, 5.0).unwrap() - 0.5).abs() < 1e-6);
        assert!(clip_scale(f64::NAN, 5.0).is_err());
    }
}
