//! Layers that own their parameters in a [`ParamStore`]: a thin convenience over the tape
//! ops for building networks (conv, batch norm, linear).

use crate::device::Conv2dSpec;
use crate::error::Result;
use crate::params::{ParamId, ParamStore};
use crate::rng::Rng;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// 2-D convolution without bias (optional bias), Kaiming-normal initialised.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub spec: Conv2dSpec,
}

impl Conv2d {
    /// Registers `{name}.weight` (`[c_out, c_in / groups, k, k]`) and, with `bias`,
    /// `{name}.bias` in optimiser group `group`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        group: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        spec: Conv2dSpec,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let shape = [c_out, c_in / spec.groups.max(1), k, k];
        let weight = store.add(
            &format!("{name}.weight"),
            group,
            Tensor::kaiming_normal(&shape, rng),
        )?;
        let bias = if bias {
            Some(store.add(&format!("{name}.bias"), group, Tensor::full(&[c_out], 0.0))?)
        } else {
            None
        };
        Ok(Conv2d { weight, bias, spec })
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let w = tape.param(store, self.weight);
        let y = tape.conv2d(x, w, self.spec)?;
        match self.bias {
            Some(b) => {
                let b = tape.param(store, b);
                tape.add_channel_bias(y, b)
            }
            None => Ok(y),
        }
    }
}

/// Batch norm over channels with running statistics (buffers) and optional affine weights.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    pub weight: Option<ParamId>,
    pub bias: Option<ParamId>,
    pub running_mean: ParamId,
    pub running_var: ParamId,
    pub momentum: f32,
    pub eps: f32,
}

impl BatchNorm2d {
    /// Registers `{name}.weight`/`{name}.bias` (when `affine`, initialised to 1 and 0) and the
    /// buffers `{name}.running_mean` / `{name}.running_var`. PyTorch defaults: momentum 0.1,
    /// eps 1e-5.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        group: &str,
        c: usize,
        affine: bool,
    ) -> Result<Self> {
        let (weight, bias) = if affine {
            (
                Some(store.add(&format!("{name}.weight"), group, Tensor::full(&[c], 1.0))?),
                Some(store.add(&format!("{name}.bias"), group, Tensor::full(&[c], 0.0))?),
            )
        } else {
            (None, None)
        };
        Ok(BatchNorm2d {
            weight,
            bias,
            running_mean: store
                .add_buffer(&format!("{name}.running_mean"), Tensor::full(&[c], 0.0))?,
            running_var: store
                .add_buffer(&format!("{name}.running_var"), Tensor::full(&[c], 1.0))?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// Training mode (on a training tape) normalises with batch statistics and updates the
    /// running statistics; evaluation mode uses them.
    pub fn forward(&self, tape: &mut Tape, store: &mut ParamStore, x: Var) -> Result<Var> {
        self.record(tape, store, x, false)
    }

    /// [`BatchNorm2d::forward`] followed by ReLU, as one op ([`Tape::batch_norm_relu`]).
    pub fn forward_relu(&self, tape: &mut Tape, store: &mut ParamStore, x: Var) -> Result<Var> {
        self.record(tape, store, x, true)
    }

    /// Records the batch norm (followed by ReLU when `relu`) with this layer's parameters and
    /// running statistics.
    fn record(&self, tape: &mut Tape, store: &mut ParamStore, x: Var, relu: bool) -> Result<Var> {
        let w = self.weight.map(|p| tape.param(store, p));
        let b = self.bias.map(|p| tape.param(store, p));
        let running = Some(store.values_mut2(self.running_mean, self.running_var));
        match relu {
            true => tape.batch_norm_relu(x, w, b, running, self.momentum, self.eps),
            false => tape.batch_norm(x, w, b, running, self.momentum, self.eps),
        }
    }
}

/// Fully connected layer, PyTorch-default (Kaiming-uniform) initialised.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
}

impl Linear {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        group: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let weight = store.add(
            &format!("{name}.weight"),
            group,
            Tensor::kaiming_uniform(&[d_out, d_in], rng),
        )?;
        let bias = if bias {
            let bound = 1.0 / (d_in as f32).sqrt();
            Some(store.add(
                &format!("{name}.bias"),
                group,
                Tensor::rand_uniform(&[d_out], -bound, bound, rng),
            )?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let w = tape.param(store, self.weight);
        let b = self.bias.map(|p| tape.param(store, p));
        tape.linear(x, w, b)
    }
}
