//! [`Compressor::run`]: the whole compression schedule (the rounds of
//! [`CompressSettings::rounds`], the fine-tune, the test) over batches from a
//! [`CompressData`], reporting progress through [`Event`]s.
//!
//! [`CompressSettings::rounds`]: super::CompressSettings::rounds

use std::time::Instant;

use bayesnas_engine::prelude::*;
use serde::Serialize;

use super::compressor::{Compressor, Granularity, PruneSummary};

/// Batches of images `[B, 1, 28, 28]` and their labels.
pub type Batches<'a> = Box<dyn Iterator<Item = Result<(Tensor, Vec<u32>)>> + 'a>;

/// Where a compression run's batches come from.
pub trait CompressData {
    /// Batches of every training epoch (what [`CompressData::train`] yields).
    fn train_batches(&self) -> usize;
    /// The training batches of epoch `epoch` (its order fixed by `epoch`); `finetune`:
    /// an epoch of the fine-tune (augmented as [`AugmentPolicy`] says).
    ///
    /// [`AugmentPolicy`]: super::AugmentPolicy
    fn train(&mut self, epoch: usize, finetune: bool) -> Result<Batches<'_>>;
    /// The validation batches; `None` when no data is held out.
    fn validation(&mut self) -> Result<Option<Batches<'_>>>;
    /// The test batches.
    fn test(&mut self) -> Result<Batches<'_>>;
}

/// What one epoch did (a `metrics.jsonl` record).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EpochRecord {
    /// Index from 0 over the whole run.
    pub epoch: usize,
    /// The round's label ([`Round::label`](super::Round::label)) or `fine-tune`.
    pub phase: String,
    /// Learning rate of the epoch.
    pub lr: f32,
    /// Mean data loss over the epoch's images.
    pub train_loss: f64,
    /// The penalty after the epoch (0 without penalty).
    pub penalty: f64,
    /// Training accuracy over the epoch's images.
    pub train_accuracy: f64,
    /// Validation loss and accuracy after the epoch (`None` without validation).
    pub val_loss: Option<f64>,
    /// See `val_loss`.
    pub val_accuracy: Option<f64>,
    /// Training throughput.
    pub images_per_s: f64,
    /// Structure after the epoch.
    pub structure: Vec<usize>,
}

/// What one round did: its update and prune (a `metrics.jsonl` record and an entry of the
/// report's `loops`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoopRecord {
    /// The round's index ([`Round::index`](super::Round::index)).
    #[serde(rename = "loop")]
    pub index: usize,
    /// Whether the penalty acted in the round.
    pub penalty: bool,
    /// What the update's hyperparameters covered.
    pub granularity: Granularity,
    /// The update and prune.
    pub summary: PruneSummary,
    /// Non-zero weights over the weights of the original network.
    pub nonzero_fraction: f64,
    /// Since the start of the run.
    pub seconds: f64,
}

/// Progress of [`Compressor::run`], for progress bars and metrics files.
#[derive(Debug)]
pub enum Event<'a> {
    /// Epoch `epoch` of `epochs` starts: `batches` training steps in phase `phase`.
    EpochStart {
        /// Index from 0.
        epoch: usize,
        /// Epochs of the run.
        epochs: usize,
        /// The round's label or `fine-tune`.
        phase: &'a str,
        /// Training steps of the epoch.
        batches: usize,
    },
    /// A training step ended: mean loss and accuracy of the epoch so far, images in the
    /// step's batch.
    Step {
        /// Steps done in the epoch (from 1).
        step: usize,
        /// Mean loss of the epoch so far.
        loss: f64,
        /// Accuracy of the epoch so far.
        accuracy: f64,
        /// Images in the step's batch.
        images: usize,
    },
    /// The epoch's training ended; the validation follows.
    TrainingDone,
    /// The epoch ended, `seconds` after the start of the run.
    EpochEnd {
        /// What the epoch did.
        record: &'a EpochRecord,
        /// Epochs of the run.
        epochs: usize,
        /// Since the start of the run.
        seconds: f64,
    },
    /// A round ended with its update and prune; `nonzero_weights` of `total_weights` are
    /// left.
    RoundEnd {
        /// [`Round::label`](super::Round::label).
        label: &'a str,
        /// What the round did.
        record: &'a LoopRecord,
        /// Non-zero weights now.
        nonzero_weights: usize,
        /// Weights of the original network.
        total_weights: usize,
    },
}

/// What [`Compressor::run`] gives back.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressOutcome {
    /// Mean loss on the test batches.
    pub test_loss: f64,
    /// Accuracy on the test batches.
    pub test_accuracy: f64,
    /// From the start of the run to the end of the test.
    pub seconds: f64,
    /// The surviving structure.
    pub structure: Vec<usize>,
    /// Non-zero weights of the pruned network (biases not counted).
    pub nonzero_weights: usize,
    /// Weights of the original network (biases not counted).
    pub total_weights: usize,
    /// Every epoch, in order.
    pub epochs: Vec<EpochRecord>,
    /// Every round, in order.
    pub loops: Vec<LoopRecord>,
}

impl CompressOutcome {
    /// Test error in percent.
    pub fn test_error(&self) -> f64 {
        100.0 * (1.0 - self.test_accuracy)
    }
}

/// One epoch's place in the run.
struct EpochPlan<'a> {
    epoch: usize,
    lr: f32,
    penalty: bool,
    curvature_from: usize,
    phase: &'a str,
    finetune: bool,
}

impl Compressor {
    /// Runs the whole schedule: every round of [`CompressSettings::rounds`] (its epochs,
    /// the curvature over the last [`CompressSettings::curvature_batches`] batches of its
    /// last epoch, [`Compressor::update`], [`Compressor::prune`]; the weight-level phase
    /// begins with its warm-up), the fine-tune (cosine learning rate from
    /// [`CompressSettings::finetune_lr`], its own weight decay), then the test. Validation
    /// follows every epoch when `data` has a validation part. An error of `observe` ends the
    /// run (one at a [`Event::Step`] at the end of that epoch's training).
    ///
    /// [`CompressSettings::rounds`]: super::CompressSettings::rounds
    /// [`CompressSettings::curvature_batches`]: super::CompressSettings::curvature_batches
    /// [`CompressSettings::finetune_lr`]: super::CompressSettings::finetune_lr
    pub fn run<E: From<Error>>(
        &mut self,
        data: &mut dyn CompressData,
        observe: &mut dyn FnMut(Event) -> std::result::Result<(), E>,
    ) -> std::result::Result<CompressOutcome, E> {
        let start = Instant::now();
        let s = self.settings.clone();
        let steps = data.train_batches();
        let epochs = s.total_epochs();
        let (_, total_weights) = self.net.nonzero_weights(&self.store);
        let mut history = Vec::new();
        let mut loops = Vec::new();
        for round in s.rounds() {
            if round.granularity == Granularity::Weight && round.index == 0 {
                self.begin_weight_phase()?;
            }
            let label = round.label();
            for e in 0..round.epochs {
                let last = e + 1 == round.epochs;
                let plan = EpochPlan {
                    epoch: history.len(),
                    lr: s.lr,
                    penalty: round.penalty,
                    curvature_from: if last {
                        steps.saturating_sub(s.curvature_batches)
                    } else {
                        usize::MAX
                    },
                    phase: &label,
                    finetune: false,
                };
                history.push(self.run_epoch(data, &plan, epochs, start, observe)?);
            }
            self.update()?;
            let summary = self.prune()?;
            let (nz, _) = self.net.nonzero_weights(&self.store);
            let record = LoopRecord {
                index: round.index,
                penalty: round.penalty,
                granularity: round.granularity,
                summary,
                nonzero_fraction: nz as f64 / total_weights as f64,
                seconds: start.elapsed().as_secs_f64(),
            };
            observe(Event::RoundEnd {
                label: &label,
                record: &record,
                nonzero_weights: nz,
                total_weights,
            })?;
            loops.push(record);
        }
        self.begin_finetune();
        for e in 0..s.finetune_epochs {
            let plan = EpochPlan {
                epoch: history.len(),
                lr: s.finetune_lr * cosine_factor(e, s.finetune_epochs, 0.0),
                penalty: false,
                curvature_from: usize::MAX,
                phase: "fine-tune",
                finetune: true,
            };
            history.push(self.run_epoch(data, &plan, epochs, start, observe)?);
        }

        let (test_loss, test_accuracy) = self.evaluate(&mut data.test()?)?;
        let seconds = start.elapsed().as_secs_f64();
        let (nonzero_weights, total_weights) = self.net.nonzero_weights(&self.store);
        Ok(CompressOutcome {
            test_loss,
            test_accuracy,
            seconds,
            structure: self.net.structure(),
            nonzero_weights,
            total_weights,
            epochs: history,
            loops,
        })
    }

    /// One epoch of the run: training, then validation.
    fn run_epoch<E: From<Error>>(
        &mut self,
        data: &mut dyn CompressData,
        plan: &EpochPlan,
        epochs: usize,
        start: Instant,
        observe: &mut dyn FnMut(Event) -> std::result::Result<(), E>,
    ) -> std::result::Result<EpochRecord, E> {
        observe(Event::EpochStart {
            epoch: plan.epoch,
            epochs,
            phase: plan.phase,
            batches: data.train_batches(),
        })?;
        let mut failed = None;
        let stats = self.train_epoch(
            &mut data.train(plan.epoch, plan.finetune)?,
            plan.lr,
            plan.penalty,
            plan.curvature_from,
            &mut |step, loss, accuracy, images| {
                if failed.is_none() {
                    let step = Event::Step {
                        step,
                        loss,
                        accuracy,
                        images,
                    };
                    failed = observe(step).err();
                }
            },
        )?;
        if let Some(e) = failed {
            return Err(e);
        }
        observe(Event::TrainingDone)?;
        let val = match data.validation()? {
            Some(mut batches) => Some(self.evaluate(&mut batches)?),
            None => None,
        };
        let record = EpochRecord {
            epoch: plan.epoch,
            phase: plan.phase.to_string(),
            lr: plan.lr,
            train_loss: stats.loss,
            penalty: stats.penalty,
            train_accuracy: stats.accuracy,
            val_loss: val.map(|v| v.0),
            val_accuracy: val.map(|v| v.1),
            images_per_s: stats.images_per_s,
            structure: self.net.structure(),
        };
        observe(Event::EpochEnd {
            record: &record,
            epochs,
            seconds: start.elapsed().as_secs_f64(),
        })?;
        Ok(record)
    }
}
