//! Server: the axum webhook the apiserver POSTs audit batches to.
//!
//! Decodes each batch, evaluates the rules on a blocking pool behind a semaphore, and hands
//! the alerts to the dispatcher. Calls `audit`, `rules`, `notify` and `telemetry`.

mod error;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use error::ApiError;

use crate::audit::{self, DecodeError};
use crate::config::Config;
use crate::notify::Dispatcher;
use crate::rules::{Alert, Ruleset};
use crate::telemetry;

/// What the webhook shares between requests.
struct AppState {
    rules: Arc<Ruleset>,
    dispatcher: Arc<Dispatcher>,
    evaluators: Arc<Semaphore>,
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize)]
pub struct BatchReply {
    /// Events decoded and evaluated.
    pub accepted: usize,
    /// Alerts raised.
    pub alerts: usize,
    /// Items that could not be decoded, with their position and reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

/// A bound webhook server, ready to run.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    max_body_bytes: usize,
}

impl Server {
    /// Binds the configured address and starts the delivery tasks.
    pub async fn bind(config: &Config, rules: Ruleset) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let client = http_client()?;
        let dispatcher = Dispatcher::start(config.targets.clone(), client);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                rules: Arc::new(rules),
                dispatcher: Arc::new(dispatcher),
                evaluators: Arc::new(Semaphore::new(cores)),
            }),
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes in-flight batches and drains delivery.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(self.state.clone(), self.max_body_bytes);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        let dispatcher = self.state.dispatcher.clone();
        drop(self.state);
        match Arc::into_inner(dispatcher) {
            Some(dispatcher) => dispatcher.shutdown().await,
            None => {
                tracing::warn!("delivery still referenced at shutdown; queued alerts may be lost")
            }
        }
        Ok(())
    }
}

/// The HTTP client every target shares (rustls).
pub fn http_client() -> std::io::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("klaxon/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(std::io::Error::other)
}

fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", post(ingest))
        .route("/audit", post(ingest))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
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
    let (alerts, reply) = evaluate_batch(&state, body).instrument(span).await?;
    tracing::debug!(
        events = reply.accepted,
        alerts = reply.alerts,
        rejected = reply.rejected.len(),
        "batch accepted"
    );
    for alert in alerts {
        state.dispatcher.submit(alert).await;
    }
    telemetry::batch(200);
    Ok(Json(reply))
}

/// Decodes and evaluates a batch on the blocking pool, at most one batch per core at a time.
async fn evaluate_batch(
    state: &AppState,
    body: Bytes,
) -> Result<(Vec<Alert>, BatchReply), ApiError> {
    let permit = state
        .evaluators
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let rules = state.rules.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let _permit = permit;
        process(&rules, &body)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("evaluation task failed: {e}")))?
}

fn process(rules: &Ruleset, body: &[u8]) -> Result<(Vec<Alert>, BatchReply), ApiError> {
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
    telemetry::events_received(decoded.events.len());
    let accepted = decoded.events.len();
    let mut alerts = Vec::new();
    for event in decoded.events {
        let evaluation = rules.evaluate(Arc::new(event));
        for err in &evaluation.errors {
            tracing::warn!(
                rule = %err.rule,
                location = %err.location,
                audit_id = %err.audit_id,
                error = %err.message,
                "script failed"
            );
            telemetry::rule_error(&err.rule);
        }
        for alert in &evaluation.alerts {
            telemetry::rule_matched(&alert.rule);
        }
        alerts.extend(evaluation.alerts);
    }
    for rule in rules.rules() {
        telemetry::rules_evaluated(rule.name(), accepted);
    }
    let reply = BatchReply {
        accepted,
        alerts: alerts.len(),
        rejected: decoded.errors.iter().map(ToString::to_string).collect(),
    };
    Ok((alerts, reply))
}

fn summarize(errors: &[DecodeError]) -> Option<String> {
    let first = errors.first()?;
    Some(match errors.len() {
        1 => format!("cannot decode body: {first}"),
        n => format!("cannot decode body: {first} (and {} more)", n - 1),
    })
}
