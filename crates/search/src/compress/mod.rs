//! Structured Bayesian compression of plain networks with the BayesNAS machinery (method
//! note, section 10).
//!
//! Models (MNIST, ReLU after every hidden layer):
//! * `lenet-300-100`: fc 784 -> 300 -> 100 -> 10.
//! * `lenet5` (LeNet-5-Caffe): conv 20@5x5 (no padding) -> max pool 2 -> conv 50@5x5 ->
//!   max pool 2 -> fc 800 -> 500 -> fc 500 -> 10.
//!
//! Groups: every input neuron of a fully connected layer (a column of `W`) and every filter
//! (output channel) of a conv layer. The objective is the data loss plus the reweighted group
//! lasso `sum_g lambda omega_g ||w_g||_2`. After each loop of training, the curvature `h` of
//! every weight (the engine's diagonal curvature pass, `hW = x^2 (.) hy`, averaged over the
//! last K batches) gives the closed-form update of section 5 with `w` in place of the
//! switches: `H = h / lambda`, `omega_g = sqrt(sum_i H_i / (1 + gamma_g H_i))`,
//! `gamma_g = ||w_g|| / omega_g`. Groups whose `gamma_g` falls under a threshold are pruned
//! ("dynamic pruning"): the network is physically shrunk at once, so later loops train a
//! smaller, faster network. A pruned filter takes its bias with it, a pruned input neuron
//! the unit that produced it (its row of the previous layer), a conv channel whose flattened
//! features were all pruned its filter, so the pruned network computes exactly what the
//! unpruned network computes with those weights masked to zero ([`CompressNet::mask`] vs
//! [`CompressNet::shrink`]).
//!
//! The penalty is applied either as a proximal step after each SGD step (group soft
//! thresholding, `w_g <- w_g max(0, 1 - lr lambda omega_g / ||w_g||)`: stable for any
//! `omega`, and it makes groups exactly zero) or as its gradient added to the weight
//! gradients (as the search does for switches).
//!
//! # Weight-level phase (optional)
//! After the group loops, [`Compressor::begin_weight_phase`] gives every surviving weight its
//! own `gamma` and `omega` and repeats the same loop with groups of one weight (penalty
//! `sum_i lambda_w omega_i |w_i|`, soft thresholding of single weights, the same closed-form
//! update): weights whose `gamma` collapses are held at zero from then on (the fine-tune
//! included), and a unit left without any weight (a filter or input column all zero, a conv
//! channel that no filter of the next conv layer reads) is removed as in the group loops.
//! The surviving structure only shrinks; the non-zero count drops inside the kept tensors.
//!
//! # Surviving structure
//! `lenet-300-100`: the surviving input neurons of fc1, fc2, fc3 (`784-300-100 -> a-b-c`).
//! `lenet5`: surviving filters of conv1 and conv2 and surviving inputs of fc1 and fc2
//! (`20-50-800-500 -> a-b-c-d`).
//!
//! # Pruned model file
//! F32 tensors: `{layer}.weight` (`conv1`, `conv2`: `[out, in, 5, 5]`; `fc1`.. : `[out, in]`)
//! and `{layer}.bias` of the shrunk layers (after a weight-level phase, pruned single
//! weights are zeros inside them); `kept.{boundary}` the original indices of the
//! surviving units of each boundary (`input`, `conv1`, `conv2`, `fc1_in`, `fc1`, ... as
//! floats); and `{fc}.input_index` for a fully connected layer whose input must be gathered
//! from the flattened previous output: PyTorch's `x.flatten(1)[:, input_index.long()]`.
//!
//! # Files
//! * `model`: [`Model`], the LeNets, their layouts, structures and reference results.
//! * `net`: [`CompressNet`], its forward pass (with the column gather on the tape), its
//!   weight count and export.
//! * `prune`: [`Plan`], masking and shrinking (network surgery).
//! * `compressor`: [`Compressor`]: training steps, curvature, the closed-form update,
//!   pruning.
//! * `settings`: [`CompressSettings`] with every default ([`CompressSettings::for_model`])
//!   and the schedule.
//! * `run`: [`Compressor::run`], the whole schedule with progress [`Event`]s, over batches
//!   from a [`CompressData`].

mod compressor;
mod model;
mod net;
mod prune;
mod run;
mod settings;

pub use compressor::{Compressor, EpochStats, Granularity, LayerUpdate, PruneSummary};
pub use model::{structure_string, Model};
pub use net::{CompressNet, Layer, WEIGHTS};
pub use prune::Plan;
pub use run::{Batches, CompressData, CompressOutcome, EpochRecord, Event, LoopRecord};
pub use settings::{AugmentPolicy, CompressSettings, PenaltyMode, Round};

use crate::retrain::{count_correct, evaluate, move_store, train_pass};
