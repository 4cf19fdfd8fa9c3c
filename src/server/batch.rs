//! One audit batch: decode, skip what was already processed, evaluate, admit, store.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::{ApiError, AppState, store};
use crate::audit::{self, DecodeError, Event};
use crate::pipeline::wall_clock_ms;
use crate::rules::{Alert, Ruleset};
use crate::telemetry;

/// The answer to an accepted batch.
#[derive(Debug, Serialize)]
pub struct BatchReply {
    /// Events decoded.
    pub accepted: usize,
    /// Events skipped because their (auditID, stage) was already processed.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates: usize,
    /// Alerts raised by the scripts.
    pub alerts: usize,
    /// Deliveries stored in the outbox (alerts × targets, after dedup, silences, budgets).
    pub queued: usize,
    /// Items that could not be decoded, with their position and reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Decodes, evaluates, admits and stores a batch, on the blocking pool, at most
/// `max_concurrent_batches` at a time.
pub(super) async fn handle(state: &Arc<AppState>, body: Bytes) -> Result<BatchReply, ApiError> {
    let permit = state
        .evaluators
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let state = state.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let _permit = permit;
        process(&state, &body)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("evaluation task failed: {e}")))?
}

fn process(state: &AppState, body: &[u8]) -> Result<BatchReply, ApiError> {
    let decoded = audit::decode(body);
    telemetry::decode_errors(decoded.errors.len());
    for err in &decoded.errors {
        tracing::warn!(error = %err, "rejected part of a batch");
    }
    if decoded.events.is_empty()
        && let Some(reason) = summarize(&decoded.errors)
    {
        return Err(ApiError::BadRequest(reason));
    }
    let accepted = decoded.events.len();
    telemetry::events_received(accepted);
    // Filtered in place: a second vector of events would double the batch's memory.
    let mut fresh = decoded.events;
    let mut keys = Vec::with_capacity(accepted);
    fresh.retain(|event| {
        let key = state.seen.key(&event.audit_id, &event.stage);
        let seen = key.is_some_and(|k| state.seen.contains(k));
        if !seen {
            keys.extend(key);
        }
        !seen
    });
    let duplicates = accepted - fresh.len();
    telemetry::duplicates_skipped(duplicates);
    let rules = state.rules.load_full();
    let alerts = evaluate(&rules, fresh);
    let alert_count = alerts.len();
    let admission = state.pipeline.admit(alerts, wall_clock_ms());
    store(&state.outbox, &admission.deliveries, wall_clock_ms()).map_err(|err| {
        tracing::error!(error = %err, "cannot store alerts; the apiserver will retry the batch");
        ApiError::Unavailable(err.to_string())
    })?;
    state.seen.record(keys);
    Ok(BatchReply {
        accepted,
        duplicates,
        alerts: alert_count,
        queued: admission.deliveries.len(),
        rejected: decoded.errors.iter().map(ToString::to_string).collect(),
    })
}

/// Runs the rules on every event (those the index admits); logs and counts script errors;
/// records timings.
fn evaluate(rules: &Ruleset, events: Vec<Event>) -> Vec<Alert> {
    let mut alerts = Vec::new();
    // Per rule: events it ran on (the index skips the others) and their total time.
    let mut runs: Vec<(usize, u64)> = vec![(0, 0); rules.rules().len()];
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for event in events {
        let evaluation = rules.evaluate(Arc::new(event));
        for err in &evaluation.errors {
            tracing::warn!(
                rule = %err.rule,
                location = %err.location,
                audit_id = %err.audit_id,
                error = %err.message,
                "script failed"
            );
            *errors.entry(err.rule.clone()).or_default() += 1;
        }
        for run in &evaluation.runs {
            let (events, total) = &mut runs[run.rule];
            *events += 1;
            *total += run.nanos;
        }
        for alert in &evaluation.alerts {
            telemetry::rule_matched(&alert.rule);
        }
        alerts.extend(evaluation.alerts);
    }
    for (rule, n) in errors {
        telemetry::rule_errors(&rule, n);
    }
    for (rule, (events, total)) in rules.rules().iter().zip(runs) {
        if events > 0 {
            telemetry::rules_evaluated(rule.name(), events);
            telemetry::rule_evaluation_seconds(rule.name(), total as f64 / 1e9 / events as f64);
        }
    }
    alerts
}

fn summarize(errors: &[DecodeError]) -> Option<String> {
    let first = errors.first()?;
    Some(match errors.len() {
        1 => format!("cannot decode body: {first}"),
        n => format!("cannot decode body: {first} (and {} more)", n - 1),
    })
}
