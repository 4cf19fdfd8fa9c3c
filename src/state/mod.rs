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
//! on `/readyz`. Owns the Redis client; calls `telemetry`.

mod redis;

use std::path::PathBuf;
use std::time::Duration;

pub use self::redis::{
    AdmissionKey, BoxFuture, Claim, RedisState, SharedDedup, SharedHelpers, SharedRate,
    SharedSighting, Unavailable, Verdict,
};
use crate::notify::Secret;

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
