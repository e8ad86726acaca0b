//! `bayesnas info`: version, devices, threads, CUDA build, and the data set the shared
//! options select (read and validated).

use bayesnas_data::{Origin, SearchSplits, SplitConfig};
use clap::Args;
use serde::Serialize;

use crate::error::{CliError, CliResult};
use crate::opts::{cuda_available, CommonOpts};

/// Options of `bayesnas info`.
#[derive(Args, Clone, Debug)]
pub struct InfoArgs {
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub common: CommonOpts,
}

/// What `info` reports.
#[derive(Serialize, Debug)]
pub struct Info {
    pub version: String,
    pub devices: Vec<String>,
    pub device: String,
    pub threads: usize,
    pub logical_cores: usize,
    pub cuda: String,
    pub dataset: String,
    pub data_origin: String,
    pub train_images: usize,
    pub test_images: Option<usize>,
    pub development_only: bool,
    pub seed: u64,
    pub split_weight: usize,
    pub split_switch: usize,
    pub split_valid: usize,
}

/// What the build knows about CUDA, in one line.
pub fn cuda_status() -> String {
    match crate::opts::cuda_unavailable_reason(0) {
        None => match bayesnas_engine::device::cuda::backend(0) {
            Ok(b) => format!("available ({})", b.name()),
            Err(_) => "available".to_string(),
        },
        Some(why) => format!("unavailable: {why}"),
    }
}

/// Gathers the report (applies --threads and --device, reads the data).
pub fn gather(common: &CommonOpts) -> CliResult<Info> {
    // No development-set note on stderr: the report itself says so.
    common.data.check()?;
    let data = common.data.open(true)?;
    let rt = common.runtime.setup()?;
    let mut devices = vec!["cpu".to_string()];
    if cuda_available() {
        devices.push("cuda:0".to_string());
    }
    let splits = SearchSplits::of(&data.train, SplitConfig::default(), rt.seed)?;
    Ok(Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        devices,
        device: rt.device.to_string(),
        threads: rt.threads,
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cuda: cuda_status(),
        dataset: data.kind.name().to_string(),
        data_origin: match &data.origin {
            Origin::Embedded => "embedded".to_string(),
            Origin::Directory(d) => d.display().to_string(),
        },
        train_images: data.train.len(),
        test_images: data.test.as_ref().map(|t| t.len()),
        development_only: data.development_only,
        seed: rt.seed,
        split_weight: splits.weight.len(),
        split_switch: splits.switch.len(),
        split_valid: splits.valid.len(),
    })
}

/// Runs `bayesnas info`.
pub fn run(args: &InfoArgs) -> CliResult<()> {
    let info = gather(&args.common)?;
    if let Some(out) = &args.common.runtime.out {
        let mut m = crate::metrics::MetricsWriter::create(out)
            .map_err(CliError::io(out.join(crate::metrics::FILE_NAME)))?;
        m.record("info", &info).map_err(CliError::io(m.path()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&info).expect("Info serialises")
        );
        return Ok(());
    }
    let test = match info.test_images {
        Some(n) => format!("{n} test images"),
        None => "no separate test set".to_string(),
    };
    println!("bayesnas {}", info.version);
    println!("devices:  {}", info.devices.join(", "));
    println!(
        "device:   {} (--device {})",
        info.device, args.common.runtime.device
    );
    println!(
        "threads:  {} (CPU backend; {} logical cores)",
        info.threads, info.logical_cores
    );
    println!("cuda:     {}", info.cuda);
    println!(
        "data:     {} ({}): {} training images, {test}",
        info.dataset, info.data_origin, info.train_images
    );
    if info.development_only {
        println!(
            "          development set: the test images are split for search; accuracies are \
             not comparable to published results"
        );
    }
    println!(
        "splits:   weight {}, switch {}, validation {} (seed {})",
        info.split_weight, info.split_switch, info.split_valid, info.seed
    );
    Ok(())
}
