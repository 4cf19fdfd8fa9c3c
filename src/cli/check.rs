//! `klaxon check`: validate the config and compile every script, reporting every problem;
//! with `--audit-policy FILE`, also what the rules need that the policy does not log.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit::policy::Policy;
use crate::config::{Config, Sources};
use crate::notify::Target;
use crate::rules::{Ruleset, ScriptLimits};

/// Options of `klaxon check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also check that this audit policy logs every event the rules need, at the level they
    /// read and in the stages they read (exit status 2 when it does not).
    #[arg(long, value_name = "FILE")]
    audit_policy: Option<PathBuf>,
}

/// The exit status of a check whose config and scripts are fine but whose audit policy
/// misses events the rules need.
const POLICY_GAPS: u8 = 2;

/// Checks what `sources` name; scripts are compiled even when the config is invalid, so
/// every problem is reported at once.
pub(super) fn run(sources: &Sources, args: &Args) -> ExitCode {
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
        Ok(mut rules) => {
            if let Some(config) = &config {
                rules.set_settings(&config.script_settings);
            }
            Some(rules)
        }
        Err(err) => {
            problems.extend(err.0.iter().map(ToString::to_string));
            None
        }
    };
    let policy = args.audit_policy.as_deref().and_then(|path| {
        read_policy(path)
            .map_err(|problem| problems.push(problem))
            .ok()
    });
    match (config, rules) {
        (Some(config), Some(rules)) if problems.is_empty() => {
            println!("{}", ok_line(&config, &rules, &dirs));
            match (policy, &args.audit_policy) {
                (Some(policy), Some(path)) => check_policy(&policy, path, &rules),
                _ => ExitCode::SUCCESS,
            }
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

/// Reads and parses the policy file; the problem names the file.
fn read_policy(path: &Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the audit policy: {e}", path.display()))?;
    Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Warns, per rule, about the events it needs that `policy` does not log as it reads them.
fn check_policy(policy: &Policy, path: &Path, rules: &Ruleset) -> ExitCode {
    let findings = policy.gaps(&rules.audit_needs());
    for finding in &findings {
        let script = rules
            .rules()
            .iter()
            .find(|r| r.name() == finding.rule)
            .map_or_else(String::new, |r| format!(" ({})", r.path().display()));
        eprintln!(
            "warning: {}: rule {}{script}: {}",
            path.display(),
            finding.rule,
            policy.describe(finding)
        );
    }
    if findings.is_empty() {
        println!(
            "ok: audit policy {} logs every event the rules need",
            path.display()
        );
        ExitCode::SUCCESS
    } else {
        let rules: std::collections::BTreeSet<&str> =
            findings.iter().map(|f| f.rule.as_str()).collect();
        eprintln!(
            "{} warning{} about the audit policy {}: {} rule{} miss events they need",
            findings.len(),
            if findings.len() == 1 { "" } else { "s" },
            path.display(),
            rules.len(),
            if rules.len() == 1 { "" } else { "s" },
        );
        ExitCode::from(POLICY_GAPS)
    }
}
