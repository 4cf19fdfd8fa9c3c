//! The webhook's routes and their guards: authentication (from the headers), then the
//! body, read whole under three bounds — its size (413), a deadline (408) and the bytes all
//! bodies being read may hold together (429) — and only then admission (429 past
//! `max_concurrent_batches + max_queued_batches`), so a slow sender holds no batch slot;
//! `Retry-After` on every 429 and 503. The probe router serves `/healthz` (alive unless the
//! outbox has been broken too long), `/readyz` (scripts loaded, outbox answering) and
//! `/metrics` alone. A delivery from Amazon Data Firehose (it names itself in
//! `X-Amz-Firehose-Request-Id`) is answered in the form Firehose expects.
//!
//! Calls `server::guard` (credentials), `server::batch` for the work, `server::reload`, `outbox` (health), `clock` and
//! `telemetry`.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::error::with_retry_after;
use super::guard::{authenticate_with, client_addr};
use super::{ApiError, AppState, BatchReply, batch, reload};
use crate::clock::wall_clock_ms;
use crate::outbox::{Health, OutboxError, Sizes};
use crate::telemetry;

/// Ingest and reload behind auth; the admin API (silences, alert history) and the web
/// console behind `[server.admin]`; probes and
/// metrics open; `Retry-After` on every 429 and
/// 503.
pub(super) fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/", post(ingest))
        .route("/audit", post(ingest))
        .route("/-/reload", post(reload_now))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn(firehose_reply))
        .with_state(state.clone());
    probes(state.clone())
        .merge(protected)
        .merge(super::silences::routes(&state))
        .merge(super::history::routes(&state))
        .merge(super::console::routes(&state))
        .layer(middleware::map_response_with_state(state, retry_after))
}

/// `/healthz`, `/readyz` and `/metrics`, nothing else (the probe listener's whole app).
pub(super) fn probe_router(state: Arc<AppState>) -> Router {
    probes(state.clone()).layer(middleware::map_response_with_state(state, retry_after))
}

fn probes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Adds the configured `Retry-After` to every 429 and 503.
async fn retry_after(State(state): State<Arc<AppState>>, response: Response) -> Response {
    with_retry_after(response, state.retry_after)
}

/// What bounds the reading of request bodies.
pub(super) struct BodyLimits {
    /// Largest body; past it, 413.
    pub max_bytes: usize,
    /// From the headers on, how long the whole body may take; past it, 408.
    pub read_timeout: Duration,
    /// One permit per byte of the buffers of the bodies being read; none left, 429.
    pub budget: Arc<Semaphore>,
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
enum BodyRefusal {
    /// Past `max_body_bytes`, declared or sent.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// Not all there by the deadline.
    #[error("request body did not arrive within {0:?}")]
    TimedOut(Duration),
    /// The bodies being read already hold the whole budget.
    #[error("too many request bodies being read; retry later")]
    BudgetSpent,
    /// The connection failed or the framing was broken.
    #[error("cannot read the request body: {0}")]
    Broken(String),
}

/// A body read whole, with the budget its bytes hold until it is admitted.
struct ReadBody {
    bytes: Bytes,
    budget: BodyHold,
}

/// The share of the byte budget one body holds; the reading gauges follow it.
struct BodyHold {
    permit: OwnedSemaphorePermit,
}

impl BodyHold {
    /// Starts holding nothing.
    fn start(budget: &Arc<Semaphore>) -> Result<Self, BodyRefusal> {
        let permit = budget
            .clone()
            .try_acquire_many_owned(0)
            .map_err(|_| BodyRefusal::BudgetSpent)?;
        telemetry::bodies_reading(1.0);
        Ok(Self { permit })
    }

    /// Takes `bytes` more of the budget, or refuses when it has not that many left.
    fn take(&mut self, budget: &Arc<Semaphore>, bytes: usize) -> Result<(), BodyRefusal> {
        let permits = u32::try_from(bytes).map_err(|_| BodyRefusal::BudgetSpent)?;
        let more = budget
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| BodyRefusal::BudgetSpent)?;
        self.permit.merge(more);
        telemetry::body_bytes_reading(f64::from(permits));
        Ok(())
    }
}

impl Drop for BodyHold {
    fn drop(&mut self) {
        telemetry::bodies_reading(-1.0);
        telemetry::body_bytes_reading(-(self.permit.num_permits() as f64));
    }
}

/// Reads the body under `limits`, then takes an admission slot, then runs the batch.
async fn ingest(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let source = client_addr(&req);
    let declared = declared_length(&req);
    let body = match read_body(&state.body_limits, req.into_body(), declared).await {
        Ok(body) => body,
        Err(refusal) => return refuse_body(&state, &refusal, source),
    };
    let Ok(slot) = state.admission.clone().try_acquire_owned() else {
        return too_many(&state, "too many batches in flight; retry later");
    };
    // Admitted: the admission bound accounts for this body from here on.
    let ReadBody { bytes, budget } = body;
    drop(budget);
    let response = match process(&state, bytes).await {
        Ok(reply) => reply.into_response(),
        Err(err) => err.into_response(),
    };
    drop(slot);
    response
}

/// The `Content-Length` the client declared, if any.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The whole body, or why not: the size is checked as declared and as sent, every frame
/// waits at most until the deadline, and every byte of buffer takes a permit of the shared
/// budget.
async fn read_body(
    limits: &BodyLimits,
    mut body: Body,
    declared: Option<u64>,
) -> Result<ReadBody, BodyRefusal> {
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(BodyRefusal::TooLarge(limits.max_bytes));
    }
    let deadline = Instant::now() + limits.read_timeout;
    let mut held = BodyHold::start(&limits.budget)?;
    let mut buf = Vec::new();
    loop {
        let next = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match tokio::time::timeout_at(deadline, next).await {
            Err(_) => return Err(BodyRefusal::TimedOut(limits.read_timeout)),
            Ok(None) => break,
            Ok(Some(Err(err))) => return Err(BodyRefusal::Broken(err.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > limits.max_bytes {
            return Err(BodyRefusal::TooLarge(limits.max_bytes));
        }
        grow(&mut buf, data.len(), limits, &mut held)?;
        buf.extend_from_slice(&data);
    }
    Ok(ReadBody {
        bytes: Bytes::from(buf),
        budget: held,
    })
}

/// Smallest buffer a body is read into.
const MIN_BODY_CAPACITY: usize = 8 << 10;

/// Makes room in `buf` for `more` bytes, charging the budget for every byte of capacity
/// before it is allocated: capacity doubles (from 8 KiB, at most to `max_bytes`), so what a
/// body holds in memory is what it was charged, and a trickle of bytes is charged little.
fn grow(
    buf: &mut Vec<u8>,
    more: usize,
    limits: &BodyLimits,
    held: &mut BodyHold,
) -> Result<(), BodyRefusal> {
    let needed = buf.len() + more;
    if needed <= buf.capacity() {
        return Ok(());
    }
    let capacity = needed
        .max(buf.capacity() * 2)
        .max(MIN_BODY_CAPACITY)
        .min(limits.max_bytes)
        .max(needed);
    held.take(&limits.budget, capacity - buf.capacity())?;
    buf.reserve_exact(capacity - buf.len());
    Ok(())
}

/// The answer to a body not read: 413, 408, 429 with `Retry-After`, or 400; counted and
/// logged with the client's address.
fn refuse_body(state: &AppState, refusal: &BodyRefusal, source: Option<SocketAddr>) -> Response {
    let source = source.map_or("unknown".to_owned(), |a| a.to_string());
    let status = match refusal {
        BodyRefusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        BodyRefusal::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
        BodyRefusal::BudgetSpent => return too_many(state, &refusal.to_string()),
        BodyRefusal::Broken(_) => StatusCode::BAD_REQUEST,
    };
    tracing::warn!(source = %source, status = status.as_u16(), reason = %refusal, "request body refused");
    telemetry::batch(status.as_u16());
    (status, Json(json!({ "error": refusal.to_string() }))).into_response()
}

/// 429 with an integer `Retry-After`, counted.
fn too_many(state: &AppState, reason: &str) -> Response {
    telemetry::batch(429);
    let secs = state.retry_after.as_secs().to_string();
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs)],
        Json(json!({ "error": reason })),
    )
        .into_response()
}

/// Runs one admitted batch: 200 with the reply, or the batch's error.
async fn process(state: &Arc<AppState>, body: Bytes) -> Result<Json<BatchReply>, ApiError> {
    if body.trim_ascii().is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: expected an audit EventList".to_owned(),
        ));
    }
    let span = tracing::info_span!("batch", bytes = body.len());
    let reply = batch::handle(state, batch::Input::Body(body))
        .instrument(span)
        .await?;
    if reply.queued > 0 {
        state.waker.wake();
    }
    tracing::debug!(
        events = reply.accepted,
        duplicates = reply.duplicates,
        alerts = reply.alerts,
        queued = reply.queued,
        rejected = reply.rejected.len(),
        "batch accepted"
    );
    telemetry::batch(200);
    Ok(Json(reply))
}

/// 401 with `WWW-Authenticate` unless the request carries credentials `[server.auth]`
/// takes.
async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let response = authenticate_with(&state.auth, req, next).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        telemetry::batch(401);
    }
    response
}

/// The header Amazon Data Firehose names each delivery with (the same on its retries).
const FIREHOSE_REQUEST_ID: &str = "x-amz-firehose-request-id";

/// Most bytes of an error answer read back to become Firehose's `errorMessage`.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Answers Amazon Data Firehose as its HTTP endpoint delivery expects: the same status,
/// and the body `{"requestId","timestamp"}` with the delivery's request id, plus
/// `errorMessage` when it is not a success (Firehose retries those, then backs the data up).
async fn firehose_reply(req: Request, next: Next) -> Response {
    let Some(request_id) = req
        .headers()
        .get(FIREHOSE_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(req).await;
    };
    let (mut parts, body) = next.run(req).await.into_parts();
    let mut reply = json!({ "requestId": request_id, "timestamp": wall_clock_ms() });
    if !parts.status.is_success() {
        let bytes = axum::body::to_bytes(body, ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        reply["errorMessage"] = json!(message);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(reply.to_string()))
}

/// Alive unless the outbox has been broken (I/O errors, not reopenable) for longer than
/// `outbox.unhealthy_after`: then 503 with the reason, so Kubernetes restarts the pod.
/// Reads the outbox's health from memory, never the database.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let health = state.outbox.health();
    match health.broken_for() {
        Some(broken_for) if broken_for > state.outbox_unhealthy_after => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "healthy": false,
                "outbox": broken(&health),
                "unhealthy_after_secs": state.outbox_unhealthy_after.as_secs_f64(),
            })),
        )
            .into_response(),
        _ => "ok".into_response(),
    }
}

/// The JSON of a broken outbox: why, and for how long.
fn broken(health: &Health) -> serde_json::Value {
    json!({
        "healthy": false,
        "reason": health.reason(),
        "broken_for_secs": health.broken_for().map(|d| d.as_secs()),
    })
}

/// What `/readyz` says about the outbox, and whether it lets klaxon be ready.
fn outbox_report(sizes: Result<Sizes, OutboxError>, health: &Health) -> (bool, serde_json::Value) {
    match sizes {
        Ok(s) if health.is_healthy() => (
            true,
            json!({ "healthy": true, "pending": s.pending, "dead_letters": s.dead }),
        ),
        Err(err) if health.is_healthy() => (
            false,
            json!({ "healthy": false, "reason": err.to_string() }),
        ),
        _ => (false, broken(health)),
    }
}

/// Ready when scripts are loaded and the outbox answers (503 with the reason while it is
/// broken); the body says what was checked, and whether the shared state (Redis) answers.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let rules = state.rules.load().rules().len();
    let outbox_state = state.clone();
    let sizes = tokio::task::spawn_blocking(move || outbox_state.outbox.sizes())
        .await
        .unwrap_or_else(|join| Err(OutboxError::Task(join.to_string())));
    let (outbox_ready, outbox) = outbox_report(sizes, &state.outbox.health());
    let status = reload::status(&state);
    // Redis down does not make klaxon unready: it keeps serving with local state.
    let shared = match &state.shared {
        None => json!({ "backend": "memory" }),
        Some(redis) => json!({
            "backend": "redis",
            "reachable": redis.ping().await,
            "note": "when unreachable, this replica decides with its own state (duplicates possible)",
        }),
    };
    let body = json!({
        "ready": outbox_ready,
        "rules": rules,
        "outbox": outbox,
        "last_reload": status,
        "state": shared,
    });
    let code = match outbox_ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(body)).into_response()
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::prometheus().render(),
    )
        .into_response()
}

async fn reload_now(State(state): State<Arc<AppState>>) -> Response {
    match reload::run(state).await {
        Ok(rules) => (
            StatusCode::OK,
            Json(json!({ "reloaded": true, "rules": rules })),
        )
            .into_response(),
        Err(errors) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "reloaded": false, "errors": errors })),
        )
            .into_response(),
    }
}
