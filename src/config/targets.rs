//! Target validation: from `[targets.NAME]` as written to a ready-to-use [`Target`] and its
//! [`Pacing`], reading secrets from the value, the environment or a file.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawDelivery, RawTarget, TargetType};
use crate::notify::{Pacing, Rate, Render, Secret, SlackSettings, Target};

/// A problem with one key of a target: (key under the target, message).
pub(super) type TargetProblem = (&'static str, String);

/// Seconds a delivery may take when `timeout_secs` is not set.
const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Which kinds each kind-specific key applies to.
const APPLIES_TO: &[(&str, &[TargetType])] = {
    use TargetType::{Console, Email, Http, Slack};
    &[
        ("format", &[Console]),
        ("webhook_url", &[Slack]),
        ("webhook_url_env", &[Slack]),
        ("webhook_url_file", &[Slack]),
        ("fallback", &[Slack, Email, Http]),
        ("timeout_secs", &[Slack, Email, Http]),
        ("smtp_host", &[Email]),
        ("smtp_port", &[Email]),
        ("security", &[Email]),
        ("username", &[Email]),
        ("password", &[Email, Http]),
        ("password_env", &[Email, Http]),
        ("password_file", &[Email, Http]),
        ("from", &[Email]),
        ("to", &[Email]),
        ("cc", &[Email]),
        ("subject", &[Email]),
        ("ca_file", &[Email, Http]),
        ("url", &[Http]),
        ("headers", &[Http]),
        ("bearer_token", &[Http]),
        ("bearer_token_env", &[Http]),
        ("bearer_token_file", &[Http]),
        ("basic_username", &[Http]),
        ("body_template", &[Http]),
        ("content_type", &[Http]),
    ]
};

/// The kind-specific keys that are set.
fn set_keys(raw: &RawTarget) -> Vec<&'static str> {
    let present = [
        ("format", raw.format.is_some()),
        ("webhook_url", raw.webhook_url.is_some()),
        ("webhook_url_env", raw.webhook_url_env.is_some()),
        ("webhook_url_file", raw.webhook_url_file.is_some()),
        ("fallback", raw.fallback.is_some()),
        ("timeout_secs", raw.timeout_secs.is_some()),
        ("smtp_host", raw.smtp_host.is_some()),
        ("smtp_port", raw.smtp_port.is_some()),
        ("security", raw.security.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
        ("password_env", raw.password_env.is_some()),
        ("password_file", raw.password_file.is_some()),
        ("from", raw.from.is_some()),
        ("to", raw.to.is_some()),
        ("cc", raw.cc.is_some()),
        ("subject", raw.subject.is_some()),
        ("ca_file", raw.ca_file.is_some()),
        ("url", raw.url.is_some()),
        ("headers", raw.headers.is_some()),
        ("bearer_token", raw.bearer_token.is_some()),
        ("bearer_token_env", raw.bearer_token_env.is_some()),
        ("bearer_token_file", raw.bearer_token_file.is_some()),
        ("basic_username", raw.basic_username.is_some()),
        ("body_template", raw.body_template.is_some()),
        ("content_type", raw.content_type.is_some()),
    ];
    present
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
}

/// Turns a target as written into a usable target; the error names the key.
pub(super) fn resolve_target(raw: &RawTarget) -> Result<Target, TargetProblem> {
    let Some(kind) = raw.kind else {
        return Err((
            "type",
            "missing; one of console, slack, email, http".to_owned(),
        ));
    };
    for key in set_keys(raw) {
        let allowed = APPLIES_TO
            .iter()
            .find(|(k, _)| *k == key)
            .is_some_and(|(_, kinds)| kinds.contains(&kind));
        if !allowed {
            return Err((key, format!("does not apply to a {} target", kind.as_str())));
        }
    }
    let timeout = Duration::from_secs(raw.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS));
    match kind {
        TargetType::Console => Ok(Target::Console(raw.format.unwrap_or_default())),
        TargetType::Slack => {
            let url = read_secret(
                "webhook_url",
                &raw.webhook_url,
                &raw.webhook_url_env,
                &raw.webhook_url_file,
            )?;
            match url {
                Some(url) => {
                    check_url(url.expose()).map_err(|m| ("webhook_url", m))?;
                    Ok(Target::Slack(SlackSettings {
                        webhook_url: url,
                        timeout,
                    }))
                }
                None => unset(
                    raw,
                    "webhook URL",
                    &raw.webhook_url_env,
                    Render::Slack,
                    "webhook_url",
                ),
            }
        }
        TargetType::Email | TargetType::Http => Err((
            "type",
            format!("{} targets are not available in this build", kind.as_str()),
        )),
    }
}

/// A target whose secret is not set: its fallback, or an error.
fn unset(
    raw: &RawTarget,
    what: &str,
    env: &Option<String>,
    renders_as: Render,
    key: &'static str,
) -> Result<Target, TargetProblem> {
    let reason = match env {
        Some(var) => format!("{what} not set (environment variable {var} is unset or empty)"),
        None => format!("{what} not set (set {key}, {key}_env or {key}_file)"),
    };
    match &raw.fallback {
        Some(to) => Ok(Target::Fallback {
            to: to.clone(),
            reason,
            renders_as,
        }),
        None => Err((key, reason)),
    }
}

/// How a target is grouped and paced: its own settings, else the kind's defaults (Slack:
/// 1 notice per second, burst 3, its documented limit), else `[delivery]`.
pub(super) fn pacing(raw: &RawTarget, delivery: &RawDelivery) -> Result<Pacing, TargetProblem> {
    let default_rate = match raw.kind {
        Some(TargetType::Slack) => Some(Rate {
            per_second: 1.0,
            burst: 3,
        }),
        _ => None,
    };
    let rate = match (raw.rate, raw.burst) {
        (None, None) => default_rate,
        (rate, burst) => {
            let per_second = rate.or(default_rate.map(|r| r.per_second)).ok_or((
                "rate",
                "set `rate` (notices per second) with `burst`".to_owned(),
            ))?;
            if !(per_second.is_finite() && per_second > 0.0) {
                return Err((
                    "rate",
                    format!("must be a positive number, not {per_second}"),
                ));
            }
            Some(Rate {
                per_second,
                burst: burst.or(default_rate.map(|r| r.burst)).unwrap_or(1).max(1),
            })
        }
    };
    Ok(Pacing {
        group_wait: raw.group_wait.unwrap_or(delivery.group_wait),
        rate,
    })
}

/// Reads a secret from exactly one of: the value, an environment variable, a file.
pub(super) fn read_secret(
    key: &'static str,
    value: &Option<String>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, TargetProblem> {
    let given = [value.is_some(), env.is_some(), file.is_some()]
        .into_iter()
        .filter(|g| *g)
        .count();
    if given > 1 {
        return Err((key, format!("set only one of {key}, {key}_env, {key}_file")));
    }
    if let Some(v) = value.as_ref().filter(|v| !v.trim().is_empty()) {
        return Ok(Some(Secret::new(v.trim())));
    }
    if let Some(var) = env {
        return Ok(std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim())));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| (key, format!("cannot read {}: {e}", path.display())))?;
        return Ok(Some(Secret::new(text.trim())).filter(|s| !s.expose().is_empty()));
    }
    Ok(None)
}

fn check_url(url: &str) -> Result<(), String> {
    // The URL is a secret: say what is wrong without repeating it.
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        Ok(u) => Err(format!("URL must be http or https, not {}", u.scheme())),
        Err(e) => Err(format!("not a URL: {e}")),
    }
}
