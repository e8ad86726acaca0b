//! # bayesnas-cli
//!
//! The `bayesnas` command line (binary in `src/main.rs`) and the pieces its subcommands
//! share: [`opts::CommonOpts`] (data set, device, threads, seed, output directory, quiet),
//! [`data`] (splits and batches of the training commands),
//! [`progress::Progress`] (bars with ETA, loss, accuracy, images/s), [`metrics::MetricsWriter`]
//! (JSON lines under `--out`), and [`fetch`] (resumable, verified downloads of the full data
//! sets).
//!
//! Adding a subcommand: write `src/commands/NAME.rs` with `pub struct NameArgs` (flatten
//! `CommonOpts` into it) and `pub fn run(args: &NameArgs) -> CliResult<()>`, list it in
//! `commands/mod.rs`, and add a variant to `Command` in `main.rs`.

pub mod commands;
pub mod data;
pub mod error;
pub mod fetch;
pub mod metrics;
pub mod opts;
pub mod progress;

pub use error::{CliError, CliResult};
pub use metrics::MetricsWriter;
pub use opts::{CommonOpts, DataOpts, DatasetArg, DeviceArg, Runtime, RuntimeOpts};
pub use progress::Progress;
