//! `klaxon-bench mix`: the load generator's event mix written as an audit file (one
//! EventList per line, as the apiserver's batch webhook backend sends them), so that
//! `klaxon bench-rules mix.jsonl` evaluates the same events `klaxon-bench ingest` sends.

use std::io::{BufWriter, ErrorKind, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use time::OffsetDateTime;

use super::MixArgs;

/// Arguments of `mix`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events to write (the last line holds what is left over from whole batches).
    #[arg(long, default_value_t = 20_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    events: u64,
    #[command(flatten)]
    mix: MixArgs,
}

/// Writes the mix on stdout; a reader that stops early (`| head`) is not an error.
pub(super) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let batch_size = u64::from(args.mix.batch_size);
    let generator = args.mix.generator(batch_size as usize)?;
    let rest = args.events % batch_size;
    let last = match rest {
        0 => None,
        n => Some(args.mix.generator(n as usize)?),
    };
    let now = OffsetDateTime::now_utc();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut write = || -> std::io::Result<()> {
        for seq in 0..args.events / batch_size {
            out.write_all(&generator.batch(seq, now))?;
            out.write_all(b"\n")?;
        }
        if let Some(last) = &last {
            out.write_all(&last.batch(args.events / batch_size, now))?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    match write() {
        Err(err) if err.kind() == ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        result => {
            result.context("cannot write the mix")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
