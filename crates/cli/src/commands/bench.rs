//! `bayesnas bench step`: timing of the supernet train step, one JSON line.
//! `bayesnas bench kernels`: GPU timings of the backend's kernels, one JSON line each.
//!
//! Both warn when `BAYESNAS_CUDA_SYNC=1` is set: that debug mode waits after every kernel,
//! so its timings are not the backend's.

use bayesnas_engine::device::cuda::{self, timing};
use bayesnas_engine::Device;
use bayesnas_search::bench::bench_step;
use bayesnas_search::supernet::SupernetConfig;
use bayesnas_search::SearchSpace;
use clap::{Args, Subcommand};

use crate::error::{CliError, CliResult};
use crate::opts::RuntimeOpts;

/// `bayesnas bench` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// Median times of forward, backward, curvature and update of the supernet train step
    /// a search runs (random images), printed as one JSON line; on CUDA also the peak
    /// device memory in use (`gpu_pool_peak_mb`, from the driver's memory pool)
    Step(StepArgs),
    /// Median GPU times (CUDA events) of the backend's depthwise/dilated convolutions, batch
    /// norm, pooling and the fused mixed op (K = 8) at the supernet's shapes, with bytes
    /// moved and achieved GB/s next to a measured device-to-device copy bandwidth; one JSON
    /// line per kernel (the format of tools/torch_cuda_kernels.py)
    Kernels(KernelArgs),
}

/// Options of `bayesnas bench kernels`.
#[derive(Args, Debug, Clone)]
pub struct KernelArgs {
    /// Images per batch
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed repetitions per kernel (the median is over these)
    #[arg(long, default_value_t = 30)]
    pub reps: usize,
    /// Back-to-back calls inside each timed repetition (one CUDA event pair around all of
    /// them); the time printed is per call. More than 1 hides the event and launch gaps of
    /// short kernels
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub calls: usize,
    /// Untimed repetitions first
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Only kernels whose name contains this
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeOpts,
}

/// Options of `bayesnas bench step`.
#[derive(Args, Debug, Clone)]
pub struct StepArgs {
    /// Search space (`bayesnas` or `darts`)
    #[arg(long, default_value = "bayesnas")]
    pub space: String,
    /// Channels of the first stage
    #[arg(long, default_value_t = 16)]
    pub channels: usize,
    /// Number of cells
    #[arg(long, default_value_t = 8)]
    pub cells: usize,
    /// Images per batch
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Image side
    #[arg(long, default_value_t = 32)]
    pub image: usize,
    /// Image channels
    #[arg(long, default_value_t = 3)]
    pub in_channels: usize,
    /// Classes of the classifier
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Timed steps (the medians are over these)
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[command(flatten)]
    pub runtime: RuntimeOpts,
}

/// Runs `bayesnas bench ...`.
pub fn run(cmd: &BenchCommand) -> CliResult<()> {
    match cmd {
        BenchCommand::Kernels(a) => kernels::run(a),
        BenchCommand::Step(a) => {
            let space = SearchSpace::by_name(&a.space)
                .map_err(|e| CliError::Usage(format!("--space: {e}")))?;
            if a.steps == 0 || a.batch < 2 {
                return Err(CliError::Usage(
                    "--steps must be at least 1 and --batch at least 2".into(),
                ));
            }
            let rt = a.runtime.setup()?;
            warn_if_sync_mode(rt.device);

            let cfg = SupernetConfig {
                space,
                channels: a.channels,
                cells: a.cells,
                in_channels: a.in_channels,
                image: a.image,
                classes: a.classes,
            };
            // On CUDA: the pool's high-water mark over the whole bench (parameters, warm-up
            // and timed steps), as PyTorch's max_memory_allocated counts it.
            let gpu = match rt.device {
                Device::Cuda(i) => {
                    let g = cuda::backend(i)?;
                    timing::reset_pool_peak(g)?;
                    Some(g)
                }
                Device::Cpu => None,
            };
            let r = bench_step(cfg, a.batch, a.steps, a.warmup, rt.seed, rt.device)?;
            let mut line = serde_json::to_value(&r).map_err(|e| CliError::Usage(e.to_string()))?;
            if let (Some(g), Some(map)) = (gpu, line.as_object_mut()) {
                map.insert("device".into(), g.name().into());
                if let Some(bytes) = timing::pool_peak_bytes(g)? {
                    let mb = bytes as f64 / (1024.0 * 1024.0);
                    map.insert(
                        "gpu_pool_peak_mb".into(),
                        ((mb * 10.0).round() / 10.0).into(),
                    );
                    let per_image = mb / a.batch as f64;
                    map.insert(
                        "gpu_pool_peak_mb_per_image".into(),
                        ((per_image * 100.0).round() / 100.0).into(),
                    );
                }
            }
            println!("{line}");
            Ok(())
        }
    }
}

/// A note on stderr: the synchronous debug mode makes CUDA timings meaningless.
fn warn_if_sync_mode(device: Device) {
    if matches!(device, Device::Cuda(_)) && cuda::sync_mode() {
        eprintln!(
            "warning: {}=1 waits after every kernel launch: these timings are not the backend's",
            cuda::SYNC_ENV
        );
    }
}

/// `bayesnas bench kernels`.
mod kernels {
    use bayesnas_engine::device::cuda::{self, timing, CudaBackend};
    use bayesnas_engine::device::{Backend, Pool2dSpec};
    use bayesnas_engine::{Conv2dSpec, Device, Rng, Tensor};
    use serde::Serialize;

    use super::KernelArgs;
    use crate::error::{CliError, CliResult};

    /// One line of output (the same fields as tools/torch_cuda_kernels.py prints).
    #[derive(Serialize)]
    struct Line<'a> {
        implementation: &'a str,
        name: String,
        shape: String,
        median_us: f64,
        /// Calls per event pair (`median_us` is per call).
        calls: usize,
        bytes: u64,
        gbs: f64,
        copy_gbs: f64,
        device: String,
    }

    struct Bench<'a> {
        g: &'a CudaBackend,
        args: &'a KernelArgs,
        copy_gbs: f64,
        rng: Rng,
    }

    impl Bench<'_> {
        fn rand(&mut self, shape: &[usize], lo: f32, hi: f32) -> CliResult<Tensor> {
            let t = Tensor::rand_uniform(shape, lo, hi, &mut self.rng);
            Ok(self.g.upload(t.into_vec(), shape)?)
        }

        /// Times `f` and prints its line; `bytes` is the compulsory traffic (each input read
        /// once, each output written once).
        fn time(
            &self,
            name: &str,
            shape: &[usize],
            bytes: usize,
            mut f: impl FnMut() -> bayesnas_engine::Result<()>,
        ) -> CliResult<()> {
            if let Some(want) = &self.args.filter {
                if !name.contains(want.as_str()) {
                    return Ok(());
                }
            }
            let calls = self.args.calls;
            let us = timing::median_us(self.g, self.args.warmup, self.args.reps, || {
                for _ in 0..calls {
                    f()?;
                }
                Ok(())
            })? / calls as f64;
            let shape = shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            let line = Line {
                implementation: "bayesnas",
                name: name.to_string(),
                shape,
                median_us: (us * 100.0).round() / 100.0,
                calls,
                bytes: bytes as u64,
                gbs: (bytes as f64 / (us * 1e-6) / 1e9 * 10.0).round() / 10.0,
                copy_gbs: (self.copy_gbs * 10.0).round() / 10.0,
                device: self.g.name().to_string(),
            };
            println!(
                "{}",
                serde_json::to_string(&line).map_err(|e| CliError::Usage(e.to_string()))?
            );
            Ok(())
        }
    }

    /// The depthwise/dilated convolutions of the search space: (name, k, dilation).
    const DW: [(&str, usize, usize); 4] = [
        ("sep3", 3, 1),
        ("sep5", 5, 1),
        ("dil3", 3, 2),
        ("dil5", 5, 2),
    ];

    pub(super) fn run(a: &KernelArgs) -> CliResult<()> {
        let rt = a.runtime.setup()?;
        let Device::Cuda(i) = rt.device else {
            return Err(CliError::Device(
                "bench kernels times the CUDA kernels: run it with --device cuda".into(),
            ));
        };
        if a.batch == 0 || a.reps == 0 || a.calls == 0 {
            return Err(CliError::Usage(
                "--batch, --reps and --calls must be at least 1".into(),
            ));
        }
        super::warn_if_sync_mode(rt.device);
        let g = cuda::backend(i)?;
        let copy_gbs = timing::dtod_bandwidth_gbs(g, 256 << 20, 20)?;
        let mut b = Bench {
            g,
            args: a,
            copy_gbs,
            rng: Rng::new(rt.seed),
        };
        let f4 = 4usize;
        let n = a.batch;
        {
            let line = serde_json::json!({
                "implementation": "bayesnas", "name": "memcpy_dtod", "shape": "256MiB",
                "gbs": (copy_gbs * 10.0).round() / 10.0, "device": g.name(),
            });
            println!("{line}");
        }
        for hw in [32usize, 16] {
            for c in [16usize, 32, 64] {
                let shape = [n, c, hw, hw];
                let numel = n * c * hw * hw;
                let x = b.rand(&shape, -1.0, 1.0)?;
                let dy = b.rand(&shape, -1.0, 1.0)?;
                for (name, k, d) in DW {
                    let spec = Conv2dSpec::new()
                        .padding(d * (k - 1) / 2)
                        .dilation(d)
                        .groups(c);
                    let ws = [c, 1, k, k];
                    let w = b.rand(&ws, -0.5, 0.5)?;
                    let wb = c * k * k * f4;
                    b.time(&format!("{name}_fwd"), &shape, 2 * numel * f4 + wb, || {
                        g.conv2d_forward(&x, &w, spec).map(drop)
                    })?;
                    b.time(
                        &format!("{name}_bwd_input"),
                        &shape,
                        2 * numel * f4 + wb,
                        || g.conv2d_backward_input(&dy, &w, spec, &shape).map(drop),
                    )?;
                    b.time(
                        &format!("{name}_bwd_weight"),
                        &shape,
                        2 * numel * f4 + wb,
                        || g.conv2d_backward_weight(&x, &dy, spec, &ws).map(drop),
                    )?;
                    // The depthwise-pointwise pair in one launch (sep_conv_fwd): reads x,
                    // writes mid and y.
                    let wp = b.rand(&[c, c, 1, 1], -0.5, 0.5)?;
                    b.time(
                        &format!("{name}_pw_fwd"),
                        &shape,
                        3 * numel * f4 + wb + c * c * f4,
                        || g.depthwise_pointwise_forward(&x, &w, spec, &wp).map(drop),
                    )?;
                }
                let bw = b.rand(&[c], 0.5, 1.5)?;
                let bb = b.rand(&[c], -0.5, 0.5)?;
                b.time("bn_fwd", &shape, 2 * numel * f4, || {
                    g.batch_norm_train_forward(&x, Some(&bw), Some(&bb), 1e-5)
                        .map(drop)
                })?;
                let f = g.batch_norm_train_forward(&x, Some(&bw), Some(&bb), 1e-5)?;
                b.time("bn_bwd", &shape, 3 * numel * f4, || {
                    g.batch_norm_backward(&dy, &x, &f.mean, &f.invstd, Some(&bw))
                        .map(drop)
                })?;
                // Batch norm fused with ReLU (the bn_relu_* kernels; the backward also reads
                // the rectified output).
                b.time("bn_relu_fwd", &shape, 2 * numel * f4, || {
                    g.batch_norm_relu_train_forward(&x, Some(&bw), Some(&bb), 1e-5, None)
                        .map(drop)
                })?;
                let fr = g.batch_norm_relu_train_forward(&x, Some(&bw), Some(&bb), 1e-5, None)?;
                b.time("bn_relu_bwd", &shape, 4 * numel * f4, || {
                    g.batch_norm_relu_backward(&dy, &fr.y, &x, &fr.mean, &fr.invstd, Some(&bw))
                        .map(drop)
                })?;
                for (pname, spec) in [
                    (
                        "pool3_s1",
                        Pool2dSpec {
                            kernel: 3,
                            stride: 1,
                            padding: 1,
                        },
                    ),
                    (
                        "pool3_s2",
                        Pool2dSpec {
                            kernel: 3,
                            stride: 2,
                            padding: 1,
                        },
                    ),
                ] {
                    let (y, arg) = g.max_pool2d_forward(&x, spec)?;
                    let ny = y.numel();
                    b.time(
                        &format!("max{pname}_fwd"),
                        &shape,
                        (numel + 2 * ny) * f4,
                        || g.max_pool2d_forward(&x, spec).map(drop),
                    )?;
                    let pdy = b.rand(y.shape(), -1.0, 1.0)?;
                    b.time(
                        &format!("max{pname}_bwd"),
                        &shape,
                        (numel + 2 * ny) * f4,
                        || g.max_pool2d_backward(&arg, &pdy, &shape).map(drop),
                    )?;
                    b.time(
                        &format!("avg{pname}_fwd"),
                        &shape,
                        (numel + ny) * f4,
                        || g.avg_pool2d_forward(&x, spec).map(drop),
                    )?;
                    b.time(
                        &format!("avg{pname}_bwd"),
                        &shape,
                        (numel + ny) * f4,
                        || g.avg_pool2d_backward(&pdy, spec, &shape, 1).map(drop),
                    )?;
                }
                // The fused mixed op with K = 8 branches (the DARTS space).
                let k = 8;
                let xs: Vec<Tensor> = (0..k)
                    .map(|_| b.rand(&shape, -1.0, 1.0))
                    .collect::<CliResult<_>>()?;
                let xr: Vec<&Tensor> = xs.iter().collect();
                let s = b.rand(&[k], 0.2, 1.0)?;
                let s0 = b.rand(&[1], 0.5, 1.0)?;
                b.time("mixed8_fwd", &shape, (k + 1) * numel * f4, || {
                    g.mixed_forward(&xr, &s0, &s).map(drop)
                })?;
                b.time("mixed8_bwd", &shape, (2 * k + 1) * numel * f4, || {
                    g.mixed_backward(&xr, &dy, &s0, &s).map(drop)
                })?;
                b.time("mixed8_fwd_bwd", &shape, (3 * k + 2) * numel * f4, || {
                    g.mixed_forward(&xr, &s0, &s)?;
                    g.mixed_backward(&xr, &dy, &s0, &s).map(drop)
                })?;
            }
        }
        g.synchronize()?;
        Ok(())
    }
}
