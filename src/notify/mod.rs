//! Notify: targets (console, Slack), the exact payload each would receive, and the
//! dispatcher that routes alerts to per-target delivery tasks.
//!
//! Owns rendering and sending. Calls `outbox` (what the dispatcher delivers), `rules` (the
//! alert type), `state` (`SharedRate`), `clock`, `secret` and `telemetry`.

mod console;
mod dispatch;
pub mod email;
pub mod http;
mod notice;
pub mod pacing;
pub mod slack;
pub mod template;

use std::collections::BTreeMap;

pub use console::ConsoleFormat;
pub use dispatch::{DeliveryPolicy, Dispatcher, Waker};
pub use http::{HttpAuth, HttpSettings};
pub use notice::{Notice, PAYLOAD_VERSION};
pub use slack::SlackSettings;

use crate::rules::Alert;

/// A configured target, ready to use.
#[derive(Debug, Clone)]
pub enum Target {
    /// Print to stdout.
    Console(ConsoleFormat),
    /// Post to a Slack incoming webhook.
    Slack(SlackSettings),
    /// POST JSON or a template to an HTTP endpoint.
    Http(Box<HttpSettings>),
    /// Send mail over SMTP.
    Email(Box<email::EmailSettings>),
    /// Not usable here (e.g. its secret is unset); its alerts go to another target.
    Fallback {
        /// The target that receives this one's alerts.
        to: String,
        /// Why this target is not usable, for logs and `klaxon check`.
        reason: String,
        /// The target as configured, without its secret: dry-run renders its payloads.
        unconfigured: Box<Target>,
    },
}

impl Target {
    /// The target's kind as written in config (`slack` also when it falls back).
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Console(_) => "console",
            Target::Slack(_) => "slack",
            Target::Http(_) => "http",
            Target::Email(_) => "email",
            Target::Fallback { unconfigured, .. } => unconfigured.kind(),
        }
    }
}

/// The configured targets and how each is paced.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Every target by name.
    pub by_name: BTreeMap<String, Target>,
    /// Pacing of targets that differ from [`Pacing::default`].
    pub pacing: BTreeMap<String, Pacing>,
}

/// A sustained rate with a burst, for [`Pacing`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Notices per second, sustained.
    pub per_second: f64,
    /// Notices that may go out at once after a quiet spell.
    pub burst: u32,
}

/// How a target's notices are grouped and paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Alerts with the same group key arriving within this window go out as one notice.
    pub group_wait: std::time::Duration,
    /// At most this many notices per second; `None`: unpaced. Pacing waits, never drops.
    pub rate: Option<Rate>,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            group_wait: std::time::Duration::from_secs(10),
            rate: None,
        }
    }
}

impl Targets {
    /// The pacing of target `name`.
    pub fn pacing(&self, name: &str) -> Pacing {
        self.pacing.get(name).copied().unwrap_or_default()
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

/// A target's sender, built once and used for every notice.
pub(crate) enum Notifier {
    Console(ConsoleFormat),
    Slack(SlackSettings, reqwest::Client),
    Http(Box<HttpSettings>, reqwest::Client),
    Email(Box<email::EmailSender>),
}

impl Notifier {
    /// The sender for `target`; `None` for a fallback (it has no sender of its own).
    pub(crate) fn for_target(target: &Target, client: &reqwest::Client) -> Option<Self> {
        match target {
            Target::Console(format) => Some(Notifier::Console(*format)),
            Target::Slack(settings) => Some(Notifier::Slack(settings.clone(), client.clone())),
            Target::Http(settings) => Some(Notifier::Http(settings.clone(), client.clone())),
            Target::Email(settings) => match email::EmailSender::new((**settings).clone()) {
                Ok(sender) => Some(Notifier::Email(Box::new(sender))),
                Err(err) => {
                    tracing::error!(error = %err, "cannot set up the email target; its alerts stay in the outbox");
                    None
                }
            },
            Target::Fallback { .. } => None,
        }
    }

    /// Sends one notice.
    pub(crate) async fn send(&self, notice: &Notice) -> Result<(), SendError> {
        match self {
            Notifier::Console(format) => {
                use std::io::Write as _;
                let text = console::render_notice(notice, *format);
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}").map_err(|e| SendError::Network(e.to_string()))
            }
            Notifier::Slack(settings, client) => {
                slack::send(client, settings, &slack::notice_message(notice)).await
            }
            Notifier::Http(settings, client) => http::send(client, settings, notice).await,
            Notifier::Email(sender) => sender.send(notice).await,
        }
    }
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

/// The exact payload `target` would receive for `notice`: the console's text, Slack's
/// JSON body, or the HTTP body (a fallback renders as the target it stands for).
pub fn payload(target: &Target, notice: &Notice) -> Result<String, SendError> {
    match target {
        Target::Console(format) => Ok(console::render_notice(notice, *format)),
        Target::Slack(_) => Ok(slack::notice_message(notice).to_string()),
        Target::Http(settings) => http::body(settings, notice),
        Target::Email(settings) => email::message(settings, notice)
            .map(|m| String::from_utf8_lossy(&m.formatted()).into_owned()),
        Target::Fallback { unconfigured, .. } => payload(unconfigured, notice),
    }
}

/// Renders `alert` in the console's format.
pub fn console_text(alert: &Alert, format: ConsoleFormat) -> String {
    console::render(alert, format)
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
