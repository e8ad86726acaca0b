//! The BayesNAS search protocol (method note section 7): weights-only warm-up epoch(s) on one
//! split, then `rounds` x [switch epoch(s) on another split with the reweighted group-lasso
//! objective, curvature accumulated over the last K batches, closed-form update of the
//! prior], validation on a held-out split after each epoch, checkpoints after every epoch.
//!
//! Everything the run depends on is in the checkpoint (parameters, momenta, batch-norm
//! statistics, the prior, the position in the schedule), and the data order of an epoch
//! depends only on the seed and the epoch's index, so a resumed run ends exactly where an
//! uninterrupted one does.
//!
//! This file holds the [`Searcher`] (state, checkpoints, the epoch loop); `settings.rs` its
//! settings and schedule, `step.rs` one training step, `update.rs` the group-lasso gradient
//! and the closed-form update of the prior.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bayesnas_engine::io::{load_store, save_store};
use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bayes::{Prior, UpdateSummary};
use crate::supernet::{Supernet, SWITCHES, WEIGHTS};

mod settings;
mod step;
mod update;

pub use crate::retrain::{count_correct, Batch};
pub use settings::{CurvatureScale, EpochPlan, Phase, SearchSettings};
pub use step::{DeviceStepOutput, StepOptions, StepOutput, StepTimings};

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
        crate::retrain::move_store(&mut self.store, device)
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
        // Loss, penalty and correct predictions are summed on the device and read every
        // READ_EVERY steps and at the end (the progress lags by at most that many steps).
        let mut totals = DeviceTotals::new(self.device())?;
        let (mut loss_sum, mut pen_sum, mut correct, mut seen) = (0.0f64, 0.0f64, 0usize, 0usize);
        let mut seen_now = 0usize;
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
                    phase_timings: false,
                };
                let at = |m: String, step: usize| {
                    Error::NonFinite(format!(
                        "{m} at epoch {epoch} ({:?}), batch {step}; the last checkpoint is kept",
                        plan.phase
                    ))
                };
                let (out, _) = self.step_on_device(x, &labels, opts).map_err(|e| match e {
                    Error::NonFinite(m) => at(m, step),
                    other => other,
                })?;
                if in_window {
                    curv_batches += 1;
                }
                last_batch = labels.len();
                totals.add(&out, labels.len())?;
                seen_now += labels.len();
                step += 1;
                if step % READ_EVERY == 0 || step == batches {
                    (loss_sum, pen_sum, correct) = totals.read().map_err(|e| match e {
                        Error::NonFinite(m) => at(m, step - 1),
                        other => other,
                    })?;
                    seen = seen_now;
                }
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                observe(Event::Step {
                    step,
                    batches,
                    loss: loss_sum / seen.max(1) as f64,
                    accuracy: correct as f64 / seen.max(1) as f64,
                    images_per_s: seen_now as f64 / secs,
                });
            }
        }
        if seen != seen_now {
            (loss_sum, pen_sum, correct) = totals.read()?;
            seen = seen_now;
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
        let device = self.device();
        let (net, store) = (&self.net, &mut self.store);
        let totals = crate::retrain::evaluate(&mut data.epoch(split, 0)?, &mut |tape, x| {
            let x = if x.device() == device {
                x
            } else {
                x.to_device(device)?
            };
            let xv = tape.input(x);
            net.forward(tape, store, xv)
        })?;
        Ok(totals.means())
    }
}

/// Steps between two reads of the training totals in a search epoch.
const READ_EVERY: usize = 10;

/// The sums of an epoch's step outputs, kept on the device: the loss (each batch's
/// cross-entropy plus penalty times its size), the penalty and the correct predictions.
struct DeviceTotals {
    loss: Tensor,
    penalty: Tensor,
    correct: Tensor,
}

impl DeviceTotals {
    fn new(device: Device) -> Result<DeviceTotals> {
        Ok(DeviceTotals {
            loss: Tensor::zeros(&[1], device)?,
            penalty: Tensor::zeros(&[1], device)?,
            correct: Tensor::zeros(&[1], device)?,
        })
    }

    /// Adds one step (no host read).
    fn add(&mut self, out: &DeviceStepOutput, batch: usize) -> Result<()> {
        let b = self.loss.device().backend()?;
        b.axpy(batch as f32, &out.loss, &mut self.loss)?;
        if let Some(p) = &out.penalty {
            b.axpy(batch as f32, p, &mut self.loss)?;
            b.axpy(1.0, p, &mut self.penalty)?;
        }
        b.axpy(1.0, &out.correct, &mut self.correct)
    }

    /// `(loss sum, penalty sum, correct)`; a non-finite loss is an [`Error::NonFinite`].
    fn read(&self) -> Result<(f64, f64, usize)> {
        let loss = self.loss.item()? as f64;
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }
        Ok((
            loss,
            self.penalty.item()? as f64,
            self.correct.item()? as usize,
        ))
    }
}
