//! Shared test harness: f64 finite differences on independent naive references, and the
//! checks every op test uses.
//!
//! Pattern for an op test (see tests/ops_basic.rs):
//! 1. draw random f64 inputs/params (never zeros);
//! 2. write the op's forward naively in f64 in the test (the reference);
//! 3. on the engine, record `y = op(x, w)` and `L = 0.5 * sum(wt * (y - t)^2)` with a random
//!    target `t` and random positive weights `wt` (`Tape::half_squared_error`);
//! 4. gradient check: engine `backward(L)` vs central differences of the f64 reference loss;
//! 5. curvature check: engine `curvature_backward(L)` vs the naive f64 recursion driven by
//!    `hy = wt` (the loss's exact Hessian diagonal).
#![allow(dead_code)]

/// The GPU backend of a parity test, or `return` from the test (skipped with a printed
/// reason) when there is none (see [`cuda_or_skip`]). Use with `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! gpu {
    ($name:expr) => {
        match $crate::common::cuda_or_skip($name) {
            Some(g) => g,
            None => return,
        }
    };
}

pub mod naive;

use bayesnas_engine::prelude::*;

/// Random normal f64 values (std 1), with no exact zeros.
pub fn randn(n: usize, rng: &mut Rng) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let v = rng.normal();
            if v == 0.0 {
                0.5
            } else {
                v
            }
        })
        .collect()
}

/// Random values uniform in [lo, hi).
pub fn rand_uniform(n: usize, lo: f64, hi: f64, rng: &mut Rng) -> Vec<f64> {
    (0..n).map(|_| rng.uniform_range(lo, hi)).collect()
}

/// f64 values rounded to f32 (so the reference and the engine see the same numbers).
pub fn round32(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| x as f32 as f64).collect()
}

/// A CPU tensor of the f64 values.
pub fn tensor(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.iter().map(|&x| x as f32).collect(), shape).unwrap()
}

/// Central finite differences of `f` at `x` in f64.
pub fn fd_grad(f: &dyn Fn(&[f64]) -> f64, x: &[f64], eps: f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + eps;
            let fp = f(&x);
            x[i] = orig - eps;
            let fm = f(&x);
            x[i] = orig;
            (fp - fm) / (2.0 * eps)
        })
        .collect()
}

/// `0.5 * sum(wt * (y - t)^2)` in f64.
pub fn half_sq(y: &[f64], t: &[f64], wt: &[f64]) -> f64 {
    y.iter()
        .zip(t)
        .zip(wt)
        .map(|((y, t), w)| 0.5 * w * (y - t) * (y - t))
        .sum()
}

/// Assert `got` (engine, f32) matches `want` (reference, f64) elementwise within
/// `atol + rtol * max|want|` and that `want` is not trivially zero.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0,
        "{what}: reference is all zeros (test would prove nothing)"
    );
    let tol = rtol * scale + 1e-6;
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        if e > worst.1 {
            worst = (i, e);
        }
    }
    assert!(
        worst.1 <= tol,
        "{what}: max error {:.3e} at {} (got {}, want {}), tolerance {:.3e}",
        worst.1,
        worst.0,
        got[worst.0],
        want[worst.0],
        tol
    );
}

/// The random target and positive weights for the loss of step 3.
pub struct LossSpec {
    pub target: Vec<f64>,
    pub weights: Vec<f64>,
}

impl LossSpec {
    pub fn new(n: usize, rng: &mut Rng) -> Self {
        LossSpec {
            target: round32(&randn(n, rng)),
            weights: round32(&rand_uniform(n, 0.5, 2.0, rng)),
        }
    }
    /// Record the loss on the tape.
    pub fn record(&self, tape: &mut Tape, y: Var) -> Var {
        let shape = tape.value(y).shape().to_vec();
        let t = tensor(&self.target, &shape);
        let w = tensor(&self.weights, &shape);
        tape.half_squared_error(y, &t, Some(&w)).unwrap()
    }
    /// The same loss in f64 on a reference output.
    pub fn eval(&self, y: &[f64]) -> f64 {
        half_sq(y, &self.target, &self.weights)
    }
    /// dL/dy of the reference.
    pub fn dy(&self, y: &[f64]) -> Vec<f64> {
        y.iter()
            .zip(&self.target)
            .zip(&self.weights)
            .map(|((y, t), w)| w * (y - t))
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// Device selection: tests written once for every device
// ------------------------------------------------------------------------------------------

/// `BAYESNAS_PARITY_SELFTEST=1`: the device-parity tests run the CPU backend as the device
/// under test (CPU vs CPU), to check the tests themselves on machines without a GPU.
pub fn parity_selftest() -> bool {
    std::env::var("BAYESNAS_PARITY_SELFTEST").is_ok_and(|v| v == "1")
}

/// Whether `BAYESNAS_REQUIRE_GPU=1`: then a missing GPU fails the test instead of skipping.
pub fn gpu_required() -> bool {
    std::env::var("BAYESNAS_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The CUDA device 0 backend, or `None` after printing `skipped: <test>: <reason>` when it
/// cannot be used here. With `BAYESNAS_REQUIRE_GPU=1` a missing GPU panics (the test fails),
/// so that a GPU run can never pass without testing anything.
pub fn cuda_or_skip(test: &str) -> Option<&'static dyn bayesnas_engine::Backend> {
    if parity_selftest() {
        eprintln!("{test}: BAYESNAS_PARITY_SELFTEST=1: the CPU stands in for the GPU");
        return Some(Device::Cpu.backend().unwrap());
    }
    match Device::Cuda(0).backend() {
        Ok(b) => Some(b),
        Err(e) if gpu_required() => panic!("{test}: BAYESNAS_REQUIRE_GPU=1 but {e}"),
        Err(e) => {
            eprintln!("skipped: {test}: {e}");
            None
        }
    }
}

/// The device op tests run on: `BAYESNAS_TEST_DEVICE=cuda` (or `cuda:N`) selects a GPU,
/// anything else (or nothing) the CPU. Selecting a GPU that is not available panics with
/// the reason. Existing op tests opt in by creating their tensors with
/// `t.to_device(common::test_device())`.
pub fn test_device() -> Device {
    let v = std::env::var("BAYESNAS_TEST_DEVICE").unwrap_or_default();
    let dev = match v.as_str() {
        "cuda" => Device::Cuda(0),
        s => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => Device::Cuda(i),
            None => Device::Cpu,
        },
    };
    if let Err(e) = dev.backend() {
        panic!("BAYESNAS_TEST_DEVICE={v}: {e}");
    }
    dev
}

/// Norm-relative error `||got - want||_2 / ||want||_2` (the parity criterion; `want` must not
/// be all zeros, or the comparison would prove nothing).
#[track_caller]
pub fn assert_rel(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = g as f64 - w as f64;
        num += d * d;
        den += (w as f64) * (w as f64);
        if d.abs() > worst.1 || d.is_nan() {
            worst = (i, d.abs());
        }
    }
    assert!(
        den > 0.0,
        "{what}: reference is all zeros (test would prove nothing)"
    );
    let rel = (num / den).sqrt();
    assert!(
        rel <= tol,
        "{what}: norm-relative error {rel:.3e} > {tol:.1e} (worst element {}: got {}, want {})",
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}

/// A square pooling window of `kernel` with `stride` and `padding`.
pub fn pool_spec(kernel: usize, stride: usize, padding: usize) -> Pool2dSpec {
    Pool2dSpec {
        kernel,
        stride,
        padding,
    }
}

/// Runs `f` on a fresh CPU pool of `threads` threads (to check that results do not depend on
/// the thread count).
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(f)
}

/// Groups of random sizes `1..=max_size` over a random subset of the elements of tensors of
/// the given sizes (at least one element stays in no group), with an empty group at a random
/// place when `empty` (`Backend::group_lasso_grad`).
pub fn random_groups(
    sizes: &[usize],
    n_groups: usize,
    max_size: usize,
    empty: bool,
    rng: &mut Rng,
) -> bayesnas_engine::device::LassoGroups {
    let mut all: Vec<(usize, usize)> = sizes
        .iter()
        .enumerate()
        .flat_map(|(t, &n)| (0..n).map(move |e| (t, e)))
        .collect();
    rng.shuffle(&mut all);
    let empty_at = if empty {
        Some(rng.below(n_groups))
    } else {
        None
    };
    let mut g = bayesnas_engine::device::LassoGroups {
        start: vec![0],
        ..Default::default()
    };
    let mut next = 0;
    for i in 0..n_groups {
        let size = if Some(i) == empty_at {
            0
        } else {
            1 + rng.below(max_size)
        };
        assert!(next + size < all.len(), "random_groups: too many members");
        for &(t, e) in &all[next..next + size] {
            g.tensor.push(t);
            g.elem.push(e);
        }
        next += size;
        g.start.push(next);
        g.coef.push(rng.uniform_range(0.05, 2.0));
    }
    g
}

/// The CPU backend (the reference of the parity tests).
pub fn cpu() -> &'static dyn bayesnas_engine::Backend {
    Device::Cpu.backend().unwrap()
}

/// A random CPU tensor, normal(0, 1) with no exact zeros ([`randn`]).
pub fn rnd(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = randn(n, rng).iter().map(|&x| x as f32).collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// A random CPU tensor, uniform in [lo, hi) ([`rand_uniform`]).
pub fn uni(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = rand_uniform(n, lo, hi, rng)
        .iter()
        .map(|&x| x as f32)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// `t` uploaded to the backend `g`.
pub fn up(g: &dyn bayesnas_engine::Backend, t: &Tensor) -> Tensor {
    g.upload(t.to_vec(), t.shape()).unwrap()
}

/// `got` (on the GPU, or the CPU under [`parity_selftest`]) against `want` (CPU) with
/// [`assert_rel`] at `tol`; with `empty_ok` an empty `want` only needs the shape.
#[track_caller]
pub fn same_on_gpu(what: &str, got: &Tensor, want: &Tensor, tol: f64, empty_ok: bool) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert!(
        matches!(got.device(), Device::Cuda(_)) || parity_selftest(),
        "{what}: result left the GPU"
    );
    if !(empty_ok && want.numel() == 0) {
        assert_rel(what, &got.to_vec(), &want.to_vec(), tol);
    }
}
