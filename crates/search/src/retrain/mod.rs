//! Retraining after the search: train a derived cell in the evaluation network (method note,
//! section 9). Also the
//! pieces every training loop shares: [`evaluate`] (loss and accuracy in evaluation mode,
//! used by the search, the trainer and the compressor), [`train_pass`] (the trainer's and the
//! compressor's epoch), [`count_correct`], [`move_store`].
//!
//! * [`network`]: DARTS' evaluation network (`NetworkCIFAR`) built from a [`Genotype`]
//!   (our `genotype.json` or a DARTS `Genotype(...)` string), with affine batch norm,
//!   drop-path and the optional auxiliary head. Parameter names follow DARTS' `model.py`, so
//!   the trained weights load into the PyTorch model.
//! * [`train`]: the training loop of the evaluation protocol (SGD, cosine schedule, weight
//!   decay, gradient clipping, drop-path ramp, auxiliary loss), checkpoints and resume.
//!
//! [`Genotype`]: crate::Genotype

pub mod network;
pub mod train;

use std::time::Instant;

use bayesnas_engine::prelude::*;

/// One mini-batch: images `[B, C, H, W]` and class labels.
pub type Batch = (Tensor, Vec<u32>);

/// Moves every tensor of a store (values, gradients, curvatures, momenta) to `device`.
/// Networks are built on the host; this puts them where they train.
pub fn move_store(store: &mut ParamStore, device: Device) -> Result<()> {
    let ids: Vec<ParamId> = store.ids().collect();
    for id in ids {
        let p = store.get_mut(id);
        if p.value.device() == device {
            continue;
        }
        p.value = p.value.to_device(device)?;
        p.grad = p.grad.to_device(device)?;
        p.curvature = p.curvature.to_device(device)?;
        p.momentum = p.momentum.to_device(device)?;
    }
    Ok(())
}

/// Number of rows of `logits` whose arg-max (the first largest logit) equals the label,
/// counted on the logits' device ([`Backend::count_correct`](bayesnas_engine::Backend::count_correct))
/// and read once.
pub fn count_correct(logits: &Tensor, labels: &[u32]) -> Result<usize> {
    let c = logits.device().backend()?.count_correct(logits, labels)?;
    Ok(c.item()? as usize)
}

/// The sums of one evaluation pass: the loss (each batch's mean cross-entropy times its
/// size, summed in batch order in `f64`), the correct predictions and the images.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub loss_sum: f64,
    pub correct: usize,
    pub images: usize,
}

impl Evaluation {
    /// Mean loss and accuracy; `(0, 0)` when there were no images.
    pub fn means(&self) -> (f64, f64) {
        (
            self.loss_sum / self.images.max(1) as f64,
            self.correct as f64 / self.images.max(1) as f64,
        )
    }

    /// Mean loss and accuracy; an [`Error::Invalid`] when there were no images.
    pub fn nonempty_means(&self) -> Result<(f64, f64)> {
        if self.images == 0 {
            return Err(Error::Invalid("evaluation on an empty set".into()));
        }
        Ok(self.means())
    }
}

/// Loss and accuracy in evaluation mode (running batch-norm statistics, no drop-path): for
/// each batch, an evaluation tape, `forward(tape, images)` for the logits (it puts the images
/// on its device), the cross-entropy and the correct predictions. The search, the trainer
/// and the compressor evaluate through this one loop.
pub fn evaluate(
    batches: &mut dyn Iterator<Item = Result<Batch>>,
    forward: &mut dyn FnMut(&mut Tape, Tensor) -> Result<Var>,
) -> Result<Evaluation> {
    evaluate_on(batches, Tape::new_eval, forward)
}

/// [`evaluate`] with each batch's tape made by `new_tape`: [`Tape::new`] evaluates with
/// training-mode batch norm (each batch's own statistics; the running statistics are
/// updated), forward only.
pub fn evaluate_on(
    batches: &mut dyn Iterator<Item = Result<Batch>>,
    new_tape: fn() -> Tape,
    forward: &mut dyn FnMut(&mut Tape, Tensor) -> Result<Var>,
) -> Result<Evaluation> {
    let mut totals = Evaluation::default();
    for batch in batches {
        let (x, labels) = batch?;
        let mut tape = new_tape();
        let logits = forward(&mut tape, x)?;
        let l = tape.cross_entropy(logits, &labels)?;
        totals.loss_sum += tape.value(l).item()? as f64 * labels.len() as f64;
        totals.correct += count_correct(tape.value(logits), &labels)?;
        totals.images += labels.len();
    }
    Ok(totals)
}

/// A step of [`train_pass`]: `(step, images, labels)` to the batch's mean loss and correct
/// predictions.
pub type TrainStep<'a> = dyn FnMut(usize, Tensor, &[u32]) -> Result<(f64, usize)> + 'a;

/// One training pass over `batches`: `step(step, images, labels)` trains on each batch and
/// returns its mean loss and correct predictions; `on_step(step + 1, mean loss, accuracy,
/// images)` after each batch, with the running means. Returns the sums (the loss summed as in
/// [`Evaluation`]) and the images per second. The trainer and the compressor train their
/// epochs through this one loop.
pub fn train_pass(
    batches: &mut dyn Iterator<Item = Result<Batch>>,
    step: &mut TrainStep<'_>,
    on_step: &mut dyn FnMut(usize, f64, f64, usize),
) -> Result<(Evaluation, f64)> {
    let mut totals = Evaluation::default();
    let start = Instant::now();
    for (i, batch) in batches.enumerate() {
        let (x, labels) = batch?;
        let (loss, correct) = step(i, x, &labels)?;
        totals.loss_sum += loss * labels.len() as f64;
        totals.correct += correct;
        totals.images += labels.len();
        on_step(
            i + 1,
            totals.loss_sum / totals.images as f64,
            totals.correct as f64 / totals.images as f64,
            labels.len(),
        );
    }
    let images_per_s = totals.images as f64 / start.elapsed().as_secs_f64().max(1e-9);
    Ok((totals, images_per_s))
}
