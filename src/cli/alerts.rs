//! `klaxon alerts list`: the alert history of a running klaxon, over its HTTP API
//! (`GET /api/v1/alerts`); how it is reached (`--url`, `--ca`, the credentials): `remote.rs`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use serde::Deserialize;

use super::remote::{Api, Remote};
use crate::config::Config;

/// `klaxon alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the alerts raised, newest first, with what became of each.
    List(ListArgs),
}

/// What `klaxon alerts list` asks for and where.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only alerts of this rule.
    #[arg(long, value_name = "RULE")]
    rule: Option<String>,
    /// Only alerts at least this severe (debug, info, notice, warning, error, critical).
    #[arg(long, value_name = "SEVERITY")]
    severity: Option<String>,
    /// Only alerts raised since: a duration back from now (`1h`, `2d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only alerts whose title, text or a field value contains this, ignoring case.
    #[arg(long, value_name = "TEXT")]
    query: Option<String>,
    /// Most alerts listed (the server's default: 100).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// A table for people, or the API's JSON.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(flatten)]
    remote: Remote,
}

/// How `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One aligned line per alert.
    Human,
    /// The API's answer, `{"alerts":[…]}`.
    Json,
}

pub(super) fn run(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List(args) => list(config, args),
    }
}

fn list(config: &Config, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let mut query: Vec<(&str, String)> = Vec::new();
    let text = [
        ("rule", &args.rule),
        ("severity", &args.severity),
        ("since", &args.since),
        ("q", &args.query),
    ];
    for (name, value) in text {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let api = Api::new(config, &args.remote)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut encoded = form_urlencoded::Serializer::new(String::new());
    encoded.extend_pairs(&query);
    let path = format!("/api/v1/alerts?{}", encoded.finish());
    let body: serde_json::Value = runtime.block_on(api.send(api.get(&path)))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        Format::Human => {
            let listed: Listed =
                serde_json::from_value(body).context("the server's answer is not an alert list")?;
            print!("{}", table(&listed.alerts));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The API's answer, as much of it as the table shows.
#[derive(Debug, Deserialize)]
struct Listed {
    alerts: Vec<Listing>,
}

/// One alert, as much of it as the table shows.
#[derive(Debug, Deserialize)]
struct Listing {
    raised_at: String,
    rule: String,
    severity: String,
    title: String,
    outcome: String,
    #[serde(default)]
    duplicates: u64,
    #[serde(default)]
    silenced_by: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
}

/// One aligned line per alert under a header, or a line saying there are none.
fn table(alerts: &[Listing]) -> String {
    if alerts.is_empty() {
        return "no alerts\n".to_owned();
    }
    let header = ["RAISED", "SEVERITY", "OUTCOME", "RULE", "TARGETS", "TITLE"].map(str::to_owned);
    let rows: Vec<[String; 6]> = alerts
        .iter()
        .map(|a| {
            [
                a.raised_at.clone(),
                a.severity.clone(),
                outcome(a),
                a.rule.clone(),
                match a.targets.is_empty() {
                    true => "-".to_owned(),
                    false => a.targets.join(","),
                },
                a.title.clone(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The outcome with its detail: `deduplicated ×3`, `silenced by s-1`.
fn outcome(alert: &Listing) -> String {
    match (alert.outcome.as_str(), &alert.silenced_by) {
        ("deduplicated", _) => format!("deduplicated ×{}", alert.duplicates),
        ("silenced", Some(id)) => format!("silenced by {id}"),
        (other, _) => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(outcome: &str, duplicates: u64) -> Listing {
        Listing {
            raised_at: "2026-12-03T18:00:00Z".to_owned(),
            rule: "pod_created".to_owned(),
            severity: "info".to_owned(),
            title: "Pod web-1 created".to_owned(),
            outcome: outcome.to_owned(),
            duplicates,
            silenced_by: None,
            targets: vec!["slack".to_owned()],
        }
    }

    #[test]
    fn the_table_aligns_columns_and_shows_duplicate_counts() {
        let text = table(&[listing("admitted", 0), listing("deduplicated", 2)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("RAISED"), "{text}");
        assert!(lines[2].contains("deduplicated ×2"), "{text}");
        let title_at = |line: &str| line[..line.find("Pod web-1").unwrap()].chars().count();
        assert_eq!(title_at(lines[1]), title_at(lines[2]), "{text}");
        assert_eq!(table(&[]), "no alerts\n");
    }
}
