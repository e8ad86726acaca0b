//! `bayesnas fetch`: download a full data set from its canonical source.

use std::path::PathBuf;

use bayesnas_data::DatasetKind;
use clap::Args;

use crate::error::CliResult;
use crate::fetch::{fetch_dataset, FetchOptions, Outcome};
use crate::opts::DatasetArg;

/// Options of `bayesnas fetch`.
#[derive(Args, Clone, Debug)]
pub struct FetchArgs {
    /// Data set to download
    #[arg(value_enum, value_name = "DATASET")]
    pub dataset: DatasetArg,

    /// Directory to put the files in (created if needed) [default: data/DATASET]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Keep CIFAR-10's downloaded archive after unpacking it
    #[arg(long)]
    pub keep_archive: bool,

    /// Base URL to download from instead of the canonical source (mirrors, tests)
    #[arg(long, value_name = "URL", hide = true)]
    pub mirror: Option<String>,

    /// No progress bars or notes
    #[arg(long, short)]
    pub quiet: bool,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs `bayesnas fetch`.
pub fn run(args: &FetchArgs) -> CliResult<()> {
    let kind: DatasetKind = args.dataset.into();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("data").join(kind.name()));
    let options = FetchOptions {
        mirror: args.mirror.clone(),
        quiet: args.quiet,
        keep_archive: args.keep_archive,
    };
    let report = fetch_dataset(kind, &dir, &options)?;
    for (name, outcome) in &report.files {
        match outcome {
            Outcome::AlreadyPresent => println!("{name}: already present, verified"),
            Outcome::Downloaded {
                bytes,
                resumed_from: 0,
            } => println!("{name}: downloaded {}, verified", human(*bytes)),
            Outcome::Downloaded {
                bytes,
                resumed_from,
            } => println!(
                "{name}: downloaded {} (resumed after {}), verified",
                human(*bytes),
                human(*resumed_from)
            ),
        }
    }
    let src = &report.source;
    println!(
        "{} in {}: {} training images, {} test images.",
        kind.display_name(),
        dir.display(),
        src.train.len(),
        src.test.as_ref().map_or(0, |t| t.len())
    );
    println!(
        "Use it with: --dataset {} --data-dir {}",
        kind.name(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(512), "512 B");
        assert_eq!(super::human(9_912_422), "9.5 MiB");
    }
}
