//! The web console at `/ui/` and the small JSON API behind its pages: the playground
//! (pasted audit events run through the loaded rules and the dry-run engine, with every
//! target's exact payloads), the rules (loaded, last reload, counts and cost per rule) and
//! the targets (pending entries, pacing, dead letters with retry and purge). The alerts and
//! silences pages read the history and silences APIs, served elsewhere.
//!
//! The page, its script and its style sheet are embedded in the binary, as are the example
//! events of `examples/events`; nothing is fetched from elsewhere. Every answer carries a
//! Content-Security-Policy without inline script, `nosniff` and `frame-ancestors 'none'`;
//! POSTs must be JSON and not cross-site (a form on another site cannot trigger them).
//! Behind the admin API's credentials (`admin::protect`: `[server.admin]`, else
//! `[server.auth]`).
//!
//! Calls `server` (state, reload status, rule counts), `pipeline` (`preview`), `notify`
//! (targets, `pacing`), `outbox` (entries, dead letters), `rules`, `audit` (decoding) and
//! `clock`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, admin, reload};
use crate::audit;
use crate::clock::{parse_time_ms, wall_clock_ms};
use crate::notify::Target;
use crate::notify::pacing::Pacer;
use crate::outbox::{Entry, IncludePending, OutboxError, Selection};
use crate::pipeline::preview::{self, EventAlerts};
use crate::rules::{ScriptError, Selection as RuleSelection, Staged};

/// Every answer's policy: the page's own script and style only, requests to itself only,
/// never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// Most events one playground run evaluates.
pub(super) const PLAYGROUND_MAX_EVENTS: usize = 1000;

/// Most pending entries and dead letters listed (all are counted).
const LISTED_ENTRIES: usize = 500;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The example events the playground offers (`examples/events`).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "pod-created.jsonl",
        include_str!("../../examples/events/pod-created.jsonl"),
    ),
    (
        "exec-into-pod.jsonl",
        include_str!("../../examples/events/exec-into-pod.jsonl"),
    ),
    (
        "secret-read.jsonl",
        include_str!("../../examples/events/secret-read.jsonl"),
    ),
    (
        "controller-noise.jsonl",
        include_str!("../../examples/events/controller-noise.jsonl"),
    ),
    (
        "batch.json",
        include_str!("../../examples/events/batch.json"),
    ),
    (
        "attacks.jsonl",
        include_str!("../../examples/events/attacks.jsonl"),
    ),
    (
        "normal-cluster.jsonl",
        include_str!("../../examples/events/normal-cluster.jsonl"),
    ),
];

/// The console's page, assets and API, with the security headers on every answer.
pub(super) fn routes(state: &Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/console.js", get(script))
        .route("/ui/console.css", get(style))
        .route("/api/v1/playground", post(playground))
        .route("/api/v1/playground/examples", get(examples))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/dead-letters/retry", post(retry))
        .route("/api/v1/dead-letters/purge", post(purge))
        .route_layer(middleware::from_fn(same_site_json))
        .layer(middleware::map_response(security_headers))
        .with_state(state.clone());
    admin::protect(state, router)
}

/// Adds the Content-Security-Policy and the other browser hardening headers.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    for (name, value) in set {
        headers.insert(name, value);
    }
    response
}

/// Refuses a POST that is not JSON (415) or that a browser marks cross-site (403): an HTML
/// form on another site can send neither, so it cannot purge or retry with the user's
/// credentials.
async fn same_site_json(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let headers = req.headers();
    if header_is(headers, "sec-fetch-site", "cross-site") {
        return error(StatusCode::FORBIDDEN, "cross-site requests are refused");
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body with Content-Type: application/json",
        );
    }
    next.run(req).await
}

fn header_is(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(value))
}

/// `{"error": reason}` with `status`.
fn error(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

async fn examples() -> Response {
    let list: Vec<Value> = EXAMPLES
        .iter()
        .map(|(name, text)| json!({ "name": name, "text": text }))
        .collect();
    Json(json!({ "examples": list })).into_response()
}

/// Runs the pasted events through the loaded rules and the dry-run engine, on the blocking
/// pool behind one of the batches' evaluation permits.
async fn playground(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    if body.trim_ascii().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "paste an audit event (an Event, an EventList, a JSON array or JSON lines)",
        );
    }
    let Ok(permit) = state.evaluators.clone().acquire_owned().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        try_events(&state, &body)
    })
    .await;
    match result {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(reason)) => error(StatusCode::BAD_REQUEST, &reason),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string()),
    }
}

/// The playground's answer for `body`: decoding problems, script errors, every alert with
/// its outcome and destinations, and each target's payloads. Event times clock the
/// pipeline (as in dry-run); the stateful helpers see what the server has seen, and what
/// the playground's events stage is dropped, so a run leaves no trace.
fn try_events(state: &AppState, body: &[u8]) -> Result<Value, String> {
    let decoded = audit::decode(body);
    let rejected: Vec<String> = decoded.errors.iter().map(ToString::to_string).collect();
    if decoded.events.is_empty() {
        return Err(match rejected.first() {
            Some(first) => format!("no audit event in the input: {first}"),
            None => "no audit event in the input".to_owned(),
        });
    }
    if decoded.events.len() > PLAYGROUND_MAX_EVENTS {
        return Err(format!(
            "{} events: the playground takes at most {PLAYGROUND_MAX_EVENTS}",
            decoded.events.len()
        ));
    }
    let rules = state.rules.load_full();
    let mut staged = Staged::default();
    let mut clock_ms = 0;
    let mut script_errors: Vec<ScriptError> = Vec::new();
    let mut events = Vec::with_capacity(decoded.events.len());
    for event in decoded.events {
        clock_ms = parse_time_ms(event.time()).unwrap_or(clock_ms);
        let evaluation = rules.evaluate_staged(
            Arc::new(event),
            clock_ms,
            RuleSelection::Indexed,
            &mut staged,
        );
        script_errors.extend(evaluation.errors);
        events.push(EventAlerts {
            at_ms: clock_ms,
            alerts: evaluation.alerts,
        });
    }
    let result = preview::preview(
        &state.pipeline.settings(),
        state.pipeline.targets(),
        state.max_alerts_per_notice,
        &events,
    );
    Ok(json!({
        "events": events.len(),
        "rejected": rejected,
        "skipped": decoded.skipped,
        "script_errors": script_errors,
        "alerts": result.alerts,
        "targets": result.targets,
    }))
}

/// The loaded rules with their declarations and counts since the start, and the last
/// reload's outcome.
async fn rules(State(state): State<Arc<AppState>>) -> Response {
    let rules = state.rules.load_full();
    let list: Vec<Value> = rules
        .rules()
        .iter()
        .map(|rule| {
            let stat = state.rule_stats.get(rule.name());
            json!({
                "name": rule.name(),
                "path": rule.path().display().to_string(),
                "level": rule.level().to_string(),
                "attack": rule.attack(),
                "indexed": rule.filters().is_some(),
                "runs": stat.runs,
                "alerts": stat.alerts,
                "errors": stat.errors,
                "mean_micros": mean_micros(stat.nanos, stat.runs),
                "last_error": stat.last_error,
            })
        })
        .collect();
    Json(json!({
        "rules": list,
        "reload_enabled": state.reload.is_some(),
        "last_reload": reload::status(&state),
    }))
    .into_response()
}

/// Mean time per run in microseconds, `None` before the first run.
fn mean_micros(nanos: u64, runs: u64) -> Option<f64> {
    (runs > 0).then(|| nanos as f64 / runs as f64 / 1000.0)
}

/// Every target with its pacing and what waits for it, the pending entries and the dead
/// letters.
async fn targets(State(state): State<Arc<AppState>>) -> Response {
    outbox_call(state, targets_report).await
}

/// Runs an outbox call on the blocking pool: its JSON, or 503 with the reason.
async fn outbox_call(
    state: Arc<AppState>,
    call: impl FnOnce(&AppState) -> Result<Value, OutboxError> + Send + 'static,
) -> Response {
    let result = tokio::task::spawn_blocking(move || call(&state))
        .await
        .unwrap_or_else(|join| Err(OutboxError::Task(join.to_string())));
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(err) => error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    }
}

fn targets_report(state: &AppState) -> Result<Value, OutboxError> {
    let pending = state.outbox.all_pending()?;
    let dead = state.outbox.dead_letters()?;
    let now = wall_clock_ms();
    let configured = state.pipeline.targets();
    let targets: Vec<Value> = configured
        .by_name
        .iter()
        .map(|(name, target)| {
            let pacing = configured.pacing(name);
            let pacer = Pacer::new(&pacing, state.max_alerts_per_notice);
            let waiting: Vec<&Entry> = pending.iter().filter(|e| e.target == *name).collect();
            let retrying = waiting.iter().filter(|e| e.next_attempt_ms > now).count();
            let grouping = waiting
                .iter()
                .filter(|e| e.next_attempt_ms <= now && pacer.window_end(**e) > now)
                .count();
            let (to, reason) = match target {
                Target::Fallback { to, reason, .. } => (Some(to), Some(reason)),
                _ => (None, None),
            };
            json!({
                "name": name,
                "kind": target.kind(),
                "fallback_to": to,
                "fallback_reason": reason,
                "group_wait_secs": pacing.group_wait.as_secs_f64(),
                "rate": pacing.rate.map(|r| json!({ "per_second": r.per_second, "burst": r.burst })),
                "pending": waiting.len(),
                "grouping": grouping,
                "ready": waiting.len() - grouping - retrying,
                "retrying": retrying,
                "oldest_pending_ms": waiting.iter().map(|e| e.enqueued_at_ms).min(),
                "dead_letters": dead.iter().filter(|d| d.entry.target == *name).count(),
            })
        })
        .collect();
    Ok(json!({
        "now_ms": now,
        "targets": targets,
        "pending_total": pending.len(),
        "pending": pending.iter().take(LISTED_ENTRIES).collect::<Vec<_>>(),
        "dead_letters_total": dead.len(),
        "dead_letters": dead.iter().take(LISTED_ENTRIES).collect::<Vec<_>>(),
    }))
}

/// `POST /api/v1/dead-letters/retry` body: some ids, or all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    all: bool,
}

/// Moves dead letters back to pending with a fresh retry budget (as `klaxon outbox retry`)
/// and wakes the delivery tasks.
async fn retry(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request: RetryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("body: {err}")),
    };
    let selection = match request {
        RetryRequest { all: true, .. } => Selection::All,
        RetryRequest { ids, .. } if !ids.is_empty() => Selection::Ids(ids),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "ids: name the dead letters to retry, or send {\"all\": true}",
            );
        }
    };
    let requested = match &selection {
        Selection::Ids(ids) => Some(ids.len()),
        Selection::All => None,
    };
    let waker = state.waker.clone();
    let response = outbox_call(state, move |state| {
        let moved = state.outbox.retry_dead(&selection, wall_clock_ms())?;
        Ok(json!({ "moved": moved, "requested": requested }))
    })
    .await;
    waker.wake();
    response
}

/// Deletes every dead letter (as `klaxon outbox purge`; pending entries stay).
async fn purge(State(state): State<Arc<AppState>>) -> Response {
    outbox_call(state, |state| {
        let purged = state.outbox.purge(IncludePending::No)?;
        Ok(json!({ "purged": purged }))
    })
    .await
}
