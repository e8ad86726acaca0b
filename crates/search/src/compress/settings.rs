//! [`CompressSettings`]: every setting of a compression run, the defaults of each model
//! ([`CompressSettings::for_model`]) and the schedule they give ([`CompressSettings::rounds`]).

use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use super::compressor::Granularity;
use super::model::Model;

/// How the group-lasso term acts on the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyMode {
    /// Group soft thresholding after each SGD step.
    Proximal,
    /// The penalty's gradient added to the weight gradients.
    Gradient,
}

/// When the training images are random crops of the padded images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentPolicy {
    /// Never.
    None,
    /// In the final fine-tune only (pruning decisions see the plain images); every model's
    /// default.
    #[default]
    Finetune,
    /// In every epoch.
    All,
}

/// Settings of a compression run. [`CompressSettings::for_model`] gives every default.
///
/// The data settings (`batch` .. `max_batches`) say how the caller's
/// [`CompressData`](super::CompressData) makes its batches; they are not serialised (a report
/// writes them beside the settings).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CompressSettings {
    /// Group-lasso strength: one value for every layer, or one per layer (the method's
    /// lambda per kind of group, here per layer).
    pub lambda: Vec<f64>,
    /// Groups whose `gamma` falls under this are pruned.
    pub threshold: f64,
    /// Loops of (training, curvature, update, pruning).
    pub loops: usize,
    /// Training epochs per loop.
    pub epochs_per_loop: usize,
    /// Epochs without penalty before the loops, ending with an update (0: none).
    pub warmup_epochs: usize,
    /// Epochs of the final fine-tune (no penalty, cosine learning rate).
    pub finetune_epochs: usize,
    /// Learning rate during the loops (constant).
    pub lr: f32,
    /// Initial learning rate of the fine-tune (cosine-annealed to 0).
    pub finetune_lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// Weight decay of the loops.
    pub weight_decay: f32,
    /// Weight decay of the fine-tune.
    pub finetune_weight_decay: f32,
    /// Curvature is averaged over the last K batches of each loop.
    pub curvature_batches: usize,
    /// How the penalty acts on the weights.
    pub penalty: PenaltyMode,
    /// Seed of the initialisation.
    pub seed: u64,
    /// Loops of the weight-level phase after the group loops (0: none): the same update
    /// with every surviving weight as its own group (see [`Compressor::begin_weight_phase`]).
    ///
    /// [`Compressor::begin_weight_phase`]: super::Compressor::begin_weight_phase
    #[serde(default)]
    pub weight_loops: usize,
    /// Lambda of the weight-level phase: one value, or one per layer.
    #[serde(default)]
    pub weight_lambda: Vec<f64>,
    /// Images per batch.
    #[serde(skip)]
    pub batch: usize,
    /// When the training images are randomly cropped.
    #[serde(skip)]
    pub augment: AugmentPolicy,
    /// Zero padding on each side before the random crop back to 28x28 (the largest shift in
    /// pixels).
    #[serde(skip)]
    pub crop_padding: usize,
    /// Fraction of the training data held out for validation after each epoch (0: none).
    #[serde(skip)]
    pub valid_fraction: f64,
    /// Cap on training batches per epoch (quick runs); `None`: every batch.
    #[serde(skip)]
    pub max_batches: Option<usize>,
}

impl CompressSettings {
    /// Learning rate of the loops, every model's.
    pub const LR: f32 = 0.05;
    /// Weight decay, every model's.
    pub const WEIGHT_DECAY: f32 = 5e-4;
    /// SGD momentum, every model's.
    pub const MOMENTUM: f32 = 0.9;
    /// Curvature batches per loop, every model's.
    pub const CURVATURE_BATCHES: usize = 50;
    /// How the penalty acts, every model's.
    pub const PENALTY: PenaltyMode = PenaltyMode::Proximal;
    /// Images per batch, every model's.
    pub const BATCH: usize = 100;
    /// Fraction held out for validation, every model's: none.
    pub const VALID_FRACTION: f64 = 0.0;

    /// Every default for `model`, chosen by measurement on MNIST (docs/compression.md).
    ///
    /// | | lenet-300-100 | lenet5 |
    /// |---|---|---|
    /// | lambda per layer | 0.185, 0.0075, 0.03 | 0.15, 0.01, 0.018, 0.01 |
    /// | warm-up epochs, loops x epochs | 0, 4 x 2 | 1, 16 x 1 |
    /// | weight-level loops (lambda) | 0 (0.01) | 4 (0.003) |
    /// | fine-tune epochs, initial lr | 100, the loops' lr | 80, 0.02 |
    /// | crop padding | 2 | 1 |
    ///
    /// Both: threshold 1e-6, lr 0.05, momentum 0.9, weight decay 5e-4 (the fine-tune's the
    /// same), curvature over the last 50 batches of a loop, proximal penalty, seed 0, batch
    /// 100, crops in the fine-tune only, no validation part, every batch.
    pub fn for_model(model: Model) -> CompressSettings {
        CompressSettings::for_model_with(model, Self::LR, Self::WEIGHT_DECAY)
    }

    /// [`CompressSettings::for_model`] with the loops' learning rate `lr` and weight decay
    /// `weight_decay`: the fine-tune's weight decay is `weight_decay`, its initial learning
    /// rate `lr` unless the model has its own (lenet5: 0.02, which keeps more of what the
    /// loops trained than 0.05).
    pub fn for_model_with(model: Model, lr: f32, weight_decay: f32) -> CompressSettings {
        let base = CompressSettings {
            lambda: Vec::new(),
            threshold: 1e-6,
            loops: 0,
            epochs_per_loop: 0,
            warmup_epochs: 0,
            finetune_epochs: 0,
            lr,
            finetune_lr: lr,
            momentum: Self::MOMENTUM,
            weight_decay,
            finetune_weight_decay: weight_decay,
            curvature_batches: Self::CURVATURE_BATCHES,
            penalty: Self::PENALTY,
            seed: 0,
            weight_loops: 0,
            weight_lambda: Vec::new(),
            batch: Self::BATCH,
            augment: AugmentPolicy::Finetune,
            crop_padding: 0,
            valid_fraction: Self::VALID_FRACTION,
            max_batches: None,
        };
        match model {
            Model::Lenet300100 => CompressSettings {
                lambda: vec![0.185, 7.5e-3, 3e-2],
                loops: 4,
                epochs_per_loop: 2,
                warmup_epochs: 0,
                finetune_epochs: 100,
                weight_loops: 0,
                weight_lambda: vec![0.01],
                crop_padding: 2,
                ..base
            },
            Model::Lenet5 => CompressSettings {
                lambda: vec![0.15, 0.01, 0.018, 0.01],
                loops: 16,
                epochs_per_loop: 1,
                warmup_epochs: 1,
                finetune_epochs: 80,
                finetune_lr: 0.02,
                weight_loops: 4,
                weight_lambda: vec![0.003],
                // 1-pixel crops in the fine-tune: 0.91% against 0.95% with 2 (seed 0, the
                // same pruned network; docs/compression.md).
                crop_padding: 1,
                ..base
            },
        }
    }
}

/// Value `li` of a per-layer list whose last value repeats (0 for an empty list).
fn per_layer(values: &[f64], li: usize) -> f64 {
    values.get(li).or(values.last()).copied().unwrap_or(0.0)
}

impl CompressSettings {
    /// Lambda of layer `li` (the last value repeats).
    pub fn lambda_of(&self, li: usize) -> f64 {
        per_layer(&self.lambda, li)
    }

    /// Lambda of layer `li` in the weight-level phase (the last value repeats).
    pub fn weight_lambda_of(&self, li: usize) -> f64 {
        per_layer(&self.weight_lambda, li)
    }

    /// Checks values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if self.lambda.is_empty() || !self.lambda.iter().all(|l| l.is_finite() && *l > 0.0) {
            return bad(format!("lambda must be positive, got {:?}", self.lambda));
        }
        if self.weight_loops > 0
            && (self.weight_lambda.is_empty()
                || !self.weight_lambda.iter().all(|l| l.is_finite() && *l > 0.0))
        {
            return bad(format!(
                "weight lambda must be positive when there are weight loops, got {:?}",
                self.weight_lambda
            ));
        }
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return bad(format!("threshold must be >= 0, got {}", self.threshold));
        }
        if self.loops == 0 || self.epochs_per_loop == 0 || self.curvature_batches == 0 {
            return bad("loops, epochs per loop and curvature batches must be at least 1".into());
        }
        for (n, v) in [
            ("learning rate", self.lr),
            ("fine-tune learning rate", self.finetune_lr),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{n} must be positive, got {v}"));
            }
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        for wd in [self.weight_decay, self.finetune_weight_decay] {
            if !(wd.is_finite() && wd >= 0.0) {
                return bad(format!("weight decay must be >= 0, got {wd}"));
            }
        }
        Ok(())
    }

    /// The rounds of the schedule, each ending with an update and a prune: the warm-up (no
    /// penalty; its curvature gives the first omega and gamma, so the first penalised loop
    /// is already weighted by the data), the loops, and the weight-level phase, which
    /// repeats the pattern with one group per weight (an epoch without penalty, then its
    /// loops). The fine-tune follows.
    pub fn rounds(&self) -> Vec<Round> {
        let epl = self.epochs_per_loop;
        let round = |index, penalty, epochs, granularity| Round {
            index,
            penalty,
            epochs,
            granularity,
        };
        (0..usize::from(self.warmup_epochs > 0))
            .map(|_| round(0, false, self.warmup_epochs, Granularity::Group))
            .chain((1..=self.loops).map(|l| round(l, true, epl, Granularity::Group)))
            .chain((0..self.weight_rounds()).map(|l| round(l, l > 0, epl, Granularity::Weight)))
            .collect()
    }

    /// Rounds of the weight-level phase: its warm-up epoch and its loops (0: no phase).
    fn weight_rounds(&self) -> usize {
        if self.weight_loops > 0 {
            1 + self.weight_loops
        } else {
            0
        }
    }

    /// Index of the first fine-tune epoch (the epochs of every round before it).
    pub fn first_finetune_epoch(&self) -> usize {
        self.warmup_epochs + (self.loops + self.weight_rounds()) * self.epochs_per_loop
    }

    /// Epochs of the whole run, the fine-tune included.
    pub fn total_epochs(&self) -> usize {
        self.first_finetune_epoch() + self.finetune_epochs
    }
}

/// One round of the schedule: epochs of training, then an update and a prune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// 0 for a warm-up, the loop's number (from 1) otherwise.
    pub index: usize,
    /// Whether the penalty acts.
    pub penalty: bool,
    /// Training epochs.
    pub epochs: usize,
    /// What the update's hyperparameters cover.
    pub granularity: Granularity,
}

impl Round {
    /// `loop 3`, `warm-up`, `weight loop 2`, `weight warm-up`.
    pub fn label(&self) -> String {
        match (self.granularity, self.penalty) {
            (Granularity::Group, true) => format!("loop {}", self.index),
            (Granularity::Group, false) => "warm-up".to_string(),
            (Granularity::Weight, true) => format!("weight loop {}", self.index),
            (Granularity::Weight, false) => "weight warm-up".to_string(),
        }
    }
}
