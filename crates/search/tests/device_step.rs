//! The supernet train step (forward, backward, curvature, group-lasso gradient, SGD) on CUDA
//! against the same step on the CPU. Without a usable GPU it prints `skipped: <reason>` and
//! passes, unless `BAYESNAS_REQUIRE_GPU=1`, when it fails.

use bayesnas_engine::prelude::*;
use bayesnas_search::protocol::{SearchSettings, Searcher, StepOptions};
use bayesnas_search::supernet::{Supernet, SupernetConfig};
use bayesnas_search::SearchSpace;

fn searcher(space: SearchSpace) -> Searcher {
    let cfg = SupernetConfig {
        space,
        channels: 8,
        cells: 3,
        in_channels: 3,
        image: 16,
        classes: 10,
    };
    let mut store = ParamStore::new();
    let net = Supernet::new(cfg, &mut store, &mut Rng::new(5)).unwrap();
    let settings = SearchSettings {
        seed: 9,
        ..SearchSettings::default()
    };
    Searcher::new(net, store, settings).unwrap()
}

/// Norm-relative error `||a - b|| / ||b||`.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn supernet_step_matches_the_cpu() {
    // BAYESNAS_PARITY_SELFTEST=1: the CPU stands in for the GPU (checks this test itself).
    let selftest = std::env::var("BAYESNAS_PARITY_SELFTEST").as_deref() == Ok("1");
    let gpu = match Device::Cuda(0).backend() {
        _ if selftest => Device::Cpu,
        Ok(_) => Device::Cuda(0),
        Err(e) if std::env::var("BAYESNAS_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("BAYESNAS_REQUIRE_GPU=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipped: supernet_step_matches_the_cpu: {e}");
            return;
        }
    };
    for space in [SearchSpace::bayesnas(), SearchSpace::darts()] {
        let (mut c, mut g) = (searcher(space.clone()), searcher(space));
        g.to_device(gpu).unwrap();
        assert_eq!(g.device(), gpu);
        let mut rng = Rng::new(3);
        for step in 0..2 {
            let x = Tensor::randn(&[6, 3, 16, 16], 1.0, &mut rng);
            let labels: Vec<u32> = (0..6).map(|_| rng.below(10) as u32).collect();
            let opts = StepOptions {
                train_switches: true,
                curvature: true,
                lr_factor: 1.0,
                update: true,
            };
            let (oc, _) = c.step(x.clone(), &labels, opts).unwrap();
            let (og, _) = g.step(x, &labels, opts).unwrap();
            let d = (og.loss - oc.loss).abs() / oc.loss.abs();
            assert!(d < 1e-4, "step {step}: loss {} vs {}", og.loss, oc.loss);
        }
        for ((_, pc), (_, pg)) in c.store.iter().zip(g.store.iter()) {
            assert_eq!(pg.value.device(), gpu, "{} left the GPU", pg.name);
            for (what, a, b) in [
                ("value", &pg.value, &pc.value),
                ("grad", &pg.grad, &pc.grad),
                ("curvature", &pg.curvature, &pc.curvature),
            ] {
                let (a, b) = (a.to_vec(), b.to_vec());
                if b.iter().all(|&v| v == 0.0) {
                    assert!(a.iter().all(|&v| v.abs() < 1e-6), "{} {what}", pc.name);
                    continue;
                }
                let r = rel(&a, &b);
                assert!(r < 1e-3, "{} {what}: norm-relative error {r:.3e}", pc.name);
            }
        }
    }
}
