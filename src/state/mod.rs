//! Shared state: what several replicas must agree on for an alert to go out once — which
//! (auditID, stage) pairs were processed, which alert dedup keys are inside their window
//! (with their suppressed counts), how much of each rule's budget is spent, the
//! `count_over`/`first_seen` sightings — and each target's rate, which is per webhook, not
//! per replica.
//!
//! `memory` (the default) keeps it in the process (`server::seen`, `pipeline`); `redis`
//! keeps it in a Redis server shared by the replicas, with atomic operations and bounded
//! TTLs. When Redis cannot be reached the callers fall back to their local state (fail
//! open: a duplicate is better than silence); the outage is logged once, counted, and shown
//! on `/readyz`. The runtime silences are kept there too, so a silence made on one
//! replica holds alerts on all. Owns the Redis client and the traits its callers use. Calls `secret` (the
//! password) and `telemetry`.

mod redis;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use self::redis::{Claim, RedisState};
use crate::secret::Secret;

/// Where the shared state lives.
#[derive(Debug, Clone, Default)]
pub enum StateSettings {
    /// In this process only (one replica).
    #[default]
    Memory,
    /// In a Redis server shared by the replicas.
    Redis(RedisSettings),
}

/// How to reach the shared Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://…` (TLS); no password in it.
    pub url: String,
    /// The password (`AUTH`), from the config, an environment variable or a file.
    pub password: Option<Secret>,
    /// PEM CA bundle for `rediss://` servers with a private CA (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key: replicas of one deployment share it.
    pub key_prefix: String,
    /// Longest a batch waits for Redis before falling back to local state.
    pub timeout: Duration,
}

/// A boxed future, for the async method of a trait object.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A target's rate, held across replicas.
pub trait SharedRate: Send + Sync {
    /// Takes a slot of `target`'s rate (`per_second`, `burst`) now, or says how long to
    /// wait before asking again.
    fn take_slot<'a>(
        &'a self,
        target: &'a str,
        per_second: f64,
        burst: u32,
    ) -> BoxFuture<'a, Result<Duration, Unavailable>>;
}

/// The shared state could not be reached (or answered an error) in time.
#[derive(Debug, thiserror::Error)]
#[error("shared state unavailable: {0}")]
pub struct Unavailable(pub(super) String);

/// One alert as the shared store sees it.
#[derive(Debug, Clone)]
pub struct AdmissionKey {
    /// The rule and the alert's dedup key.
    pub dedup_key: String,
    /// The rule's dedup window, ms.
    pub dedup_window_ms: i64,
    /// The rule.
    pub rule: String,
    /// The rule's budget window, ms.
    pub budget_window_ms: i64,
}

/// What all replicas together decided for one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its dedup key is inside its window.
    Duplicate,
    /// First in its window: the previous window's suppressed count, and the alert's
    /// number in its rule's budget window.
    First {
        /// Alerts suppressed in the dedup window that ended.
        suppressed: u64,
        /// 1 for the first alert of the rule's budget window, and so on.
        sent: u64,
    },
}

/// Alert dedup and rule budgets decided across replicas, in two steps: a batch's alerts
/// are decided without writing, and recorded once the batch is stored.
pub trait SharedDedup: Send + Sync {
    /// One verdict per key, in order (the alerts of one batch); changes nothing.
    fn decide(&self, keys: &[AdmissionKey], now_ms: i64) -> Result<Vec<Verdict>, Unavailable>;
    /// Records the decided keys (the batch is stored).
    fn record(&self, keys: &[AdmissionKey], now_ms: i64) -> Result<(), Unavailable>;
}

/// The shared silences at one version.
#[derive(Debug, Clone, Default)]
pub struct SilenceRecords {
    /// The version they were read at; `None`: the store holds none yet.
    pub version: Option<u64>,
    /// (id, JSON) of each.
    pub records: Vec<(String, String)>,
}

/// Runtime silences shared by the replicas: opaque records (`id`, JSON) and a version that
/// changes with every write, so a replica re-reads them only when something changed.
pub trait SharedSilences: Send + Sync {
    /// The current version; `None` when the store holds no silences yet (a new or emptied
    /// Redis, which a replica seeds with its own).
    fn silences_version(&self) -> Result<Option<u64>, Unavailable>;
    /// Every stored silence, with the version read in the same transaction.
    fn silences(&self) -> Result<SilenceRecords, Unavailable>;
    /// Stores `put` (replacing records with the same id), removes `remove`, and bumps the
    /// version, in one transaction.
    fn write_silences(
        &self,
        put: &[(String, String)],
        remove: &[String],
    ) -> Result<(), Unavailable>;
}

/// A sighting of a stateful helper's key, committed with its batch.
#[derive(Debug, Clone, Copy)]
pub struct SharedSighting<'a> {
    /// The rule-scoped key.
    pub key: &'a str,
    /// The helper's window, ms.
    pub window_ms: i64,
    /// When it was seen (ms since the epoch).
    pub at_ms: i64,
    /// `first_seen` (kept once per window) rather than `count_over` (every one counts).
    pub once_per_window: bool,
}

/// The `count_over` and `first_seen` sightings of all replicas. Reads see only committed
/// sightings: a batch records its own with [`SharedHelpers::record`] once it is stored.
pub trait SharedHelpers: Send + Sync {
    /// Committed sightings of `key` within `window_ms` before `now_ms`.
    fn count_within(&self, key: &str, window_ms: i64, now_ms: i64) -> Result<i64, Unavailable>;
    /// Whether `key` was seen within `window_ms` (a `first_seen` sighting).
    fn seen_within(&self, key: &str, window_ms: i64, now_ms: i64) -> Result<bool, Unavailable>;
    /// Records a stored batch's sightings.
    fn record(&self, sightings: &[SharedSighting<'_>]) -> Result<(), Unavailable>;
}
