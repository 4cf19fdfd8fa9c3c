//! The pipeline's settings: routes, silences and per-rule dedup and budget policies, as
//! validated from config.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::rules::{Alert, Severity, glob_match};

/// Which alerts a route or silence applies to; every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Matcher {
    /// Rule name globs (`pod_*`); empty matches every rule.
    pub rules: Vec<String>,
    /// Lowest severity matched; absent matches every severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Labels that must be present with these values (values may be globs).
    pub labels: BTreeMap<String, String>,
}

impl Matcher {
    /// Whether `alert` meets every criterion.
    pub fn matches(&self, alert: &Alert) -> bool {
        criteria_match(&self.rules, self.min_severity, &self.labels, alert)
    }
}

/// Rule globs, minimum severity and label globs, all of which must hold.
fn criteria_match(
    rules: &[String],
    min_severity: Option<Severity>,
    labels: &BTreeMap<String, String>,
    alert: &Alert,
) -> bool {
    (rules.is_empty() || rules.iter().any(|g| glob_match(g, &alert.rule)))
        && min_severity.is_none_or(|min| alert.severity >= min)
        && labels.iter().all(|(k, v)| {
            alert
                .labels
                .get(k)
                .is_some_and(|actual| glob_match(v, actual))
        })
}

/// `[[routes]]`: alerts that match go to `targets`; the first match wins unless `continue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Rule names (globs) this route takes; empty: any.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Lowest severity this route takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// Labels an alert must carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where matching alerts go.
    pub targets: Vec<String>,
    /// Keep looking for further matching routes after this one.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
}

impl Route {
    /// Whether `alert` meets the route's criteria (checked per alert: nothing is copied).
    pub fn matches(&self, alert: &Alert) -> bool {
        criteria_match(&self.rules, self.min_severity, &self.labels, alert)
    }
}

/// A silence: matching alerts are counted, not sent, until `ends_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// Which alerts it silences.
    pub matcher: Matcher,
    /// End, in milliseconds since the Unix epoch.
    pub ends_at_ms: i64,
    /// Why (shown by `klaxon check`).
    pub comment: String,
}

/// Dedup and budget policy of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulePolicy {
    /// Alerts with the same dedup key within this window are one incident.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Alerts the rule may send per `budget_window`; the rest become one digest.
    pub budget: u32,
    /// The budget's window.
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RulePolicy {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(600),
            budget: 30,
            budget_window: Duration::from_secs(300),
        }
    }
}

/// Everything the pipeline decides with.
#[derive(Debug, Clone, Default)]
pub struct PipelineSettings {
    /// Routes in order.
    pub routes: Vec<Route>,
    /// Active and future-ending silences.
    pub silences: Vec<Silence>,
    /// Targets for alerts no route takes.
    pub default_targets: Vec<String>,
    /// Policy of rules without their own.
    pub rule_defaults: RulePolicy,
    /// Per-rule policies.
    pub rule_policies: BTreeMap<String, RulePolicy>,
}

impl PipelineSettings {
    /// The policy of `rule`.
    pub fn policy(&self, rule: &str) -> RulePolicy {
        self.rule_policies
            .get(rule)
            .copied()
            .unwrap_or(self.rule_defaults)
    }
}
