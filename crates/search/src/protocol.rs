//! The BayesNAS search protocol (method note section 7): weights-only warm-up epoch(s) on one
//! split, then `rounds` x [switch epoch(s) on another split with the reweighted group-lasso
//! objective, curvature accumulated over the last K batches, closed-form update of the
//! prior], validation on a held-out split after each epoch, checkpoints after every epoch.
//!
//! Everything the run depends on is in the checkpoint (parameters, momenta, batch-norm
//! statistics, the prior, the position in the schedule), and the data order of an epoch
//! depends only on the seed and the epoch's index, so a resumed run ends exactly where an
//! uninterrupted one does.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bayesnas_engine::io::{load_store, save_store};
use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bayes::{GroupId, GroupKind, Prior, UpdateConfig, UpdateSummary};
use crate::curvature::{switch_curvature, CurvatureEstimator};
use crate::space::CellType;
use crate::supernet::{Handicap, Supernet, SWITCHES, WEIGHTS};

/// The three disjoint parts of the training data a search uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// Warm-up (weights only).
    Weights,
    /// Switch epochs (weights and switches).
    Switches,
    /// Held-out validation.
    Validation,
}

/// One mini-batch: images `[B, C, H, W]` and class labels.
pub type Batch = (Tensor, Vec<u32>);

/// Where batches come from. `epoch` must give the same batches for the same arguments.
pub trait DataFeed {
    /// The batches of one epoch over `split`, in an order fixed by `epoch_seed`.
    fn epoch(
        &mut self,
        split: SplitKind,
        epoch_seed: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>>;
    /// Number of batches `epoch` yields for `split`.
    fn batches(&self, split: SplitKind) -> usize;
}

/// Settings of a search run (the network shape is in [`crate::supernet::SupernetConfig`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SearchSettings {
    /// SGD for weights: learning rate (cosine-annealed over all epochs), momentum, decay.
    pub weights_lr: f32,
    pub weights_momentum: f32,
    pub weights_decay: f32,
    /// SGD for switches (no weight decay, constant learning rate).
    pub switches_lr: f32,
    pub switches_momentum: f32,
    /// Group-lasso strength for parent (edge) and child (op) groups.
    pub lambda_parent: f64,
    pub lambda_child: f64,
    pub warmup_epochs: usize,
    pub switch_epochs: usize,
    /// Number of (switch epochs, update) rounds; 1 reproduces the paper.
    pub rounds: usize,
    /// Curvature is averaged over the last K batches of each round's last switch epoch.
    pub curvature_batches: usize,
    /// Global-norm clipping of the weight gradients.
    pub grad_clip: f64,
    /// Seed of the data order.
    pub seed: u64,
    /// Warm-up length in optimizer steps (the weight split is repeated as needed, each pass
    /// in a new order); `None`: `warmup_epochs` epochs.
    #[serde(default)]
    pub warmup_steps: Option<usize>,
    /// Scale of the curvature in the Laplace approximation.
    #[serde(default)]
    pub curvature_scale: CurvatureScale,
    /// Dropout probability on the outputs of parameter-free ops during switch epochs
    /// ([`crate::supernet::Handicap`]); 0: off.
    #[serde(default)]
    pub param_free_dropout: f32,
    /// How the switch curvature of the update is estimated.
    #[serde(default)]
    pub curvature_estimator: CurvatureEstimator,
}

/// Which likelihood the Laplace approximation of the switch posterior uses: the curvature
/// the engine measures is that of the batch-mean loss, `h`; the update receives `factor * h`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurvatureScale {
    /// `h` itself: the likelihood of one average image.
    #[default]
    Mean,
    /// `B * h` (B the batch size): the authors' seed, a batch sum.
    BatchSum,
    /// `N * h` (N the images of one switch epoch): the likelihood of the whole switch split,
    /// what a Laplace approximation of the posterior given the data uses.
    Dataset,
}

impl Default for SearchSettings {
    fn default() -> Self {
        SearchSettings {
            weights_lr: 0.025,
            weights_momentum: 0.9,
            weights_decay: 3e-4,
            switches_lr: 0.01,
            switches_momentum: 0.9,
            lambda_parent: 0.01,
            lambda_child: 0.01,
            warmup_epochs: 1,
            switch_epochs: 1,
            rounds: 1,
            curvature_batches: 8,
            grad_clip: 5.0,
            seed: 0,
            warmup_steps: None,
            curvature_scale: CurvatureScale::Mean,
            param_free_dropout: 0.0,
            curvature_estimator: CurvatureEstimator::Recursion,
        }
    }
}

impl SearchSettings {
    /// Checks values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.rounds == 0 || self.switch_epochs == 0 {
            return bad(format!(
                "rounds ({}) and switch epochs ({}) must be at least 1",
                self.rounds, self.switch_epochs
            ));
        }
        if self.curvature_batches == 0 {
            return bad("curvature batches must be at least 1".into());
        }
        if self.warmup_steps == Some(0) {
            return bad("warm-up steps must be at least 1 (or use 0 warm-up epochs)".into());
        }
        if !(0.0..1.0).contains(&self.param_free_dropout) {
            return bad(format!(
                "parameter-free dropout must be in [0, 1), got {}",
                self.param_free_dropout
            ));
        }
        for (n, v) in [
            ("weights lr", self.weights_lr),
            ("switches lr", self.switches_lr),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{n} must be positive, got {v}"));
            }
        }
        for (n, v) in [
            ("lambda parent", self.lambda_parent),
            ("lambda child", self.lambda_child),
            ("grad clip", self.grad_clip),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{n} must be positive, got {v}"));
            }
        }
        Ok(())
    }

    /// The epoch schedule: warm-up epochs, then per round its switch epochs.
    pub fn schedule(&self) -> Vec<EpochPlan> {
        let warmups = if self.warmup_steps.is_some() {
            1
        } else {
            self.warmup_epochs
        };
        let mut v: Vec<EpochPlan> = (0..warmups)
            .map(|_| EpochPlan {
                phase: Phase::Warmup,
                round: 0,
                last_of_round: false,
            })
            .collect();
        for r in 0..self.rounds {
            for e in 0..self.switch_epochs {
                v.push(EpochPlan {
                    phase: Phase::Switch,
                    round: r,
                    last_of_round: e + 1 == self.switch_epochs,
                });
            }
        }
        v
    }
}

/// Phase of an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Warmup,
    Switch,
}

/// One epoch of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochPlan {
    pub phase: Phase,
    pub round: usize,
    /// Whether the prior update follows this epoch.
    pub last_of_round: bool,
}

/// What one epoch did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub phase: Phase,
    pub round: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub penalty: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub images_per_s: f64,
}

/// Progress events for progress bars and metrics files.
#[derive(Debug)]
pub enum Event<'a> {
    EpochStart {
        epoch: usize,
        epochs: usize,
        phase: Phase,
        round: usize,
        batches: usize,
    },
    Step {
        step: usize,
        batches: usize,
        loss: f64,
        accuracy: f64,
        images_per_s: f64,
    },
    Validating {
        batches: usize,
    },
    EpochEnd(&'a EpochRecord),
    Update {
        round: usize,
        summary: &'a UpdateSummary,
    },
}

/// The search state: network, parameters, prior and position in the schedule.
pub struct Searcher {
    pub net: Supernet,
    pub store: ParamStore,
    pub prior: Prior,
    pub settings: SearchSettings,
    /// Completed epochs.
    pub epochs_done: usize,
    pub history: Vec<EpochRecord>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    epochs_done: usize,
    settings: SearchSettings,
    history: Vec<EpochRecord>,
}

/// Checkpoint file name inside the output folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

impl Searcher {
    pub fn new(net: Supernet, store: ParamStore, settings: SearchSettings) -> Result<Searcher> {
        settings.validate()?;
        let prior = Prior::new(&net.config.space).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Searcher {
            net,
            store,
            prior,
            settings,
            epochs_done: 0,
            history: Vec::new(),
        })
    }

    /// The device the parameters live on (where steps run).
    pub fn device(&self) -> Device {
        self.store
            .iter()
            .next()
            .map_or(Device::Cpu, |(_, p)| p.value.device())
    }

    /// Moves every parameter, buffer, gradient, curvature and momentum to `device`; steps
    /// then run there (inputs are moved to it as they come).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        crate::eval::move_store(&mut self.store, device)
    }

    /// Waits for the device's queued work (a no-op on the CPU), so that the step's phase
    /// timings are real on an asynchronous device.
    fn sync(&self) -> Result<()> {
        match self.device() {
            Device::Cpu => Ok(()),
            Device::Cuda(i) => bayesnas_engine::device::cuda::backend(i)?.synchronize(),
        }
    }

    /// `x` on the parameters' device.
    pub(crate) fn on_device(&self, x: Tensor) -> Result<Tensor> {
        let d = self.device();
        if x.device() == d {
            Ok(x)
        } else {
            x.to_device(d)
        }
    }

    /// Whether the whole schedule has run.
    pub fn finished(&self) -> bool {
        self.epochs_done >= self.settings.schedule().len()
    }

    /// Writes the checkpoint to `dir/checkpoint.safetensors` atomically.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<PathBuf> {
        let meta = CheckpointMeta {
            epochs_done: self.epochs_done,
            settings: self.settings.clone(),
            history: self.history.clone(),
        };
        let json = |e: serde_json::Error| Error::Invalid(format!("checkpoint: {e}"));
        let metadata = HashMap::from([
            (
                "format".to_string(),
                "bayesnas-search-checkpoint".to_string(),
            ),
            (
                "progress".to_string(),
                serde_json::to_string(&meta).map_err(json)?,
            ),
            (
                "prior".to_string(),
                serde_json::to_string(&self.prior).map_err(json)?,
            ),
        ]);
        let path = dir.join(CHECKPOINT);
        save_store(&self.store, &path, true, &metadata)?;
        Ok(path)
    }

    /// Restores parameters, momenta, prior and progress from a checkpoint written by
    /// [`Searcher::save_checkpoint`] for the same network. The run's settings must match
    /// the checkpoint's, except that more rounds may be asked for.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let meta = load_store(&mut self.store, path)?;
        let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
        if meta.get("format").map(String::as_str) != Some("bayesnas-search-checkpoint") {
            return Err(bad(
                "not a bayesnas search checkpoint (metadata field 'format')".into(),
            ));
        }
        let progress: CheckpointMeta = serde_json::from_str(
            meta.get("progress")
                .ok_or_else(|| bad("metadata field 'progress' missing".into()))?,
        )
        .map_err(|e| bad(format!("metadata field 'progress': {e}")))?;
        let prior: Prior = serde_json::from_str(
            meta.get("prior")
                .ok_or_else(|| bad("metadata field 'prior' missing".into()))?,
        )
        .map_err(|e| bad(format!("metadata field 'prior': {e}")))?;
        prior
            .validate()
            .map_err(|e| bad(format!("metadata field 'prior': {e}")))?;
        let mut want = self.settings.clone();
        want.rounds = progress.settings.rounds;
        if want != progress.settings {
            return Err(bad(format!(
                "settings differ from the checkpoint's; checkpoint: {}",
                serde_json::to_string(&progress.settings).unwrap_or_default()
            )));
        }
        self.prior = prior;
        self.epochs_done = progress.epochs_done;
        self.history = progress.history;
        Ok(())
    }

    /// Runs the rest of the schedule, checkpointing into `checkpoint_dir` after each epoch.
    pub fn run(
        &mut self,
        data: &mut dyn DataFeed,
        checkpoint_dir: Option<&Path>,
        observe: &mut dyn FnMut(Event),
    ) -> Result<()> {
        self.run_epochs(data, checkpoint_dir, observe, usize::MAX)
    }

    /// Like [`Searcher::run`] but stops after at most `limit` epochs (the schedule, and so
    /// the learning-rate schedule, is unchanged: a later `run` continues it).
    pub fn run_epochs(
        &mut self,
        data: &mut dyn DataFeed,
        checkpoint_dir: Option<&Path>,
        observe: &mut dyn FnMut(Event),
        limit: usize,
    ) -> Result<()> {
        let schedule = self.settings.schedule();
        let stop = self.epochs_done.saturating_add(limit).min(schedule.len());
        while self.epochs_done < stop {
            let plan = schedule[self.epochs_done];
            let record = self.run_epoch(data, plan, schedule.len(), observe)?;
            observe(Event::EpochEnd(&record));
            self.history.push(record);
            self.epochs_done += 1;
            if let Some(dir) = checkpoint_dir {
                self.save_checkpoint(dir)?;
            }
        }
        Ok(())
    }

    fn epoch_seed(&self, epoch: usize) -> u64 {
        let mut r = Rng::new(self.settings.seed).fork(epoch as u64 + 1);
        r.next_u64()
    }

    fn optimisers(&self) -> (Sgd, Sgd) {
        let s = &self.settings;
        (
            Sgd::new().group(
                WEIGHTS,
                SgdGroup {
                    lr: s.weights_lr,
                    momentum: s.weights_momentum,
                    weight_decay: s.weights_decay,
                },
            ),
            Sgd::new().group(
                SWITCHES,
                SgdGroup {
                    lr: s.switches_lr,
                    momentum: s.switches_momentum,
                    weight_decay: 0.0,
                },
            ),
        )
    }

    fn run_epoch(
        &mut self,
        data: &mut dyn DataFeed,
        plan: EpochPlan,
        epochs: usize,
        observe: &mut dyn FnMut(Event),
    ) -> Result<EpochRecord> {
        let epoch = self.epochs_done;
        let split = if plan.phase == Phase::Warmup {
            SplitKind::Weights
        } else {
            SplitKind::Switches
        };
        let per_pass = data.batches(split);
        if per_pass == 0 {
            return Err(Error::Invalid(format!(
                "the {split:?} split has no batches"
            )));
        }
        let batches = match (plan.phase, self.settings.warmup_steps) {
            (Phase::Warmup, Some(n)) => n,
            _ => per_pass,
        };
        observe(Event::EpochStart {
            epoch,
            epochs,
            phase: plan.phase,
            round: plan.round,
            batches,
        });
        let lr_factor = cosine_factor(epoch, epochs, 0.0);
        let train_switches = plan.phase == Phase::Switch;
        let curv_from = if plan.last_of_round {
            batches.saturating_sub(self.settings.curvature_batches)
        } else {
            usize::MAX
        };
        self.store.zero_curvature()?;
        let mut curv_batches = 0usize;
        let (mut loss_sum, mut pen_sum, mut correct, mut seen) = (0.0f64, 0.0f64, 0usize, 0usize);
        let start = Instant::now();
        let seed = self.epoch_seed(epoch);
        let mut step = 0usize;
        let mut last_batch = 0usize;
        // One pass over the split; a warm-up sized in steps repeats it, each repeat in an
        // order of its own (the first pass is the same as an epoch-sized warm-up's).
        let passes = batches.div_ceil(per_pass);
        let handicap_seed = Rng::new(self.settings.seed ^ 0x6861_6e64_6963_6170).fork(epoch as u64);
        'passes: for pass in 0..passes {
            let pass_seed = if pass == 0 {
                seed
            } else {
                Rng::new(seed).fork(pass as u64).next_u64()
            };
            for batch in data.epoch(split, pass_seed)? {
                if step >= batches {
                    break 'passes;
                }
                let (x, labels) = batch?;
                let in_window = step >= curv_from;
                let opts = StepOptions {
                    train_switches,
                    curvature: in_window,
                    lr_factor,
                    update: true,
                    param_free_dropout: if train_switches {
                        self.settings.param_free_dropout
                    } else {
                        0.0
                    },
                    dropout_rng: Some(handicap_seed.fork(step as u64)),
                };
                let (out, _) = self.step(x, &labels, opts).map_err(|e| match e {
                    Error::NonFinite(m) => Error::NonFinite(format!(
                        "{m} at epoch {epoch} ({:?}), batch {step}; the last checkpoint is kept",
                        plan.phase
                    )),
                    other => other,
                })?;
                if in_window {
                    curv_batches += 1;
                }
                last_batch = labels.len();
                loss_sum += out.loss * labels.len() as f64;
                pen_sum += out.penalty;
                correct += out.correct;
                seen += labels.len();
                step += 1;
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                observe(Event::Step {
                    step,
                    batches,
                    loss: loss_sum / seen as f64,
                    accuracy: correct as f64 / seen as f64,
                    images_per_s: seen as f64 / secs,
                });
            }
        }
        let images_per_s = seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
        if plan.last_of_round {
            if curv_batches == 0 {
                return Err(Error::Invalid(
                    "no curvature batches were accumulated".into(),
                ));
            }
            let factor = match self.settings.curvature_scale {
                CurvatureScale::Mean => 1.0,
                CurvatureScale::BatchSum => last_batch as f64,
                CurvatureScale::Dataset => seen as f64,
            };
            let summary = self.update_prior(curv_batches, factor)?;
            observe(Event::Update {
                round: plan.round,
                summary: &summary,
            });
        }
        let (val_loss, val_accuracy) = self.evaluate(data, SplitKind::Validation, observe)?;
        Ok(EpochRecord {
            epoch,
            phase: plan.phase,
            round: plan.round,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            penalty: pen_sum / step.max(1) as f64,
            val_loss,
            val_accuracy,
            images_per_s,
        })
    }

    /// Loss and accuracy of the network in evaluation mode over one split.
    pub fn evaluate(
        &mut self,
        data: &mut dyn DataFeed,
        split: SplitKind,
        observe: &mut dyn FnMut(Event),
    ) -> Result<(f64, f64)> {
        observe(Event::Validating {
            batches: data.batches(split),
        });
        let (mut loss, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for batch in data.epoch(split, 0)? {
            let (x, labels) = batch?;
            let mut tape = Tape::new_eval();
            let xv = tape.input(self.on_device(x)?);
            let logits = self.net.forward(&mut tape, &mut self.store, xv)?;
            let l = tape.cross_entropy(logits, &labels)?;
            loss += tape.value(l).item()? as f64 * labels.len() as f64;
            correct += count_correct(tape.value(logits), &labels);
            seen += labels.len();
        }
        Ok((
            loss / seen.max(1) as f64,
            correct as f64 / seen.max(1) as f64,
        ))
    }

    /// One supernet training step: forward, cross-entropy (+ group lasso when switches
    /// train), backward, the optional curvature pass, and (with `opts.update`) gradient
    /// clipping and the SGD updates of weights (and switches). A non-finite loss or
    /// gradient is an [`Error::NonFinite`] raised before any parameter changes. This is
    /// exactly what a search runs per batch and what `bayesnas bench step` times.
    pub fn step(
        &mut self,
        x: Tensor,
        labels: &[u32],
        opts: StepOptions,
    ) -> Result<(StepOutput, StepTimings)> {
        let mut times = StepTimings::default();
        let t0 = Instant::now();
        let mut tape = Tape::new();
        let xv = tape.input(self.on_device(x)?);
        let handicap = match (opts.param_free_dropout, opts.dropout_rng.clone()) {
            (p, Some(rng)) if p > 0.0 => Some(Handicap { p, rng }),
            _ => None,
        };
        let logits = self
            .net
            .forward_with(&mut tape, &mut self.store, xv, handicap)?;
        let ce = tape.cross_entropy(logits, labels)?;
        let loss = tape.value(ce).item()? as f64;
        let correct = count_correct(tape.value(logits), labels);
        times.forward_ms = ms(t0);
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }
        let t0 = Instant::now();
        self.store.zero_grads()?;
        let grads = tape.backward(ce)?;
        self.store.accumulate_grads(&grads)?;
        drop(grads);
        self.sync()?;
        times.backward_ms = ms(t0);
        let t0 = Instant::now();
        let penalty = if opts.train_switches {
            self.add_penalty_gradient()?
        } else {
            0.0
        };
        let mut update_ms = ms(t0);
        if opts.curvature {
            let t0 = Instant::now();
            match self.settings.curvature_estimator {
                CurvatureEstimator::Recursion => {
                    let h = tape.curvature_backward(ce)?;
                    self.store.accumulate_curvature(&h)?;
                }
                est => {
                    let mut rng = opts
                        .dropout_rng
                        .clone()
                        .unwrap_or_else(|| Rng::new(self.settings.seed))
                        .fork(0x4d43_4669);
                    for (p, h) in switch_curvature(&tape, logits, est, &mut rng)? {
                        let param = self.store.get_mut(p);
                        let (shape, dev) = (param.value.shape().to_vec(), param.value.device());
                        let mut t =
                            Tensor::from_vec(h.into_iter().map(|v| v as f32).collect(), &shape)?;
                        if dev != Device::Cpu {
                            t = t.to_device(dev)?;
                        }
                        dev.backend()?.axpy(1.0, &t, &mut param.curvature)?;
                    }
                }
            }
            self.sync()?;
            times.curvature_ms = ms(t0);
        }
        drop(tape);
        if opts.update {
            let t0 = Instant::now();
            let scale = clip_scale(grad_norm(&self.store, &[WEIGHTS])?, self.settings.grad_clip)?;
            if opts.train_switches && !grad_norm(&self.store, &[SWITCHES])?.is_finite() {
                return Err(Error::NonFinite(
                    "switch gradient norm is not finite".into(),
                ));
            }
            let (opt_w, opt_s) = self.optimisers();
            opt_w.step(&mut self.store, opts.lr_factor, scale)?;
            if opts.train_switches {
                opt_s.step(&mut self.store, 1.0, 1.0)?;
            }
            self.sync()?;
            update_ms += ms(t0);
        }
        times.update_ms = update_ms;
        times.step_ms = times.forward_ms + times.backward_ms + times.update_ms;
        Ok((
            StepOutput {
                loss: loss + penalty,
                penalty,
                correct,
            },
            times,
        ))
    }

    /// Members of a switch group: (param, element) per cell of the type, in depth order.
    pub(crate) fn group_members(&self, id: GroupId) -> Vec<(ParamId, usize)> {
        self.net
            .cells_of(id.cell_type)
            .into_iter()
            .map(|c| {
                let me = &self.net.cells[c].edges[id.kind.edge()];
                match id.kind {
                    GroupKind::Parent { .. } => (me.s0, 0),
                    GroupKind::Child { op, .. } => (me.s, op),
                }
            })
            .collect()
    }

    fn groups(&self) -> Vec<GroupId> {
        let k = self.net.n_ops();
        let mut out = Vec::new();
        for ct in CellType::ALL {
            if self.net.cells_of(ct).is_empty() {
                continue;
            }
            for e in 0..self.net.config.space.edges(ct).len() {
                out.push(GroupId {
                    cell_type: ct,
                    kind: GroupKind::Parent { edge: e },
                });
                for op in 0..k {
                    out.push(GroupId {
                        cell_type: ct,
                        kind: GroupKind::Child { edge: e, op },
                    });
                }
            }
        }
        out
    }

    /// Adds the gradient of `sum_g lambda_g omega_g ||s_g||` to the switch gradients and
    /// returns the penalty. The penalty depends on a few hundred scalars only, so its exact
    /// gradient is computed directly instead of on the tape.
    fn add_penalty_gradient(&mut self) -> Result<f64> {
        // Switch tensors are read once and their gradients written back once (on a GPU every
        // read is a synchronising download).
        let mut values: BTreeMap<ParamId, Vec<f32>> = BTreeMap::new();
        let mut grads: BTreeMap<ParamId, Vec<f32>> = BTreeMap::new();
        let mut penalty = 0.0;
        for id in self.groups() {
            let lambda = match id.kind {
                GroupKind::Parent { .. } => self.settings.lambda_parent,
                GroupKind::Child { .. } => self.settings.lambda_child,
            };
            let omega = self
                .prior
                .omega_for_penalty(id)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            let members = self.group_members(id);
            let mut vals = Vec::with_capacity(members.len());
            for &(p, i) in &members {
                let v = match values.entry(p) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => v.insert(self.store.value(p).try_to_vec()?),
                };
                vals.push(v[i] as f64);
            }
            let norm = vals.iter().map(|v| v * v).sum::<f64>().sqrt();
            penalty += lambda * omega * norm;
            if norm > 0.0 {
                for (&(p, i), v) in members.iter().zip(&vals) {
                    let g = match grads.entry(p) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(e) => e.insert(self.store.get(p).grad.try_to_vec()?),
                    };
                    g[i] += (lambda * omega * v / norm) as f32;
                }
            }
        }
        for (p, g) in grads {
            let (shape, dev) = (
                self.store.value(p).shape().to_vec(),
                self.store.value(p).device(),
            );
            let t = Tensor::from_vec(g, &shape)?;
            self.store.get_mut(p).grad = if dev == Device::Cpu {
                t
            } else {
                t.to_device(dev)?
            };
        }
        Ok(penalty)
    }

    /// The closed-form update from the curvature accumulated over `curv_batches` batches,
    /// averaged and multiplied by `scale` ([`CurvatureScale`]).
    fn update_prior(&mut self, curv_batches: usize, scale: f64) -> Result<UpdateSummary> {
        let mut stats = HashMap::new();
        // Each switch tensor is downloaded once.
        let mut values: BTreeMap<ParamId, Vec<f32>> = BTreeMap::new();
        let mut curv: BTreeMap<ParamId, Vec<f32>> = BTreeMap::new();
        for ct in CellType::ALL {
            let cells = self.net.cells_of(ct);
            let mut st = self.prior.stats_template(ct, cells.len());
            for id in self.groups().into_iter().filter(|g| g.cell_type == ct) {
                for (c, (p, i)) in self.group_members(id).into_iter().enumerate() {
                    let s = match values.entry(p) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => v.insert(self.store.value(p).try_to_vec()?),
                    }[i] as f64;
                    let h = match curv.entry(p) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => v.insert(self.store.get(p).curvature.try_to_vec()?),
                    }[i] as f64
                        / curv_batches as f64
                        * scale;
                    st.set(id.kind, c, s, h)
                        .map_err(|e| Error::Invalid(e.to_string()))?;
                }
            }
            stats.insert(ct, st);
        }
        let cfg = UpdateConfig {
            lambda_parent: self.settings.lambda_parent,
            lambda_child: self.settings.lambda_child,
            ..UpdateConfig::new(self.settings.lambda_parent)
        };
        // On a CUDA device the closed-form update runs in the group_ard_update kernel.
        let device = self.device();
        self.prior
            .update_on(
                device,
                &stats[&CellType::Normal],
                &stats[&CellType::Reduce],
                &cfg,
            )
            .map_err(|e| Error::Invalid(format!("prior update: {e}")))
    }
}

/// What [`Searcher::step`] does.
#[derive(Clone, Debug)]
pub struct StepOptions {
    /// Add the group-lasso gradient and update the switches.
    pub train_switches: bool,
    /// Run the curvature pass and accumulate it.
    pub curvature: bool,
    /// Learning-rate factor of the weights (schedule).
    pub lr_factor: f32,
    /// Clip and apply the SGD updates.
    pub update: bool,
    /// Dropout on the outputs of parameter-free ops ([`Handicap`]); 0: off.
    pub param_free_dropout: f32,
    /// Source of the step's randomness: dropout masks (needed when `param_free_dropout > 0`)
    /// and the MC-Fisher labels.
    pub dropout_rng: Option<Rng>,
}

/// Wall-clock milliseconds of the parts of one step.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StepTimings {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub curvature_ms: f64,
    /// Group-lasso gradient, clipping and the SGD updates.
    pub update_ms: f64,
    /// Forward + backward + update (the step a search runs per batch; curvature, which
    /// only the last K batches of a round run, is reported apart).
    pub step_ms: f64,
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// What one training step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    /// Cross-entropy plus penalty.
    pub loss: f64,
    pub penalty: f64,
    pub correct: usize,
}

/// Number of rows of `logits` whose arg-max equals the label.
pub fn count_correct(logits: &Tensor, labels: &[u32]) -> usize {
    let v = logits.to_vec();
    let k = logits.shape()[1];
    v.chunks(k)
        .zip(labels)
        .filter(|(row, &l)| {
            let mut best = 0;
            for (i, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = i;
                }
            }
            best == l as usize
        })
        .count()
}
