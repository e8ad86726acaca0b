//! [`Compressor`]: the state of a compression run (network, parameters, `gamma` and `omega`
//! per group or per weight) and its steps: training with the penalty, the curvature pass,
//! the closed-form update and pruning.

use std::collections::HashMap;
use std::path::Path;

use bayesnas_engine::ard;
use bayesnas_engine::io::save_store;
use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use super::net::{CompressNet, WEIGHTS};
use super::prune::{positions, slice_rows_cols_vec};
use super::settings::{CompressSettings, PenaltyMode};
use super::{count_correct, evaluate, move_store, train_pass, Model};

/// What one epoch did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EpochStats {
    /// Mean data loss over the epoch's images.
    pub loss: f64,
    /// The penalty after the epoch (0 when it did not act).
    pub penalty: f64,
    /// Training accuracy over the epoch's images.
    pub accuracy: f64,
    /// Training throughput.
    pub images_per_s: f64,
    /// Batches whose curvature was accumulated.
    pub curvature_batches: usize,
}

/// Per-layer summary of an update and pruning.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerUpdate {
    /// Layer name (`conv1`, `fc1`, ...).
    pub layer: String,
    /// Groups before the prune; in the weight-level phase, free (not yet pruned) weights.
    pub groups: usize,
    /// Smallest finite `gamma` over those groups (or free weights).
    pub gamma_min: f64,
    /// Median `gamma` over them.
    pub gamma_median: f64,
    /// Largest finite `gamma` over them.
    pub gamma_max: f64,
    /// Median `omega` over them.
    pub omega_median: f64,
    /// Groups (or single weights) this prune removed; in the weight-level phase, weights that
    /// went with a removed unit are not counted.
    pub pruned: usize,
}

impl LayerUpdate {
    /// The summary of layer `layer`: `groups` groups (or free weights), the smallest,
    /// median and largest of `gammas` and the median of `omegas` over them.
    fn of(layer: &str, groups: usize, gammas: &[f64], omegas: &[f64], pruned: usize) -> Self {
        LayerUpdate {
            layer: layer.to_string(),
            groups,
            gamma_min: gammas.iter().copied().fold(f64::INFINITY, f64::min),
            gamma_median: median(gammas),
            gamma_max: gammas.iter().copied().fold(0.0, f64::max),
            omega_median: median(omegas),
            pruned,
        }
    }
}

/// What an update-and-prune step did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PruneSummary {
    /// Per layer, in order.
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
    /// The network (its surviving structure).
    pub net: CompressNet,
    /// Its parameters.
    pub store: ParamStore,
    /// The run's settings.
    pub settings: CompressSettings,
    /// Where the parameters live and the steps run.
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
    /// Whether the fine-tune has begun (its weight decay applies).
    finetuning: bool,
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
            finetuning: false,
        })
    }

    fn is_conv(&self, li: usize) -> bool {
        self.net.layers[li].is_conv()
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

    /// Switches to the fine-tune: from now on the steps use
    /// [`CompressSettings::finetune_weight_decay`].
    pub fn begin_finetune(&mut self) {
        self.finetuning = true;
    }

    /// Weight decay of the steps now: the loops' or, once the fine-tune has begun, the
    /// fine-tune's.
    fn weight_decay(&self) -> f32 {
        if self.finetuning {
            self.settings.finetune_weight_decay
        } else {
            self.settings.weight_decay
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
        let correct = count_correct(tape.value(logits), labels)?;
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
                    weight_decay: self.weight_decay(),
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
        let mut curv = 0usize;
        let (totals, images_per_s) = train_pass(
            batches,
            &mut |step, x, labels| {
                let with_curv = step >= curvature_from;
                let out = self
                    .step(x, labels, lr, penalty, with_curv)
                    .map_err(|e| match e {
                        Error::NonFinite(m) => Error::NonFinite(format!("{m} at batch {step}")),
                        other => other,
                    })?;
                curv += usize::from(with_curv);
                Ok(out)
            },
            on_step,
        )?;
        if totals.images == 0 {
            return Err(Error::Invalid("an epoch had no batches".into()));
        }
        let (loss, accuracy) = totals.means();
        Ok(EpochStats {
            loss,
            penalty: if penalty { self.penalty() } else { 0.0 },
            accuracy,
            images_per_s,
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
            layers.push(LayerUpdate::of(
                self.net.layers[li].name,
                g.len(),
                &finite,
                &self.omega[li],
                g.len() - kept.len(),
            ));
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
            layers.push(LayerUpdate::of(
                self.net.layers[li].name,
                free.len(),
                &free,
                &free_omega,
                pruned,
            ));
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
        let (net, store, device) = (&self.net, &self.store, self.device);
        evaluate(batches, &mut |tape, x| {
            let xv = tape.input(x.to_device(device)?);
            net.forward(tape, store, xv)
        })?
        .nonempty_means()
    }

    /// Saves the pruned network (see the module documentation) atomically.
    pub fn save_pruned(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
        let out = self.net.export_store(&self.store)?;
        save_store(&out, path, false, metadata)
    }
}
