//! # bayesnas-engine
//!
//! The engine under `bayesnas`: dense f32 tensors (NCHW) tagged with their device, a
//! define-by-run tape with two reverse passes — gradients and the diagonal Gauss-Newton
//! curvature needed by BayesNAS' Laplace approximation — the ops of a DARTS-style supernet,
//! SGD, and a multi-threaded CPU backend behind a one-trait device seam.
//!
//! ```
//! use bayesnas_engine::prelude::*;
//!
//! let mut rng = Rng::new(0);
//! let mut store = ParamStore::new();
//! let w = store.add("w", "weights", Tensor::randn(&[3, 4], 0.5, &mut rng)).unwrap();
//! let mut tape = Tape::new();
//! let x = tape.input(Tensor::randn(&[2, 4], 1.0, &mut rng));
//! let wv = tape.param(&store, w);
//! let logits = tape.linear(x, wv, None).unwrap();
//! let loss = tape.cross_entropy(logits, &[0, 2]).unwrap();
//! let grads = tape.backward(loss).unwrap();
//! assert_eq!(grads.param(w).unwrap().shape(), &[3, 4]);
//! let curv = tape.curvature_backward(loss).unwrap();
//! assert!(curv.param(w).unwrap().to_vec().iter().all(|&h| h >= 0.0));
//! ```
//!
//! See `examples/train_step.rs` for a small conv net with switches.
//!
//! ## Threads
//!
//! The CPU backend runs its kernels on rayon's global pool: size it once with
//! [`set_cpu_threads`] (default: one thread per core) and run the training loop inside
//! [`run_in_pool`], as `bayesnas` does. Called from a thread outside the pool, every parallel
//! kernel has to wake the pool and sleep until it is done, which costs more than a small
//! kernel (measured 11-20 µs per call on a 2-core VM, against about 1 µs inside the pool).
//! Results are the same either way.

pub mod ard;
pub mod device;
pub mod error;
pub mod io;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod params;
pub mod rng;
pub mod tape;
pub mod tensor;

pub use device::{Backend, Conv2dSpec, Device, Pool2dSpec};
pub use error::{Error, Result};
pub use params::{Param, ParamId, ParamStore};
pub use rng::Rng;
pub use tape::{Gradients, OpCtx, Tape, TapeOp, Var};
pub use tensor::Tensor;

/// Everything a typical user needs.
pub mod prelude {
    pub use crate::device::{Conv2dSpec, Device, Pool2dSpec};
    pub use crate::error::{Error, Result};
    pub use crate::optim::{clip_scale, cosine_factor, grad_norm, grad_norms, Sgd, SgdGroup};
    pub use crate::params::{ParamId, ParamStore};
    pub use crate::rng::Rng;
    pub use crate::tape::{Gradients, Tape, Var};
    pub use crate::tensor::Tensor;
}

/// Stack size of the CPU backend's pool threads when the pool is built by
/// [`set_cpu_threads`] (the size of a main thread: [`run_in_pool`] runs whole programs there).
pub const POOL_STACK_BYTES: usize = 8 << 20;

/// Set the number of threads of the CPU backend's global pool (`0`: one per core). Call
/// once, before any work; later calls return an error (rayon's global pool cannot be
/// rebuilt).
pub fn set_cpu_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(POOL_STACK_BYTES)
        .build_global()
        .map_err(|e| Error::Invalid(format!("cannot set CPU threads to {n}: {e}")))
}

/// Runs `f` on a thread of the CPU backend's pool and returns its result (directly when the
/// caller already is a pool thread).
///
/// Run training loops and benchmarks this way. A CPU kernel called from a pool thread
/// shares its work with the other pool threads and runs its own part meanwhile; called from
/// any other thread, it must hand all the work to the pool and sleep until the pool is
/// done, and waking a sleeping thread costs far more than a small kernel (measured on a
/// 2-core VM: an empty parallel call took 11-20 µs from outside the pool, 0.04-1.4 µs
/// inside it). Results do not depend on the thread a kernel runs on.
pub fn run_in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

/// Number of threads the CPU backend uses.
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}
