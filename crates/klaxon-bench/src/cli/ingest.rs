//! `klaxon-bench ingest`: send audit batches to a klaxon (or any) endpoint and report
//! throughput and latency. The work is `crate::loadgen`'s; this is its command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use super::MixArgs;
use crate::loadgen::{self, Auth, ClientCert, ClientOptions, Load, Protocol, Report, Stop, Target};

/// Arguments of `ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to POST the batches.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/audit",
        value_name = "URL"
    )]
    url: reqwest::Url,
    #[command(flatten)]
    mix: MixArgs,
    /// Closed loop: this many senders, each sending its next batch once the previous was answered.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000), conflicts_with = "rate")]
    concurrency: u32,
    /// Open loop: offer this many events per second, in batches at fixed intervals whatever
    /// the answers; latency counts from when each batch was due.
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    rate: Option<f64>,
    /// Open loop: most batches awaiting answers; a batch due beyond that is not sent and
    /// counted as missed.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000), requires = "rate")]
    max_in_flight: u32,
    /// How long to send (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, conflicts_with = "batches")]
    duration: Duration,
    /// Send this many batches instead of running for a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    batches: Option<u64>,
    /// Trust only this CA (PEM) for an https URL.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Send `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "TOKEN", conflicts_with_all = ["bearer_token_file", "basic"])]
    bearer_token: Option<String>,
    /// Send the bearer token read from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "basic")]
    bearer_token_file: Option<PathBuf>,
    /// Send basic authentication.
    #[arg(long, value_name = "USER:PASS")]
    basic: Option<String>,
    /// Speak HTTP/2 (h2c on http URLs) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Longest wait for one batch's answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Only build bodies, on one core, and report how fast; nothing is sent.
    #[arg(long)]
    generate_only: bool,
    /// Output: one summary line, or one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One summary line.
    Text,
    /// One JSON object.
    Json,
}

pub(super) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let generator = args.mix.generator(args.mix.batch_size as usize)?;
    if args.generate_only {
        let speed = loadgen::generate_only(&generator, stop(args));
        print(args.format, &speed, &serde_json::to_string(&speed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let target = Target::new(&client_options(args)?).context("cannot set up the client")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(loadgen::run(&target, Arc::new(generator), load(args)))?;
    print(args.format, &report, &serde_json::to_string(&report)?);
    Ok(exit_code(&report))
}

fn stop(args: &Args) -> Stop {
    match args.batches {
        Some(n) => Stop::Batches(n),
        None => Stop::Duration(args.duration),
    }
}

fn load(args: &Args) -> Load {
    match args.rate {
        Some(events_per_sec) => Load::Open {
            events_per_sec,
            max_in_flight: args.max_in_flight as usize,
            stop: stop(args),
        },
        None => Load::Closed {
            concurrency: args.concurrency as usize,
            stop: stop(args),
        },
    }
}

fn client_options(args: &Args) -> anyhow::Result<ClientOptions> {
    let mut options = ClientOptions::new(args.url.clone());
    options.ca = args.ca.clone();
    options.client_cert = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(ClientCert {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    options.auth = auth(args)?;
    options.protocol = if args.http2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    options.timeout = args.timeout;
    Ok(options)
}

fn auth(args: &Args) -> anyhow::Result<Auth> {
    if let Some(token) = &args.bearer_token {
        return Ok(Auth::Bearer(token.clone()));
    }
    if let Some(path) = &args.bearer_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            bail!("{} is empty", path.display());
        }
        return Ok(Auth::Bearer(token.to_owned()));
    }
    match args.basic.as_deref().map(|b| b.split_once(':')) {
        None => Ok(Auth::None),
        Some(Some((username, password))) => Ok(Auth::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }),
        Some(None) => bail!("--basic wants USER:PASS"),
    }
}

fn print(format: Format, text: &impl std::fmt::Display, json: &str) {
    match format {
        Format::Text => println!("{text}"),
        Format::Json => println!("{json}"),
    }
}

/// Failure when no batch was accepted (every one failed, or none was sent).
fn exit_code(report: &Report) -> ExitCode {
    if report.any_accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
