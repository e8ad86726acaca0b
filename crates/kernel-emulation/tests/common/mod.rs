//! Helpers shared by the kernel-emulation tests: the CPU reference backend, random inputs
//! that are never zero, and the tolerance check against the reference.
#![allow(dead_code)]

use bayesnas_engine::device::cpu::CpuBackend;
use bayesnas_engine::device::Backend;
use bayesnas_engine::{Rng, Tensor};

/// Threads per block of the host launches.
pub const B: u32 = 256;

pub fn cpu() -> &'static dyn Backend {
    &CpuBackend
}

/// Random normal values, none of them zero.
pub fn rvec(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.normal() as f32;
            if v.abs() < 1e-3 {
                0.5
            } else {
                v
            }
        })
        .collect()
}

pub fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

#[track_caller]
pub fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: reference is all zero (useless test)");
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > worst {
            worst = d;
            at = i;
        }
    }
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max error {worst} at {at} (got {}, want {}), scale {scale}",
        got[at],
        want[at]
    );
}

#[track_caller]
pub fn close64(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1e-300),
        "{what}: got {got}, want {want}"
    );
}

pub fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}
