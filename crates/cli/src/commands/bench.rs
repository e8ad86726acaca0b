//! `bayesnas bench step`: timing of the supernet train step, one JSON line.

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
    /// a search runs (random images), printed as one JSON line
    Step(StepArgs),
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
        BenchCommand::Step(a) => {
            let space = SearchSpace::by_name(&a.space)
                .map_err(|e| CliError::Usage(format!("--space: {e}")))?;
            if a.steps == 0 || a.batch < 2 {
                return Err(CliError::Usage(
                    "--steps must be at least 1 and --batch at least 2".into(),
                ));
            }
            let rt = a.runtime.setup()?;
            if rt.device != Device::Cpu {
                return Err(CliError::Device(format!(
                    "bench step on {} is not supported by this build yet",
                    rt.device
                )));
            }
            let cfg = SupernetConfig {
                space,
                channels: a.channels,
                cells: a.cells,
                in_channels: a.in_channels,
                image: a.image,
                classes: a.classes,
            };
            let r = bench_step(cfg, a.batch, a.steps, a.warmup, rt.seed)?;
            println!(
                "{}",
                serde_json::to_string(&r).map_err(|e| CliError::Usage(e.to_string()))?
            );
            Ok(())
        }
    }
}
