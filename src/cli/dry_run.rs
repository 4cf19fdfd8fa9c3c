//! `klaxon dry-run`: evaluate the scripts on audit files and print what would be sent.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::ValueEnum;

use crate::audit::{self, Location};
use crate::config::Config;
use crate::notify::{self, ConsoleFormat, Render, Target, Targets};
use crate::rules::{Alert, Ruleset};

/// `klaxon dry-run` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audit files (EventList, Event, JSON array or JSON lines); `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output: alerts for people, or one JSON alert per line.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Print the exact payload this target would receive, one per alert routed to it.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
}

/// How `dry-run` prints alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable alerts and a summary table.
    Human,
    /// One JSON alert per line on stdout; the summary goes to stderr.
    Json,
}

/// Per-rule tallies for the summary.
#[derive(Default)]
struct Tally {
    fired: usize,
    errors: usize,
}

/// What the run saw, for the summary and the exit code.
struct Report {
    events: usize,
    malformed: usize,
    rules: BTreeMap<String, Tally>,
}

pub(super) fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let rules = super::load_rules(config)?;
    let render = match &args.target {
        Some(name) => Some(target_render(&config.targets, name)?),
        None => None,
    };
    let mut report = Report {
        events: 0,
        malformed: 0,
        rules: rules
            .rules()
            .iter()
            .map(|r| (r.name().to_owned(), Tally::default()))
            .collect(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for file in &args.files {
        let input = read_input(file)?;
        let decoded = audit::decode(&input);
        for err in &decoded.errors {
            eprintln!("error: {}: {}", position(file, &err.location), err.reason);
        }
        report.malformed += decoded.errors.len();
        report.events += decoded.events.len();
        for (event, origin) in decoded.events.into_iter().zip(decoded.origins) {
            let evaluation = rules.evaluate(Arc::new(event));
            for err in &evaluation.errors {
                eprintln!("error: {err}");
                report.rules.entry(err.rule.clone()).or_default().errors += 1;
            }
            for alert in &evaluation.alerts {
                report.rules.entry(alert.rule.clone()).or_default().fired += 1;
                let text = match (args.target.as_deref(), render) {
                    (Some(name), Some(render)) => routed_to(&config.targets, alert, name)
                        .then(|| notify::payload(render, alert)),
                    _ => Some(show(
                        alert,
                        &config.targets,
                        args.format,
                        &position(file, &origin),
                    )),
                };
                if let Some(text) = text {
                    writeln!(out, "{text}")?;
                }
            }
        }
    }
    let summary = summary(&rules, &report);
    if args.format == Format::Human && args.target.is_none() {
        write!(out, "{summary}")?;
    } else {
        eprint!("{summary}");
    }
    out.flush()?;
    let failed = report.malformed > 0 || report.rules.values().any(|t| t.errors > 0);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn target_render(targets: &Targets, name: &str) -> anyhow::Result<Render> {
    match targets.by_name.get(name) {
        Some(target) => Ok(target.render()),
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

/// Whether `name` would see `alert`: routed to it, or reached through a fallback.
fn routed_to(targets: &Targets, alert: &Alert, name: &str) -> bool {
    targets
        .route(alert)
        .into_iter()
        .any(|routed| routed == name || targets.resolve(routed).is_some_and(|(n, _)| n == name))
}

fn read_input(file: &Path) -> anyhow::Result<Vec<u8>> {
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

/// One alert for people: where it came from, where it would go, and what it says.
fn show(alert: &Alert, targets: &Targets, format: Format, origin: &str) -> String {
    if format == Format::Json {
        return serde_json::to_string(alert).unwrap_or_default();
    }
    let destinations: Vec<String> = targets
        .route(alert)
        .into_iter()
        .map(|name| match targets.by_name.get(name) {
            Some(Target::Fallback { to, .. }) => format!("{name} (not configured: {to})"),
            _ => name.to_owned(),
        })
        .collect();
    format!(
        "{origin} → {}\n{}\n",
        destinations.join(", "),
        notify::console_text(alert, ConsoleFormat::Human)
    )
}

/// `1 rule`, `2 rules`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn summary(rules: &Ruleset, report: &Report) -> String {
    let fired: usize = report.rules.values().map(|t| t.fired).sum();
    let errors: usize = report.rules.values().map(|t| t.errors).sum();
    let mut out = format!(
        "summary: {}, {}, {}, {}, {} malformed\n",
        count(report.events, "event"),
        count(rules.rules().len(), "rule"),
        count(fired, "alert"),
        count(errors, "script error"),
        report.malformed
    );
    let width = report
        .rules
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<width$}  {:>9}  {:>5}  {:>6}\n",
        "rule", "evaluated", "fired", "errors"
    ));
    for (rule, tally) in &report.rules {
        out.push_str(&format!(
            "{rule:<width$}  {:>9}  {:>5}  {:>6}\n",
            report.events, tally.fired, tally.errors
        ));
    }
    out
}
