//! The command line: `serve`, `dry-run`, `check`, `silence` and the rest, sharing
//! `--config` and `--scripts`.
//!
//! Loads config and scripts, then hands over to `server` or evaluates directly with `rules`.
//! Calls `config`, `server`, `pipeline`, `notify`, `outbox`, `rules`, `audit`, `sources`
//! (the `--follow` settings) and `clock`.

mod alerts;
mod bench_rules;
mod check;
mod dry_run;
mod r#gen;
mod outbox;
mod remote;
mod serve;
mod silence;
mod test;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config, Sources};
use crate::rules::Ruleset;
use crate::sources::{FileSource, Input, StartAt};

/// klaxon: Kubernetes audit events in, alerts people act on out.
#[derive(Debug, Parser)]
#[command(name = "klaxon", version, about)]
pub struct Cli {
    /// Config file (default: config/klaxon.toml when it exists, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Scripts directory; repeat for several (replaces `scripts.dirs`).
    #[arg(long = "scripts", global = true, value_name = "DIR")]
    scripts: Vec<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive audit webhooks and deliver alerts.
    Serve {
        /// Address to listen on (overrides `server.listen`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Follow this JSON-lines audit log file across rotation (`-`: standard input);
        /// repeat for several (replaces `[[sources.file]]`).
        #[arg(long = "follow", value_name = "PATH")]
        follow: Vec<String>,
        /// Read the `--follow` files from their beginning the first time (default: from
        /// their end); later runs go on where the last one stopped.
        #[arg(long, requires = "follow")]
        follow_from_start: bool,
    },
    /// Evaluate the scripts on audit files (or stdin): every alert and what became of it.
    DryRun(dry_run::Args),
    /// Replay audit files on the event clock: the notices each target would have received.
    Replay(dry_run::Args),
    /// Validate the config and compile every script.
    Check(check::Args),
    /// Run the script test cases (`*.test.toml`).
    Test(test::Args),
    /// Inspect and manage the outbox (pending deliveries and dead letters).
    #[command(subcommand)]
    Outbox(outbox::Command),
    /// Silence alerts at runtime on a running klaxon (its admin API).
    #[command(subcommand)]
    Silence(silence::Command),
    /// The alert history of a running klaxon (over its HTTP API).
    #[command(subcommand)]
    Alerts(alerts::Command),
    /// Generate files for the cluster side.
    #[command(subcommand)]
    Gen(r#gen::Command),
    /// Measure how fast the scripts evaluate audit events offline, with a per-rule cost table.
    BenchRules(bench_rules::Args),
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn,klaxon::script=info",
    };
    init_logging(cli.log_format, default_filter);
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`klaxon … | head`): what it wanted was printed.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `err` comes from writing to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let sources = Sources {
        config_path: cli.config.clone(),
        scripts: cli.scripts.clone(),
    };
    let load_config = || sources.config().context("invalid configuration");
    match cli.command {
        Command::Serve {
            listen,
            ref follow,
            follow_from_start,
        } => {
            let mut config = load_config()?;
            if let Some(addr) = listen {
                config.serve.listen = addr;
            }
            if !follow.is_empty() {
                let start_at = match follow_from_start {
                    true => StartAt::Beginning,
                    false => StartAt::End,
                };
                config.serve.sources = followed(follow, start_at)?;
            }
            serve::run(&sources, config)
        }
        Command::DryRun(ref args) => dry_run::run(&load_config()?, args, dry_run::Mode::DryRun),
        Command::Replay(ref args) => dry_run::run(&load_config()?, args, dry_run::Mode::Replay),
        Command::Check(ref args) => Ok(check::run(&sources, args)),
        Command::Test(ref args) => test::run(&load_config()?, args),
        Command::Outbox(ref command) => outbox::run(&load_config()?, command),
        Command::Silence(ref command) => silence::run(&load_config()?, command),
        Command::Alerts(ref command) => alerts::run(&load_config()?, command),
        Command::Gen(ref command) => r#gen::run(&load_config()?, command),
        Command::BenchRules(ref args) => bench_rules::run(&load_config()?, args),
    }
}

/// The `--follow` sources, none twice.
fn followed(paths: &[String], start_at: StartAt) -> anyhow::Result<Vec<FileSource>> {
    let mut sources: Vec<FileSource> = Vec::new();
    for path in paths {
        let input = Input::parse(path);
        anyhow::ensure!(
            sources.iter().all(|s| s.input != input),
            "--follow {path} is given twice"
        );
        sources.push(FileSource { input, start_at });
    }
    Ok(sources)
}

/// The scripts `config` names, compiled with their settings.
fn load_rules(config: &Config) -> anyhow::Result<Ruleset> {
    config::rules(config).context("scripts failed to load")
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
