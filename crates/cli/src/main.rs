//! `bayesnas`: Bayesian one-shot neural architecture search.
//!
//! Subcommands live in `bayesnas_cli::commands`; this file only parses and dispatches.

use std::process::ExitCode;

use bayesnas_cli::commands::{bench, compress, fetch, info, search, train};
use clap::{Parser, Subcommand};

const ABOUT: &str = "Bayesian one-shot neural architecture search (BayesNAS) on the CPU";

const LONG_ABOUT: &str = "\
Bayesian one-shot neural architecture search (BayesNAS, Zhou et al., ICML 2019).

Without --data-dir, commands use the Fashion-MNIST test set compiled into this binary \
(10,000 images) as a development set, split into weight-training, switch-training and \
validation parts. Accuracies on it are not comparable to published results: fetch a full \
data set for real runs.";

const AFTER_HELP: &str = "\
Examples:
  bayesnas search                                 search a cell on the built-in data
  bayesnas search --preset paper --dataset cifar10 --data-dir data/cifar10
  bayesnas train --genotype runs/search/genotype.json --dataset cifar10 --data-dir data/cifar10
  bayesnas train --genotype darts_v2 --cells 8 --channels 16 --epochs 10
  bayesnas compress --model lenet5 --data-dir data/mnist
  bayesnas bench step --threads 2                 time the supernet train step
  bayesnas info                                   version, devices, threads, data
  bayesnas fetch cifar10 --dir data/cifar10       download and verify CIFAR-10
  bayesnas info --dataset cifar10 --data-dir data/cifar10 --threads 2

Run 'bayesnas help <command>' for a command's options.";

#[derive(Parser, Debug)]
#[command(
    name = "bayesnas",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the version, devices, threads, CUDA support and the selected data set
    Info(info::InfoArgs),
    /// Download a full data set (MNIST, Fashion-MNIST, CIFAR-10) and verify its checksums
    ///
    /// Downloads from the data set's canonical source into DIR. Interrupted downloads
    /// resume where they stopped; each file is verified before it gets its final name.
    Fetch(fetch::FetchArgs),
    /// Search a cell architecture with BayesNAS (supernet, HARD prior, closed-form update)
    ///
    /// Trains the supernet's weights for a warm-up epoch, then weights and switches under the
    /// reweighted group-lasso objective, updates the prior in closed form from the curvature
    /// of the switches, and derives the normal and reduction cells. Writes genotype.json,
    /// relevance.json, normal/reduce .svg and .dot pictures, metrics.jsonl and a checkpoint
    /// under --out (default runs/search).
    Search(Box<search::SearchArgs>),
    /// Train a derived architecture in DARTS' evaluation network and report test accuracy
    ///
    /// Builds the network from a genotype.json or a DARTS Genotype(...) string (20 cells,
    /// C=36, affine BN, optional auxiliary head), trains it with SGD, cosine schedule,
    /// weight decay, gradient clipping, drop-path and cutout, validates after every epoch and
    /// reports the test accuracy. Writes result.json, weights.safetensors (DARTS' PyTorch
    /// tensor names), checkpoint.safetensors (for --resume) and metrics.jsonl under --out
    /// (default runs/train).
    Train(Box<train::TrainArgs>),
    /// Compress LeNet-300-100 or LeNet-5 with the Bayesian group prior (dynamic pruning)
    ///
    /// Groups are input neurons of fully connected layers and filters of conv layers.
    /// Loops of training under the reweighted group lasso, curvature, closed-form update of
    /// the group priors and pruning; optionally (LeNet-5 by default) the same loops with
    /// every weight its own group, pruning single weights; then a fine-tune. Reports test
    /// error, the surviving structure and the fraction of non-zero weights; writes
    /// report.json, pruned.safetensors and metrics.jsonl under --out (default
    /// runs/compress).
    Compress(Box<compress::CompressArgs>),
    /// Benchmarks
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Command {
    /// `--threads` of the command, if it has the option and it was given.
    fn threads(&self) -> Option<usize> {
        match self {
            Command::Info(a) => a.common.runtime.threads,
            Command::Fetch(_) => None,
            Command::Search(a) => a.common.runtime.threads,
            Command::Train(a) => a.common.runtime.threads,
            Command::Compress(a) => a.runtime.threads,
            Command::Bench(bench::BenchCommand::Step(a)) => a.runtime.threads,
            Command::Bench(bench::BenchCommand::Kernels(a)) => a.runtime.threads,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The CPU pool is sized before any work, and the command runs on one of its threads, so
    // that the CPU kernels share their work without waking a sleeping caller each time
    // (bayesnas_engine::run_in_pool).
    if let Err(e) = bayesnas_engine::set_cpu_threads(cli.command.threads().unwrap_or(0)) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = bayesnas_engine::run_in_pool(|| match &cli.command {
        Command::Info(args) => info::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Search(args) => search::run(args),
        Command::Train(args) => train::run(args),
        Command::Compress(args) => compress::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
