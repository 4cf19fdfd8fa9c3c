//! Server: the axum webhook the apiserver POSTs audit batches to.
//!
//! Decodes each batch, evaluates the rules on a blocking pool behind a semaphore, and hands
//! the alerts to the dispatcher. Calls `audit`, `rules`, `notify` and `telemetry`.

pub mod auth;
mod error;
pub mod tls;

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
use crate::notify::{Dispatcher, Waker};
use crate::outbox::{Outbox, OutboxError};
use crate::pipeline::{Delivery, Pipeline, wall_clock_ms};
use crate::rules::{Alert, Ruleset};
use crate::telemetry;

/// What the webhook shares between requests.
struct AppState {
    rules: Arc<Ruleset>,
    pipeline: Arc<Pipeline>,
    outbox: Arc<Outbox>,
    waker: Waker,
    evaluators: Arc<Semaphore>,
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize)]
pub struct BatchReply {
    /// Events decoded and evaluated.
    pub accepted: usize,
    /// Alerts raised by the scripts.
    pub alerts: usize,
    /// Deliveries stored in the outbox (alerts × targets, after dedup, silences, budgets).
    pub queued: usize,
    /// Items that could not be decoded, with their position and reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The outbox could not be opened.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A bound webhook server, ready to run.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    dispatcher: Dispatcher,
    max_body_bytes: usize,
    drain_timeout: std::time::Duration,
}

impl Server {
    /// Opens the outbox, binds the configured address and starts the delivery tasks, which
    /// resume whatever the outbox still holds.
    pub async fn bind(config: &Config, rules: Ruleset) -> Result<Self, StartError> {
        let outbox = Arc::new(Outbox::open(&config.outbox_path)?);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let targets = Arc::new(config.targets.clone());
        let dispatcher =
            Dispatcher::start(&targets, outbox.clone(), config.delivery, http_client()?);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            listener,
            state: Arc::new(AppState {
                rules: Arc::new(rules),
                pipeline: Arc::new(Pipeline::new(config.pipeline.clone(), targets)),
                outbox,
                waker: dispatcher.waker(),
                evaluators: Arc::new(Semaphore::new(cores)),
            }),
            dispatcher,
            max_body_bytes: config.max_body_bytes,
            drain_timeout: config.drain_timeout,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; then finishes in-flight batches, stores pending
    /// budget digests, and drains delivery for at most `delivery.drain_timeout`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(self.state.clone(), self.max_body_bytes);
        let digests = tokio::spawn(digest_ticker(self.state.clone()));
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        digests.abort();
        let state = self.state.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            store(&state.outbox, &state.pipeline.flush(), wall_clock_ms())
        })
        .await;
        if let Ok(Err(err)) = flushed {
            tracing::error!(error = %err, "cannot store pending budget digests at shutdown");
        }
        self.dispatcher.shutdown(self.drain_timeout).await;
        Ok(())
    }
}

/// Stores budget digests as their windows end.
async fn digest_ticker(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let state = state.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let due = state.pipeline.due_digests(wall_clock_ms());
            let stored = store(&state.outbox, &due, wall_clock_ms());
            if !due.is_empty() {
                state.waker.wake();
            }
            stored
        })
        .await;
        if let Ok(Err(err)) = stored {
            tracing::error!(error = %err, "cannot store budget digests");
        }
    }
}

fn store(outbox: &Outbox, deliveries: &[Delivery], now_ms: i64) -> Result<(), OutboxError> {
    outbox.enqueue(deliveries, now_ms).map(drop)
}

/// The HTTP client every target shares (rustls).
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("klaxon/", env!("CARGO_PKG_VERSION")))
        // A redirected POST would turn into a bodiless GET and look delivered: refuse it.
        .redirect(reqwest::redirect::Policy::none())
        .build()
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
    let reply = evaluate_batch(&state, body).instrument(span).await?;
    if reply.queued > 0 {
        state.waker.wake();
    }
    tracing::debug!(
        events = reply.accepted,
        alerts = reply.alerts,
        queued = reply.queued,
        rejected = reply.rejected.len(),
        "batch accepted"
    );
    telemetry::batch(200);
    Ok(Json(reply))
}

/// Decodes and evaluates a batch, admits its alerts and stores them durably, on the
/// blocking pool, at most one batch per core at a time.
async fn evaluate_batch(state: &Arc<AppState>, body: Bytes) -> Result<BatchReply, ApiError> {
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
        let (alerts, mut reply) = process(&state.rules, &body)?;
        let admission = state.pipeline.admit(alerts, wall_clock_ms());
        store(&state.outbox, &admission.deliveries, wall_clock_ms()).map_err(|err| {
            tracing::error!(error = %err, "cannot store alerts; the apiserver will retry the batch");
            ApiError::Unavailable(err.to_string())
        })?;
        reply.queued = admission.deliveries.len();
        Ok(reply)
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
        queued: 0,
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
