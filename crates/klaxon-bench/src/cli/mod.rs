//! The `klaxon-bench` command line: `ingest` sends the mix to a klaxon (or any) endpoint
//! and reports throughput and latency; `mix` writes the mix as an audit file for
//! `klaxon bench-rules`, `dry-run` or `replay`.
//!
//! Calls `loadgen`; the only user of `anyhow` in this crate.

mod ingest;
mod mix;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::loadgen::{self, Generator, Traces};

/// klaxon-bench: load and event mixes for benchmarking klaxon.
#[derive(Debug, Parser)]
#[command(name = "klaxon-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send audit batches to a klaxon (or any) endpoint and report throughput and latency.
    Ingest(Box<ingest::Args>),
    /// Write the event mix as JSON lines, one EventList batch per line, on stdout.
    Mix(mix::Args),
}

/// What the mix is made of, shared by every command.
#[derive(Debug, clap::Args)]
struct MixArgs {
    /// Directory of Falco's audit traces (*.json), read at start: the bodies of the mix's
    /// write events (default: tests/fixtures/falco of the repository it was built from).
    #[arg(long, value_name = "DIR", default_value_os_t = loadgen::default_traces_dir())]
    traces: PathBuf,
    /// Events per batch (the apiserver's batch webhook backend sends up to 400).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_size: u32,
    /// Seed of the event mix: the same seed gives the same events (auditIDs and
    /// timestamps are always fresh).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl MixArgs {
    /// The generator of `batch_size`-event batches of the mix.
    fn generator(&self, batch_size: usize) -> anyhow::Result<Generator> {
        let traces = Traces::load(&self.traces)?;
        Generator::new(&traces, self.seed, batch_size).context("cannot build the event mix")
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(ref args) => ingest::run(args),
        Command::Mix(ref args) => mix::run(args),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}
