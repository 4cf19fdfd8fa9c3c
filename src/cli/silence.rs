//! `klaxon silence add|list|expire`: runtime silences of a running klaxon, through its
//! admin API (`/api/v1/silences`).
//!
//! How the running klaxon is reached (`--url`, `--ca`, the credentials): `remote.rs`.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};

use super::remote::{Api, Remote};
use crate::config::Config;
use crate::pipeline::silence::{FieldMatcher, NewSilence, SilenceJson, SilenceList};

/// `klaxon silence` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Silence matching alerts from now (or --starts-at) for --duration (or until --ends-at).
    Add {
        /// `NAME=VALUE`, `NAME!=VALUE`, `NAME=~REGEX` or `NAME!~REGEX`; NAME is rule,
        /// severity, namespace, user, target, or an alert label or field. Repeat: all must hold.
        #[arg(long = "matcher", short = 'm', required = true, value_name = "MATCHER")]
        matchers: Vec<String>,
        /// How long (`2h`, `30m`).
        #[arg(long, conflicts_with = "ends_at", required_unless_present = "ends_at")]
        duration: Option<String>,
        /// Start, RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        starts_at: Option<String>,
        /// End, RFC 3339.
        #[arg(long, value_name = "TIME")]
        ends_at: Option<String>,
        /// Why (required).
        #[arg(long)]
        comment: String,
        /// Who (default: $USER).
        #[arg(long, value_name = "NAME")]
        created_by: Option<String>,
        /// Print the silence as JSON instead of its id.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the silences: active and pending first, then expired ones still kept.
    List {
        /// A table, or the API's JSON.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// End a silence now.
    Expire {
        /// The silence's id (`s-…`).
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// The API's JSON.
    Json,
}

pub(super) fn run(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(config, command))
}

async fn run_async(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add {
            matchers,
            duration,
            starts_at,
            ends_at,
            comment,
            created_by,
            format,
            remote,
        } => {
            let matchers = matchers
                .iter()
                .map(|m| FieldMatcher::parse(m).map_err(|e| anyhow::anyhow!("--matcher {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let new = NewSilence {
                matchers,
                starts_at: starts_at.clone(),
                ends_at: ends_at.clone(),
                duration: duration.clone(),
                created_by: created_by.clone().or_else(|| std::env::var("USER").ok()),
                comment: comment.clone(),
            };
            let api = Api::new(config, remote)?;
            let silence: SilenceJson = api.send(api.post("/api/v1/silences").json(&new)).await?;
            match format {
                Format::Json => print_json(&silence)?,
                Format::Text => println!("{}", silence.id),
            }
        }
        Command::List { format, remote } => {
            let api = Api::new(config, remote)?;
            let list: SilenceList = api.send(api.get("/api/v1/silences")).await?;
            match format {
                Format::Json => print_json(&list)?,
                Format::Text => print_table(&list)?,
            }
        }
        Command::Expire { id, remote } => {
            let api = Api::new(config, remote)?;
            let path = format!("/api/v1/silences/{}", urlencode(id));
            let silence: SilenceJson = api.send(api.delete(&path)).await?;
            println!("{} expired at {}", silence.id, silence.ends_at);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A path segment, percent-encoded.
fn urlencode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_table(list: &SilenceList) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if list.silences.is_empty() {
        writeln!(out, "no silences")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<8} {:<21} {:<21} {:<12} MATCHERS / COMMENT",
        "ID", "STATE", "STARTS", "ENDS", "CREATED BY"
    )?;
    for s in &list.silences {
        let matchers: Vec<String> = s
            .matchers
            .iter()
            .map(|m| format!("{}{}{}", m.name, m.op.as_str(), m.value))
            .collect();
        let state = s.state.map_or("?", |state| match state {
            crate::pipeline::silence::SilenceState::Pending => "pending",
            crate::pipeline::silence::SilenceState::Active => "active",
            crate::pipeline::silence::SilenceState::Expired => "expired",
        });
        writeln!(
            out,
            "{:<20} {:<8} {:<21} {:<21} {:<12} {} — {}",
            s.id,
            state,
            s.starts_at,
            s.ends_at,
            s.created_by,
            matchers.join(", "),
            s.comment
        )?;
    }
    Ok(())
}
