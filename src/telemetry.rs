//! Telemetry: every counter klaxon keeps, in one place, through the `metrics` facade.
//!
//! Labels are bounded: rule and target names, outcomes and statuses from fixed sets;
//! never usernames, addresses or error text.

use metrics::counter;

/// Events decoded from webhook batches.
pub fn events_received(count: usize) {
    counter!("klaxon_events_received_total").increment(count as u64);
}

/// Lines or items that could not be decoded.
pub fn decode_errors(count: usize) {
    counter!("klaxon_decode_errors_total").increment(count as u64);
}

/// A webhook batch answered, by HTTP status class (`2xx`, `4xx`, `5xx`).
pub fn batch(status: u16) {
    let class = match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!("klaxon_batches_total", "status" => class).increment(1);
}

/// Runs of one rule, one per event.
pub fn rules_evaluated(rule: &str, events: usize) {
    counter!("klaxon_rule_evaluations_total", "rule" => rule.to_owned()).increment(events as u64);
}

/// An alert raised by a rule.
pub fn rule_matched(rule: &str) {
    counter!("klaxon_rule_matches_total", "rule" => rule.to_owned()).increment(1);
}

/// A rule that failed at run time.
pub fn rule_error(rule: &str) {
    counter!("klaxon_rule_errors_total", "rule" => rule.to_owned()).increment(1);
}

/// An alert that named a target the config does not define.
pub fn unknown_target(rule: &str) {
    counter!("klaxon_unknown_target_total", "rule" => rule.to_owned()).increment(1);
}

/// A delivery attempt to a target, by outcome (`sent` or `failed`).
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
