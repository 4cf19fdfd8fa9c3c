//! Telemetry: every counter klaxon keeps, in one place, through the `metrics` facade.
//!
//! Labels are bounded: rule and target names, outcomes and statuses from fixed sets;
//! never usernames, addresses or error text. Calls nothing of the crate.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of `klaxon_rule_evaluation_seconds` (per event): 1 µs to 10 ms.
const EVALUATION_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2,
];

/// Installs the Prometheus recorder once per process and returns its handle for
/// `GET /metrics`. When another recorder is already installed (tests), the handle renders
/// an empty page.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("klaxon_rule_evaluation_seconds".to_owned()),
                    EVALUATION_BUCKETS,
                )
                .expect("static, non-empty buckets")
        };
        builder()
            .install_recorder()
            .unwrap_or_else(|_| builder().build_recorder().handle())
    })
}

/// Events decoded from webhook batches.
pub fn events_received(count: usize) {
    counter!("klaxon_events_received_total").increment(count as u64);
}

/// Lines or items that could not be decoded.
pub fn decode_errors(count: usize) {
    counter!("klaxon_decode_errors_total").increment(count as u64);
}

/// A webhook batch answered, by HTTP status (200, 400, 401, 413, 429, 503, …).
pub fn batch(status: u16) {
    counter!("klaxon_batches_total", "status" => status.to_string()).increment(1);
}

/// A request body started (+1) or stopped (−1) being read (until its batch is admitted).
pub fn bodies_reading(delta: f64) {
    gauge!("klaxon_request_bodies_reading").increment(delta);
}

/// Bytes of buffer held by request bodies being read, as buffers grow (+) and when
/// released (−).
pub fn body_bytes_reading(delta: f64) {
    gauge!("klaxon_request_body_bytes_reading").increment(delta);
}

/// Events skipped because their (auditID, stage) was already processed.
pub fn duplicates_skipped(count: usize) {
    counter!("klaxon_duplicate_events_total").increment(count as u64);
}

/// A request refused for missing or wrong credentials.
pub fn auth_failure(reason: &'static str) {
    counter!("klaxon_auth_failures_total", "reason" => reason).increment(1);
}

/// Average evaluation time per event of one rule over one batch.
pub fn rule_evaluation_seconds(rule: &str, seconds: f64) {
    histogram!("klaxon_rule_evaluation_seconds", "rule" => rule.to_owned()).record(seconds);
}

/// A reload attempt (`success` or `failure`); the gauge says whether the last one worked.
pub fn reload(success: bool) {
    let result = if success { "success" } else { "failure" };
    counter!("klaxon_reloads_total", "result" => result).increment(1);
    gauge!("klaxon_reload_success").set(if success { 1.0 } else { 0.0 });
}

/// Rules loaded and running.
pub fn rules_loaded(count: usize) {
    gauge!("klaxon_rules_loaded").set(count as f64);
}

/// Outbox sizes: entries waiting for delivery and dead letters.
pub fn outbox_sizes(pending: u64, dead: u64) {
    gauge!("klaxon_outbox_pending").set(pending as f64);
    gauge!("klaxon_outbox_dead_letters").set(dead as f64);
}

/// The outbox was closed and reopened after an I/O error broke it.
pub fn outbox_reopened() {
    counter!("klaxon_outbox_reopens_total").increment(1);
}

/// Whether the outbox answers (0 while an I/O error keeps it broken).
pub fn outbox_healthy(healthy: bool) {
    gauge!("klaxon_outbox_healthy").set(if healthy { 1.0 } else { 0.0 });
}

/// Runs of one rule, one per event it ran on (the rule index skips the others).
pub fn rules_evaluated(rule: &str, events: usize) {
    counter!("klaxon_rule_evaluations_total", "rule" => rule.to_owned()).increment(events as u64);
}

/// An alert raised by a rule.
pub fn rule_matched(rule: &str) {
    counter!("klaxon_rule_matches_total", "rule" => rule.to_owned()).increment(1);
}

/// Run-time failures of a rule.
pub fn rule_errors(rule: &str, count: u64) {
    counter!("klaxon_rule_errors_total", "rule" => rule.to_owned()).increment(count);
}

/// An alert that named a target the config does not define.
pub fn unknown_target(rule: &str) {
    counter!("klaxon_unknown_target_total", "rule" => rule.to_owned()).increment(1);
}

/// A delivery attempt to a target, by outcome (`sent`, `retried` or `dead`).
pub fn notification(target: &str, rule: &str, outcome: &'static str) {
    counter!(
        "klaxon_notifications_total",
        "target" => target.to_owned(),
        "rule" => rule.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

/// What the pipeline did with a candidate alert (`admitted`, `deduplicated`, `silenced`, `folded`).
pub fn alert_outcome(rule: &str, outcome: &'static str) {
    counter!("klaxon_alerts_total", "rule" => rule.to_owned(), "outcome" => outcome).increment(1);
}

/// (auditID, stage) pairs the seen filter remembers.
pub fn event_dedup_entries(count: usize) {
    gauge!("klaxon_event_dedup_entries").set(count as f64);
}

/// Whether the shared state (Redis) answered the last call.
pub fn state_backend_up(up: bool) {
    gauge!("klaxon_state_backend_up").set(if up { 1.0 } else { 0.0 });
}

/// Outages of the shared state (each logged once, when it starts).
pub fn state_backend_outage() {
    counter!("klaxon_state_backend_outages_total").increment(1);
}

/// Failed calls to the shared state, by operation (claim, confirm, release, dedup, rate,
/// count_over, first_seen, ping); each fell back to this replica's state.
pub fn state_backend_error(operation: &'static str) {
    counter!("klaxon_state_backend_errors_total", "operation" => operation).increment(1);
}

/// Runtime silences holding alerts back now (`klaxon_silences_active`).
pub fn silences_active(count: usize) {
    gauge!("klaxon_silences_active").set(count as f64);
}

/// A runtime silence created, expired through the API, or dropped after its retention
/// (`klaxon_silence_changes_total{change}`; `change` is a fixed word).
pub fn silence_change(change: &'static str) {
    counter!("klaxon_silence_changes_total", "change" => change).increment(1);
}

/// Entries in the alert history.
pub fn history_entries(entries: u64) {
    gauge!("klaxon_history_entries").set(entries as f64);
}

/// History entries dropped by pruning, by reason (`retention` or `size`).
pub fn history_pruned(reason: &'static str, entries: u64) {
    if entries > 0 {
        counter!("klaxon_history_pruned_total", "reason" => reason).increment(entries);
    }
}

/// History entries dropped before they were written (the outbox unwritable too long).
pub fn history_dropped(entries: u64) {
    counter!("klaxon_history_dropped_total").increment(entries);
}
