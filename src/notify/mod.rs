//! Notify: targets (console, Slack), the exact payload each would receive, and the
//! dispatcher that routes alerts to per-target delivery tasks.
//!
//! Owns rendering and sending; calls `rules` for the alert type and `telemetry` for counts.

mod console;
mod dispatch;
pub mod email;
pub mod http;
mod notice;
pub mod slack;
pub mod template;

use std::collections::BTreeMap;
use std::fmt;

pub use console::ConsoleFormat;
pub use dispatch::Dispatcher;
pub use notice::{Notice, PAYLOAD_VERSION};
pub use slack::SlackSettings;

use crate::rules::Alert;

/// A credential (webhook URL, password, token): never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A configured target, ready to use.
#[derive(Debug, Clone)]
pub enum Target {
    /// Print to stdout.
    Console(ConsoleFormat),
    /// Post to a Slack incoming webhook.
    Slack(SlackSettings),
    /// Not usable here (e.g. its secret is unset); its alerts go to another target.
    Fallback {
        /// The target that receives this one's alerts.
        to: String,
        /// Why this target is not usable, for logs and `klaxon check`.
        reason: String,
        /// How the target would render its payload if it were usable (for dry-run).
        renders_as: Render,
    },
}

/// The payload format of a target kind, independent of its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// The console's text or JSON line.
    Console(ConsoleFormat),
    /// Slack's Block Kit JSON body.
    Slack,
}

impl Target {
    /// The target's kind as written in config.
    pub fn kind(&self) -> &'static str {
        match self.render() {
            Render::Console(_) => "console",
            Render::Slack => "slack",
        }
    }

    /// How this target renders payloads.
    pub fn render(&self) -> Render {
        match self {
            Target::Console(format) => Render::Console(*format),
            Target::Slack(_) => Render::Slack,
            Target::Fallback { renders_as, .. } => *renders_as,
        }
    }
}

/// The configured targets and where alerts go when a script names none.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Every target by name.
    pub by_name: BTreeMap<String, Target>,
    /// Targets for alerts that name none.
    pub defaults: Vec<String>,
}

/// What to do after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again: after `after` if the target said so (Retry-After), else after backoff.
    Retry {
        /// The wait the target asked for.
        after: Option<std::time::Duration>,
    },
    /// Retrying cannot help (bad request, removed webhook, template error): dead-letter it.
    Permanent,
}

/// Why a target refused or failed a delivery.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request never got an answer (connect, TLS, timeout).
    #[error("network error: {0}")]
    Network(String),
    /// The target answered with an error status.
    #[error("HTTP {status}: {reason}")]
    Rejected {
        /// HTTP status code.
        status: u16,
        /// The start of the response body.
        reason: String,
        /// `Retry-After`, when the target gave one.
        retry_after: Option<std::time::Duration>,
    },
    /// The SMTP server refused or failed; `permanent` for 5xx replies.
    #[error("SMTP: {reason}")]
    Smtp {
        /// A 5xx reply: the same mail will be refused again.
        permanent: bool,
        /// The server's reply or the client's error, without credentials.
        reason: String,
    },
    /// The notice could not be rendered (a template error): fix the config, then retry.
    #[error("render: {0}")]
    Render(String),
}

impl SendError {
    /// Retry (network errors, 408, 429, 5xx, transient SMTP) or give up (other 4xx,
    /// permanent SMTP, render errors).
    pub fn disposition(&self) -> Disposition {
        match self {
            SendError::Network(_) => Disposition::Retry { after: None },
            SendError::Rejected {
                status,
                retry_after,
                ..
            } => match status {
                408 | 429 | 500..=599 => Disposition::Retry {
                    after: *retry_after,
                },
                _ => Disposition::Permanent,
            },
            SendError::Smtp { permanent, .. } => match permanent {
                true => Disposition::Permanent,
                false => Disposition::Retry { after: None },
            },
            SendError::Render(_) => Disposition::Permanent,
        }
    }
}

impl SendError {
    /// A reqwest failure without an answer; the URL is left out (it may be a secret).
    pub fn network(err: reqwest::Error) -> Self {
        // Without the URL: a webhook URL is a secret.
        SendError::Network(err.without_url().to_string())
    }
}

impl Targets {
    /// The target names an alert is routed to: its own, else the defaults.
    /// Names the config does not know are dropped here and reported by [`Targets::unknown`].
    pub fn route<'a>(&'a self, alert: &'a Alert) -> Vec<&'a str> {
        let named: Vec<&str> = alert
            .targets
            .iter()
            .map(String::as_str)
            .filter(|t| self.by_name.contains_key(*t))
            .collect();
        let mut names = if named.is_empty() {
            self.defaults.iter().map(String::as_str).collect()
        } else {
            named
        };
        names.dedup();
        names
    }

    /// Target names an alert asks for that the config does not define.
    pub fn unknown<'a>(&self, alert: &'a Alert) -> Vec<&'a str> {
        alert
            .targets
            .iter()
            .map(String::as_str)
            .filter(|t| !self.by_name.contains_key(*t))
            .collect()
    }

    /// The target that really delivers for `name`, following a fallback.
    pub fn resolve<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a Target)> {
        match self.by_name.get(name)? {
            Target::Fallback { to, .. } => self
                .by_name
                .get(to)
                .map(|t| (to.as_str(), t))
                .filter(|(_, t)| !matches!(t, Target::Fallback { .. })),
            target => Some((name, target)),
        }
    }
}

/// The exact payload a target would receive for `alert`: the console's text or Slack's JSON body.
pub fn payload(render: Render, alert: &Alert) -> String {
    match render {
        Render::Console(format) => console::render(alert, format),
        Render::Slack => slack::message(alert).to_string(),
    }
}

/// Renders `alert` in the console's format.
pub fn console_text(alert: &Alert, format: ConsoleFormat) -> String {
    console::render(alert, format)
}
