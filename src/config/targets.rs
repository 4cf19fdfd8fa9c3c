//! Target validation: from `[targets.NAME]` as written to a ready-to-use [`Target`] and its
//! [`Pacing`], reading secrets from the value, the environment or a file.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawDelivery, RawTarget, TargetType};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::notify::template::{DEFAULT_FUEL, Template};
use lettre::message::Mailbox;

use crate::notify::email::{EmailSender, EmailSettings, SmtpSecurity};
use crate::notify::{HttpAuth, HttpSettings, Pacing, Rate, SlackSettings, Target};
use crate::secret::Secret;

/// A problem with one key of a target: (key under the target, message).
pub(super) type TargetProblem = (&'static str, String);

/// Seconds a delivery may take when `timeout_secs` is not set.
const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// A kind-specific key: its name, the kinds it applies to, and whether it is set.
type KeyRule = (&'static str, &'static [TargetType], fn(&RawTarget) -> bool);

/// Every kind-specific key of `[targets.NAME]`.
const KIND_KEYS: &[KeyRule] = {
    use TargetType::{Console, Email, Http, Slack};
    &[
        ("format", &[Console], |r| r.format.is_some()),
        ("webhook_url", &[Slack], |r| r.webhook_url.is_some()),
        ("webhook_url_env", &[Slack], |r| r.webhook_url_env.is_some()),
        ("webhook_url_file", &[Slack], |r| {
            r.webhook_url_file.is_some()
        }),
        ("fallback", &[Slack, Email, Http], |r| r.fallback.is_some()),
        ("timeout_secs", &[Slack, Email, Http], |r| {
            r.timeout_secs.is_some()
        }),
        ("smtp_host", &[Email], |r| r.smtp_host.is_some()),
        ("smtp_port", &[Email], |r| r.smtp_port.is_some()),
        ("security", &[Email], |r| r.security.is_some()),
        ("username", &[Email], |r| r.username.is_some()),
        ("password", &[Email, Http], |r| r.password.is_some()),
        ("password_env", &[Email, Http], |r| r.password_env.is_some()),
        ("password_file", &[Email, Http], |r| {
            r.password_file.is_some()
        }),
        ("from", &[Email], |r| r.from.is_some()),
        ("to", &[Email], |r| r.to.is_some()),
        ("cc", &[Email], |r| r.cc.is_some()),
        ("subject", &[Email], |r| r.subject.is_some()),
        ("ca_file", &[Email], |r| r.ca_file.is_some()),
        ("url", &[Http], |r| r.url.is_some()),
        ("headers", &[Http], |r| r.headers.is_some()),
        ("bearer_token", &[Http], |r| r.bearer_token.is_some()),
        ("bearer_token_env", &[Http], |r| {
            r.bearer_token_env.is_some()
        }),
        ("bearer_token_file", &[Http], |r| {
            r.bearer_token_file.is_some()
        }),
        ("basic_username", &[Http], |r| r.basic_username.is_some()),
        ("body_template", &[Http], |r| r.body_template.is_some()),
        ("content_type", &[Http], |r| r.content_type.is_some()),
    ]
};

/// Turns a target as written into a usable target; the error names the key.
pub(super) fn resolve_target(raw: &RawTarget) -> Result<Target, TargetProblem> {
    let Some(kind) = raw.kind else {
        return Err((
            "type",
            "missing; one of console, slack, email, http".to_owned(),
        ));
    };
    if let Some((key, ..)) = KIND_KEYS
        .iter()
        .find(|(_, kinds, is_set)| is_set(raw) && !kinds.contains(&kind))
    {
        return Err((key, format!("does not apply to a {} target", kind.as_str())));
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
            let configured = url.is_some();
            let webhook_url = url.unwrap_or_else(|| Secret::new(""));
            if configured {
                check_url(webhook_url.expose()).map_err(|m| ("webhook_url", m))?;
            }
            let target = Target::Slack(SlackSettings {
                webhook_url,
                timeout,
            });
            match configured {
                true => Ok(target),
                false => unset(
                    raw,
                    target,
                    "webhook URL",
                    &raw.webhook_url_env,
                    "webhook_url",
                ),
            }
        }
        TargetType::Http => http_target(raw, timeout),
        TargetType::Email => email_target(raw, timeout),
    }
}

/// An `http` target: URL, headers, auth (bearer or basic), optional body template.
fn http_target(raw: &RawTarget, timeout: Duration) -> Result<Target, TargetProblem> {
    let url_text = raw
        .url
        .as_deref()
        .ok_or(("url", "missing: the receiver's http(s) URL".to_owned()))?;
    check_url(url_text).map_err(|m| ("url", m))?;
    let url = reqwest::Url::parse(url_text).map_err(|e| ("url", e.to_string()))?;
    let mut headers = HeaderMap::new();
    for (name, value) in raw.headers.iter().flatten() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| ("headers", format!("`{name}` is not a header name: {e}")))?;
        let value = HeaderValue::from_str(value).map_err(|e| {
            (
                "headers",
                format!("value of `{name}` is not a header value: {e}"),
            )
        })?;
        headers.insert(name, value);
    }
    let body_template = match &raw.body_template {
        Some(source) => {
            Some(Template::compile(source, DEFAULT_FUEL).map_err(|e| ("body_template", e))?)
        }
        None => None,
    };
    let content_type = match (&raw.content_type, &body_template) {
        (Some(_), None) => {
            return Err((
                "content_type",
                "applies only with body_template (the JSON payload is application/json)".to_owned(),
            ));
        }
        (Some(ct), Some(_)) => {
            HeaderValue::from_str(ct).map_err(|e| ("content_type", e.to_string()))?;
            ct.clone()
        }
        (None, _) => crate::notify::http::DEFAULT_CONTENT_TYPE.to_owned(),
    };
    let (auth, missing) = http_auth(raw)?;
    let target = Target::Http(Box::new(HttpSettings {
        url,
        headers,
        auth,
        timeout,
        body_template,
        content_type,
    }));
    match missing {
        None => Ok(target),
        Some((what, env, key)) => unset(raw, target, what, env, key),
    }
}

/// A secret that is configured by name but not set: (what, its env var, its key).
type Missing<'a> = Option<(&'static str, &'a Option<String>, &'static str)>;

/// The subject of mails whose target sets none.
pub const DEFAULT_SUBJECT: &str = "[klaxon] [{{ severity }}] {{ title }}";

/// An `email` target: SMTP server, security, optional auth, sender and recipients.
fn email_target(raw: &RawTarget, timeout: Duration) -> Result<Target, TargetProblem> {
    let host = raw
        .smtp_host
        .clone()
        .filter(|h| !h.trim().is_empty())
        .ok_or((
            "smtp_host",
            "missing: the SMTP server's host name".to_owned(),
        ))?;
    let security = raw.security.unwrap_or(SmtpSecurity::Starttls);
    let mailbox = |key: &'static str, text: &str| {
        text.parse::<Mailbox>()
            .map_err(|e| (key, format!("`{text}` is not a mail address: {e}")))
    };
    let from = mailbox(
        "from",
        raw.from
            .as_deref()
            .ok_or(("from", "missing: the sender's address".to_owned()))?,
    )?;
    let to = raw
        .to
        .iter()
        .flatten()
        .map(|t| mailbox("to", t))
        .collect::<Result<Vec<_>, _>>()?;
    if to.is_empty() {
        return Err(("to", "name at least one recipient".to_owned()));
    }
    let cc = raw
        .cc
        .iter()
        .flatten()
        .map(|t| mailbox("cc", t))
        .collect::<Result<Vec<_>, _>>()?;
    let subject = Template::compile(
        raw.subject.as_deref().unwrap_or(DEFAULT_SUBJECT),
        DEFAULT_FUEL,
    )
    .map_err(|e| ("subject", e))?;
    let password = read_secret(
        "password",
        &raw.password,
        &raw.password_env,
        &raw.password_file,
    )?;
    let wants_password =
        raw.password.is_some() || raw.password_env.is_some() || raw.password_file.is_some();
    let missing = wants_password && password.is_none();
    let settings = EmailSettings {
        host,
        port: raw.smtp_port.unwrap_or(security.default_port()),
        security,
        username: raw.username.clone(),
        password: password.or_else(|| wants_password.then(|| Secret::new(""))),
        from,
        to,
        cc,
        subject,
        ca_file: raw.ca_file.clone(),
        timeout,
    };
    // Builds the client once to check the TLS settings and the CA file now, not at send.
    EmailSender::new(settings.clone()).map_err(|e| ("ca_file", e))?;
    let target = Target::Email(Box::new(settings));
    match missing {
        false => Ok(target),
        true => unset(raw, target, "SMTP password", &raw.password_env, "password"),
    }
}

/// Bearer or basic auth (or none), and which secret is missing, if any.
fn http_auth(raw: &RawTarget) -> Result<(HttpAuth, Missing<'_>), TargetProblem> {
    let wants_bearer = raw.bearer_token.is_some()
        || raw.bearer_token_env.is_some()
        || raw.bearer_token_file.is_some();
    match (&raw.basic_username, wants_bearer) {
        (Some(_), true) => Err((
            "basic_username",
            "use either bearer_token… or basic_username with password…, not both".to_owned(),
        )),
        (Some(user), false) if user.contains(':') => {
            Err(("basic_username", "must not contain `:`".to_owned()))
        }
        (Some(user), false) => {
            let password = read_secret(
                "password",
                &raw.password,
                &raw.password_env,
                &raw.password_file,
            )?;
            let missing = password
                .is_none()
                .then_some(("password", &raw.password_env, "password"));
            Ok((
                HttpAuth::Basic {
                    username: user.clone(),
                    password: password.unwrap_or_else(|| Secret::new("")),
                },
                missing,
            ))
        }
        (None, true) => {
            let token = read_secret(
                "bearer_token",
                &raw.bearer_token,
                &raw.bearer_token_env,
                &raw.bearer_token_file,
            )?;
            let missing =
                token
                    .is_none()
                    .then_some(("bearer token", &raw.bearer_token_env, "bearer_token"));
            Ok((
                HttpAuth::Bearer(token.unwrap_or_else(|| Secret::new(""))),
                missing,
            ))
        }
        (None, false) => Ok((HttpAuth::None, None)),
    }
}

/// A target whose secret is not set: its fallback, or an error.
fn unset(
    raw: &RawTarget,
    unconfigured: Target,
    what: &str,
    env: &Option<String>,
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
            unconfigured: Box::new(unconfigured),
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
pub(crate) fn read_secret(
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
