//! Outbox: the durable store between admission and delivery (redb, fsync on commit).
//!
//! An alert is written here before the webhook answers 200; a target's dispatcher removes
//! it once delivered, reschedules it after a failure, or moves it to the dead letters. Every
//! process may open the same file (the CLI beside a running daemon). Calls nothing else.

use std::path::{Path, PathBuf};

use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::pipeline::Delivery;
use crate::rules::Alert;

/// File name of the outbox inside its directory.
pub const FILE_NAME: &str = "outbox.redb";

/// Pending entries by (target, id): ids grow, so each target's entries are in arrival order.
const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
/// Dead letters by id.
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
/// Counters (`next_id`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Memory redb may use for its page cache.
const CACHE_BYTES: usize = 8 << 20;

/// An outbox failure: the file could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The data directory could not be created.
    #[error("outbox directory {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// redb failed.
    #[error("outbox: {0}")]
    Store(#[from] redb::Error),
    /// An entry could not be encoded or decoded.
    #[error("outbox entry: {0}")]
    Encoding(#[from] serde_json::Error),
    /// The blocking task running an outbox operation failed.
    #[error("outbox task: {0}")]
    Task(String),
}

/// Turns any of redb's error types into [`OutboxError`] (`?` converts only once).
trait Store<T> {
    fn store(self) -> Result<T, OutboxError>;
}

impl<T, E: Into<redb::Error>> Store<T> for Result<T, E> {
    fn store(self) -> Result<T, OutboxError> {
        self.map_err(|e| OutboxError::Store(e.into()))
    }
}

/// One alert waiting for delivery to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique, increasing id.
    pub id: u64,
    /// The target that will send it.
    pub target: String,
    /// The alert.
    pub alert: Alert,
    /// When it was stored (ms since the epoch).
    pub enqueued_at_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub next_attempt_ms: i64,
    /// When the first failed attempt happened; the retry budget counts from there.
    pub first_failure_ms: Option<i64>,
    /// The last failure, for `klaxon outbox list`.
    pub last_error: Option<String>,
}

/// An entry that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry as it was.
    pub entry: Entry,
    /// Why it was given up.
    pub reason: String,
    /// When (ms since the epoch).
    pub dead_at_ms: i64,
}

/// Which dead letters `retry` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter.
    All,
    /// These ids.
    Ids(Vec<u64>),
}

/// Counts for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Entries waiting for delivery.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// The durable outbox.
pub struct Outbox {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .store()?;
        let txn = db.begin_write().store()?;
        txn.open_table(PENDING).store()?;
        txn.open_table(DEAD).store()?;
        txn.open_table(META).store()?;
        txn.commit().store()?;
        Ok(Self { db, path })
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores deliveries in one durable transaction (one fsync); returns their ids.
    pub fn enqueue(&self, deliveries: &[Delivery], now_ms: i64) -> Result<Vec<u64>, OutboxError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_write().store()?;
        let mut ids = Vec::with_capacity(deliveries.len());
        {
            let mut meta = txn.open_table(META).store()?;
            let mut next = meta.get("next_id").store()?.map_or(1, |v| v.value());
            let mut pending = txn.open_table(PENDING).store()?;
            for delivery in deliveries {
                let entry = Entry {
                    id: next,
                    target: delivery.target.clone(),
                    alert: delivery.alert.clone(),
                    enqueued_at_ms: now_ms,
                    attempts: 0,
                    next_attempt_ms: now_ms,
                    first_failure_ms: None,
                    last_error: None,
                };
                let bytes = serde_json::to_vec(&entry)?;
                pending
                    .insert((entry.target.as_str(), next), bytes.as_slice())
                    .store()?;
                ids.push(next);
                next += 1;
            }
            meta.insert("next_id", next).store()?;
        }
        txn.commit().store()?;
        Ok(ids)
    }

    /// Up to `limit` pending entries of `target`, oldest first.
    pub fn pending(&self, target: &str, limit: usize) -> Result<Vec<Entry>, OutboxError> {
        let txn = self.db.begin_read().store()?;
        let table = txn.open_table(PENDING).store()?;
        let mut out = Vec::new();
        for row in table.range((target, 0)..=(target, u64::MAX)).store()? {
            let (_, value) = row.store()?;
            out.push(serde_json::from_slice(value.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every pending entry of every target.
    pub fn all_pending(&self) -> Result<Vec<Entry>, OutboxError> {
        let txn = self.db.begin_read().store()?;
        let table = txn.open_table(PENDING).store()?;
        let mut out: Vec<Entry> = Vec::new();
        for row in table.iter().store()? {
            let (_, value) = row.store()?;
            out.push(serde_json::from_slice(value.value())?);
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    /// Removes delivered entries.
    pub fn complete(&self, target: &str, ids: &[u64]) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().store()?;
        {
            let mut table = txn.open_table(PENDING).store()?;
            for id in ids {
                table.remove((target, *id)).store()?;
            }
        }
        txn.commit().store()
    }

    /// Records a failed attempt: attempts + 1, the error, and when to try again.
    pub fn reschedule(
        &self,
        target: &str,
        ids: &[u64],
        next_attempt_ms: i64,
        now_ms: i64,
        error: &str,
    ) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().store()?;
        {
            let mut table = txn.open_table(PENDING).store()?;
            for id in ids {
                let Some(bytes) = table
                    .get((target, *id))
                    .store()?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let mut entry: Entry = serde_json::from_slice(&bytes)?;
                entry.attempts += 1;
                entry.next_attempt_ms = next_attempt_ms;
                entry.first_failure_ms.get_or_insert(now_ms);
                entry.last_error = Some(error.to_owned());
                let bytes = serde_json::to_vec(&entry)?;
                table.insert((target, *id), bytes.as_slice()).store()?;
            }
        }
        txn.commit().store()
    }

    /// Moves entries to the dead letters with `reason`.
    pub fn bury(
        &self,
        target: &str,
        ids: &[u64],
        reason: &str,
        now_ms: i64,
    ) -> Result<(), OutboxError> {
        let txn = self.db.begin_write().store()?;
        {
            let mut pending = txn.open_table(PENDING).store()?;
            let mut dead = txn.open_table(DEAD).store()?;
            for id in ids {
                let Some(bytes) = pending
                    .remove((target, *id))
                    .store()?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let letter = DeadLetter {
                    entry: serde_json::from_slice(&bytes)?,
                    reason: reason.to_owned(),
                    dead_at_ms: now_ms,
                };
                let bytes = serde_json::to_vec(&letter)?;
                dead.insert(*id, bytes.as_slice()).store()?;
            }
        }
        txn.commit().store()
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        let txn = self.db.begin_read().store()?;
        let table = txn.open_table(DEAD).store()?;
        let mut out = Vec::new();
        for row in table.iter().store()? {
            let (_, value) = row.store()?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    /// Moves dead letters back to pending with a fresh retry budget; returns how many.
    pub fn retry_dead(&self, selection: &Selection, now_ms: i64) -> Result<usize, OutboxError> {
        let txn = self.db.begin_write().store()?;
        let mut moved = 0;
        {
            let mut dead = txn.open_table(DEAD).store()?;
            let mut pending = txn.open_table(PENDING).store()?;
            let ids: Vec<u64> = match selection {
                Selection::All => {
                    let mut all = Vec::new();
                    for row in dead.iter().store()? {
                        all.push(row.store()?.0.value());
                    }
                    all
                }
                Selection::Ids(ids) => ids.clone(),
            };
            for id in ids {
                let Some(bytes) = dead.remove(id).store()?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let letter: DeadLetter = serde_json::from_slice(&bytes)?;
                let entry = Entry {
                    attempts: 0,
                    next_attempt_ms: now_ms,
                    first_failure_ms: None,
                    enqueued_at_ms: now_ms,
                    ..letter.entry
                };
                let bytes = serde_json::to_vec(&entry)?;
                pending
                    .insert((entry.target.as_str(), entry.id), bytes.as_slice())
                    .store()?;
                moved += 1;
            }
        }
        txn.commit().store()?;
        Ok(moved)
    }

    /// Deletes every dead letter (and with `include_pending`, every pending entry); returns
    /// how many entries were deleted.
    pub fn purge(&self, include_pending: IncludePending) -> Result<u64, OutboxError> {
        let txn = self.db.begin_write().store()?;
        let mut count = 0;
        {
            let mut dead = txn.open_table(DEAD).store()?;
            count += dead.len().store()?;
            dead.retain(|_, _| false).store()?;
            if include_pending == IncludePending::Yes {
                let mut pending = txn.open_table(PENDING).store()?;
                count += pending.len().store()?;
                pending.retain(|_, _| false).store()?;
            }
        }
        txn.commit().store()?;
        Ok(count)
    }

    /// How many entries are pending and dead.
    pub fn sizes(&self) -> Result<Sizes, OutboxError> {
        let txn = self.db.begin_read().store()?;
        Ok(Sizes {
            pending: txn.open_table(PENDING).store()?.len().store()?,
            dead: txn.open_table(DEAD).store()?.len().store()?,
        })
    }
}

/// Whether `purge` also deletes entries still waiting for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludePending {
    /// Dead letters only.
    No,
    /// Dead letters and pending entries.
    Yes,
}
