//! Outbox: the durable store between admission and delivery (redb, fsync on commit).
//!
//! An alert is written here before the webhook answers 200; a target's dispatcher removes
//! it once delivered, reschedules it after a failure, or moves it to the dead letters. Every
//! process may open the same file (the CLI beside a running daemon).
//!
//! The outbox heals itself: an operation that fails with an I/O error (disk full, a failing
//! device) marks it broken; later operations close and reopen the file, with backoff
//! (`health.rs`), and fail fast with [`OutboxError::Unavailable`] until that works.
//! Followed files' positions are stored in the same transaction as the deliveries of the
//! lines before them. The runtime silences are kept here too (opaque JSON by id), and the
//! alert history (`history.rs`), written with the batches' deliveries. Calls `rules` (the
//! `Alert` and `Severity` types), `sources` (the `Cursor` and `Position` it stores), `clock`
//! and `telemetry` (reopens, health, sizes after a reopen, history size and pruning).

mod health;
mod history;
#[doc(hidden)]
pub mod testing;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageBackend, TableDefinition,
};
use serde::{Deserialize, Serialize};

pub use health::Health;
use health::{Gate, State};
use history::Encoded;
pub use history::{FLUSH_AT, HistoryQuery, HistorySettings, Raised};

use crate::clock::duration_ms;
use crate::rules::Alert;
use crate::sources::{Cursor, Position};
use crate::telemetry;

/// An alert bound for one concrete target.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The target that will send it (fallbacks already followed).
    pub target: String,
    /// The alert, with its effective dedup and group keys filled in.
    pub alert: Alert,
}

/// File name of the outbox inside its directory.
pub const FILE_NAME: &str = "outbox.redb";

/// Pending entries by (target, id): ids grow, so each target's entries are in arrival order.
const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
/// Dead letters by id.
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
/// Counters (`next_id`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The events of stored batches, by (stored at, auditID, stage): an apiserver retry of a
/// stored batch is skipped even after a restart (the seen filter is rebuilt from it).
const SEEN: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("seen");
/// Where each followed file stands (`sources::Position` as JSON), by source: written with
/// the deliveries of the lines before it, so a restart neither loses nor repeats a line.
const POSITIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("positions");

/// The runtime silences (`pipeline::silence`'s JSON), by id: kept across restarts.
const SILENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("silences");

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
    /// An I/O error broke the database; it is being reopened (with backoff).
    #[error("outbox unavailable ({reason}); reopening")]
    Unavailable {
        /// What broke it, in a few words.
        reason: String,
    },
}

impl OutboxError {
    /// A short reason (no paths) when this failure is of the I/O kind a reopen may cure.
    fn io_reason(&self) -> Option<String> {
        let OutboxError::Store(err) = self else {
            return None;
        };
        match err {
            redb::Error::Io(io) => Some(describe_io(io)),
            redb::Error::PreviousIo => Some("a previous I/O error".to_owned()),
            redb::Error::DatabaseClosed => Some("the database was closed".to_owned()),
            redb::Error::Backend(_) => Some("storage backend error".to_owned()),
            _ => None,
        }
    }
}

/// An OS error's text (it names no file), else only the error's kind.
fn describe_io(io: &std::io::Error) -> String {
    match io.raw_os_error() {
        Some(_) => format!("I/O error: {io}"),
        None => format!("I/O error: {}", io.kind()),
    }
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

/// Opens the database file (again): redb's builder on a fresh backend, tables ensured.
type Opener = Box<dyn Fn() -> Result<Database, OutboxError> + Send + Sync>;

/// Whether an operation writes; a committed write ends a reopen's probation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// The alert history's bounds and the entries waiting for the next write.
#[derive(Debug, Default)]
struct HistoryBuffer {
    settings: HistorySettings,
    waiting: history::Waiting,
}

/// The durable outbox.
pub struct Outbox {
    /// `None` only between closing a broken database and a successful reopen.
    db: RwLock<Option<Database>>,
    state: Mutex<State>,
    history: Mutex<HistoryBuffer>,
    open: Opener,
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
        Self::open_with_backend(dir, file_backend)
    }

    /// Opens (or creates) the outbox in `dir` on storage made by `backend` from the file's
    /// path, once now and again at every reopen (tests inject faults this way).
    pub fn open_with_backend<B: StorageBackend>(
        dir: &Path,
        backend: impl Fn(&Path) -> Result<B, DatabaseError> + Send + Sync + 'static,
    ) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|source| OutboxError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let file = path.clone();
        let open: Opener = Box::new(move || open_database(backend(&file).store()?));
        let db = open()?;
        telemetry::outbox_healthy(true);
        Ok(Self {
            db: RwLock::new(Some(db)),
            state: Mutex::new(State::default()),
            history: Mutex::new(HistoryBuffer::default()),
            open,
            path,
        })
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Healthy, or broken since when and why; reads memory only (cheap enough for probes).
    pub fn health(&self) -> Health {
        self.state().health()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on the database: reopens it first when it is broken and the backoff has
    /// passed, fails fast while it has not; an I/O-class failure of `op` breaks it.
    fn with_db<T>(
        &self,
        access: Access,
        op: impl FnOnce(&Database) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        self.ready()?;
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(database) = db.as_ref() else {
            return Err(self.unavailable());
        };
        let result = op(database);
        // Still under the read lock, so no reopen can slip in before the break is recorded.
        match &result {
            Err(err) => self.fail(err),
            Ok(_) if access == Access::Write => self.state().confirmed(),
            Ok(_) => {}
        }
        result
    }

    /// Ok when the database may be used now, after reopening it if that is due.
    fn ready(&self) -> Result<(), OutboxError> {
        // Bound first: the state's lock must be released before a reopen takes it again.
        let gate = self.state().gate(Instant::now());
        match gate {
            Gate::Open => Ok(()),
            Gate::Closed(reason) => Err(OutboxError::Unavailable { reason }),
            Gate::Reopen => self.reopen(),
        }
    }

    /// The fail-fast error for the current state.
    fn unavailable(&self) -> OutboxError {
        let reason = self.health().reason().unwrap_or("closed").to_owned();
        OutboxError::Unavailable { reason }
    }

    /// Records an operation's failure: an I/O-class one breaks the outbox.
    fn fail(&self, err: &OutboxError) {
        let Some(reason) = err.io_reason() else {
            return;
        };
        if self.state().broke(reason.clone(), Instant::now()) {
            tracing::error!(reason = %reason, error = %err, "outbox broken by an I/O error; it will be reopened");
            telemetry::outbox_healthy(false);
        }
    }

    /// Closes the broken database and opens the file again (one thread at a time; the
    /// others wait, then see the outcome).
    fn reopen(&self) -> Result<(), OutboxError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let gate = self.state().gate(Instant::now());
        match gate {
            Gate::Open => return Ok(()),
            Gate::Closed(reason) => return Err(OutboxError::Unavailable { reason }),
            Gate::Reopen => {}
        }
        if let Some(old) = db.take()
            && let Err(err) = old.close()
        {
            tracing::debug!(error = %err, "closing the broken outbox failed");
        }
        match (self.open)() {
            Ok(reopened) => {
                self.reopened(&reopened);
                *db = Some(reopened);
                Ok(())
            }
            Err(err) => {
                let reason = format!(
                    "reopen failed: {}",
                    err.io_reason().unwrap_or_else(|| err.to_string())
                );
                tracing::warn!(error = %err, "cannot reopen the outbox; will retry");
                self.state().reopen_failed(reason.clone(), Instant::now());
                Err(OutboxError::Unavailable { reason })
            }
        }
    }

    /// Marks the outbox usable again and refreshes what the gauges say about it.
    fn reopened(&self, db: &Database) {
        self.state().reopened();
        telemetry::outbox_reopened();
        telemetry::outbox_healthy(true);
        match count(db) {
            Ok(sizes) => telemetry::outbox_sizes(sizes.pending, sizes.dead),
            Err(err) => tracing::warn!(error = %err, "cannot count the reopened outbox"),
        }
        tracing::info!("outbox reopened");
    }

    /// Stores deliveries in one durable transaction (one fsync); returns their ids.
    pub fn enqueue(&self, deliveries: &[Delivery], now_ms: i64) -> Result<Vec<u64>, OutboxError> {
        self.enqueue_batch(deliveries, &Processed::default(), Vec::new(), now_ms)
    }

    /// Stores a batch's deliveries and, in the same transaction, the events it processed,
    /// its source's cursor and the history of its alerts (`raised`). A batch that stores
    /// nothing else writes nothing: its history waits in memory for
    /// [`Outbox::flush_history`] (the server's upkeep, once a second) or
    /// [`Outbox::flush_history_if_many`]. Returns the deliveries' ids.
    pub fn enqueue_batch(
        &self,
        deliveries: &[Delivery],
        processed: &Processed<'_>,
        raised: Vec<Raised>,
        now_ms: i64,
    ) -> Result<Vec<u64>, OutboxError> {
        if deliveries.is_empty() && processed.cursor.is_none() {
            self.wait_in_memory(raised);
            return Ok(Vec::new());
        }
        let settings = self.history_buffer().settings;
        let raised = history::encode(&history::coalesce(raised))?;
        self.with_db(Access::Write, |db| {
            insert(db, deliveries, processed, (&raised, settings), now_ms)
        })
    }

    /// Sets how long and how much history is kept.
    pub fn set_history(&self, settings: HistorySettings) {
        self.history_buffer().settings = settings;
    }

    /// How many history entries wait in memory for the next write.
    pub fn buffered_history(&self) -> usize {
        self.history_buffer().waiting.len()
    }

    /// Writes the history waiting in memory and prunes entries past the retention time
    /// or the size bound (a bounded number per call); writes nothing when there is
    /// nothing to do. The server calls it once a second.
    pub fn flush_history(&self, now_ms: i64) -> Result<(), OutboxError> {
        let (waiting, settings) = {
            let mut buffer = self.history_buffer();
            (buffer.waiting.take(), buffer.settings)
        };
        let result = self.write_history(&waiting, settings, now_ms);
        if result.is_err() {
            self.put_back(waiting);
        }
        result
    }

    /// Writes the history waiting in memory when [`FLUSH_AT`] entries or more wait (a
    /// flood of alerts that store nothing else); returns whether it wrote. The server
    /// calls it after each batch, outside the pipeline's lock.
    pub fn flush_history_if_many(&self, now_ms: i64) -> Result<bool, OutboxError> {
        if self.buffered_history() < FLUSH_AT {
            return Ok(false);
        }
        self.flush_history(now_ms).map(|()| true)
    }

    /// Stores `waiting` and prunes, in one transaction; none when there is nothing to do.
    fn write_history(
        &self,
        waiting: &[Raised],
        settings: HistorySettings,
        now_ms: i64,
    ) -> Result<(), OutboxError> {
        let idle = waiting.is_empty()
            && !self.with_db(Access::Read, |db| {
                let txn = db.begin_read().store()?;
                let table = txn.open_table(history::HISTORY).store()?;
                history::needs_pruning(&table, settings, now_ms)
            })?;
        if idle {
            return Ok(());
        }
        let encoded = history::encode(waiting)?;
        self.with_db(Access::Write, |db| {
            let txn = db.begin_write().store()?;
            history::record(&txn, &encoded, settings, now_ms)?;
            history::prune_in(&txn, settings, now_ms)?;
            txn.commit().store()
        })
    }

    /// The history entries `query` selects, newest first, after writing those waiting.
    pub fn history(&self, query: &HistoryQuery, now_ms: i64) -> Result<Vec<Raised>, OutboxError> {
        self.flush_history(now_ms)?;
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            let table = txn.open_table(history::HISTORY).store()?;
            history::select(&table, query)
        })
    }

    fn history_buffer(&self) -> MutexGuard<'_, HistoryBuffer> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `raised` in memory for the next write.
    fn wait_in_memory(&self, raised: Vec<Raised>) {
        let mut buffer = self.history_buffer();
        buffer.waiting.extend(raised);
        buffer.waiting.bound();
    }

    /// Puts entries whose write failed back in front of those that came since.
    fn put_back(&self, earlier: Vec<Raised>) {
        let mut buffer = self.history_buffer();
        let since = buffer.waiting.take();
        buffer.waiting.extend(earlier);
        buffer.waiting.extend(since);
        buffer.waiting.bound();
    }

    /// The (auditID, stage) pairs of the batches stored within `window` before `now_ms`.
    pub fn processed_within(
        &self,
        window: Duration,
        now_ms: i64,
    ) -> Result<Vec<(String, String)>, OutboxError> {
        let since_ms = now_ms.saturating_sub(duration_ms(window));
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            let table = txn.open_table(SEEN).store()?;
            let mut out = Vec::new();
            for row in table.range((since_ms, "", "")..).store()? {
                let (key, _) = row.store()?;
                let (_, audit_id, stage) = key.value();
                out.push((audit_id.to_owned(), stage.to_owned()));
            }
            Ok(out)
        })
    }

    /// Where the followed file of `source` stood when its last chunk was stored.
    pub fn position(&self, source: &str) -> Result<Option<Position>, OutboxError> {
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            let table = txn.open_table(POSITIONS).store()?;
            let Some(value) = table.get(source).store()? else {
                return Ok(None);
            };
            Ok(Some(serde_json::from_slice(value.value())?))
        })
    }

    /// Whether the batch stored at `at_ms` that processed `event` (auditID, stage) is in
    /// the file: a commit that failed part-way (after its commit record reached the file)
    /// may hold it all the same, and only a read tells.
    pub fn was_stored(&self, at_ms: i64, event: (&str, &str)) -> Result<bool, OutboxError> {
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            let table = txn.open_table(SEEN).store()?;
            Ok(table.get((at_ms, event.0, event.1)).store()?.is_some())
        })
    }

    /// Up to `limit` pending entries of `target`, oldest first.
    pub fn pending(&self, target: &str, limit: usize) -> Result<Vec<Entry>, OutboxError> {
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
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
        })
    }

    /// Every pending entry of every target.
    pub fn all_pending(&self) -> Result<Vec<Entry>, OutboxError> {
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            let table = txn.open_table(PENDING).store()?;
            let mut out: Vec<Entry> = Vec::new();
            for row in table.iter().store()? {
                let (_, value) = row.store()?;
                out.push(serde_json::from_slice(value.value())?);
            }
            out.sort_by_key(|e| e.id);
            Ok(out)
        })
    }

    /// Removes delivered entries.
    pub fn complete(&self, target: &str, ids: &[u64]) -> Result<(), OutboxError> {
        self.with_db(Access::Write, |db| {
            let txn = db.begin_write().store()?;
            {
                let mut table = txn.open_table(PENDING).store()?;
                for id in ids {
                    table.remove((target, *id)).store()?;
                }
            }
            txn.commit().store()
        })
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
        self.with_db(Access::Write, |db| {
            let txn = db.begin_write().store()?;
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
        })
    }

    /// Moves entries to the dead letters with `reason`.
    pub fn bury(
        &self,
        target: &str,
        ids: &[u64],
        reason: &str,
        now_ms: i64,
    ) -> Result<(), OutboxError> {
        self.with_db(Access::Write, |db| {
            let txn = db.begin_write().store()?;
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
        })
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            let table = txn.open_table(DEAD).store()?;
            let mut out = Vec::new();
            for row in table.iter().store()? {
                let (_, value) = row.store()?;
                out.push(serde_json::from_slice(value.value())?);
            }
            Ok(out)
        })
    }

    /// Moves dead letters back to pending with a fresh retry budget; returns how many.
    pub fn retry_dead(&self, selection: &Selection, now_ms: i64) -> Result<usize, OutboxError> {
        self.with_db(Access::Write, |db| revive(db, selection, now_ms))
    }

    /// Deletes every dead letter (and with `include_pending`, every pending entry); returns
    /// how many entries were deleted.
    pub fn purge(&self, include_pending: IncludePending) -> Result<u64, OutboxError> {
        self.with_db(Access::Write, |db| {
            let txn = db.begin_write().store()?;
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
        })
    }

    /// Every stored runtime silence: (id, its JSON).
    pub fn silences(&self) -> Result<Vec<(String, Vec<u8>)>, OutboxError> {
        self.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            let table = txn.open_table(SILENCES).store()?;
            let mut out = Vec::new();
            for row in table.iter().store()? {
                let (id, json) = row.store()?;
                out.push((id.value().to_owned(), json.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// Stores `put` (replacing silences with the same id) and removes `remove`, in one
    /// durable transaction.
    pub fn write_silences(
        &self,
        put: &[(String, Vec<u8>)],
        remove: &[String],
    ) -> Result<(), OutboxError> {
        self.with_db(Access::Write, |db| {
            let txn = db.begin_write().store()?;
            {
                let mut table = txn.open_table(SILENCES).store()?;
                for (id, json) in put {
                    table.insert(id.as_str(), json.as_slice()).store()?;
                }
                for id in remove {
                    table.remove(id.as_str()).store()?;
                }
            }
            txn.commit().store()
        })
    }

    /// How many entries are pending and dead.
    pub fn sizes(&self) -> Result<Sizes, OutboxError> {
        self.with_db(Access::Read, count)
    }
}

/// redb's own file backend on `path` (created when missing).
fn file_backend(path: &Path) -> Result<FileBackend, DatabaseError> {
    FileBackend::new(open_file(path)?)
}

/// The outbox file at `path`, for reading and writing (created when missing).
fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Opens the database on `backend` and makes sure its tables exist.
fn open_database(backend: impl StorageBackend) -> Result<Database, OutboxError> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create_with_backend(backend)
        .store()?;
    let txn = db.begin_write().store()?;
    txn.open_table(PENDING).store()?;
    txn.open_table(DEAD).store()?;
    txn.open_table(META).store()?;
    txn.open_table(SEEN).store()?;
    txn.open_table(POSITIONS).store()?;
    txn.open_table(SILENCES).store()?;
    txn.open_table(history::HISTORY).store()?;
    txn.commit().store()?;
    Ok(db)
}

/// Stores deliveries as new pending entries in one transaction, with the batch's events,
/// cursor and history; returns their ids.
fn insert(
    db: &Database,
    deliveries: &[Delivery],
    processed: &Processed<'_>,
    (raised, settings): (&[Encoded], HistorySettings),
    now_ms: i64,
) -> Result<Vec<u64>, OutboxError> {
    let txn = db.begin_write().store()?;
    history::record(&txn, raised, settings, now_ms)?;
    if let Some(cursor) = processed.cursor {
        let position = serde_json::to_vec(&cursor.position)?;
        txn.open_table(POSITIONS)
            .store()?
            .insert(cursor.source.as_str(), position.as_slice())
            .store()?;
    }
    // Only a batch that raised something can be retried into duplicates.
    if !processed.events.is_empty() && !deliveries.is_empty() {
        let mut seen = txn.open_table(SEEN).store()?;
        for (audit_id, stage) in &processed.events {
            seen.insert((now_ms, *audit_id, *stage), ()).store()?;
        }
        let forget_before = now_ms.saturating_sub(duration_ms(processed.remember));
        seen.retain_in(..(forget_before, "", ""), |_, ()| false)
            .store()?;
    }
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

/// Moves the selected dead letters back to pending; returns how many.
fn revive(db: &Database, selection: &Selection, now_ms: i64) -> Result<usize, OutboxError> {
    let txn = db.begin_write().store()?;
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

/// How many entries are pending and dead.
fn count(db: &Database) -> Result<Sizes, OutboxError> {
    let txn = db.begin_read().store()?;
    Ok(Sizes {
        pending: txn.open_table(PENDING).store()?.len().store()?,
        dead: txn.open_table(DEAD).store()?.len().store()?,
    })
}

/// The events a batch processed, remembered with its deliveries.
#[derive(Debug, Default)]
pub struct Processed<'a> {
    /// (auditID, stage) of each event.
    pub events: Vec<(&'a str, &'a str)>,
    /// How long they are remembered (`event_dedup.window`); older ones are forgotten.
    pub remember: Duration,
    /// The position of the file the events were read from, stored with them.
    pub cursor: Option<&'a Cursor>,
}

/// Whether `purge` also deletes entries still waiting for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludePending {
    /// Dead letters only.
    No,
    /// Dead letters and pending entries.
    Yes,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::FaultSwitch;
    use super::*;

    fn delivery(title: &str) -> Delivery {
        Delivery {
            target: "slack".to_owned(),
            alert: Alert::new("rule", title),
        }
    }

    /// Calls `probe` every 10 ms until it returns `Some`, for at most 20 s.
    fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn titles(outbox: &Outbox) -> Vec<String> {
        let entries = outbox.all_pending().unwrap();
        entries.into_iter().map(|e| e.alert.title).collect()
    }

    fn cursor(offset: u64) -> Cursor {
        Cursor {
            source: "/var/log/kubernetes/audit/audit.log".to_owned(),
            position: Position {
                file: crate::sources::FileId { dev: 1, ino: 2 },
                fingerprint: crate::sources::Fingerprint::of(b"{\"auditID\":\"a\"}"),
                offset,
            },
        }
    }

    #[test]
    fn a_cursor_is_stored_with_its_batch_and_only_when_the_batch_is() {
        let dir = tempfile::tempdir().unwrap();
        let switch = FaultSwitch::new();
        let outbox = Outbox::open_with_backend(dir.path(), switch.backend()).unwrap();
        let source = cursor(0).source;
        assert_eq!(outbox.position(&source).unwrap(), None);
        // A chunk that raises nothing still moves its position.
        let quiet = cursor(100);
        let processed = Processed {
            cursor: Some(&quiet),
            ..Processed::default()
        };
        outbox
            .enqueue_batch(&[], &processed, Vec::new(), 1)
            .unwrap();
        assert_eq!(outbox.position(&source).unwrap(), Some(quiet.position));
        // A failed write moves neither the deliveries nor the position.
        let loud = cursor(200);
        let processed = Processed {
            cursor: Some(&loud),
            ..Processed::default()
        };
        switch.fail_writes();
        assert!(
            outbox
                .enqueue_batch(&[delivery("x")], &processed, Vec::new(), 2)
                .is_err()
        );
        switch.heal();
        let position = eventually("the outbox reopened", || outbox.position(&source).ok());
        assert_eq!(position, Some(quiet.position));
        assert!(titles(&outbox).is_empty());
        eventually("the batch stored on a retry", || {
            outbox
                .enqueue_batch(&[delivery("x")], &processed, Vec::new(), 3)
                .ok()
        });
        assert_eq!(outbox.position(&source).unwrap(), Some(loud.position));
        assert_eq!(titles(&outbox), ["x"]);
    }

    #[test]
    fn an_io_error_breaks_the_outbox_and_it_reopens_by_itself_once_the_fault_clears() {
        let dir = tempfile::TempDir::new().unwrap();
        let switch = FaultSwitch::new();
        let outbox = Outbox::open_with_backend(dir.path(), switch.backend()).unwrap();
        outbox
            .enqueue(&[delivery("before 1"), delivery("before 2")], 1)
            .unwrap();
        assert_eq!(outbox.health(), Health::Healthy);

        switch.fail_writes();
        let err = outbox.enqueue(&[delivery("during")], 2).unwrap_err();
        assert!(err.io_reason().is_some(), "an I/O error expected: {err}");
        let reason = outbox.health().reason().map(str::to_owned);
        assert_eq!(
            reason.as_deref(),
            Some("I/O error: Input/output error (os error 5)")
        );
        assert!(matches!(
            outbox.sizes(),
            Err(OutboxError::Unavailable { .. } | OutboxError::Store(_))
        ));
        // Reopens are tried (and fail) while the fault lasts; enqueue keeps failing.
        eventually("a failed reopen", || {
            assert!(outbox.enqueue(&[delivery("during")], 2).is_err());
            let health = outbox.health();
            health.reason()?.starts_with("reopen failed").then_some(())
        });
        assert!(outbox.health().broken_for().is_some());

        switch.heal();
        let ids = eventually("a successful enqueue", || {
            outbox.enqueue(&[delivery("after")], 3).ok()
        });
        assert_eq!(ids.len(), 1);
        assert_eq!(outbox.health(), Health::Healthy);
        assert_eq!(titles(&outbox), ["before 1", "before 2", "after"]);
        assert_eq!(outbox.sizes().unwrap().pending, 3);
    }

    #[test]
    fn errors_that_are_not_io_leave_the_outbox_healthy() {
        let dir = tempfile::TempDir::new().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let decoding = serde_json::from_str::<Entry>("{").unwrap_err();
        outbox.fail(&OutboxError::Encoding(decoding));
        assert_eq!(outbox.health(), Health::Healthy);
        outbox.fail(&OutboxError::Store(redb::Error::PreviousIo));
        assert_eq!(
            outbox.health().reason(),
            Some("a previous I/O error"),
            "PreviousIo breaks it"
        );
    }
}
