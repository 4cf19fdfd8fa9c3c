//! The webhook's routes and their guards: authentication, then admission (429 past the
//! bound, before the body is read), then the body limit (413); `Retry-After` on every 429
//! and 503. The probes: `/healthz` (alive unless the outbox has been broken too long) and
//! `/readyz` (scripts loaded, outbox answering).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use tracing::Instrument;

use super::error::with_retry_after;
use super::listen::Peer;
use super::{ApiError, AppState, BatchReply, batch, reload};
use crate::outbox::{Health, OutboxError, Sizes};
use crate::telemetry;

/// Ingest routes behind auth and admission; reload behind auth; probes and metrics open.
pub(super) fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let ingest = Router::new()
        .route("/", post(ingest))
        .route("/audit", post(ingest))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(middleware::from_fn_with_state(state.clone(), admission));
    let protected = ingest
        .route("/-/reload", post(reload_now))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(protected)
        .layer(middleware::map_response_with_state(
            state.clone(),
            retry_after,
        ))
        .with_state(state)
}

/// Adds the configured `Retry-After` to every 429 and 503.
async fn retry_after(State(state): State<Arc<AppState>>, response: Response) -> Response {
    with_retry_after(response, state.retry_after)
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<BatchReply>, ApiError> {
    if body.trim_ascii().is_empty() {
        return Err(ApiError::BadRequest(
            "empty body: expected an audit EventList".to_owned(),
        ));
    }
    let span = tracing::info_span!("batch", bytes = body.len());
    let reply = batch::handle(&state, body).instrument(span).await?;
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

/// The client's address: from the connection layer, or axum's connect info.
fn client_addr(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<Peer>().map(|p| p.addr).or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    })
}

/// 401 with `WWW-Authenticate` unless the request carries valid credentials; the attempt
/// is logged with the client's address, never with what it sent.
async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>();
    let subject = peer.and_then(|p| {
        p.client_subject
            .as_deref()
            .map(|s| (s, p.client_cn.as_deref()))
    });
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match state.auth.check(authorization, subject) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            let source = client_addr(&req).map_or("unknown".to_owned(), |a| a.to_string());
            tracing::warn!(source = %source, reason = refusal.as_str(), path = %req.uri().path(), "request refused: authentication failed");
            telemetry::auth_failure(refusal.as_str());
            telemetry::batch(401);
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "authentication required" })),
            )
                .into_response();
            for challenge in state.auth.challenges() {
                response.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            response
        }
    }
}

/// 429 with `Retry-After` when `max_concurrent_batches + max_queued_batches` batches are
/// already in the server; the body of a refused request is never read.
async fn admission(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Ok(permit) = state.admission.clone().try_acquire_owned() else {
        telemetry::batch(429);
        // `Retry-After` is added by the router's outer layer.
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "error": "too many batches in flight; retry later" })),
        )
            .into_response();
    };
    let response = next.run(req).await;
    drop(permit);
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        telemetry::batch(413);
    }
    response
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
