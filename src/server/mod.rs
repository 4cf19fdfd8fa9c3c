//! Server: the webhook the apiserver POSTs audit batches to, and the followed audit log
//! files beside it.
//!
//! Takes connections (plain or TLS), authenticates, reads each body under a size limit, a
//! deadline and a shared byte budget, bounds the load (429 past it), skips
//! events already processed, evaluates the rules on a blocking pool behind a semaphore,
//! admits the alerts through the pipeline and stores them in the outbox before answering.
//! Reloads scripts and pipeline settings on change. Optionally serves the probes and metrics
//! on a second, plain-HTTP listener, stopped by the same shutdown. Starts the followers of
//! `sources` from their stored positions; their chunks take the webhook's batch path and
//! are stored with their positions; the same shutdown stops them. Serves the admin API
//! (`/api/v1/silences`) behind `[server.admin]` (`admin.rs`, `silences.rs`) and keeps the
//! runtime silences fresh from the other replicas on its one-second ticker. Serves the
//! alert history (`history.rs`) and writes what waits of it once a second. Serves the web
//! console at `/ui/` and its JSON API (`console.rs`) behind the same credentials as the
//! admin API. Takes its own settings
//! ([`ServeSettings`]) and a reload closure from its caller. Calls `pipeline`, `notify`,
//! `outbox`, `rules`, `state`, `audit`, `sources`, `clock`, `secret` and `telemetry`.

mod admin;
pub mod auth;
mod batch;
mod console;
mod error;
mod filewatch;
mod guard;
mod history;
pub mod listen;
mod reload;
mod routes;
mod rule_stats;
mod seen;
mod settings;
mod silences;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use batch::BatchReply;
pub use error::ApiError;
pub use reload::{Reload, ReloadSource, Reloaded};
pub use settings::{ServeSettings, ServerSettings};

use crate::clock::wall_clock_ms;
use crate::notify::{Dispatcher, Waker};
use crate::outbox::{Delivery, Outbox, OutboxError};
use crate::pipeline::{Pipeline, SilenceStore};
use crate::rules::Ruleset;
use crate::sources::{Chunk, FileSource, Followers, Position, Sink};
use crate::state::{RedisState, StateSettings};
use crate::telemetry;
use auth::AuthSettings;
use reload::ReloadStatus;
use seen::SeenFilter;

/// What the webhook shares between requests.
struct AppState {
    rules: ArcSwap<Ruleset>,
    pipeline: Arc<Pipeline>,
    outbox: Arc<Outbox>,
    waker: Waker,
    seen: SeenFilter,
    auth: AuthSettings,
    /// What the admin API (`/api/v1/…`) takes: `[server.admin]`, else `auth`.
    admin_auth: AuthSettings,
    /// The runtime silences: durable, shared through Redis when configured.
    silences: Arc<SilenceStore>,
    /// Batches evaluated at once.
    evaluators: Arc<Semaphore>,
    /// Batches in the server at once (evaluated + queued); past it, 429.
    admission: Arc<Semaphore>,
    /// Size, deadline and shared byte budget of the bodies being read.
    body_limits: routes::BodyLimits,
    retry_after: Duration,
    /// How long the outbox may stay broken before `/healthz` fails.
    outbox_unhealthy_after: Duration,
    reload: Option<ReloadSource>,
    reload_status: Mutex<ReloadStatus>,
    /// State shared with other replicas (`state.backend = "redis"`).
    shared: Option<Arc<RedisState>>,
    /// How long processed events are remembered (the shared claims' lifetime too).
    event_dedup_window: Duration,
    /// Batches whose outbox write failed with an I/O error: the file may hold them all
    /// the same; the next batch finds out, so that the apiserver's retry is skipped then.
    uncertain: Mutex<Vec<batch::Uncertain>>,
    /// Per-rule counts since the start, for the console.
    rule_stats: rule_stats::RuleStats,
    /// Most alerts in one notice (the console's playground replays with it).
    max_alerts_per_notice: usize,
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
    /// The TLS configuration could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The shared state's client could not be built (a bad URL or CA file).
    #[error("shared state: {0}")]
    State(String),
    /// The stored silences could not be read.
    #[error(transparent)]
    Silences(#[from] crate::pipeline::silence::SilenceError),
}

/// A bound webhook server, ready to run.
pub struct Server {
    listener: TcpListener,
    /// The plain-HTTP probe listener (`server.probe_listen`) and its bound address.
    probes: Option<(TcpListener, SocketAddr)>,
    state: Arc<AppState>,
    dispatcher: Dispatcher,
    drain_timeout: Duration,
    connections: listen::ConnectionSettings,
    /// Followed files and standard input, with the stored positions of the files.
    sources: Vec<FileSource>,
    positions: BTreeMap<String, Position>,
}

impl Server {
    /// Opens the outbox, binds the configured address and starts the delivery tasks, which
    /// resume whatever the outbox still holds.
    pub async fn bind(settings: &ServeSettings, rules: Ruleset) -> Result<Self, StartError> {
        // Installed before anything counts, so /metrics sees every count.
        telemetry::prometheus();
        let outbox = Arc::new(Outbox::open(&settings.outbox_path)?);
        Self::bind_with_outbox(settings, rules, outbox).await
    }

    /// Like [`Server::bind`], on an outbox the caller opened (tests open it on a storage
    /// backend that fails on demand); `settings.outbox_path` is not used.
    pub async fn bind_with_outbox(
        settings: &ServeSettings,
        rules: Ruleset,
        outbox: Arc<Outbox>,
    ) -> Result<Self, StartError> {
        if let Some(tls) = &settings.server.tls {
            tls::check(tls)?;
        }
        // Installed before anything counts, so /metrics sees every count.
        telemetry::prometheus();
        telemetry::outbox_healthy(outbox.health().is_healthy());
        let s = &settings.server;
        outbox.set_history(s.history);
        let seen = remembered(&outbox, s.event_dedup_window, s.event_dedup_max_entries)?;
        let positions = stored_positions(&outbox, &settings.sources)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let probes = match settings.server.probe_listen {
            Some(addr) => Some(bind_probes(addr).await?),
            None => None,
        };
        let targets = Arc::new(settings.targets.clone());
        let shared = match &settings.state {
            StateSettings::Memory => None,
            StateSettings::Redis(redis) => Some(Arc::new(
                RedisState::connect(redis).map_err(StartError::State)?,
            )),
        };
        let mut pipeline = Pipeline::new(settings.pipeline.clone(), targets.clone());
        if let Some(shared) = &shared {
            rules.share_helpers(shared.clone());
            // Connect now, so the first batch does not pay for it; when Redis is down this
            // logs the outage and klaxon serves with local state.
            shared.ping().await;
            pipeline = pipeline.with_shared(shared.clone());
        }
        let silences = Arc::new(SilenceStore::open(
            pipeline.silences().clone(),
            outbox.clone(),
            shared
                .clone()
                .map(|s| s as Arc<dyn crate::state::SharedSilences>),
            s.silence_retention,
        )?);
        // Off the async threads: with Redis, a refresh blocks on its calls.
        let store = silences.clone();
        let _ = tokio::task::spawn_blocking(move || store.refresh(wall_clock_ms())).await;
        let shared_rate = shared
            .clone()
            .map(|s| s as Arc<dyn crate::state::SharedRate>);
        let dispatcher = Dispatcher::start(
            &targets,
            outbox.clone(),
            settings.delivery,
            http_client()?,
            shared_rate,
        );
        telemetry::rules_loaded(rules.rules().len());
        Ok(Self {
            listener,
            probes,
            state: Arc::new(AppState {
                rules: ArcSwap::from_pointee(rules),
                pipeline: Arc::new(pipeline),
                outbox,
                waker: dispatcher.waker(),
                seen,
                auth: s.auth.clone(),
                admin_auth: admin::admin_auth(s.admin.as_ref(), &s.auth),
                silences,
                evaluators: Arc::new(Semaphore::new(s.max_concurrent_batches)),
                admission: Arc::new(Semaphore::new(
                    s.max_concurrent_batches + s.max_queued_batches,
                )),
                body_limits: routes::BodyLimits {
                    max_bytes: settings.max_body_bytes,
                    read_timeout: s.body_read_timeout,
                    budget: Arc::new(Semaphore::new(s.body_buffer_bytes)),
                },
                retry_after: s.retry_after,
                outbox_unhealthy_after: s.outbox_unhealthy_after,
                reload: None,
                reload_status: Mutex::new(ReloadStatus::default()),
                shared,
                event_dedup_window: s.event_dedup_window,
                uncertain: Mutex::new(Vec::new()),
                rule_stats: rule_stats::RuleStats::default(),
                max_alerts_per_notice: settings.delivery.max_alerts_per_notice,
            }),
            dispatcher,
            drain_timeout: settings.drain_timeout,
            connections: listen::ConnectionSettings {
                tls: s.tls.clone(),
                header_read_timeout: s.header_read_timeout,
                shutdown_timeout: s.shutdown_timeout,
            },
            sources: settings.sources.clone(),
            positions,
        })
    }

    /// Enables hot reload from `source`: on changes under the script directories or to the
    /// config file, on SIGHUP, and on `POST /-/reload`.
    pub fn with_reload(mut self, source: ReloadSource) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.reload = Some(source);
        }
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The probe listener's bound address (useful with port 0), when `server.probe_listen`
    /// is set.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probes.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves (the webhook, the probe listener when configured, the followed files) until
    /// `shutdown` completes; then the listeners stop accepting and finish in-flight
    /// requests, the followers finish the chunk in hand and stop, pending budget digests
    /// are stored, and delivery drains for at most `delivery.drain_timeout`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = routes::router(self.state.clone());
        let ticker = tokio::spawn(ticker(self.state.clone()));
        let watcher = reload::spawn_triggers(self.state.clone());
        let followers = Followers::start(
            &self.sources,
            |key| self.positions.get(key).copied(),
            &chunk_sink(&self.state),
            &tokio::runtime::Handle::current(),
        )?;
        let (stop, stopping) = watch::channel(false);
        let trigger = tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let probe_settings = listen::ConnectionSettings {
            tls: None,
            ..self.connections.clone()
        };
        let probes = self.probes.map(|(listener, addr)| {
            tracing::info!(probe_listen = %addr, "serving /healthz, /readyz and /metrics over plain HTTP");
            let app = routes::probe_router(self.state.clone());
            listen::serve(listener, app, probe_settings, stopped(stopping.clone()))
        });
        let main = listen::serve(self.listener, app, self.connections, stopped(stopping));
        let (served, probed) = tokio::join!(main, async {
            match probes {
                Some(probes) => probes.await,
                None => Ok(()),
            }
        });
        trigger.abort();
        followers.stop().await;
        ticker.abort();
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        let state = self.state.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let now_ms = wall_clock_ms();
            state
                .pipeline
                .store_due_digests(i64::MAX, |due| store(&state.outbox, due, now_ms))?;
            state.outbox.flush_history(now_ms)
        })
        .await;
        if let Ok(Err(err)) = flushed {
            tracing::error!(error = %err, "cannot store pending budget digests or history at shutdown");
        }
        self.dispatcher.shutdown(self.drain_timeout).await;
        served.and(probed).map_err(std::io::Error::other)
    }
}

/// The seen filter, holding the events of the batches stored within `window` (a retry of
/// a batch stored before a restart is skipped too).
fn remembered(
    outbox: &Outbox,
    window: Duration,
    max_entries: usize,
) -> Result<SeenFilter, StartError> {
    let seen = SeenFilter::new(window, max_entries);
    let processed = outbox.processed_within(window, wall_clock_ms())?;
    seen.record(
        processed
            .iter()
            .filter_map(|(audit_id, stage)| seen.key(audit_id, stage)),
    );
    Ok(seen)
}

/// The stored position of each followed file (standard input has none).
fn stored_positions(
    outbox: &Outbox,
    sources: &[FileSource],
) -> Result<BTreeMap<String, Position>, StartError> {
    let mut positions = BTreeMap::new();
    for key in sources.iter().filter_map(FileSource::key) {
        if let Some(position) = outbox.position(&key)? {
            positions.insert(key, position);
        }
    }
    Ok(positions)
}

/// Where the followers hand their chunks: the webhook's batch path; an error (the outbox
/// unavailable, another replica busy with the events) leaves the chunk to be offered again.
fn chunk_sink(state: &Arc<AppState>) -> Sink {
    let state = state.clone();
    Arc::new(move |chunk: Chunk| {
        let state = state.clone();
        Box::pin(async move {
            let reply = batch::handle(&state, batch::Input::Lines(chunk))
                .await
                .map_err(|err| err.to_string())?;
            if reply.queued > 0 {
                state.waker.wake();
            }
            Ok(())
        })
    })
}

/// Binds the probe listener, returning it with the address it got.
async fn bind_probes(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Completes once `stopping` turns true (or its sender is gone): the one shutdown signal
/// both listeners follow.
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Once a second: updates the outbox gauges (which also lets a broken outbox reopen when
/// its backoff has passed), then stores budget digests whose windows ended, then writes
/// the alert history waiting in memory and prunes what is past its bounds.
async fn ticker(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let state = state.clone();
        let result = tokio::task::spawn_blocking(move || upkeep(&state)).await;
        match result {
            // The outbox logged the break once; it is reopening.
            Ok(Err(err @ OutboxError::Unavailable { .. })) => {
                tracing::debug!(error = %err, "outbox upkeep skipped");
            }
            Ok(Err(err)) => tracing::error!(error = %err, "outbox upkeep failed"),
            _ => {}
        }
    }
}

/// One tick's work. Digests are taken from the pipeline only once the outbox answered, and
/// stay due if storing them fails.
fn upkeep(state: &AppState) -> Result<(), OutboxError> {
    telemetry::event_dedup_entries(state.seen.len());
    state.silences.refresh(wall_clock_ms());
    let sizes = state.outbox.sizes();
    telemetry::outbox_healthy(state.outbox.health().is_healthy());
    let sizes = sizes?;
    telemetry::outbox_sizes(sizes.pending, sizes.dead);
    let now_ms = wall_clock_ms();
    let stored = state.pipeline.store_due_digests(now_ms, |due| {
        store(&state.outbox, due, now_ms).map(|()| due.len())
    })?;
    if stored > 0 {
        state.waker.wake();
    }
    state.outbox.flush_history(now_ms)
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
