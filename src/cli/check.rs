//! `klaxon check`: validate the config and compile every script, reporting every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, Sources};
use crate::notify::Target;
use crate::rules::{Ruleset, ScriptLimits};

/// Checks what `sources` name; scripts are compiled even when the config is invalid, so
/// every problem is reported at once.
pub(super) fn run(sources: &Sources) -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    let config = match sources.config() {
        Ok(config) => {
            if let Some(tls) = &config.serve.server.tls
                && let Err(err) = crate::server::tls::check(tls)
            {
                problems.push(format!("server.tls: {err}"));
            }
            Some(config)
        }
        Err(err) => {
            problems.extend(err.0.iter().map(ToString::to_string));
            None
        }
    };
    let dirs = match (&config, sources.scripts.is_empty()) {
        (Some(c), _) => c.script_dirs.clone(),
        (None, false) => sources.scripts.clone(),
        (None, true) => vec![PathBuf::from("scripts")],
    };
    let limits = config
        .as_ref()
        .map_or_else(ScriptLimits::default, |c| c.limits.clone());
    let rules = match Ruleset::load(&dirs, &limits, "") {
        Ok(rules) => Some(rules),
        Err(err) => {
            problems.extend(err.0.iter().map(ToString::to_string));
            None
        }
    };
    match (config, rules) {
        (Some(config), Some(rules)) if problems.is_empty() => {
            println!("{}", ok_line(&config, &rules, &dirs));
            ExitCode::SUCCESS
        }
        _ => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            eprintln!(
                "{} problem{} found",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

fn ok_line(config: &Config, rules: &Ruleset, dirs: &[PathBuf]) -> String {
    let source = config
        .source
        .as_ref()
        .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    let names: Vec<&str> = rules.rules().iter().map(|r| r.name()).collect();
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let targets: Vec<String> = config
        .serve
        .targets
        .by_name
        .iter()
        .map(|(name, target)| match target {
            Target::Fallback { to, reason, .. } => format!("{name} → {to} ({reason})"),
            other => format!("{name} ({})", other.kind()),
        })
        .collect();
    format!(
        "ok: config {source}; {} rule{} from {} ({}); targets: {}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        dirs.join(", "),
        names.join(", "),
        targets.join(", ")
    )
}
