//! Slack incoming webhooks: Block Kit rendering within Slack's limits, and the sender.

use std::time::Duration;

use serde_json::{Value, json};

use super::{SendError, truncate};
use crate::rules::{Alert, technique_url};
use crate::secret::Secret;

/// Slack's documented Block Kit limits.
pub mod limits {
    /// Blocks per message.
    pub const MAX_BLOCKS: usize = 50;
    /// Characters of a header block's text.
    pub const HEADER_CHARS: usize = 150;
    /// Characters of a section's text.
    pub const SECTION_CHARS: usize = 3000;
    /// Fields per section.
    pub const FIELDS_PER_SECTION: usize = 10;
    /// Characters of one section field.
    pub const FIELD_CHARS: usize = 2000;
    /// Elements of a context block.
    pub const CONTEXT_ELEMENTS: usize = 10;
}

/// A Slack incoming-webhook target, ready to use.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// The incoming webhook URL (a secret: it is the credential).
    pub webhook_url: Secret,
    /// Timeout of one POST.
    pub timeout: Duration,
}

/// Escapes the three characters Slack's mrkdwn reserves.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn mrkdwn(text: &str, max: usize) -> Value {
    json!({ "type": "mrkdwn", "text": truncate(&escape(text), max) })
}

/// The Block Kit message for one alert: header, text, fields, context, and a `text` fallback.
pub fn message(alert: &Alert) -> Value {
    let title = format!("{} {}", alert.severity.emoji(), alert.title);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": truncate(&title, limits::HEADER_CHARS), "emoji": true }
    })];
    if !alert.text.is_empty() {
        blocks
            .push(json!({ "type": "section", "text": mrkdwn(&alert.text, limits::SECTION_CHARS) }));
    }
    // Header, text and context leave the rest of the 50 blocks for field sections.
    let room = limits::MAX_BLOCKS - blocks.len() - 1;
    let fields: Vec<Value> = alert
        .fields
        .iter()
        .map(|(k, v)| mrkdwn(&format!("*{k}*\n{v}"), limits::FIELD_CHARS))
        .collect();
    for chunk in fields.chunks(limits::FIELDS_PER_SECTION).take(room) {
        blocks.push(json!({ "type": "section", "fields": chunk }));
    }
    blocks.push(json!({ "type": "context", "elements": context_elements(alert) }));
    json!({
        "text": truncate(&fallback_text(alert), limits::SECTION_CHARS),
        "blocks": blocks,
    })
}

/// The Block Kit message for a notice: the alert's message, or a digest listing its alerts
/// (one section each, "and N more" past Slack's 50 blocks).
pub fn notice_message(notice: &super::Notice) -> Value {
    match notice.alerts.as_slice() {
        [only] => message(only),
        alerts => digest(notice, alerts),
    }
}

fn digest(notice: &super::Notice, alerts: &[Alert]) -> Value {
    let severity = notice.severity();
    let title = format!("{} {}", severity.emoji(), notice.title());
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": truncate(&title, limits::HEADER_CHARS), "emoji": true }
    })];
    // Header, "and N more" and the closing context leave 47 blocks for alerts.
    let room = limits::MAX_BLOCKS - 3;
    for alert in alerts.iter().take(room) {
        let c = &alert.context;
        let mut text = format!("*{} {}*", alert.severity.emoji(), alert.title);
        if let Some(first) = alert.text.lines().next() {
            text.push('\n');
            text.push_str(&truncate(first, 300));
        }
        text.push_str(&format!(
            "\n_{} {} by {} · {}_",
            c.verb, c.object, c.user, c.event_time
        ));
        if !alert.attack.is_empty() {
            text.push_str(&format!(" · ATT&CK {}", alert.attack.join(", ")));
        }
        if alert.suppressed > 0 {
            text.push_str(&format!(" · {} similar suppressed", alert.suppressed));
        }
        blocks.push(json!({ "type": "section", "text": mrkdwn(&text, limits::SECTION_CHARS) }));
    }
    if alerts.len() > room {
        blocks.push(json!({
            "type": "context",
            "elements": [mrkdwn(&format!("and {} more", alerts.len() - room), limits::SECTION_CHARS)]
        }));
    }
    let cluster = alerts.first().map_or("", |a| a.context.cluster.as_str());
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(&format!("group {} · cluster {cluster}", notice.group_key), limits::SECTION_CHARS)]
    }));
    json!({
        "text": truncate(&escape(&format!("{} [{}] {}", severity.emoji(), severity, notice.title())), limits::SECTION_CHARS),
        "blocks": blocks,
    })
}

/// The plain-text fallback shown in notifications and by clients without Block Kit.
fn fallback_text(alert: &Alert) -> String {
    let mut text = format!(
        "{} [{}] {}",
        alert.severity.emoji(),
        alert.severity,
        alert.title
    );
    if !alert.text.is_empty() {
        text.push_str(" — ");
        text.push_str(&alert.text);
    }
    escape(&text)
}

fn context_elements(alert: &Alert) -> Vec<Value> {
    let c = &alert.context;
    let mut user = c.user.clone();
    if !c.impersonated_user.is_empty() {
        user = format!("{user} as {}", c.impersonated_user);
    }
    let parts = [
        format!("rule *{}* · {}", alert.rule, alert.severity),
        format!("{} {}", c.verb, c.object),
        format!("by {user}"),
        if c.source_ips.is_empty() {
            String::new()
        } else {
            format!("from {}", c.source_ips.join(", "))
        },
        format!("cluster {} · {}", c.cluster, c.event_time),
        format!("auditID {}", c.audit_id),
        if alert.suppressed > 0 {
            format!(
                "{} similar alerts suppressed since the last notice",
                alert.suppressed
            )
        } else {
            String::new()
        },
    ];
    let mut elements: Vec<Value> = parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| mrkdwn(p, limits::SECTION_CHARS))
        .collect();
    if let Some(attack) = attack_element(alert) {
        elements.insert(1, attack);
    }
    elements.truncate(limits::CONTEXT_ELEMENTS);
    elements
}

/// `ATT&CK T1609, T1611`, each ID a link to its page on attack.mitre.org; `None` when the
/// rule declares no technique.
fn attack_element(alert: &Alert) -> Option<Value> {
    if alert.attack.is_empty() {
        return None;
    }
    let links: Vec<String> = alert
        .attack
        .iter()
        .map(|id| format!("<{}|{}>", technique_url(id), escape(id)))
        .collect();
    let text = format!("ATT&amp;CK {}", links.join(", "));
    Some(json!({ "type": "mrkdwn", "text": truncate(&text, limits::SECTION_CHARS) }))
}

/// POSTs one message to the webhook; Slack answers 200 `ok` on success.
pub async fn send(
    client: &reqwest::Client,
    settings: &SlackSettings,
    body: &Value,
) -> Result<(), SendError> {
    let response = client
        .post(settings.webhook_url.expose())
        .timeout(settings.timeout)
        .json(body)
        .send()
        .await
        .map_err(SendError::network)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    Err(SendError::Rejected {
        status: status.as_u16(),
        reason: truncate(body.trim(), 200),
        retry_after,
    })
}
