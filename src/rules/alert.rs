//! The alert a script raises with `alert(#{…})`, validated field by field, and the
//! context klaxon adds to it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rhai::{Dynamic, Map};
use serde::{Deserialize, Serialize};

use crate::audit::Event;

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Diagnostic noise, for script authors.
    Debug,
    /// Something worth knowing (the default).
    #[default]
    Info,
    /// Unusual but expected.
    Notice,
    /// Needs a look.
    Warning,
    /// Something is wrong.
    Error,
    /// Act now.
    Critical,
}

impl Severity {
    /// Every severity, least urgent first.
    pub const ALL: [Severity; 6] = [
        Severity::Debug,
        Severity::Info,
        Severity::Notice,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    /// The lowercase name used in scripts and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// The emoji shown in front of a notice's title.
    pub fn emoji(self) -> &'static str {
        match self {
            Severity::Debug => "🔍",
            Severity::Info => "ℹ️",
            Severity::Notice => "🔔",
            Severity::Warning => "⚠️",
            Severity::Error => "🚨",
            Severity::Critical => "🔥",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str() == s)
            .ok_or_else(|| {
                format!("unknown severity `{s}`; expected debug, info, notice, warning, error or critical")
            })
    }
}

/// What klaxon adds to every alert: where and when it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertContext {
    /// The cluster the event came from: the event's own (`Event::cluster`, from its
    /// envelope) when it names one, else `cluster_name` from the config.
    pub cluster: String,
    /// The event's `stageTimestamp` (RFC 3339).
    pub event_time: String,
    /// The request's auditID.
    pub audit_id: String,
    /// The event's stage.
    pub stage: String,
    /// The authenticated user.
    pub user: String,
    /// The impersonated user, empty when there is none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub impersonated_user: String,
    /// The verb.
    pub verb: String,
    /// `resource[/subresource] [namespace/]name`.
    pub object: String,
    /// The object's namespace, empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Client addresses.
    pub source_ips: Vec<String>,
    /// The client's User-Agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// The response code, 0 when the event has none.
    #[serde(default)]
    pub response_code: i64,
}

impl AlertContext {
    /// Builds the context of an alert raised on `event`, whose object is named `object_name`;
    /// `cluster` (the configured `cluster_name`) names the cluster unless the event names its own.
    pub fn from_event(event: &Event, object_name: &str, cluster: &str) -> Self {
        let cluster = if event.cluster.is_empty() {
            cluster
        } else {
            &event.cluster
        };
        Self {
            cluster: cluster.to_owned(),
            event_time: event.time().to_owned(),
            audit_id: event.audit_id.clone(),
            stage: event.stage.clone(),
            user: event.user.username.clone(),
            impersonated_user: event
                .impersonated_user
                .as_ref()
                .map(|u| u.username.clone())
                .unwrap_or_default(),
            verb: event.verb.clone(),
            object: event.object_display_named(object_name),
            namespace: event
                .object_ref
                .as_ref()
                .map(|r| r.namespace.clone())
                .unwrap_or_default(),
            source_ips: event.source_ips.clone(),
            user_agent: event.user_agent.clone(),
            response_code: event.response_status.as_ref().map_or(0, |s| s.code),
        }
    }
}

/// A candidate alert: what a script asked for plus the context of its event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule (script file stem) that raised it.
    pub rule: String,
    /// The MITRE ATT&CK technique IDs its rule declares (`const ATTACK`), e.g. `T1609`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attack: Vec<String>,
    /// How urgent it is.
    pub severity: Severity,
    /// One-line summary; required.
    pub title: String,
    /// Longer description (Slack mrkdwn).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Key → value pairs shown as a table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// Routing and grouping labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Alerts of the same rule with the same key are one incident (empty: the title).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dedup_key: String,
    /// Alerts with the same key go out together (empty: rule + namespace).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_key: String,
    /// Target names; empty means the config's routes decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Alerts with this dedup key suppressed since the previous notice for it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
    /// Where and when it came from.
    pub context: AlertContext,
}

impl Alert {
    /// An info alert of `rule` titled `title`, with everything else empty.
    pub fn new(rule: &str, title: &str) -> Self {
        Self {
            rule: rule.to_owned(),
            attack: Vec::new(),
            severity: Severity::Info,
            title: title.to_owned(),
            text: String::new(),
            fields: BTreeMap::new(),
            labels: BTreeMap::new(),
            dedup_key: String::new(),
            group_key: String::new(),
            targets: Vec::new(),
            suppressed: 0,
            context: AlertContext::default(),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The fields a script passed to `alert`, validated.
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertSpec {
    pub severity: Severity,
    pub title: String,
    pub text: String,
    pub fields: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub dedup_key: String,
    pub group_key: String,
    pub targets: Vec<String>,
}

/// The keys `alert(#{…})` accepts.
pub const ALERT_FIELDS: [&str; 8] = [
    "title",
    "text",
    "severity",
    "fields",
    "labels",
    "dedup_key",
    "group_key",
    "targets",
];

impl AlertSpec {
    /// Validates the map a script passed to `alert`; the error names the field.
    pub(crate) fn from_map(map: Map) -> Result<Self, String> {
        let mut spec = AlertSpec::default();
        let mut has_title = false;
        for (key, value) in map {
            match key.as_str() {
                "title" => {
                    spec.title = string_field("title", value)?;
                    has_title = !spec.title.trim().is_empty();
                }
                "text" => spec.text = string_field("text", value)?,
                "severity" => spec.severity = string_field("severity", value)?.parse()?,
                "fields" => spec.fields = string_map("fields", value)?,
                "labels" => spec.labels = string_map("labels", value)?,
                "dedup_key" => spec.dedup_key = string_field("dedup_key", value)?,
                "group_key" => spec.group_key = string_field("group_key", value)?,
                "targets" => spec.targets = string_list("targets", value)?,
                other => {
                    return Err(format!(
                        "alert: unknown field `{other}`; expected one of {}",
                        ALERT_FIELDS.join(", ")
                    ));
                }
            }
        }
        if !has_title {
            return Err("alert: `title` is required and must not be empty".to_owned());
        }
        Ok(spec)
    }

    /// Turns the spec into an alert of `rule` (its name and ATT&CK techniques) with the
    /// given context.
    pub(crate) fn into_alert(self, rule: &super::Rule, context: AlertContext) -> Alert {
        Alert {
            rule: rule.name().to_owned(),
            attack: rule.attack().to_vec(),
            severity: self.severity,
            title: self.title,
            text: self.text,
            fields: self.fields,
            labels: self.labels,
            dedup_key: self.dedup_key,
            group_key: self.group_key,
            targets: self.targets,
            suppressed: 0,
            context,
        }
    }
}

/// Any scalar as text; `()` is refused so that a missing value is noticed.
fn scalar_text(field: &str, value: Dynamic) -> Result<String, String> {
    if value.is_unit() {
        return Err(format!("alert: `{field}` is () (a missing value?)"));
    }
    if value.is_map() || value.is_array() {
        return Err(format!(
            "alert: `{field}` must be a string, not {}",
            value.type_name()
        ));
    }
    Ok(value.to_string())
}

fn string_field(field: &str, value: Dynamic) -> Result<String, String> {
    if value.is_string() {
        return Ok(value.into_string().unwrap_or_default());
    }
    scalar_text(field, value)
}

fn string_map(field: &str, value: Dynamic) -> Result<BTreeMap<String, String>, String> {
    let type_name = value.type_name();
    let map = value
        .try_cast::<Map>()
        .ok_or_else(|| format!("alert: `{field}` must be a map, not {type_name}"))?;
    map.into_iter()
        .map(|(k, v)| {
            let text = if v.is_unit() {
                String::new()
            } else if v.is_string() {
                v.into_string().unwrap_or_default()
            } else {
                scalar_text(&format!("{field}.{k}"), v)?
            };
            Ok((k.to_string(), text))
        })
        .collect()
}

fn string_list(field: &str, value: Dynamic) -> Result<Vec<String>, String> {
    if value.is_string() {
        return Ok(vec![value.into_string().unwrap_or_default()]);
    }
    let type_name = value.type_name();
    let items = value
        .try_cast::<rhai::Array>()
        .ok_or_else(|| format!("alert: `{field}` must be a string or an array, not {type_name}"))?;
    items.into_iter().map(|v| string_field(field, v)).collect()
}
