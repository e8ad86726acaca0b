//! One supernet training step ([`Searcher::step`]): what a search runs per batch and what
//! `bayesnas bench step` times.

use std::time::Instant;

use bayesnas_engine::prelude::*;
use serde::Serialize;

use super::Searcher;
use crate::curvature::{switch_curvature, CurvatureEstimator};
use crate::supernet::{Handicap, SWITCHES, WEIGHTS};

impl Searcher {
    /// One supernet training step: forward, cross-entropy (+ group lasso when switches
    /// train), backward, the optional curvature pass, and (with `opts.update`) gradient
    /// clipping and the SGD updates of weights (and switches). A non-finite loss or
    /// gradient is an [`Error::NonFinite`] raised before any parameter changes. This is
    /// exactly what a search runs per batch and what `bayesnas bench step` times; it is
    /// [`Searcher::step_on_device`] followed by one read of each of its outputs.
    pub fn step(
        &mut self,
        x: Tensor,
        labels: &[u32],
        opts: StepOptions,
    ) -> Result<(StepOutput, StepTimings)> {
        let (out, times) = self.step_on_device(x, labels, opts)?;
        Ok((out.read()?, times))
    }

    /// [`Searcher::step`] with its loss, penalty and correct count left on the device: the
    /// step's only host read is the gradient norms (both groups in one read), which also
    /// guards the update: a non-finite loss makes non-finite gradients, an
    /// [`Error::NonFinite`] raised before any parameter changes. Without `opts.update` the
    /// step makes no host read and checks nothing (read the outputs).
    pub fn step_on_device(
        &mut self,
        x: Tensor,
        labels: &[u32],
        opts: StepOptions,
    ) -> Result<(DeviceStepOutput, StepTimings)> {
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
        let z = tape.value(logits);
        let correct = z.device().backend()?.count_correct(z, labels)?;
        times.forward_ms = ms(t0);
        let t0 = Instant::now();
        if opts.train_switches {
            self.store.set_grads(tape.backward(ce)?)?;
        } else {
            // A weight step updates the weights only: the switches' gradients (and the
            // mixed ops' switch reductions that make them) are not computed, and their
            // slots are left as they are (the next switch step replaces them all).
            let switches = self.group_mask(SWITCHES);
            let grads = tape.backward_for(ce, |p| !switches[p.index()])?;
            self.store
                .set_grads_except(grads, |p| p.group == SWITCHES)?;
        }
        self.phase_done(&opts)?;
        times.backward_ms = ms(t0);
        let t0 = Instant::now();
        let penalty = if opts.train_switches {
            Some(self.add_penalty_gradient()?)
        } else {
            None
        };
        let mut update_ms = ms(t0);
        if opts.curvature {
            let t0 = Instant::now();
            match self.settings.curvature_estimator {
                CurvatureEstimator::Recursion => {
                    // Only the switches' curvature is used (the update): no weight
                    // curvature is computed.
                    let switches = self.group_mask(SWITCHES);
                    let h = tape.curvature_backward_for(ce, |p| switches[p.index()])?;
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
            self.phase_done(&opts)?;
            times.curvature_ms = ms(t0);
        }
        let loss = tape.value(ce).clone();
        drop(tape);
        if opts.update {
            let t0 = Instant::now();
            // Both norms with one host read.
            let norms = if opts.train_switches {
                grad_norms(&self.store, &[&[WEIGHTS], &[SWITCHES]])?
            } else {
                grad_norms(&self.store, &[&[WEIGHTS]])?
            };
            let scale = clip_scale(norms[0], self.settings.grad_clip)?;
            if opts.train_switches && !norms[1].is_finite() {
                return Err(Error::NonFinite(
                    "switch gradient norm is not finite".into(),
                ));
            }
            let (opt_w, opt_s) = self.optimisers();
            opt_w.step(&mut self.store, opts.lr_factor, scale)?;
            if opts.train_switches {
                opt_s.step(&mut self.store, 1.0, 1.0)?;
            }
            self.phase_done(&opts)?;
            update_ms += ms(t0);
        }
        times.update_ms = update_ms;
        times.step_ms = times.forward_ms + times.backward_ms + times.update_ms;
        Ok((
            DeviceStepOutput {
                loss,
                penalty,
                correct,
            },
            times,
        ))
    }

    /// Per parameter id: whether it belongs to optimiser group `group`.
    fn group_mask(&self, group: &str) -> Vec<bool> {
        self.store.iter().map(|(_, p)| p.group == group).collect()
    }

    /// The end of a timed phase: wait for the device when the phases are timed.
    fn phase_done(&self, opts: &StepOptions) -> Result<()> {
        if opts.phase_timings {
            self.sync()?;
        }
        Ok(())
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
    /// Wait for the device after each phase so that [`StepTimings`] time the phases (on a
    /// GPU, three host waits per step; `bench step` sets it, a search does not, and then the
    /// phase timings only time the queueing).
    pub phase_timings: bool,
}

impl StepOptions {
    /// Every part of the step: switches trained, the curvature pass, the SGD updates at the
    /// full learning rate, no dropout, phases timed (the step `bench step` times).
    pub fn full() -> StepOptions {
        StepOptions {
            train_switches: true,
            curvature: true,
            lr_factor: 1.0,
            update: true,
            param_free_dropout: 0.0,
            dropout_rng: None,
            phase_timings: true,
        }
    }
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

/// What one training step measured, on the step's device (`[1]` tensors).
#[derive(Clone, Debug)]
pub struct DeviceStepOutput {
    /// Mean cross-entropy of the batch (without the penalty).
    pub loss: Tensor,
    /// The group-lasso penalty (switch steps only).
    pub penalty: Option<Tensor>,
    /// Correct predictions of the batch.
    pub correct: Tensor,
}

impl DeviceStepOutput {
    /// The host values (one read per output); a non-finite loss is an [`Error::NonFinite`].
    pub fn read(&self) -> Result<StepOutput> {
        let ce = self.loss.item()? as f64;
        if !ce.is_finite() {
            return Err(Error::NonFinite(format!("loss is {ce}")));
        }
        let penalty = match &self.penalty {
            Some(p) => p.item()? as f64,
            None => 0.0,
        };
        Ok(StepOutput {
            loss: ce + penalty,
            penalty,
            correct: self.correct.item()? as usize,
        })
    }
}
