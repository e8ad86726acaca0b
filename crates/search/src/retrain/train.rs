//! Training an evaluation network (method note, section 9): SGD with momentum and weight
//! decay, cosine learning-rate schedule per epoch (DARTS' `CosineAnnealingLR`), global-norm
//! gradient clipping, drop-path probability ramped linearly from 0 (`p * epoch / epochs`, as
//! DARTS' `train.py`), and the auxiliary loss `ce(logits) + w * ce(aux_logits)`.
//!
//! The caller feeds batches epoch by epoch (see `bayesnas train`); the trainer keeps the
//! position in the schedule, the per-epoch history, and writes/reads checkpoints that hold
//! everything a resumed run needs (parameters, momenta, BN statistics, progress). The random
//! streams of an epoch (drop-path) depend only on the seed and the epoch's index, so a
//! resumed run continues exactly like an uninterrupted one.

use std::collections::HashMap;
use std::path::Path;

use bayesnas_engine::io::{load_store, save_store};
use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use super::network::{EvalConfig, EvalNetwork, WEIGHTS};
pub use super::Batch;
use super::{count_correct, evaluate, move_store, train_pass};
use crate::genotype::Genotype;

/// Checkpoint file name inside the output folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Trained weights (no optimiser state) inside the output folder.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// `format` metadata of checkpoints.
pub const CHECKPOINT_FORMAT: &str = "bayesnas-train-checkpoint";
/// `format` metadata of trained weights.
pub const WEIGHTS_FORMAT: &str = "bayesnas-eval-weights";

/// Optimisation settings of a training run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainSettings {
    /// Number of epochs (the cosine schedule and the drop-path ramp span them).
    pub epochs: usize,
    /// Initial learning rate.
    pub lr: f32,
    /// Final learning rate of the cosine schedule.
    pub lr_min: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// Weight decay (every trainable tensor, as DARTS).
    pub weight_decay: f32,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Final drop-path probability (reached at the last epoch).
    pub drop_path: f32,
    /// Weight of the auxiliary loss (used when the network has a head).
    pub aux_weight: f32,
    /// Seed of the drop-path streams.
    pub seed: u64,
}

impl Default for TrainSettings {
    /// DARTS' CIFAR-10 evaluation settings.
    fn default() -> Self {
        TrainSettings {
            epochs: 600,
            lr: 0.025,
            lr_min: 0.0,
            momentum: 0.9,
            weight_decay: 3e-4,
            grad_clip: 5.0,
            drop_path: 0.2,
            aux_weight: 0.4,
            seed: 0,
        }
    }
}

impl TrainSettings {
    /// Checks values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(self.lr_min.is_finite() && self.lr_min >= 0.0 && self.lr_min <= self.lr) {
            return bad(format!(
                "minimum learning rate must be between 0 and the learning rate, got {}",
                self.lr_min
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad(format!(
                "gradient clip must be positive, got {}",
                self.grad_clip
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return bad(format!(
                "drop-path probability must be in [0, 1), got {}",
                self.drop_path
            ));
        }
        if !(self.aux_weight.is_finite() && self.aux_weight >= 0.0) {
            return bad(format!(
                "auxiliary weight must be >= 0, got {}",
                self.aux_weight
            ));
        }
        Ok(())
    }

    /// Learning rate of epoch `epoch` (cosine from `lr` to `lr_min` over `epochs`).
    pub fn lr_at(&self, epoch: usize) -> f32 {
        let min_factor = self.lr_min / self.lr;
        self.lr * cosine_factor(epoch, self.epochs, min_factor)
    }

    /// Drop-path probability of epoch `epoch` (`drop_path * epoch / epochs`).
    pub fn drop_path_at(&self, epoch: usize) -> f32 {
        self.drop_path * epoch as f32 / self.epochs as f32
    }
}

/// What one epoch did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainRecord {
    pub epoch: usize,
    pub lr: f32,
    pub drop_path: f32,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub images_per_s: f64,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepOutput {
    /// Main cross-entropy of the batch.
    pub loss: f64,
    /// Correct predictions of the main classifier.
    pub correct: usize,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    epochs_done: usize,
    settings: TrainSettings,
    config: EvalConfig,
    history: Vec<TrainRecord>,
}

/// The training state: network, parameters and position in the schedule.
pub struct Trainer {
    pub net: EvalNetwork,
    pub store: ParamStore,
    pub settings: TrainSettings,
    /// Where the parameters live and the batches are sent.
    pub device: Device,
    /// Completed epochs.
    pub epochs_done: usize,
    pub history: Vec<TrainRecord>,
}

impl Trainer {
    /// A trainer for `net` whose parameters are in `store`; moves them to `device`.
    pub fn new(
        net: EvalNetwork,
        mut store: ParamStore,
        settings: TrainSettings,
        device: Device,
    ) -> Result<Trainer> {
        settings.validate()?;
        move_store(&mut store, device)?;
        Ok(Trainer {
            net,
            store,
            settings,
            device,
            epochs_done: 0,
            history: Vec::new(),
        })
    }

    /// Whether every epoch has run.
    pub fn finished(&self) -> bool {
        self.epochs_done >= self.settings.epochs
    }

    fn optimiser(&self) -> Sgd {
        Sgd::new().group(
            WEIGHTS,
            SgdGroup {
                lr: self.settings.lr,
                momentum: self.settings.momentum,
                weight_decay: self.settings.weight_decay,
            },
        )
    }

    /// The drop-path stream of epoch `epoch`.
    pub fn epoch_rng(&self, epoch: usize) -> Rng {
        Rng::new(self.settings.seed).fork(0xD0_0000 + epoch as u64)
    }

    /// One step: forward (with drop-path `drop_prob`), loss (+ auxiliary loss), backward,
    /// clipping and the SGD update with learning rate `lr`. A non-finite loss or gradient is
    /// an [`Error::NonFinite`] raised before any parameter changes.
    pub fn step(
        &mut self,
        x: Tensor,
        labels: &[u32],
        lr: f32,
        drop_prob: f32,
        rng: &mut Rng,
    ) -> Result<StepOutput> {
        let mut tape = Tape::new();
        let xv = tape.input(x.to_device(self.device)?);
        let out = self
            .net
            .forward(&mut tape, &mut self.store, xv, drop_prob, rng)?;
        let ce = tape.cross_entropy(out.logits, labels)?;
        let loss = tape.value(ce).item()? as f64;
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!("loss is {loss}")));
        }
        let correct = count_correct(tape.value(out.logits), labels)?;
        let total = match out.aux_logits {
            Some(aux) if self.settings.aux_weight > 0.0 => {
                let a = tape.cross_entropy(aux, labels)?;
                let a = tape.scale(a, self.settings.aux_weight)?;
                tape.add(ce, a)?
            }
            _ => ce,
        };
        self.store.zero_grads()?;
        let grads = tape.backward(total)?;
        self.store.accumulate_grads(&grads)?;
        drop(grads);
        drop(tape);
        let scale = clip_scale(grad_norm(&self.store, &[WEIGHTS])?, self.settings.grad_clip)?;
        self.optimiser()
            .step(&mut self.store, lr / self.settings.lr, scale)?;
        Ok(StepOutput { loss, correct })
    }

    /// Trains the next epoch of the schedule on `batches`; `on_step(step, mean loss, mean
    /// accuracy, images)` after each batch. Returns (mean loss, accuracy, images per second).
    /// Does not advance [`Trainer::epochs_done`] (see [`Trainer::finish_epoch`]).
    pub fn train_epoch(
        &mut self,
        batches: &mut dyn Iterator<Item = Result<Batch>>,
        on_step: &mut dyn FnMut(usize, f64, f64, usize),
    ) -> Result<(f64, f64, f64)> {
        let epoch = self.epochs_done;
        let lr = self.settings.lr_at(epoch);
        let drop = self.settings.drop_path_at(epoch);
        let mut rng = self.epoch_rng(epoch);
        let (totals, images_per_s) = train_pass(
            batches,
            &mut |step, x, labels| {
                let out = self
                    .step(x, labels, lr, drop, &mut rng)
                    .map_err(|e| match e {
                        Error::NonFinite(m) => Error::NonFinite(format!(
                            "{m} at epoch {epoch}, batch {step}; the last checkpoint is kept"
                        )),
                        other => other,
                    })?;
                Ok((out.loss, out.correct))
            },
            on_step,
        )?;
        if totals.images == 0 {
            return Err(Error::Invalid(format!("epoch {epoch} had no batches")));
        }
        let (loss, accuracy) = totals.means();
        Ok((loss, accuracy, images_per_s))
    }

    /// Records the epoch just trained and advances the schedule.
    pub fn finish_epoch(&mut self, record: TrainRecord) {
        self.history.push(record);
        self.epochs_done += 1;
    }

    /// Mean loss and accuracy in evaluation mode (running BN statistics, no drop-path).
    pub fn evaluate(
        &mut self,
        batches: &mut dyn Iterator<Item = Result<Batch>>,
    ) -> Result<(f64, f64)> {
        let mut rng = Rng::new(0);
        let (net, store, device) = (&self.net, &mut self.store, self.device);
        evaluate(batches, &mut |tape, x| {
            let xv = tape.input(x.to_device(device)?);
            Ok(net.forward(tape, store, xv, 0.0, &mut rng)?.logits)
        })?
        .nonempty_means()
    }

    fn metadata(&self, format: &str) -> Result<HashMap<String, String>> {
        let json = |e: serde_json::Error| Error::Invalid(format!("checkpoint: {e}"));
        let meta = CheckpointMeta {
            epochs_done: self.epochs_done,
            settings: self.settings.clone(),
            config: self.net.config.clone(),
            history: self.history.clone(),
        };
        let genotype = self
            .net
            .genotype
            .to_json()
            .map_err(|e| Error::Invalid(format!("genotype: {e}")))?;
        let mut m = HashMap::from([
            ("format".to_string(), format.to_string()),
            (
                "progress".to_string(),
                serde_json::to_string(&meta).map_err(json)?,
            ),
            ("genotype".to_string(), genotype),
            (
                "layout".to_string(),
                "DARTS NetworkCIFAR state_dict names (model.py); F32; conv [out, in/groups, k, k], \
                 linear [out, in]; BN num_batches_tracked not stored (load with strict=False)"
                    .to_string(),
            ),
        ]);
        if let Some(d) = self.net.genotype.to_darts_string() {
            m.insert("darts_genotype".to_string(), d);
        }
        Ok(m)
    }

    /// Writes the checkpoint (parameters, momenta, BN statistics, progress) atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        save_store(&self.store, path, true, &self.metadata(CHECKPOINT_FORMAT)?)
    }

    /// Writes the trained weights and BN statistics (no optimiser state) atomically, with
    /// the genotype, network shape and history as metadata.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        save_store(&self.store, path, false, &self.metadata(WEIGHTS_FORMAT)?)
    }

    /// Restores parameters, momenta and progress from a checkpoint of the same network and
    /// settings. Errors name the file and what differs (a missing tensor, a wrong shape,
    /// other settings); on error the trainer is unchanged.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let mut store = self.store.clone();
        let meta = load_store(&mut store, path)?;
        let bad = |m: String| Error::Invalid(format!("{}: {m}", path.display()));
        if meta.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
            return Err(bad(format!(
                "not a bayesnas train checkpoint (metadata field 'format' is {:?}, expected \
                 {CHECKPOINT_FORMAT:?})",
                meta.get("format")
            )));
        }
        let progress: CheckpointMeta = serde_json::from_str(
            meta.get("progress")
                .ok_or_else(|| bad("metadata field 'progress' missing".into()))?,
        )
        .map_err(|e| bad(format!("metadata field 'progress': {e}")))?;
        if progress.config != self.net.config {
            return Err(bad(format!(
                "written for another network shape: {:?} (this run: {:?})",
                progress.config, self.net.config
            )));
        }
        if let Some(g) = meta.get("genotype") {
            let g = Genotype::from_json(g).map_err(|e| bad(format!("genotype: {e}")))?;
            if g != self.net.genotype {
                return Err(bad("written for another genotype than the one given".into()));
            }
        }
        if progress.settings != self.settings {
            return Err(bad(format!(
                "settings differ from the checkpoint's: {}",
                serde_json::to_string(&progress.settings).unwrap_or_default()
            )));
        }
        if progress.epochs_done > self.settings.epochs {
            return Err(bad(format!(
                "records {} epochs done of {}",
                progress.epochs_done, self.settings.epochs
            )));
        }
        move_store(&mut store, self.device)?;
        self.store = store;
        self.epochs_done = progress.epochs_done;
        self.history = progress.history;
        Ok(())
    }
}
