//! The webhook's routes and their guards: authentication, then admission (429 past the
//! bound, before the body is read), then the body limit (413).

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

use super::listen::Peer;
use super::{ApiError, AppState, BatchReply, batch, reload};
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
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(protected)
        .with_state(state)
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
        let secs = state.retry_after.as_secs().to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs)],
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

/// Ready when scripts are loaded and the outbox answers; the body says what was checked,
/// and whether the shared state (Redis) answers.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let rules = state.rules.load().rules().len();
    let outbox_state = state.clone();
    let sizes = tokio::task::spawn_blocking(move || outbox_state.outbox.sizes())
        .await
        .ok()
        .and_then(Result::ok);
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
        "ready": sizes.is_some(),
        "rules": rules,
        "outbox": sizes.map(|s| json!({ "pending": s.pending, "dead_letters": s.dead })),
        "last_reload": status,
        "state": shared,
    });
    let code = match sizes {
        Some(_) => StatusCode::OK,
        None => StatusCode::SERVICE_UNAVAILABLE,
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
