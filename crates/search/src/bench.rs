//! `bayesnas bench step`: medians of the parts of the supernet train step a search runs.

use bayesnas_engine::device::counters;
use bayesnas_engine::prelude::*;
use serde::Serialize;

use crate::searcher::{SearchSettings, Searcher, StepOptions, StepTimings};
use crate::supernet::{Supernet, SupernetConfig, SWITCHES, WEIGHTS};

/// The JSON line `bench step` prints.
#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub curvature_ms: f64,
    pub update_ms: f64,
    pub step_ms: f64,
    /// Batch size over the median step time.
    pub images_per_s: f64,
    /// Trainable weights (switches excluded).
    pub params: usize,
    pub switches: usize,
    /// Peak resident memory of the process (CPU) in MiB.
    pub peak_mem_mb: f64,
    pub device: String,
    pub threads: usize,
    pub batch: usize,
    pub steps: usize,
    /// Device-to-host reads per timed step (mean; `bayesnas_engine::device::counters`).
    pub host_reads: f64,
    /// Kernel launches per timed step (mean; on the CPU, backend calls that would be
    /// launches on a GPU).
    pub launches: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Builds the supernet with its parameters (and so every step) on `device`, runs `warmup`
/// untimed steps and `steps` timed steps on random images (with switches training and the
/// curvature pass timed on every step), and returns the medians. The one step bench:
/// `bayesnas bench step` prints its result.
pub fn bench_step(
    config: SupernetConfig,
    batch: usize,
    steps: usize,
    warmup: usize,
    seed: u64,
    device: Device,
) -> Result<StepBench> {
    if batch == 0 || steps == 0 {
        return Err(Error::Invalid(
            "bench step: --batch and --steps must be positive".into(),
        ));
    }
    let mut rng = Rng::new(seed);
    let mut store = ParamStore::new();
    let (k, image, classes) = (config.in_channels, config.image, config.classes);
    let net = Supernet::new(config, &mut store, &mut rng)?;
    let params = store.count(Some(WEIGHTS));
    let switches = store.count(Some(SWITCHES));
    let mut s = Searcher::new(
        net,
        store,
        SearchSettings {
            seed,
            ..SearchSettings::default()
        },
    )?;
    s.to_device(device)?;
    let mut all: Vec<StepTimings> = Vec::new();
    let mut counted = counters::Counts::default();
    for i in 0..warmup + steps {
        let x = Tensor::randn(&[batch, k, image, image], 1.0, &mut rng);
        let labels: Vec<u32> = (0..batch).map(|_| rng.below(classes) as u32).collect();
        // Counts are per thread: the step runs on this one.
        let (r, c) = counters::measure(|| s.step(x, &labels, StepOptions::full()));
        let (_, t) = r?;
        if i >= warmup {
            all.push(t);
            counted.host_reads += c.host_reads;
            counted.launches += c.launches;
        }
    }
    let m = |f: fn(&StepTimings) -> f64| median(all.iter().map(f).collect());
    let step_ms = m(|t| t.step_ms);
    Ok(StepBench {
        forward_ms: m(|t| t.forward_ms),
        backward_ms: m(|t| t.backward_ms),
        curvature_ms: m(|t| t.curvature_ms),
        update_ms: m(|t| t.update_ms),
        step_ms,
        images_per_s: batch as f64 / (step_ms / 1e3),
        params,
        switches,
        peak_mem_mb: peak_rss_mb(),
        device: "cpu".into(),
        threads: bayesnas_engine::cpu_threads(),
        batch,
        steps,
        host_reads: counted.host_reads as f64 / steps as f64,
        launches: counted.launches as f64 / steps as f64,
    })
}
