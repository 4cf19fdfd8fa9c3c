//! A notice: what one delivery to one target carries — a single alert, or a digest of the
//! alerts that share a group key — and its versioned JSON form (docs/PAYLOAD.md).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rules::{Alert, Severity};

/// Version tag of the JSON payload; bumped on any incompatible change.
pub const PAYLOAD_VERSION: &str = "klaxon.v1";

/// One delivery to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// The target it is for.
    pub target: String,
    /// The group key its alerts share.
    pub group_key: String,
    /// The alerts, oldest first; never empty.
    pub alerts: Vec<Alert>,
}

impl Notice {
    /// A notice carrying one alert.
    pub fn single(target: &str, alert: Alert) -> Self {
        Self {
            target: target.to_owned(),
            group_key: alert.group_key.clone(),
            alerts: vec![alert],
        }
    }

    /// Whether it carries more than one alert.
    pub fn is_digest(&self) -> bool {
        self.alerts.len() > 1
    }

    /// The highest severity of its alerts.
    pub fn severity(&self) -> Severity {
        self.alerts
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or_default()
    }

    /// One line: the alert's title, or for a digest `N alerts: FIRST TITLE (+N-1 more)`.
    pub fn title(&self) -> String {
        match self.alerts.as_slice() {
            [] => String::new(),
            [only] => only.title.clone(),
            [first, rest @ ..] => format!(
                "{} alerts: {} (+{} more)",
                rest.len() + 1,
                first.title,
                rest.len()
            ),
        }
    }

    /// The versioned JSON payload (docs/PAYLOAD.md); also the context of every template.
    pub fn payload(&self) -> Value {
        json!({
            "version": PAYLOAD_VERSION,
            "target": self.target,
            "group_key": self.group_key,
            "count": self.alerts.len(),
            "severity": self.severity(),
            "title": self.title(),
            "alerts": self.alerts,
        })
    }
}
