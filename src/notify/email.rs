//! Email over SMTP (lettre): one mail per notice with a text and an HTML part listing every
//! alert, sent through a pooled connection secured by STARTTLS, implicit TLS, or nothing
//! (a local relay).

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransport, AsyncSmtpTransportBuilder};
use lettre::{AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::template::Template;
use super::{Notice, SendError, truncate};
use crate::rules::{Alert, Severity, technique_url};
use crate::secret::Secret;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS; fails if the server does not offer it.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// No TLS at all: only for a trusted local relay.
    None,
}

impl SmtpSecurity {
    /// The usual port for this kind of connection: 587, 465 or 25.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Implicit => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// An email target, ready to use (built by config validation).
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The SMTP server's host name (also the name its certificate must carry).
    pub host: String,
    /// The SMTP server's port.
    pub port: u16,
    /// How the connection is secured.
    pub security: SmtpSecurity,
    /// Login for SMTP AUTH; auth happens only when the password is set too.
    pub username: Option<String>,
    /// Password for SMTP AUTH; never printed.
    pub password: Option<Secret>,
    /// The sender.
    pub from: Mailbox,
    /// Recipients; at least one.
    pub to: Vec<Mailbox>,
    /// Copy recipients.
    pub cc: Vec<Mailbox>,
    /// The subject, rendered with the notice's payload.
    pub subject: Template,
    /// An extra root CA (PEM) to trust, e.g. for a private relay.
    pub ca_file: Option<PathBuf>,
    /// Bound on one delivery: connect, TLS, auth and the mail transaction.
    pub timeout: Duration,
}

/// A connected (pooled) SMTP client for one target.
///
/// The connection pool is created on the first send, inside the runtime that sends, and
/// replaced after a timeout (a connection abandoned mid-command must not be reused).
pub struct EmailSender {
    settings: EmailSettings,
    builder: AsyncSmtpTransportBuilder,
    transport: Mutex<Option<AsyncSmtpTransport<Tokio1Executor>>>,
}

impl fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSender")
            .field("host", &self.settings.host)
            .field("port", &self.settings.port)
            .field("security", &self.settings.security)
            .finish_non_exhaustive()
    }
}

impl EmailSender {
    /// Prepares the client (TLS roots, credentials); the error text names the problem.
    pub fn new(settings: EmailSettings) -> Result<Self, String> {
        if settings.to.is_empty() {
            return Err("email: `to` needs at least one recipient".to_owned());
        }
        let tls = match settings.security {
            SmtpSecurity::None => Tls::None,
            SmtpSecurity::Starttls => Tls::Required(tls_parameters(&settings)?),
            SmtpSecurity::Implicit => Tls::Wrapper(tls_parameters(&settings)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Self {
            settings,
            builder,
            transport: Mutex::new(None),
        })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &EmailSettings {
        &self.settings
    }

    /// Sends the mail for `notice`; 5xx replies are permanent, everything else retryable.
    pub async fn send(&self, notice: &Notice) -> Result<(), SendError> {
        let mail = message(&self.settings, notice)?;
        let transport = self.transport();
        match tokio::time::timeout(self.settings.timeout, transport.send(mail)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(err)) => Err(self.smtp_error(&err)),
            Err(_elapsed) => {
                // The abandoned connection may be mid-reply: start a fresh pool.
                self.reset_transport();
                Err(SendError::Smtp {
                    permanent: false,
                    reason: format!(
                        "timed out after {}",
                        humantime::format_duration(self.settings.timeout)
                    ),
                })
            }
        }
    }

    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        let mut slot = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| self.builder.clone().build())
            .clone()
    }

    fn reset_transport(&self) {
        let mut slot = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None;
    }

    fn smtp_error(&self, err: &lettre::transport::smtp::Error) -> SendError {
        let mut reason = err.to_string();
        if let Some(password) = &self.settings.password {
            let user = self.settings.username.as_deref().unwrap_or_default();
            reason = redact(&reason, user, password.expose());
        }
        SendError::Smtp {
            permanent: err.is_permanent(),
            reason: truncate(reason.trim(), 500),
        }
    }
}

impl Drop for EmailSender {
    fn drop(&mut self) {
        let slot = self.transport.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(transport) = slot.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            // lettre's pool spawns a tokio task when dropped, which panics outside a
            // runtime; there, leave its idle connections to be closed by the OS.
            std::mem::forget(transport);
        }
    }
}

/// TLS parameters for `host`: the default roots plus the `ca_file`, if any.
fn tls_parameters(settings: &EmailSettings) -> Result<TlsParameters, String> {
    let mut params = TlsParameters::builder(settings.host.clone());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("email: cannot read ca_file {}: {e}", path.display()))?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(format!(
                "email: ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("email: ca_file {}: {e}", path.display()))?;
        params = params.add_root_certificate(cert);
    }
    params
        .build()
        .map_err(|e| format!("email: TLS setup for {}: {e}", settings.host))
}

/// Removes the password, and the base64 forms AUTH PLAIN and LOGIN send it in, from `text`.
fn redact(text: &str, user: &str, password: &str) -> String {
    if password.is_empty() {
        return text.to_owned();
    }
    let plain = STANDARD.encode(format!("\0{user}\0{password}"));
    let login = STANDARD.encode(password);
    text.replace(&plain, "***")
        .replace(&login, "***")
        .replace(password, "***")
}

/// The message for a notice: one mail per notice (a digest lists all its alerts).
pub fn message(settings: &EmailSettings, notice: &Notice) -> Result<Message, SendError> {
    let rendered = settings
        .subject
        .render(notice)
        .map_err(|e| SendError::Render(format!("email subject: {e}")))?;
    let mut subject = one_line(&rendered);
    if subject.is_empty() {
        subject = one_line(&notice.title());
    }

    let mut builder = Message::builder()
        .from(settings.from.clone())
        .subject(subject.clone())
        .message_id(Some(message_id(settings, notice)));
    for to in &settings.to {
        builder = builder.to(to.clone());
    }
    for cc in &settings.cc {
        builder = builder.cc(cc.clone());
    }
    let mut rules: Vec<&str> = notice.alerts.iter().map(|a| a.rule.as_str()).collect();
    rules.sort_unstable();
    rules.dedup();
    let mut attack: Vec<&str> = notice
        .alerts
        .iter()
        .flat_map(|a| a.attack.iter().map(String::as_str))
        .collect();
    attack.sort_unstable();
    attack.dedup();
    if !attack.is_empty() {
        builder = builder.raw_header(header("X-Klaxon-Attack", attack.join(", ")));
    }
    builder = builder
        .raw_header(header("X-Klaxon-Rule", rules.join(", ")))
        .raw_header(header("X-Klaxon-Severity", notice.severity().to_string()))
        .raw_header(header("Auto-Submitted", "auto-generated".to_owned()));

    builder
        .multipart(MultiPart::alternative_plain_html(
            text_body(notice),
            html_body(notice, &subject),
        ))
        .map_err(|e| SendError::Render(format!("email message: {e}")))
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), one_line(&value))
}

/// Whitespace, line breaks included, collapsed to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A Message-ID that is the same for every attempt at the same notice, so that retries
/// of a mail whose acceptance was lost can be recognised as duplicates.
fn message_id(settings: &EmailSettings, notice: &Notice) -> String {
    // FNV-1a over the payload: stable across runs and versions.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in notice.payload().to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "<klaxon.{hash:016x}.{}@{}>",
        notice.alerts.len(),
        settings.from.email.domain()
    )
}

/// `1 similar alert suppressed`, `N similar alerts suppressed`.
fn suppressed_line(n: u64) -> String {
    match n {
        1 => "1 similar alert suppressed".to_owned(),
        n => format!("{n} similar alerts suppressed"),
    }
}

/// The context rows shown under every alert, empty values left out.
fn context_rows(alert: &Alert) -> Vec<(&'static str, String)> {
    let c = &alert.context;
    let mut user = c.user.clone();
    if !c.impersonated_user.is_empty() {
        user = format!("{user} (as {})", c.impersonated_user);
    }
    let rows = [
        ("Rule", alert.rule.clone()),
        ("ATT&CK", alert.attack.join(", ")),
        ("Action", format!("{} {}", c.verb, c.object)),
        ("User", user),
        ("Source IPs", c.source_ips.join(", ")),
        ("Cluster", c.cluster.clone()),
        ("Event time", c.event_time.clone()),
        ("Audit ID", c.audit_id.clone()),
    ];
    rows.into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect()
}

fn digest_intro(notice: &Notice) -> String {
    format!(
        "{} alerts, highest severity {} (group {})",
        notice.alerts.len(),
        notice.severity(),
        notice.group_key
    )
}

/// The text/plain part.
fn text_body(notice: &Notice) -> String {
    let mut out = String::new();
    let count = notice.alerts.len();
    if notice.is_digest() {
        let _ = writeln!(out, "{}\n", digest_intro(notice));
    }
    for (i, alert) in notice.alerts.iter().enumerate() {
        if notice.is_digest() {
            let _ = writeln!(out, "--- {} of {count} ---", i + 1);
        }
        let _ = writeln!(
            out,
            "[{}] {}",
            alert.severity.as_str().to_uppercase(),
            alert.title
        );
        if !alert.text.is_empty() {
            let _ = writeln!(out, "\n{}", alert.text);
        }
        if !alert.fields.is_empty() {
            out.push('\n');
            for (key, value) in &alert.fields {
                let _ = writeln!(out, "{key}: {}", value.replace('\n', "\n    "));
            }
        }
        out.push('\n');
        for (key, value) in context_rows(alert) {
            let _ = writeln!(out, "{key}: {value}");
        }
        if alert.suppressed > 0 {
            let _ = writeln!(out, "\n{}", suppressed_line(alert.suppressed));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "-- \nSent by klaxon to target {}.", notice.target);
    out
}

/// Escapes text for HTML element content and attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn severity_color(severity: Severity) -> &'static str {
    match severity {
        Severity::Debug => "#8c8c8c",
        Severity::Info => "#2f6fdb",
        Severity::Notice => "#1f9e89",
        Severity::Warning => "#e0a800",
        Severity::Error => "#d93f0b",
        Severity::Critical => "#b00020",
    }
}

const TABLE_STYLE: &str = "border-collapse:collapse;margin:8px 0";
const TH_STYLE: &str =
    "text-align:left;vertical-align:top;padding:2px 12px 2px 0;color:#555;font-weight:normal";
const TD_STYLE: &str = "vertical-align:top;padding:2px 0;white-space:pre-wrap";

fn html_table(out: &mut String, rows: impl IntoIterator<Item = (String, String)>) {
    html_table_of(out, rows.into_iter().map(|(k, v)| (k, escape_html(&v))));
}

/// A table whose values are HTML already (escaped by the caller).
fn html_table_of(out: &mut String, rows: impl IntoIterator<Item = (String, String)>) {
    let _ = writeln!(out, "<table style=\"{TABLE_STYLE}\">");
    for (key, html) in rows {
        let _ = writeln!(
            out,
            "<tr><th style=\"{TH_STYLE}\">{}</th><td style=\"{TD_STYLE}\">{html}</td></tr>",
            escape_html(&key),
        );
    }
    out.push_str("</table>\n");
}

/// The context rows as HTML: ATT&CK technique IDs link to their pages on attack.mitre.org.
fn html_context_rows(alert: &Alert) -> Vec<(String, String)> {
    context_rows(alert)
        .into_iter()
        .map(|(key, value)| {
            let html = if key == "ATT&CK" {
                attack_links(&alert.attack)
            } else {
                escape_html(&value)
            };
            (key.to_owned(), html)
        })
        .collect()
}

fn attack_links(ids: &[String]) -> String {
    ids.iter()
        .map(|id| {
            format!(
                "<a href=\"{}\">{}</a>",
                escape_html(&technique_url(id)),
                escape_html(id)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text/html part; everything that comes from an alert is escaped.
fn html_body(notice: &Notice, subject: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family:sans-serif;font-size:14px;color:#222\">",
        escape_html(subject)
    );
    if notice.is_digest() {
        let _ = writeln!(
            out,
            "<p><strong>{}</strong></p>",
            escape_html(&digest_intro(notice))
        );
    }
    for alert in &notice.alerts {
        let _ = writeln!(
            out,
            "<div style=\"border-left:4px solid {};padding:4px 12px;margin:16px 0\">",
            severity_color(alert.severity)
        );
        let _ = writeln!(
            out,
            "<h2 style=\"margin:0;font-size:18px\"><span style=\"color:{}\">{}</span> {}</h2>",
            severity_color(alert.severity),
            alert.severity.as_str().to_uppercase(),
            escape_html(&alert.title)
        );
        if !alert.text.is_empty() {
            let _ = writeln!(
                out,
                "<p style=\"white-space:pre-wrap\">{}</p>",
                escape_html(&alert.text)
            );
        }
        if !alert.fields.is_empty() {
            html_table(
                &mut out,
                alert.fields.iter().map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        html_table_of(&mut out, html_context_rows(alert));
        if alert.suppressed > 0 {
            let _ = writeln!(out, "<p><em>{}</em></p>", suppressed_line(alert.suppressed));
        }
        out.push_str("</div>\n");
    }
    let _ = writeln!(
        out,
        "<p style=\"color:#888;font-size:12px\">Sent by klaxon to target {}.</p>\n</body></html>",
        escape_html(&notice.target)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_plain_and_encoded_password() {
        let plain = STANDARD.encode(b"\0bob\0hunter22");
        let text = format!("535 bad: hunter22 aHVudGVyMjI= {plain}");
        let out = redact(&text, "bob", "hunter22");
        assert_eq!(out, "535 bad: *** *** ***");
    }
}
