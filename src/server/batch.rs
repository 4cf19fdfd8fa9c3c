//! One audit batch — a webhook body or a chunk of a followed file's lines: decode, skip
//! what was already processed, evaluate, admit, store (with the file's position).

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::rule_stats::{BatchStats, RuleStats};
use super::{ApiError, AppState};
use crate::audit::{self, DecodeError, Decoded, Event};
use crate::clock::wall_clock_ms;
use crate::outbox::{OutboxError, Processed};
use crate::rules::{Alert, Ruleset, Selection, Staged};
use crate::sources::Chunk;
use crate::state::Claim;
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
    /// Items that could not be decoded or are not audit events, with their position and reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
    /// Records an envelope marks as other logs (AKS categories, EKS log streams, CloudWatch
    /// control messages, GKE entries of other services), left out.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What a batch is made of.
pub(super) enum Input {
    /// A webhook body: any shape `audit::decode` knows; nothing decodable is a 400.
    Body(Bytes),
    /// A followed file's whole lines, each decoded on its own; stored with its cursor.
    Lines(Chunk),
}

/// Decodes, evaluates, admits and stores a batch, on the blocking pool, at most
/// `max_concurrent_batches` at a time (webhook bodies and file chunks share the permits).
pub(super) async fn handle(state: &Arc<AppState>, input: Input) -> Result<BatchReply, ApiError> {
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
        process(&state, &input)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("evaluation task failed: {e}")))?
}

fn process(state: &AppState, input: &Input) -> Result<BatchReply, ApiError> {
    let decoded = decode(input)?;
    let accepted = decoded.events.len();
    telemetry::events_received(accepted);
    let mut events = decoded.events;
    settle_uncertain(state);
    let local: Vec<Option<u64>> = events
        .iter()
        .map(|e| state.seen.key(&e.audit_id, &e.stage))
        .collect();
    let mut keep: Vec<bool> = local
        .iter()
        .map(|k| !k.is_some_and(|k| state.seen.contains(k)))
        .collect();
    let rules = state.rules.load_full();
    let claimed = claim_shared(state, &rules, &events, &mut keep)?;
    // Filtered in place: a second vector of events would double the batch's memory.
    let mut kept = keep.iter();
    events.retain(|_| kept.next().copied().unwrap_or(false));
    let keys: Vec<u64> = local
        .into_iter()
        .zip(&keep)
        .filter_map(|(key, kept)| key.filter(|_| *kept))
        .collect();
    let duplicates = accepted - events.len();
    telemetry::duplicates_skipped(duplicates);
    let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
    let now_ms = wall_clock_ms();
    let mut sightings = Staged::default();
    let alerts = evaluate(&rules, &events, now_ms, &mut sightings, &state.rule_stats);
    let alert_count = alerts.len();
    // The batch is a transaction: what it changes (seen events, claims, dedup keys, budgets,
    // sightings) takes effect only once its deliveries are stored. The events are stored
    // with them, so that a retry after a restart is skipped too.
    let processed = Processed {
        events: events
            .iter()
            .filter(|e| !e.audit_id.is_empty())
            .map(|e| (e.audit_id.as_str(), e.stage.as_str()))
            .collect(),
        remember: state.event_dedup_window,
        cursor: match input {
            Input::Body(_) => None,
            Input::Lines(chunk) => chunk.cursor.as_ref(),
        },
    };
    let stored = state.pipeline.transact(alerts, now_ms, |admission| {
        state.outbox.enqueue_batch(
            &admission.deliveries,
            &processed,
            std::mem::take(&mut admission.raised),
            now_ms,
        )
    });
    let admission = match stored {
        Ok((admission, _)) => admission,
        Err(err) => {
            if !matches!(err, OutboxError::Unavailable { .. }) {
                remember_uncertain(state, &processed, now_ms, keys);
            }
            release_claims(state, &claimed);
            tracing::error!(error = %err, "cannot store alerts; the batch will be offered again");
            return Err(ApiError::Unavailable(err.to_string()));
        }
    };
    rules.commit_sightings(sightings);
    confirm_claims(state, &claimed);
    state.seen.record(keys);
    // A flood of alerts that stored nothing else: its history is written now, outside the
    // pipeline's lock. It is the history's own trouble if that fails: the batch is stored,
    // and the entries wait for the upkeep (the outbox logs a break itself).
    if let Err(err) = state.outbox.flush_history_if_many(now_ms) {
        tracing::debug!(error = %err, "cannot write the alert history now");
    }
    Ok(BatchReply {
        accepted,
        duplicates,
        alerts: alert_count,
        queued: admission.deliveries.len(),
        rejected: decoded.errors.iter().map(ToString::to_string).collect(),
        skipped: decoded.skipped,
    })
}

/// Claims the kept events that some rule may match in the shared state, if there is
/// one, and drops (from `keep`) those another replica has processed. (An event no rule can
/// run on raises nothing and changes no state: processing it twice is harmless, so it is
/// not claimed; on the load generator's mix that is most reads.) Returns the (auditID, stage) pairs claimed here.
/// When another replica is processing some of them now, gives the claims back and asks
/// the apiserver to retry: answering success could lose them if that replica fails. When
/// the shared state does not answer, nothing is claimed and every event is processed
/// (fail open).
fn claim_shared(
    state: &AppState,
    rules: &Ruleset,
    events: &[Event],
    keep: &mut [bool],
) -> Result<Vec<(String, String)>, ApiError> {
    let Some(shared) = &state.shared else {
        return Ok(Vec::new());
    };
    let asked: Vec<usize> = (0..events.len())
        .filter(|&i| keep[i] && !events[i].audit_id.is_empty() && rules.may_match(&events[i]))
        .collect();
    let pairs: Vec<(&str, &str)> = asked
        .iter()
        .map(|&i| (events[i].audit_id.as_str(), events[i].stage.as_str()))
        .collect();
    let Ok(claims) = shared.claim_events(&pairs) else {
        return Ok(Vec::new());
    };
    let mut claimed = Vec::with_capacity(asked.len());
    let mut elsewhere = 0;
    for (&i, claim) in asked.iter().zip(claims) {
        match claim {
            Claim::Mine => claimed.push((events[i].audit_id.clone(), events[i].stage.clone())),
            Claim::Done => keep[i] = false,
            Claim::Elsewhere => elsewhere += 1,
        }
    }
    if elsewhere > 0 {
        release_claims(state, &claimed);
        return Err(ApiError::InProgressElsewhere(elsewhere));
    }
    Ok(claimed)
}

/// Marks the claimed events done for the event-dedup window (the batch is stored). A
/// failure is counted by the shared state and otherwise ignored: claims expire on their
/// own, and an event whose claim expired is processed again (a duplicate, not a loss).
fn confirm_claims(state: &AppState, claimed: &[(String, String)]) {
    if let Some(shared) = state.shared.as_ref().filter(|_| !claimed.is_empty()) {
        let _ = shared.confirm_events(&as_pairs(claimed), state.event_dedup_window);
    }
}

/// Gives the claims up (the batch was not stored), so the apiserver's retry is processed
/// by whichever replica receives it.
fn release_claims(state: &AppState, claimed: &[(String, String)]) {
    if let Some(shared) = state.shared.as_ref().filter(|_| !claimed.is_empty()) {
        let _ = shared.release_events(&as_pairs(claimed));
    }
}

fn as_pairs(claimed: &[(String, String)]) -> Vec<(&str, &str)> {
    claimed
        .iter()
        .map(|(id, stage)| (id.as_str(), stage.as_str()))
        .collect()
}

/// Runs the rules on every event (those the index admits) at `now_ms`, staging the stateful
/// helpers' sightings in `sightings`; logs and counts script errors; records timings (the
/// metrics, and the console's per-rule counts in `stats`).
fn evaluate(
    rules: &Ruleset,
    events: &[Arc<Event>],
    now_ms: i64,
    sightings: &mut Staged,
    stats: &RuleStats,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    // Per rule: events it ran on (the index skips the others) and their total time.
    let mut runs: Vec<(usize, u64)> = vec![(0, 0); rules.rules().len()];
    let mut batch = BatchStats::default();
    for event in events {
        let evaluation =
            rules.evaluate_staged(event.clone(), now_ms, Selection::Indexed, sightings);
        for err in &evaluation.errors {
            tracing::warn!(
                rule = %err.rule,
                location = %err.location,
                audit_id = %err.audit_id,
                error = %err.message,
                "script failed"
            );
            let stat = batch.rule(&err.rule);
            stat.errors += 1;
            stat.last_error = Some(format!("{}: {}", err.location, err.message));
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
    for (rule, stat) in batch.0.iter().filter(|(_, stat)| stat.errors > 0) {
        telemetry::rule_errors(rule, stat.errors);
    }
    for alert in &alerts {
        batch.rule(&alert.rule).alerts += 1;
    }
    for (rule, (events, total)) in rules.rules().iter().zip(runs) {
        if events > 0 {
            telemetry::rules_evaluated(rule.name(), events);
            telemetry::rule_evaluation_seconds(rule.name(), total as f64 / 1e9 / events as f64);
            let stat = batch.rule(rule.name());
            stat.runs += events as u64;
            stat.nanos += total;
        }
    }
    stats.record(batch);
    alerts
}

/// The batch's events; its bad lines or items are counted and logged. A webhook body in
/// which nothing decodes is refused (400); a file's lines never are: each bad line costs
/// only itself.
fn decode(input: &Input) -> Result<Decoded, ApiError> {
    let decoded = match input {
        Input::Body(body) => audit::decode(body),
        Input::Lines(chunk) => decode_lines(&chunk.lines),
    };
    telemetry::decode_errors(decoded.errors.len());
    for err in &decoded.errors {
        match input {
            Input::Body(_) => tracing::warn!(error = %err, "rejected part of a batch"),
            Input::Lines(chunk) => tracing::warn!(
                origin = %chunk.origin,
                offset = chunk.at,
                error = %err,
                "skipped a line that is not an audit event (line counted from the offset)"
            ),
        }
    }
    if let Input::Body(_) = input
        && decoded.events.is_empty()
        && let Some(reason) = summarize(&decoded.errors)
    {
        return Err(ApiError::BadRequest(reason));
    }
    Ok(decoded)
}

/// Decodes each line on its own, so that a line of another shape (or a torn one) cannot
/// change how its neighbours are read; positions are counted from the chunk's first line.
fn decode_lines(lines: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    for (i, line) in lines.split(|b| *b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let mut one = audit::decode(line);
        for err in &mut one.errors {
            err.location.line += i;
        }
        for origin in &mut one.origins {
            origin.line += i;
        }
        out.events.append(&mut one.events);
        out.origins.append(&mut one.origins);
        out.errors.append(&mut one.errors);
        out.skipped += one.skipped;
    }
    out
}

fn summarize(errors: &[DecodeError]) -> Option<String> {
    let first = errors.first()?;
    Some(match errors.len() {
        1 => format!("cannot decode body: {first}"),
        n => format!("cannot decode body: {first} (and {} more)", n - 1),
    })
}

/// Most uncertain batches remembered; past it the oldest is forgotten (its retry may then
/// raise its alerts twice, never lose them).
const MAX_UNCERTAIN: usize = 64;

/// A batch whose outbox write failed with an I/O error (not a refusal of a broken outbox):
/// a commit that fails part-way may have reached the file all the same.
pub(super) struct Uncertain {
    /// When it was stored (the key of its events in the outbox's seen table).
    at_ms: i64,
    /// One of its events (auditID, stage): the transaction is all or nothing.
    probe: (String, String),
    /// Its events' keys in the seen filter.
    keys: Vec<u64>,
}

/// Remembers a batch whose write failed, to be settled by [`settle_uncertain`].
fn remember_uncertain(state: &AppState, processed: &Processed<'_>, at_ms: i64, keys: Vec<u64>) {
    let Some((audit_id, stage)) = processed.events.first() else {
        return;
    };
    let mut uncertain = state.uncertain.lock().unwrap_or_else(|p| p.into_inner());
    if uncertain.len() == MAX_UNCERTAIN {
        uncertain.remove(0);
    }
    uncertain.push(Uncertain {
        at_ms,
        probe: ((*audit_id).to_owned(), (*stage).to_owned()),
        keys,
    });
}

/// Reads, for each uncertain batch, whether the outbox holds it: if so its events count as
/// processed (the apiserver's retry is skipped: its alerts are stored already); if not it
/// is forgotten. While the outbox cannot be read they stay uncertain.
fn settle_uncertain(state: &AppState) {
    let mut uncertain = state.uncertain.lock().unwrap_or_else(|p| p.into_inner());
    uncertain.retain(|batch| {
        let event = (batch.probe.0.as_str(), batch.probe.1.as_str());
        match state.outbox.was_stored(batch.at_ms, event) {
            Ok(true) => {
                tracing::warn!(
                    events = batch.keys.len(),
                    "a batch whose write failed part-way was stored all the same; its retry is skipped"
                );
                state.seen.record(batch.keys.iter().copied());
                false
            }
            Ok(false) => false,
            Err(_) => true,
        }
    });
}
