//! The supernet train step (forward, backward, curvature, group-lasso gradient, SGD) and the
//! closed-form HARD update (`Prior::update_on`, the `group_ard_update` kernel) on CUDA against the
//! same on the CPU. Without a usable GPU it prints `skipped: <reason>` and
//! passes, unless `BAYESNAS_REQUIRE_GPU=1`, when it fails.

use bayesnas_engine::prelude::*;
use bayesnas_search::bayes::NegativeCurvature;
use bayesnas_search::searcher::{Searcher, StepOptions};
use bayesnas_search::{CellType, CellTypeStats, Prior, SearchSpace, UpdateConfig};

mod common;

fn searcher(space: SearchSpace) -> Searcher {
    common::small_searcher(space, 8, 3, 3, 16, 9)
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

/// The device under test: CUDA 0, or the CPU with `BAYESNAS_PARITY_SELFTEST=1` (checks the
/// test itself); `None` (skip, printing why) without a GPU unless `BAYESNAS_REQUIRE_GPU=1`.
fn gpu_or_skip(test: &str) -> Option<Device> {
    let selftest = std::env::var("BAYESNAS_PARITY_SELFTEST").as_deref() == Ok("1");
    match Device::Cuda(0).backend() {
        _ if selftest => Some(Device::Cpu),
        Ok(_) => Some(Device::Cuda(0)),
        Err(e) if std::env::var("BAYESNAS_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("BAYESNAS_REQUIRE_GPU=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipped: {test}: {e}");
            None
        }
    }
}

/// Random statistics with dead groups (all switches 0), groups without curvature and, with
/// `neg`, some negative curvatures.
fn random_stats(
    prior: &Prior,
    ct: CellType,
    cells: usize,
    rng: &mut Rng,
    neg: bool,
) -> CellTypeStats {
    let t = prior.stats_template(ct, cells);
    let g = t.n_groups();
    let (mut s, mut h) = (Vec::new(), Vec::new());
    for gi in 0..g {
        for _ in 0..cells {
            s.push(if gi % 7 == 3 {
                0.0
            } else {
                rng.normal() * 0.7 + 0.05
            });
            let mut hv = if gi % 11 == 5 {
                0.0
            } else {
                rng.uniform_range(1e-4, 2.0)
            };
            if neg && rng.below(13) == 0 {
                hv = -hv;
            }
            h.push(hv);
        }
    }
    CellTypeStats::from_flat(t.n_edges(), t.n_ops(), cells, s, h).unwrap()
}

#[test]
fn group_ard_update_on_the_device_matches_the_host() {
    let Some(gpu) = gpu_or_skip("group_ard_update_on_the_device_matches_the_host") else {
        return;
    };
    let mut rng = Rng::new(21);
    for space in [SearchSpace::darts(), SearchSpace::bayesnas()] {
        let (mut host, mut dev) = (Prior::new(&space).unwrap(), Prior::new(&space).unwrap());
        for round in 0..4 {
            let cfg = UpdateConfig {
                lambda_parent: rng.uniform_range(0.01, 2.0),
                lambda_child: rng.uniform_range(0.01, 2.0),
                negative_curvature: if round >= 2 {
                    NegativeCurvature::ClampToZero
                } else {
                    NegativeCurvature::Reject
                },
            };
            let n = random_stats(&host, CellType::Normal, 3 + round, &mut rng, round >= 2);
            let r = random_stats(&host, CellType::Reduce, 2, &mut rng, round >= 2);
            let sh = host.update(&n, &r, &cfg).unwrap();
            let sd = dev.update_on(gpu, &n, &r, &cfg).unwrap();
            assert_eq!(sd, sh, "{} round {round}: summary", space.name);
            assert!(sh.dead > 0 && sh.no_curvature > 0 && sh.updated > 0);
            // f64 on both sides; only the order of a few operations can differ.
            let (a, b) = (
                serde_json::to_value(&dev).unwrap(),
                serde_json::to_value(&host).unwrap(),
            );
            assert_close_json(&a, &b, &format!("{} round {round}", space.name));
        }
        // Bad statistics: the same error as the host, and the prior is unchanged.
        let mut h = random_stats(&host, CellType::Normal, 2, &mut rng, false)
            .h_flat()
            .to_vec();
        h[5] = -1.0;
        let t = host.stats_template(CellType::Normal, 2);
        let s = vec![0.3; h.len()];
        let bad = CellTypeStats::from_flat(t.n_edges(), t.n_ops(), 2, s, h).unwrap();
        let empty = host.stats_template(CellType::Reduce, 0);
        let cfg = UpdateConfig::new(0.5);
        let before = dev.clone();
        let eh = host.update(&bad, &empty, &cfg).unwrap_err();
        let ed = dev.update_on(gpu, &bad, &empty, &cfg).unwrap_err();
        assert_eq!(ed.to_string(), eh.to_string());
        assert_eq!(dev, before);
    }
}

/// Every number in `a` within 1e-12 (relative) of the one in `b`; everything else equal.
fn assert_close_json(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * y.abs().max(1e-300),
                "{at}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: length");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_close_json(p, q, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: keys");
            for (k, p) in x {
                assert_close_json(p, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn supernet_step_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip("supernet_step_matches_the_cpu") else {
        return;
    };
    for space in [SearchSpace::bayesnas(), SearchSpace::darts()] {
        let (mut c, mut g) = (searcher(space.clone()), searcher(space));
        g.to_device(gpu).unwrap();
        assert_eq!(g.device(), gpu);
        let mut rng = Rng::new(3);
        for step in 0..2 {
            let x = Tensor::randn(&[6, 3, 16, 16], 1.0, &mut rng);
            let labels: Vec<u32> = (0..6).map(|_| rng.below(10) as u32).collect();
            let opts = StepOptions::full();
            let (oc, _) = c.step(x.clone(), &labels, opts.clone()).unwrap();
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
