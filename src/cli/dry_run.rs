//! `klaxon dry-run` and `klaxon replay`: evaluate the scripts on audit files and run the
//! pipeline on the event clock, printing what would be sent.
//!
//! dry-run shows every alert the scripts raise and what became of it; replay shows the
//! notices each target would have received, and when. Both end with per-rule and
//! per-target tables.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use crate::audit::{self, Location};
use crate::clock::{format_time_ms, parse_time_ms};
use crate::config::Config;
use crate::notify::{self, ConsoleFormat, Target, Targets};
use crate::pipeline::preview::{self, simulated_targets};
use crate::pipeline::{Outcome, Replay, Report, TimedNotice};
use crate::rules::Ruleset;

/// Arguments shared by `dry-run` and `replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audit files (EventList, Event, JSON array or JSON lines); `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output: for people, or JSON lines (alerts for dry-run, notice payloads for replay).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Print only the exact payloads this target would receive, one per notice.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Runtime silences to apply, on the event clock: the JSON `GET /api/v1/silences`
    /// answers (`{"silences":[…]}`, e.g. saved by `klaxon silence list --format json`).
    #[arg(long, value_name = "FILE")]
    silences: Option<PathBuf>,
}

/// How alerts and notices are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable text and summary tables.
    Human,
    /// JSON lines on stdout; the summary goes to stderr.
    Json,
}

/// Which command is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Every alert and its outcome.
    DryRun,
    /// The notices each target would receive.
    Replay,
}

/// Counts that only the CLI sees.
#[derive(Default)]
struct Counts {
    events: usize,
    malformed: usize,
    skipped: usize,
    errors: BTreeMap<String, usize>,
}

pub(super) fn run(config: &Config, args: &Args, mode: Mode) -> anyhow::Result<ExitCode> {
    let rules = super::load_rules(config)?;
    let render = match &args.target {
        Some(name) => Some((name.as_str(), target_render(&config.serve.targets, name)?)),
        None => None,
    };
    let targets = Arc::new(simulated_targets(
        &config.serve.targets,
        args.target.as_deref(),
    ));
    let mut replay = Replay::new(
        config.serve.pipeline.clone(),
        targets.clone(),
        config.serve.delivery.max_alerts_per_notice,
    );
    if let Some(path) = &args.silences {
        replay.pipeline().silences().replace(read_silences(path)?);
    }
    let mut counts = Counts::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut clock_ms = 0;
    for file in &args.files {
        let input = read_input(file)?;
        let decoded = audit::decode(&input);
        for err in &decoded.errors {
            eprintln!("error: {}: {}", position(file, &err.location), err.reason);
        }
        counts.malformed += decoded.errors.len();
        counts.skipped += decoded.skipped;
        counts.events += decoded.events.len();
        for (event, origin) in decoded.events.into_iter().zip(decoded.origins) {
            clock_ms = parse_time_ms(event.time()).unwrap_or(clock_ms);
            let evaluation = rules.evaluate_at(Arc::new(event), clock_ms);
            for err in &evaluation.errors {
                eprintln!("error: {err}");
                *counts.errors.entry(err.rule.clone()).or_default() += 1;
            }
            let shown: Vec<String> = match (mode, render, args.format) {
                (Mode::DryRun, None, Format::Human) => evaluation
                    .alerts
                    .iter()
                    .map(|a| {
                        format!(
                            "{} → {}\n{}",
                            position(file, &origin),
                            preview::destinations(replay.pipeline(), &targets, a).join(", "),
                            notify::console_text(a, ConsoleFormat::Human)
                        )
                    })
                    .collect(),
                (Mode::DryRun, None, Format::Json) => evaluation
                    .alerts
                    .iter()
                    .map(|a| serde_json::to_string(a).unwrap_or_default())
                    .collect(),
                _ => Vec::new(),
            };
            let held: Vec<Option<String>> = evaluation
                .alerts
                .iter()
                .map(|a| replay.pipeline().silenced_by(a, clock_ms))
                .collect();
            let outcomes = replay.push(evaluation.alerts, clock_ms);
            for ((text, (_, outcome)), held) in shown.iter().zip(&outcomes).zip(&held) {
                match (args.format, outcome, held) {
                    (Format::Human, Outcome::Admitted, _) => writeln!(out, "{text}\n")?,
                    (Format::Human, Outcome::Silenced, Some(id)) => {
                        writeln!(out, "{text}\n    [silenced by {id}]\n")?;
                    }
                    (Format::Human, other, _) => {
                        writeln!(out, "{text}\n    [{}]\n", other.as_str())?;
                    }
                    (Format::Json, _, _) => writeln!(out, "{text}")?,
                }
            }
            print_notices(&mut out, replay.take_notices(), mode, render, args.format)?;
        }
    }
    let (notices, report) = replay.finish();
    print_notices(&mut out, notices, mode, render, args.format)?;
    let summary = summary(&rules, &counts, &report);
    if args.format == Format::Human && args.target.is_none() {
        write!(out, "{summary}")?;
    } else {
        eprint!("{summary}");
    }
    out.flush()?;
    let failed = counts.malformed > 0 || !counts.errors.is_empty();
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_notices(
    out: &mut impl std::io::Write,
    notices: Vec<TimedNotice>,
    mode: Mode,
    render: Option<(&str, &Target)>,
    format: Format,
) -> std::io::Result<()> {
    for timed in notices {
        let notice = &timed.notice;
        match (render, mode, format) {
            (Some((name, target)), _, _) if notice.target == name => {
                writeln!(out, "{}", preview::render(target, notice))?;
            }
            (Some(_), _, _) | (None, Mode::DryRun, _) => {}
            (None, Mode::Replay, Format::Json) => writeln!(out, "{}", notice.payload())?,
            (None, Mode::Replay, Format::Human) => writeln!(
                out,
                "{} {} [{}] {}",
                format_time_ms(timed.at_ms),
                notice.target,
                notice.severity(),
                notice.title()
            )?,
        }
    }
    Ok(())
}

fn target_render<'a>(targets: &'a Targets, name: &str) -> anyhow::Result<&'a Target> {
    match targets.by_name.get(name) {
        Some(target) => Ok(target),
        None => bail!(
            "no target named `{name}` (defined: {})",
            targets
                .by_name
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The bytes of an audit file, or of stdin for `-`.
pub(super) fn read_input(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        return Ok(buf);
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// `file:line[:column]`, with the item index for EventList items.
fn position(file: &Path, location: &Location) -> String {
    let name = if file == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let mut out = format!("{name}:{}", location.line);
    if let Some(column) = location.column {
        out.push_str(&format!(":{column}"));
    }
    if let Some(item) = location.item {
        out.push_str(&format!(" (item {item})"));
    }
    out
}

/// `1 rule`, `2 rules`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn summary(rules: &Ruleset, counts: &Counts, report: &Report) -> String {
    let fired: u64 = report.rules.values().map(|t| t.fired).sum();
    let errors: usize = counts.errors.values().sum();
    let skipped = match counts.skipped {
        0 => String::new(),
        n => format!(", {n} skipped (records of other logs)"),
    };
    let mut out = format!(
        "summary: {}, {}, {}, {}, {} malformed{skipped}\n",
        count(counts.events, "event"),
        count(rules.rules().len(), "rule"),
        count(usize::try_from(fired).unwrap_or(usize::MAX), "alert"),
        count(errors, "script error"),
        counts.malformed
    );
    let names: Vec<&str> = rules.rules().iter().map(|r| r.name()).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!(
        "{:<width$}  {:>9}  {:>5}  {:>6}  {:>8}  {:>12}  {:>8}  {:>6}\n",
        "rule", "evaluated", "fired", "errors", "admitted", "deduplicated", "silenced", "folded"
    ));
    for name in names {
        let t = report.rules.get(name).copied().unwrap_or_default();
        out.push_str(&format!(
            "{name:<width$}  {:>9}  {:>5}  {:>6}  {:>8}  {:>12}  {:>8}  {:>6}\n",
            counts.events,
            t.fired,
            counts.errors.get(name).copied().unwrap_or(0),
            t.admitted,
            t.deduplicated,
            t.silenced,
            t.folded
        ));
    }
    if !report.targets.is_empty() {
        let width = report
            .targets
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(6)
            .max(6);
        out.push_str(&format!(
            "{:<width$}  {:>6}  {:>7}  {:>6}  {:>12}\n",
            "target", "alerts", "notices", "paced", "longest wait"
        ));
        for (name, t) in &report.targets {
            out.push_str(&format!(
                "{name:<width$}  {:>6}  {:>7}  {:>6}  {:>11.1}s\n",
                t.alerts,
                t.notices,
                t.paced,
                t.max_pacing_ms as f64 / 1000.0
            ));
        }
    }
    out
}

/// The silences of `--silences FILE` (`{"silences":[…]}`); a bad one is named by its path.
fn read_silences(path: &Path) -> anyhow::Result<Vec<crate::pipeline::silence::RuntimeSilence>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("--silences: cannot read {}", path.display()))?;
    crate::pipeline::silence::parse_list(&bytes)
        .with_context(|| format!("--silences {}", path.display()))
}
