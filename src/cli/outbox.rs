//! `klaxon outbox list|retry|purge`: the outbox of a stopped or running daemon.
//!
//! The outbox file may be open in a running klaxon at the same time; changes are picked up
//! by its delivery tasks within `delivery.poll_interval`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::outbox::{IncludePending, Outbox, Selection};

/// `klaxon outbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show pending entries and dead letters.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back to pending, with a fresh retry budget.
    Retry {
        /// Dead-letter ids to retry.
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<u64>,
        /// Retry every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter (and with --pending, everything still waiting).
    Purge {
        /// Also delete entries that are still waiting for delivery.
        #[arg(long)]
        pending: bool,
    },
}

pub(super) fn run(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    let outbox = Outbox::open(&config.serve.outbox_path).with_context(|| {
        format!(
            "cannot open the outbox in {}",
            config.serve.outbox_path.display()
        )
    })?;
    match command {
        Command::List { json } => list(&outbox, *json),
        Command::Retry { ids, all } => {
            let selection = if *all {
                Selection::All
            } else {
                Selection::Ids(ids.clone())
            };
            let moved = outbox.retry_dead(&selection, wall_clock_ms())?;
            if let Selection::Ids(ids) = &selection
                && moved < ids.len()
            {
                bail!(
                    "{moved} of {} dead letters moved back; the others are not dead letters (see `klaxon outbox list`)",
                    ids.len()
                );
            }
            println!("{moved} dead letter{} queued for delivery", plural(moved));
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { pending } => {
            let which = if *pending {
                IncludePending::Yes
            } else {
                IncludePending::No
            };
            let n = outbox.purge(which)?;
            println!("{n} entr{} deleted", if n == 1 { "y" } else { "ies" });
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn list(outbox: &Outbox, json: bool) -> anyhow::Result<ExitCode> {
    let pending = outbox.all_pending()?;
    let dead = outbox.dead_letters()?;
    if json {
        for entry in &pending {
            println!(
                "{}",
                serde_json::json!({"state": "pending", "entry": entry})
            );
        }
        for letter in &dead {
            println!("{}", serde_json::json!({"state": "dead", "letter": letter}));
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("pending: {}", pending.len());
    for e in &pending {
        println!(
            "  {:>6}  {:<10}  {:<20}  attempts {:<3} {}{}",
            e.id,
            e.target,
            e.alert.rule,
            e.attempts,
            e.alert.title,
            e.last_error
                .as_ref()
                .map(|err| format!("  (last error: {err})"))
                .unwrap_or_default()
        );
    }
    println!("dead letters: {}", dead.len());
    for d in &dead {
        println!(
            "  {:>6}  {:<10}  {:<20}  {}  — {}",
            d.entry.id, d.entry.target, d.entry.alert.rule, d.entry.alert.title, d.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}
