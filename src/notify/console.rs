//! The console target: alerts printed to stdout, for people (human) or programs (JSON lines).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::rules::Alert;

/// How the console prints alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleFormat {
    /// A few indented lines per alert.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Renders one alert as the console prints it (no trailing newline).
pub fn render(alert: &Alert, format: ConsoleFormat) -> String {
    match format {
        ConsoleFormat::Json => serde_json::to_string(alert).unwrap_or_default(),
        ConsoleFormat::Human => human(alert),
    }
}

fn human(alert: &Alert) -> String {
    let c = &alert.context;
    let mut out = format!("[{}] {}: {}", alert.severity, alert.rule, alert.title);
    for line in alert.text.lines() {
        let _ = write!(out, "\n    {line}");
    }
    let width = alert
        .fields
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0);
    for (key, value) in &alert.fields {
        let _ = write!(out, "\n    {key:<width$}  {value}");
    }
    if !alert.attack.is_empty() {
        let _ = write!(out, "\n    ATT&CK {}", alert.attack.join(", "));
    }
    let mut user = c.user.clone();
    if !c.impersonated_user.is_empty() {
        user = format!("{user} as {}", c.impersonated_user);
    }
    let _ = write!(out, "\n    — {} {} by {user}", c.verb, c.object);
    if !c.source_ips.is_empty() {
        let _ = write!(out, " from {}", c.source_ips.join(", "));
    }
    let _ = write!(
        out,
        " · cluster {} · {} · auditID {}",
        c.cluster, c.event_time, c.audit_id
    );
    out
}

/// Renders a notice: its alerts, under a header line when it is a digest. In JSON, one
/// alert per line.
pub fn render_notice(notice: &super::Notice, format: ConsoleFormat) -> String {
    let alerts = notice.alerts.iter().map(|a| match format {
        ConsoleFormat::Json => render(a, format),
        ConsoleFormat::Human => with_suppressed(a),
    });
    let body = alerts.collect::<Vec<_>>().join("\n");
    match (format, notice.is_digest()) {
        (ConsoleFormat::Human, true) => {
            format!("== {} [{}]\n{body}", notice.title(), notice.group_key)
        }
        _ => body,
    }
}

fn with_suppressed(alert: &Alert) -> String {
    let mut out = human(alert);
    if alert.suppressed > 0 {
        let _ = write!(
            out,
            "\n    ({} similar alerts suppressed since the last notice)",
            alert.suppressed
        );
    }
    out
}
