//! Settings of a search run and the epoch schedule they give.

use bayesnas_engine::prelude::*;
use serde::{Deserialize, Serialize};

use crate::curvature::CurvatureEstimator;

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
