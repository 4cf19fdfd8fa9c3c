//! The Redis backend: one lazily connected, self-reconnecting `ConnectionManager`, calls
//! bounded by a timeout, and the up/down bookkeeping of the fail-open policy.
//!
//! Keys (all under `key_prefix`, default `klaxon:`):
//! - `seen:{auditID}:{stage}` — an event: `claimed` with `SET NX GET PX` for
//!   [`CLAIM_MS`] while its batch is evaluated and stored, then `done` for the event-dedup
//!   window; deleted if storing fails. `SET … NX GET` needs Redis 7.0 or later.
//! - `dedup:{rule}\x1f{dedup_key}` — a hash `s` (window start, ms), `w` (window, ms),
//!   `n` (suppressed since the last notice), TTL twice the window plus a minute; a batch's
//!   alerts are decided by one Lua script run read-only, and run again to record them once
//!   the batch is stored, together with:
//! - `budget:{rule}` — a hash `s` (budget window start, ms), `n` (alerts admitted in it
//!   by all replicas), TTL the window plus a minute.
//! - `helper:{rule}\x1f{key}` — `count_over`: a sorted set of sightings scored by time
//!   (read with `ZCOUNT`; older than the window dropped when a batch records its own),
//!   expiring a window after the last; `first_seen`: a string set with `SET NX PXAT` its
//!   sighting's time plus the window. Written only once the batch is stored.
//! - `silences` — a hash of the runtime silences (id → JSON) and `silences:version`, a
//!   counter bumped in the same transaction as every change; replicas poll the counter
//!   (one `GET` a second) and re-read the hash when it moved. No TTL: expired silences
//!   are removed by the replicas once their retention has passed.
//! - `rate:{target}` — the target's theoretical arrival time (GCRA, ms on Redis's own
//!   clock), so a target's rate holds across replicas; TTL the time it covers plus a
//!   second.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult, Script};
use tokio::runtime::Handle;

use super::{
    AdmissionKey, BoxFuture, RedisSettings, SharedDedup, SharedHelpers, SharedRate, SharedSighting,
    SharedSilences, SilenceRecords, Unavailable, Verdict,
};
use crate::telemetry;

/// How long an event stays claimed while its batch is evaluated and stored; a replica
/// that dies meanwhile leaves the claim to expire, so the apiserver's retry is processed.
pub const CLAIM_MS: u64 = 30_000;

/// The value of an event's key while a replica processes its batch.
const CLAIMED: &str = "claimed";
/// The value of an event's key once its batch is stored.
const DONE: &str = "done";

/// Where an event stands across the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Claimed now by this replica: process it.
    Mine,
    /// Processed and stored by some replica: skip it.
    Done,
    /// Being processed by another replica: its outcome is not known yet.
    Elsewhere,
}

/// Decides a whole batch's alerts: for each (dedup key, budget key) pair, `-1, 0` when the
/// dedup key is inside its window (its suppressed count grows), else the suppressed count
/// of the window that ended (the key's window restarts now) and the alert's number in its
/// rule's budget window (over the budget: folded). The batch's own earlier alerts count,
/// in a table of the script's. ARGV[1] is the mode: `0` decides without writing (before
/// the batch is stored), `1` decides again and writes (once it is stored).
const DEDUP_SCRIPT: &str = r"
local record = ARGV[1] == '1'
local now = tonumber(ARGV[2])
local out, dedup, budgets = {}, {}, {}
for i = 1, #KEYS / 2 do
  local key, budget_key = KEYS[2 * i - 1], KEYS[2 * i]
  local window, budget_window = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local state = dedup[key]
  if not state then
    local stored = redis.call('HMGET', key, 's', 'w', 'n')
    state = { s = tonumber(stored[1]), w = tonumber(stored[2]), n = tonumber(stored[3] or '0') }
  end
  if state.s and now < state.s + state.w then
    state.n = state.n + 1
    if record then redis.call('HINCRBY', key, 'n', 1) end
    out[2 * i - 1], out[2 * i] = -1, 0
  else
    out[2 * i - 1] = state.n
    state = { s = now, w = window, n = 0 }
    if record then
      redis.call('HSET', key, 's', now, 'w', window, 'n', 0)
      redis.call('PEXPIRE', key, window * 2 + 60000)
    end
    local budget = budgets[budget_key]
    if not budget then
      local stored = redis.call('HMGET', budget_key, 's', 'n')
      budget = { s = tonumber(stored[1]), n = tonumber(stored[2] or '0') }
    end
    if not budget.s or now >= budget.s + budget_window then
      budget = { s = now, n = 1 }
      if record then
        redis.call('HSET', budget_key, 's', now, 'n', 1)
        redis.call('PEXPIRE', budget_key, budget_window + 60000)
      end
    else
      budget.n = budget.n + 1
      if record then redis.call('HINCRBY', budget_key, 'n', 1) end
    end
    budgets[budget_key] = budget
    out[2 * i] = budget.n
  end
  dedup[key] = state
end
return out
";

/// GCRA on Redis's clock: `0` when a notice may go now (the slot is taken), else the
/// milliseconds to wait before asking again. ARGV: emission interval and burst tolerance,
/// in ms.
const RATE_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if now < tat - tolerance then
  return math.ceil(tat - tolerance - now)
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now) + 1000)
return 0
";

/// Whether the dedup script only decides or also writes.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Before the batch is stored: nothing is written.
    Decide = 0,
    /// Once it is stored: the same decisions are written.
    Record = 1,
}

/// A Redis server shared by the replicas.
pub struct RedisState {
    manager: ConnectionManager,
    runtime: Handle,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    dedup_script: Script,
    rate_script: Script,
}

impl RedisState {
    /// A client for `settings`; the connection is made on first use and remade after a
    /// failure, so klaxon starts and serves while Redis is down. Call inside the runtime.
    pub fn connect(settings: &RedisSettings) -> Result<Self, String> {
        let client = client(settings)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("state.redis_url: {e}"))?;
        telemetry::state_backend_up(true);
        Ok(Self {
            manager,
            runtime: Handle::current(),
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            up: AtomicBool::new(true),
            dedup_script: Script::new(DEDUP_SCRIPT),
            rate_script: Script::new(RATE_SCRIPT),
        })
    }

    /// `PING`, from async code (`/readyz`).
    pub async fn ping(&self) -> bool {
        self.call_async("ping", |mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .is_ok_and(|pong| pong == "PONG")
    }

    /// Claims the events with these (auditID, stage) pairs for this replica: for each,
    /// whether it is now ours, already done, or being processed by another replica.
    pub fn claim_events(&self, pairs: &[(&str, &str)]) -> Result<Vec<Claim>, Unavailable> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, stage) in pairs {
            pipe.cmd("SET")
                .arg(self.seen_key(id, stage))
                .arg(CLAIMED)
                .arg("NX")
                .arg("GET")
                .arg("PX")
                .arg(CLAIM_MS);
        }
        let replies: Vec<Option<String>> = self.call("claim", |mut conn| async move {
            pipe.query_async(&mut conn).await
        })?;
        Ok(replies
            .into_iter()
            .map(|previous| match previous.as_deref() {
                None => Claim::Mine,
                Some(DONE) => Claim::Done,
                Some(_) => Claim::Elsewhere,
            })
            .collect())
    }

    /// Marks the claimed events processed, for `window`.
    pub fn confirm_events(
        &self,
        pairs: &[(&str, &str)],
        window: Duration,
    ) -> Result<(), Unavailable> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipe = redis::pipe();
        for (id, stage) in pairs {
            pipe.cmd("SET")
                .arg(self.seen_key(id, stage))
                .arg(DONE)
                .arg("PX")
                .arg(window_ms)
                .ignore();
        }
        self.call("confirm", |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
    }

    /// Gives up the claims (the batch was not stored: the apiserver will retry it).
    pub fn release_events(&self, pairs: &[(&str, &str)]) -> Result<(), Unavailable> {
        let keys: Vec<String> = pairs
            .iter()
            .map(|(id, stage)| self.seen_key(id, stage))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.call("release", |mut conn| async move {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await
        })
    }

    fn silences_key(&self) -> String {
        format!("{}silences", self.prefix)
    }

    fn silences_version_key(&self) -> String {
        format!("{}silences:version", self.prefix)
    }

    fn helper_key(&self, key: &str) -> String {
        format!("{}helper:{key}", self.prefix)
    }

    fn seen_key(&self, audit_id: &str, stage: &str) -> String {
        format!("{}seen:{audit_id}:{stage}", self.prefix)
    }

    /// Runs `op` on the runtime from a blocking thread (batch processing, rule evaluation;
    /// never from async code), within the timeout.
    fn call<T, F, Fut>(&self, operation: &'static str, op: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.runtime.block_on(self.call_async(operation, op))
    }

    /// Runs `op` within the timeout, with the up/down bookkeeping.
    async fn call_async<T, F, Fut>(&self, operation: &'static str, op: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let result = tokio::time::timeout(self.timeout, op(self.manager.clone())).await;
        self.account(operation, flatten(result))
    }

    /// Up/down bookkeeping: an outage is logged and counted once, when it starts.
    fn account<T>(
        &self,
        operation: &'static str,
        result: Result<T, String>,
    ) -> Result<T, Unavailable> {
        match result {
            Ok(value) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("shared state (redis) reachable again: replicas share state");
                    telemetry::state_backend_up(true);
                }
                Ok(value)
            }
            Err(err) => {
                telemetry::state_backend_error(operation);
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %err,
                        "shared state (redis) unavailable: deciding with this replica's \
                         state until it is back (duplicates possible)"
                    );
                    telemetry::state_backend_up(false);
                    telemetry::state_backend_outage();
                }
                Err(Unavailable(err))
            }
        }
    }
}

impl SharedDedup for RedisState {
    fn decide(&self, keys: &[AdmissionKey], now_ms: i64) -> Result<Vec<Verdict>, Unavailable> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let invocation = self.dedup_invocation(Mode::Decide, keys, now_ms);
        let replies: Vec<i64> = self.call("dedup", |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })?;
        Ok(replies
            .chunks(2)
            .map(|pair| match u64::try_from(pair[0]) {
                Err(_) => Verdict::Duplicate,
                Ok(suppressed) => Verdict::First {
                    suppressed,
                    sent: u64::try_from(pair.get(1).copied().unwrap_or(0)).unwrap_or(0),
                },
            })
            .collect())
    }

    fn record(&self, keys: &[AdmissionKey], now_ms: i64) -> Result<(), Unavailable> {
        if keys.is_empty() {
            return Ok(());
        }
        let invocation = self.dedup_invocation(Mode::Record, keys, now_ms);
        self.call("dedup_record", |mut conn| async move {
            invocation.invoke_async::<Vec<i64>>(&mut conn).await
        })
        .map(drop)
    }
}

impl RedisState {
    /// An invocation of the dedup script, in `mode`, with the batch's keys and windows.
    fn dedup_invocation(
        &self,
        mode: Mode,
        keys: &[AdmissionKey],
        now_ms: i64,
    ) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.dedup_script.prepare_invoke();
        invocation.arg(mode as u8).arg(now_ms);
        for key in keys {
            invocation
                .key(format!("{}dedup:{}", self.prefix, key.dedup_key))
                .key(format!("{}budget:{}", self.prefix, key.rule))
                .arg(key.dedup_window_ms.max(1))
                .arg(key.budget_window_ms.max(1));
        }
        invocation
    }
}

impl SharedHelpers for RedisState {
    fn count_within(&self, key: &str, window_ms: i64, now_ms: i64) -> Result<i64, Unavailable> {
        let key = self.helper_key(key);
        let after = format!("({}", now_ms - window_ms.max(1));
        self.call("count_over", |mut conn| async move {
            redis::cmd("ZCOUNT")
                .arg(key)
                .arg(after)
                .arg("+inf")
                .query_async(&mut conn)
                .await
        })
    }

    fn seen_within(&self, key: &str, _window_ms: i64, _now_ms: i64) -> Result<bool, Unavailable> {
        let key = self.helper_key(key);
        self.call("first_seen", |mut conn| async move {
            redis::cmd("EXISTS").arg(key).query_async(&mut conn).await
        })
    }

    fn record(&self, sightings: &[SharedSighting<'_>]) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        for sighting in sightings {
            let key = self.helper_key(sighting.key);
            let window = sighting.window_ms.max(1);
            let until = sighting.at_ms.saturating_add(window);
            if sighting.once_per_window {
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PXAT")
                    .arg(until)
                    .ignore();
            } else {
                let member = format!("{}:{:x}", sighting.at_ms, rand::random::<u64>());
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg(sighting.at_ms)
                    .arg(member)
                    .ignore()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(sighting.at_ms - window)
                    .ignore()
                    .cmd("PEXPIREAT")
                    .arg(&key)
                    .arg(until)
                    .arg("GT")
                    .ignore()
                    .cmd("PEXPIREAT")
                    .arg(&key)
                    .arg(until)
                    .arg("NX")
                    .ignore();
            }
        }
        self.call("record_sightings", |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
    }
}

impl SharedRate for RedisState {
    fn take_slot<'a>(
        &'a self,
        target: &'a str,
        per_second: f64,
        burst: u32,
    ) -> BoxFuture<'a, Result<Duration, Unavailable>> {
        Box::pin(async move {
            let interval = 1000.0 / per_second.max(1e-6);
            let tolerance = interval * f64::from(burst.max(1) - 1);
            let mut invocation = self.rate_script.prepare_invoke();
            invocation
                .key(format!("{}rate:{target}", self.prefix))
                .arg(interval)
                .arg(tolerance);
            self.call_async("rate", |mut conn| async move {
                invocation.invoke_async::<u64>(&mut conn).await
            })
            .await
            .map(Duration::from_millis)
        })
    }
}

fn flatten<T>(result: Result<RedisResult<T>, tokio::time::error::Elapsed>) -> Result<T, String> {
    match result {
        Ok(Ok(value)) => Ok(value),
        // The error's text names the failure, never the password.
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

fn client(settings: &RedisSettings) -> Result<Client, String> {
    use redis::IntoConnectionInfo;
    let mut info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("state.redis_url: {e}"))?;
    if let Some(password) = &settings.password {
        let redis = info
            .redis_settings()
            .clone()
            .set_password(password.expose());
        info = info.set_redis_settings(redis);
    }
    match &settings.ca_file {
        None => Client::open(info).map_err(|e| format!("state.redis_url: {e}")),
        Some(path) => {
            let root_cert = std::fs::read(path)
                .map_err(|e| format!("state.redis_ca_file: cannot read {}: {e}", path.display()))?;
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .map_err(|e| format!("state.redis_ca_file: {e}"))
        }
    }
}

impl SharedSilences for RedisState {
    fn silences_version(&self) -> Result<Option<u64>, Unavailable> {
        let key = self.silences_version_key();
        self.call("silences", |mut conn| async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<u64>>(&mut conn)
                .await
        })
    }

    fn silences(&self) -> Result<SilenceRecords, Unavailable> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(self.silences_version_key())
            .cmd("HGETALL")
            .arg(self.silences_key());
        self.call("silences", |mut conn| async move {
            pipe.query_async::<(Option<u64>, Vec<(String, String)>)>(&mut conn)
                .await
        })
        .map(|(version, records)| SilenceRecords { version, records })
    }

    fn write_silences(
        &self,
        put: &[(String, String)],
        remove: &[String],
    ) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !put.is_empty() {
            pipe.cmd("HSET").arg(self.silences_key());
            for (id, json) in put {
                pipe.arg(id).arg(json);
            }
            pipe.ignore();
        }
        if !remove.is_empty() {
            pipe.cmd("HDEL")
                .arg(self.silences_key())
                .arg(remove)
                .ignore();
        }
        pipe.cmd("INCR").arg(self.silences_version_key()).ignore();
        self.call("silences", |mut conn| async move {
            pipe.query_async::<()>(&mut conn).await
        })
    }
}
