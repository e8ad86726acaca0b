//! Options shared by the subcommands. A subcommand that works on data flattens
//! [`CommonOpts`] into its own `#[derive(Args)]` struct and calls [`CommonOpts::setup`]:
//!
//! ```text
//! #[derive(clap::Args)]
//! pub struct SearchArgs {
//!     #[command(flatten)]
//!     pub common: CommonOpts,
//!     /// Epochs of weight training
//!     #[arg(long, default_value_t = 1)]
//!     pub epochs: usize,
//! }
//!
//! pub fn run(args: &SearchArgs) -> CliResult<()> {
//!     let rt = args.common.runtime.setup()?;          // threads, device, --out, --quiet
//!     let data = args.common.data.open(rt.quiet)?;    // --dataset / --data-dir
//!     let mut metrics = rt.metrics()?;                // OUT/metrics.jsonl (if --out)
//!     let bar = rt.progress(steps, "search");         // ETA, loss, acc, img/s
//!     ...
//! }
//! ```

use std::path::{Path, PathBuf};

use bayesnas_data::{DataSource, DatasetKind};
use bayesnas_engine::Device;
use clap::{Args, ValueEnum};

use crate::error::{CliError, CliResult};
use crate::metrics::MetricsWriter;
use crate::progress::Progress;

/// `--dataset` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetArg {
    /// Fashion-MNIST (28x28 grey, 10 classes of clothing)
    #[value(name = "fashion-mnist")]
    FashionMnist,
    /// MNIST (28x28 grey handwritten digits)
    Mnist,
    /// CIFAR-10 (32x32 RGB, 10 classes)
    Cifar10,
}

impl From<DatasetArg> for DatasetKind {
    fn from(d: DatasetArg) -> DatasetKind {
        match d {
            DatasetArg::FashionMnist => DatasetKind::FashionMnist,
            DatasetArg::Mnist => DatasetKind::Mnist,
            DatasetArg::Cifar10 => DatasetKind::Cifar10,
        }
    }
}

/// `--device` values: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// The CPU (multi-threaded)
    Cpu,
    /// CUDA GPU number N; an error if this build or machine has none
    Cuda(usize),
    /// CUDA when available, else the CPU (with a note saying why)
    Auto,
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceArg::Cpu),
            "auto" => Ok(DeviceArg::Auto),
            "cuda" | "gpu" => Ok(DeviceArg::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceArg::Cuda(i)),
                _ => Err(format!(
                    "{s:?} is not a device: use cpu, cuda, cuda:N (N = 0, 1, ...) or auto"
                )),
            },
        }
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceArg::Cpu => f.write_str("cpu"),
            DeviceArg::Auto => f.write_str("auto"),
            DeviceArg::Cuda(0) => f.write_str("cuda"),
            DeviceArg::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

fn parse_device(s: &str) -> Result<DeviceArg, String> {
    s.parse()
}

/// Which data set to use and where it is.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Data")]
pub struct DataOpts {
    /// Data set [default: fashion-mnist]. Without --data-dir only Fashion-MNIST is
    /// available: its 10,000 test images, compiled into this binary, used as a development
    /// set (accuracies on it are not comparable to published results)
    #[arg(long, value_enum, value_name = "NAME")]
    pub dataset: Option<DatasetArg>,

    /// Directory with the data set's files: train-images-idx3-ubyte[.gz],
    /// train-labels-idx1-ubyte[.gz], t10k-*[.gz] for MNIST and Fashion-MNIST;
    /// data_batch_1..5.bin and test_batch.bin (or a cifar-10-batches-bin folder) for
    /// CIFAR-10. Get them with `bayesnas fetch`
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataOpts {
    /// The data set kind (Fashion-MNIST unless --dataset says otherwise).
    pub fn kind(&self) -> DatasetKind {
        self.dataset.map_or(DatasetKind::FashionMnist, Into::into)
    }

    /// Checks the combination of options without reading any data.
    pub fn check(&self) -> CliResult<()> {
        let kind = self.kind();
        match &self.data_dir {
            None if kind != DatasetKind::FashionMnist => Err(CliError::Usage(format!(
                "--dataset {kind} needs --data-dir DIR: only Fashion-MNIST's test set is built in. \
                 Download {} with `bayesnas fetch {kind} --dir DIR`, then pass --data-dir DIR",
                kind.display_name()
            ))),
            Some(dir) if !dir.is_dir() => Err(CliError::Usage(format!(
                "--data-dir {}: no such directory",
                dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Reads and validates the data set. Prints a note to stderr (unless `quiet`) when the
    /// data is a development set only.
    pub fn open(&self, quiet: bool) -> CliResult<DataSource> {
        self.check()?;
        let source = match &self.data_dir {
            None => DataSource::embedded()?,
            Some(dir) => DataSource::open(self.kind(), dir)?,
        };
        if source.development_only && !quiet {
            eprintln!(
                "note: using {} test images as a development set (split into weight, switch and \
                 validation parts); accuracies are not comparable to published results. Use \
                 --data-dir with the full set for real runs.",
                source.kind.display_name()
            );
        }
        Ok(source)
    }
}

fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    match n {
        0 => Err("must be at least 1".into()),
        n if n > 1024 => Err("must be at most 1024".into()),
        n => Ok(n),
    }
}

/// Device, threads, seed, output directory, verbosity.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Runtime")]
pub struct RuntimeOpts {
    /// Compute device: cpu, cuda (the first GPU), cuda:N, or auto (CUDA when this build
    /// has its kernels and a GPU is present, else the CPU)
    #[arg(long, default_value_t = DeviceArg::Auto, value_name = "DEVICE", value_parser = parse_device)]
    pub device: DeviceArg,

    /// Threads of the CPU backend [default: one per core]
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Seed of every random choice (splits, initialisation, shuffling, augmentation); the
    /// same seed gives the same run on any machine
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub seed: u64,

    /// Output directory (created if needed); metrics go to OUT/metrics.jsonl
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// No progress bars or notes; errors are still printed
    #[arg(long, short)]
    pub quiet: bool,
}

impl Default for RuntimeOpts {
    fn default() -> Self {
        RuntimeOpts {
            device: DeviceArg::Auto,
            threads: None,
            seed: 0,
            out: None,
            quiet: false,
        }
    }
}

/// Whether this build has a CUDA backend and a usable GPU 0.
pub fn cuda_available() -> bool {
    cuda_unavailable_reason(0).is_none()
}

/// Why CUDA device `ordinal` cannot be used (no kernels in this build, no driver, no such
/// device, kernels that do not load), or `None` when it can.
pub fn cuda_unavailable_reason(ordinal: usize) -> Option<String> {
    match Device::Cuda(ordinal).backend() {
        Ok(_) => None,
        Err(bayesnas_engine::Error::Device(m)) => Some(m),
        Err(e) => Some(e.to_string()),
    }
}

impl RuntimeOpts {
    /// The device the options select, or why it cannot be had. `auto` picks CUDA device 0
    /// when it works and otherwise the CPU, printing a note with the reason (unless
    /// `--quiet`, or the build has no CUDA kernels at all); an explicit `cuda` never falls
    /// back.
    pub fn resolve_device(&self) -> CliResult<Device> {
        match self.device {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Auto => match cuda_unavailable_reason(0) {
                None => Ok(Device::Cuda(0)),
                Some(why) => {
                    // A CPU-only build (no kernels compiled in) has nothing to fall back from:
                    // `bayesnas info` reports it; no note on every command.
                    let cpu_only_build = bayesnas_engine::device::cuda::ptx_modules().is_empty();
                    if !self.quiet && !cpu_only_build {
                        eprintln!("note: --device auto: using the CPU ({why})");
                    }
                    Ok(Device::Cpu)
                }
            },
            DeviceArg::Cuda(i) => match cuda_unavailable_reason(i) {
                None => Ok(Device::Cuda(i)),
                Some(why) => Err(CliError::Device(format!(
                    "--device {}: CUDA is not available: {why}; use --device cpu or --device auto",
                    self.device
                ))),
            },
        }
    }

    /// Applies the options: sizes the CPU thread pool, resolves the device.
    pub fn setup(&self) -> CliResult<Runtime> {
        let device = self.resolve_device()?;
        // `bayesnas` sizes the pool in main; other callers (tests) get it sized here.
        if let Some(n) = self.threads {
            if let Err(e) = bayesnas_engine::set_cpu_threads(n) {
                // Already built: fine if with the size asked for.
                if bayesnas_engine::cpu_threads() != n {
                    return Err(CliError::Usage(e.to_string()));
                }
            }
        }
        Ok(Runtime {
            device,
            threads: bayesnas_engine::cpu_threads(),
            seed: self.seed,
            out: self.out.clone(),
            quiet: self.quiet,
        })
    }
}

/// The SGD settings of the training commands: `--momentum` and `--weight-decay`, under
/// "Training". A command flattens this block where these two options stand in its help and
/// adjusts a help text or default of its own with `#[command(mut_arg(ID, ...))]` (ids
/// `momentum`, `weight_decay`).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Training")]
pub struct SgdOpts {
    /// SGD momentum
    #[arg(long, default_value_t = 0.9, value_name = "M")]
    pub momentum: f32,
    /// Weight decay
    #[arg(long, value_name = "WD")]
    pub weight_decay: Option<f32>,
}

impl SgdOpts {
    /// The weight decay given, else `default`.
    pub fn weight_decay_or(&self, default: f32) -> f32 {
        self.weight_decay.unwrap_or(default)
    }
}

/// Both option groups; subcommands that train or search flatten this.
#[derive(Args, Clone, Debug, Default)]
pub struct CommonOpts {
    #[command(flatten)]
    pub data: DataOpts,
    #[command(flatten)]
    pub runtime: RuntimeOpts,
}

impl CommonOpts {
    /// Checks the option combination, applies the runtime options and reads the data.
    pub fn setup(&self) -> CliResult<(Runtime, DataSource)> {
        self.data.check()?;
        // Data first: its errors come before any note about the device.
        let data = self.data.open(self.runtime.quiet)?;
        let rt = self.runtime.setup()?;
        Ok((rt, data))
    }
}

/// The runtime options after [`RuntimeOpts::setup`].
#[derive(Clone, Debug)]
pub struct Runtime {
    pub device: Device,
    pub threads: usize,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub quiet: bool,
}

impl Runtime {
    /// The metrics file under `--out`, or `None` without `--out`.
    pub fn metrics(&self) -> CliResult<Option<MetricsWriter>> {
        self.out.as_deref().map(open_metrics).transpose()
    }

    /// A progress bar of `len` steps (hidden with --quiet or when stderr is not a terminal).
    pub fn progress(&self, len: u64, prefix: &str) -> Progress {
        Progress::new(len, prefix, self.quiet)
    }
}

fn open_metrics(dir: &Path) -> CliResult<MetricsWriter> {
    MetricsWriter::create(dir).map_err(CliError::io(dir.join(crate::metrics::FILE_NAME)))
}

/// A usage error (exit status 2) saying `message`.
pub fn usage<T>(message: String) -> CliResult<T> {
    Err(CliError::Usage(message))
}

/// `--cells N` of a network with normal cells and two reductions.
pub fn check_cells(cells: usize) -> CliResult<()> {
    if cells < 3 {
        return usage(format!(
            "--cells {cells}: at least 3 cells are needed (normal cells and two reductions)"
        ));
    }
    Ok(())
}

/// `--channels C` of a network whose reductions halve the channels.
pub fn check_channels(channels: usize) -> CliResult<()> {
    if channels < 2 || channels % 2 != 0 {
        return usage(format!(
            "--channels {channels}: must be an even number of at least 2"
        ));
    }
    Ok(())
}

/// `--batch B` of a network with batch norm.
pub fn check_batch_norm_batch(batch: usize) -> CliResult<()> {
    if batch < 2 {
        return usage(format!(
            "--batch {batch}: batch norm needs at least 2 images per batch"
        ));
    }
    Ok(())
}

/// A count option `flag` that must be at least 1.
pub fn check_at_least_one(flag: &str, n: usize) -> CliResult<()> {
    if n == 0 {
        return usage(format!("{flag} 0: must be at least 1"));
    }
    Ok(())
}

/// `--max-batches N`, when given, must be at least 1.
pub fn check_max_batches(max_batches: Option<usize>) -> CliResult<()> {
    max_batches.map_or(Ok(()), |n| check_at_least_one("--max-batches", n))
}

/// A real value of `flag` that `ok` accepts (an f32 compares exactly as its f64), else a
/// usage error "{flag} {v}: {rule}".
fn check_real<T: Into<f64> + Copy + std::fmt::Display>(
    flag: &str,
    v: T,
    ok: fn(f64) -> bool,
    rule: &str,
) -> CliResult<()> {
    if !ok(v.into()) {
        return usage(format!("{flag} {v}: {rule}"));
    }
    Ok(())
}

/// A finite value of `flag` greater than 0.
pub fn check_positive<T: Into<f64> + Copy + std::fmt::Display>(flag: &str, v: T) -> CliResult<()> {
    check_real(flag, v, |x| x.is_finite() && x > 0.0, "must be positive")
}

/// A finite value of `flag` of at least 0.
pub fn check_non_negative<T: Into<f64> + Copy + std::fmt::Display>(
    flag: &str,
    v: T,
) -> CliResult<()> {
    check_real(flag, v, |x| x.is_finite() && x >= 0.0, "must be >= 0")
}

/// A value of `flag` in [0, 1) (a probability that must leave something, a momentum).
pub fn check_unit_interval<T: Into<f64> + Copy + std::fmt::Display>(
    flag: &str,
    v: T,
) -> CliResult<()> {
    check_real(flag, v, |x| (0.0..1.0).contains(&x), "must be in [0, 1)")
}
