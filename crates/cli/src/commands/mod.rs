//! One module per subcommand: each has an `Args` struct (clap derive) and a `run` function.
//! `main.rs` lists them in its `Command` enum and dispatches.

pub mod bench;
pub mod compress;
pub mod fetch;
pub mod info;
pub mod search;
pub mod train;
