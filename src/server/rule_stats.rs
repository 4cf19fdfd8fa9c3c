//! Per-rule counts since the server started, for the console's rules page: the events each
//! rule ran on and their total time (its cost), the alerts it raised, its script errors
//! and the last error's message. Kept by rule name, so they survive a reload; one lock
//! taken once per batch.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// One rule's counts.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct RuleStat {
    /// Events it ran on (the rule index skips the others).
    pub runs: u64,
    /// Their total evaluation time, in nanoseconds.
    pub nanos: u64,
    /// Alerts it raised.
    pub alerts: u64,
    /// Events it failed on.
    pub errors: u64,
    /// The last failure's `file:line` and message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What one batch adds, by rule name.
#[derive(Debug, Default)]
pub(super) struct BatchStats(pub BTreeMap<String, RuleStat>);

impl BatchStats {
    /// The entry of `rule`.
    pub fn rule(&mut self, rule: &str) -> &mut RuleStat {
        self.0.entry(rule.to_owned()).or_default()
    }
}

/// The counts of every rule that ran since the start.
#[derive(Debug, Default)]
pub(super) struct RuleStats(Mutex<BTreeMap<String, RuleStat>>);

impl RuleStats {
    /// Adds a batch's counts.
    pub fn record(&self, batch: BatchStats) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (rule, add) in batch.0 {
            let stat = all.entry(rule).or_default();
            stat.runs += add.runs;
            stat.nanos += add.nanos;
            stat.alerts += add.alerts;
            stat.errors += add.errors;
            if add.last_error.is_some() {
                stat.last_error = add.last_error;
            }
        }
    }

    /// The counts of `rule` (zero when it never ran).
    pub fn get(&self, rule: &str) -> RuleStat {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get(rule).cloned().unwrap_or_default()
    }
}
