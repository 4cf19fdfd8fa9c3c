//! `klaxon test`: script test cases in `*.test.toml` files — events in, expected alerts
//! (and optionally pipeline outcomes) out, on the event clock, with a cargo-test-like report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;

use crate::audit::{self, Event};
use crate::clock::parse_time_ms;
use crate::config::Config;
use crate::pipeline::Replay;
use crate::rules::{Alert, Ruleset, ScriptSource, Severity};

/// `klaxon test` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Test files or directories of `*.test.toml` (default: the script directories).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    case: Vec<Case>,
}

/// One case: events in order, and what must (not) come out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    events: Vec<PathBuf>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    only: bool,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    pipeline: Option<PipelineExpect>,
}

/// Alerts of one rule that must match, `count` times.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    rule: String,
    #[serde(default = "one")]
    count: usize,
    title: Option<String>,
    title_contains: Option<String>,
    severity: Option<Severity>,
    text_contains: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn one() -> usize {
    1
}

/// Pipeline totals that must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineExpect {
    admitted: Option<u64>,
    deduplicated: Option<u64>,
    silenced: Option<u64>,
    folded: Option<u64>,
    notices: Option<u64>,
}

impl Expect {
    fn matches(&self, alert: &Alert) -> bool {
        alert.rule == self.rule
            && self.title.as_ref().is_none_or(|t| alert.title == *t)
            && self
                .title_contains
                .as_ref()
                .is_none_or(|t| alert.title.contains(t.as_str()))
            && self.severity.is_none_or(|s| alert.severity == s)
            && self
                .text_contains
                .as_ref()
                .is_none_or(|t| alert.text.contains(t.as_str()))
            && self
                .fields
                .iter()
                .all(|(k, v)| alert.fields.get(k) == Some(v))
            && self
                .labels
                .iter()
                .all(|(k, v)| alert.labels.get(k) == Some(v))
    }

    fn describe(&self) -> String {
        let mut out = format!("{} × {}", self.count, self.rule);
        if let Some(s) = self.severity {
            out.push_str(&format!(" [{s}]"));
        }
        if let Some(t) = &self.title {
            out.push_str(&format!(" title = {t:?}"));
        }
        if let Some(t) = &self.title_contains {
            out.push_str(&format!(" title contains {t:?}"));
        }
        if let Some(t) = &self.text_contains {
            out.push_str(&format!(" text contains {t:?}"));
        }
        for (k, v) in &self.fields {
            out.push_str(&format!(" fields.{k} = {v:?}"));
        }
        for (k, v) in &self.labels {
            out.push_str(&format!(" labels.{k} = {v:?}"));
        }
        out
    }
}

/// Outcome of the whole run.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    broken_files: usize,
}

pub(super) fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    let sources = ScriptSource::read_dirs(&config.script_dirs).context("scripts failed to load")?;
    // Compiled once here to report script errors before any case runs.
    Ruleset::compile_with_modules(
        sources.clone(),
        &config.script_dirs,
        &config.limits,
        &config.cluster_name,
    )
    .context("scripts failed to load")?;
    let roots = if args.paths.is_empty() {
        config.script_dirs.clone()
    } else {
        args.paths.clone()
    };
    let files = test_files(&roots)?;
    let mut tally = Tally::default();
    for file in &files {
        run_file(config, &sources, file, &mut tally);
    }
    let status = if tally.failed == 0 && tally.broken_files == 0 {
        "ok"
    } else {
        "FAILED"
    };
    println!(
        "\ntest result: {status}. {} passed; {} failed",
        tally.passed, tally.failed
    );
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(match (tally.broken_files, tally.failed) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}

/// `*.test.toml` files of the given files and directories, sorted.
fn test_files(roots: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for root in roots {
        if root.is_dir() {
            for entry in std::fs::read_dir(root)
                .with_context(|| format!("cannot read {}", root.display()))?
            {
                let path = entry?.path();
                if path.to_string_lossy().ends_with(".test.toml") {
                    files.push(path);
                }
            }
        } else {
            files.push(root.clone());
        }
    }
    files.sort();
    Ok(files)
}

fn run_file(config: &Config, sources: &[ScriptSource], file: &Path, tally: &mut Tally) {
    let parsed = std::fs::read_to_string(file)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            toml::from_str::<TestFile>(&text).map_err(|e| {
                let line = e.span().map_or(0, |s| {
                    text.as_bytes()[..s.start]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1
                });
                format!("line {line}: {}", e.message().trim())
            })
        });
    let test_file = match parsed {
        Ok(t) => t,
        Err(err) => {
            println!("error: {}: {err}", file.display());
            tally.broken_files += 1;
            return;
        }
    };
    for case in &test_file.case {
        let failures = run_case(config, sources, file, case);
        let name = format!("{} :: {}", file.display(), case.name);
        if failures.is_empty() {
            println!("test {name} ... ok");
            tally.passed += 1;
        } else {
            println!("test {name} ... FAILED");
            for failure in failures {
                for line in failure.lines() {
                    println!("    {line}");
                }
            }
            tally.failed += 1;
        }
    }
}

/// Runs one case with fresh state; returns what went wrong.
fn run_case(config: &Config, sources: &[ScriptSource], file: &Path, case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let events = match case_events(file, case) {
        Ok(events) => events,
        Err(err) => return vec![err],
    };
    if events.is_empty() {
        return vec!["the case has no events (`events` or `event`)".to_owned()];
    }
    let mut rules = match Ruleset::compile_with_modules(
        sources.to_vec(),
        &config.script_dirs,
        &config.limits,
        &config.cluster_name,
    ) {
        Ok(rules) => rules,
        Err(err) => return vec![err.to_string()],
    };
    rules.set_settings(&config.script_settings);
    let mut replay = Replay::new(
        config.serve.pipeline.clone(),
        Arc::new(config.serve.targets.clone()),
        config.serve.delivery.max_alerts_per_notice,
    );
    let mut clock = 0;
    let mut alerts: Vec<Alert> = Vec::new();
    for event in events {
        clock = parse_time_ms(event.time()).unwrap_or(clock);
        let evaluation = rules.evaluate_at(Arc::new(event), clock);
        failures.extend(
            evaluation
                .errors
                .iter()
                .map(|e| format!("script error: {e}")),
        );
        alerts.extend(evaluation.alerts.iter().cloned());
        replay.push(evaluation.alerts, clock);
    }
    let (notices, report) = replay.finish();
    for expect in &case.expect {
        let got = alerts.iter().filter(|a| expect.matches(a)).count();
        if got != expect.count {
            failures.push(format!("expected {}, got {got}", expect.describe()));
        }
    }
    if case.only {
        let expected: Vec<&str> = case.expect.iter().map(|e| e.rule.as_str()).collect();
        let mut unexpected: Vec<&str> = alerts
            .iter()
            .map(|a| a.rule.as_str())
            .filter(|r| !expected.contains(r))
            .collect();
        unexpected.dedup();
        if !unexpected.is_empty() {
            failures.push(format!(
                "`only`: rules not expected fired: {}",
                unexpected.join(", ")
            ));
        }
    }
    if let Some(p) = &case.pipeline {
        let sum =
            |f: fn(&crate::pipeline::RuleTally) -> u64| report.rules.values().map(f).sum::<u64>();
        let checks = [
            ("admitted", p.admitted, sum(|t| t.admitted)),
            ("deduplicated", p.deduplicated, sum(|t| t.deduplicated)),
            ("silenced", p.silenced, sum(|t| t.silenced)),
            ("folded", p.folded, sum(|t| t.folded)),
            ("notices", p.notices, notices.len() as u64),
        ];
        for (what, want, got) in checks {
            if let Some(want) = want
                && want != got
            {
                failures.push(format!("pipeline: expected {want} {what}, got {got}"));
            }
        }
    }
    if !failures.is_empty() {
        failures.push(diff(case, &alerts));
    }
    failures
}

/// Expected and actual alerts side by side.
fn diff(case: &Case, alerts: &[Alert]) -> String {
    let mut out = String::from("expected:\n");
    for e in &case.expect {
        out.push_str(&format!("  - {}\n", e.describe()));
    }
    out.push_str("actual:\n");
    if alerts.is_empty() {
        out.push_str("  (no alerts)\n");
    }
    for a in alerts {
        out.push_str(&format!("  + {} [{}] {:?}\n", a.rule, a.severity, a.title));
    }
    out
}

/// The case's events: files (relative to the test file), then the inline ones.
fn case_events(file: &Path, case: &Case) -> Result<Vec<Event>, String> {
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for path in &case.events {
        let path = base.join(path);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        out.extend(decoded(&bytes, &path.display().to_string())?);
    }
    if let Some(inline) = &case.event {
        out.extend(decoded(inline.as_bytes(), "inline event")?);
    }
    Ok(out)
}

fn decoded(bytes: &[u8], what: &str) -> Result<Vec<Event>, String> {
    let decoded = audit::decode(bytes);
    match decoded.errors.first() {
        Some(err) => Err(format!("{what}: {err}")),
        None => Ok(decoded.events),
    }
}
