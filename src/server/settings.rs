//! The server's own settings, ready to use: what `serve` runs with. `config` builds them
//! from the file and the environment; the server reads nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::auth::AuthSettings;
use super::tls::TlsSettings;
use crate::notify::{DeliveryPolicy, Targets};
use crate::outbox::HistorySettings;
use crate::pipeline::PipelineSettings;
use crate::sources::FileSource;
use crate::state::StateSettings;

/// Everything `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Targets and their pacing.
    pub targets: Targets,
    /// Routes, silences, dedup and budget policies.
    pub pipeline: PipelineSettings,
    /// Retries and notice size.
    pub delivery: DeliveryPolicy,
    /// How long shutdown may spend sending what is due.
    pub drain_timeout: Duration,
    /// Data directory of the outbox.
    pub outbox_path: PathBuf,
    /// How the webhook takes connections and load.
    pub server: ServerSettings,
    /// Where the state shared by replicas lives.
    pub state: StateSettings,
    /// Audit log files (and standard input) followed beside the webhook.
    pub sources: Vec<FileSource>,
}

/// How the webhook takes connections, credentials and load.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// TLS, when configured.
    pub tls: Option<TlsSettings>,
    /// Who may post.
    pub auth: AuthSettings,
    /// Who may use the admin API (`[server.admin]`); `None`: the same as `auth`.
    pub admin: Option<AuthSettings>,
    /// How long expired runtime silences are kept (`[outbox] silence_retention`).
    pub silence_retention: Duration,
    /// Batches evaluated at once.
    pub max_concurrent_batches: usize,
    /// Batches waiting for an evaluator before 429.
    pub max_queued_batches: usize,
    /// `Retry-After` of a 429.
    pub retry_after: Duration,
    /// Slow-loris guard: longest time to send a request's headers.
    pub header_read_timeout: Duration,
    /// Slow-sender guard: longest time to send a request's body once its headers are in.
    pub body_read_timeout: Duration,
    /// Most bytes of request bodies being read at once, over all requests.
    pub body_buffer_bytes: usize,
    /// Longest shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Plain-HTTP listener for probes and metrics only, when configured.
    pub probe_listen: Option<SocketAddr>,
    /// (auditID, stage) pairs remembered for this long are skipped.
    pub event_dedup_window: Duration,
    /// Most (auditID, stage) pairs remembered.
    pub event_dedup_max_entries: usize,
    /// `[outbox] unhealthy_after`: how long the outbox may stay broken (I/O errors) before
    /// `/healthz` fails.
    pub outbox_unhealthy_after: Duration,
    /// `[history]`: how long and how much alert history is kept.
    pub history: HistorySettings,
}
