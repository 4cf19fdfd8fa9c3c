//! Alert history: every alert raised and what became of it (admitted, deduplicated,
//! silenced, folded), with the targets it went to, in the outbox file's `history` table.
//!
//! Entries are keyed by (raised at, sequence number), so the oldest come first and a
//! `since` query reads only its range. They are kept for a retention time and up to a
//! number of entries; the oldest go first. Pruning pops from the front of the table, at
//! most a few entries more than were added per write and a bounded batch per background
//! flush, so it never scans the table. A batch that stores deliveries writes its history
//! in the same transaction; a batch that stores nothing else (its alerts all deduplicated,
//! silenced or folded) leaves its history in memory for the server's one-second flush (or
//! its flush after a batch once [`FLUSH_AT`] entries wait), so it costs no fsync of its own.
//! Duplicates of one incident that wait together become one entry with their count
//! ([`Waiting`]): a flood of duplicates cannot push a week of history out.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{META, OutboxError, Store};
use crate::clock::duration_ms;
use crate::rules::{Alert, Severity};
use crate::telemetry;

/// History entries by (raised at in ms since the epoch, sequence number).
pub(super) const HISTORY: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("history");

/// The `meta` key of the next history sequence number.
const NEXT_SEQ: &str = "next_history_id";

/// Entries pruned per write beyond the number it added, so that a shrunk bound catches up.
const PRUNE_SLACK: usize = 64;

/// Entries pruned at most per background flush (one write transaction).
const FLUSH_PRUNE_LIMIT: usize = 10_000;

/// Entries waiting in memory at which [`super::Outbox::flush_history_if_many`] writes
/// them (one fsync for this many alerts) rather than leave them to the upkeep.
pub const FLUSH_AT: usize = 1_000;

/// Entries waiting in memory at most while the outbox cannot be written; past it the
/// oldest are dropped (and counted).
const MAX_BUFFERED: usize = 10_000;

/// History entries waiting to be written, a deduplicated alert's incident at most once:
/// a later duplicate of the same incident (rule and dedup key) replaces the entry in
/// place, carrying the incident's larger `duplicates` count and its later time. A flood
/// of duplicates so costs one entry per incident per write, and cannot push the rest of
/// the history out past `max_entries`.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    entries: Vec<Raised>,
    /// Where each incident's deduplicated entry is in `entries`.
    incidents: HashMap<String, usize>,
}

impl Waiting {
    /// Entries waiting.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `raised`, folding a deduplicated alert into its incident's waiting entry.
    pub(super) fn extend(&mut self, raised: Vec<Raised>) {
        for raised in raised {
            self.push(raised);
        }
    }

    fn push(&mut self, raised: Raised) {
        if raised.outcome == DEDUPLICATED {
            let incident = format!("{}\u{1f}{}", raised.alert.rule, raised.alert.dedup_key);
            match self.incidents.entry(incident) {
                Entry::Occupied(at) => {
                    let entry = &mut self.entries[*at.get()];
                    let count = entry.count + raised.count;
                    *entry = Raised { count, ..raised };
                    return;
                }
                Entry::Vacant(slot) => {
                    slot.insert(self.entries.len());
                }
            }
        }
        self.entries.push(raised);
    }

    /// Takes every waiting entry, oldest first.
    pub(super) fn take(&mut self) -> Vec<Raised> {
        self.incidents.clear();
        std::mem::take(&mut self.entries)
    }

    /// Drops the oldest entries past [`MAX_BUFFERED`], counting them.
    pub(super) fn bound(&mut self) {
        let over = self.entries.len().saturating_sub(MAX_BUFFERED);
        if over > 0 {
            let kept = self.entries.split_off(over);
            self.take();
            self.extend(kept);
            telemetry::history_dropped(over as u64);
        }
    }
}

/// `raised` with each deduplicated incident's alerts folded into one entry (see
/// [`Waiting`]).
pub(super) fn coalesce(raised: Vec<Raised>) -> Vec<Raised> {
    let mut waiting = Waiting::default();
    waiting.extend(raised);
    waiting.take()
}

/// The outcome whose alerts of one incident are folded together while they wait.
const DEDUPLICATED: &str = "deduplicated";

/// How long and how much history is kept (`[history]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Entries older than this are dropped.
    pub retention: Duration,
    /// Most entries kept; past it the oldest are dropped.
    pub max_entries: u64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_entries: 100_000,
        }
    }
}

/// One alert raised, with what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Raised {
    /// Its sequence number in the history (0 until stored; kept in the key, not the value).
    #[serde(skip)]
    pub seq: u64,
    /// When the pipeline decided on it (ms since the epoch).
    pub raised_at_ms: i64,
    /// The alert, with its dedup and group keys filled in.
    pub alert: Alert,
    /// `admitted`, `deduplicated`, `silenced` or `folded`.
    pub outcome: String,
    /// The silence that held it back: a runtime silence's id (`s-…`) or `config:N` for
    /// the Nth `[[silences]]` of the config file; `None` for the other outcomes.
    pub silenced_by: Option<String>,
    /// For a deduplicated alert, the duplicates folded into its incident so far, this one
    /// included (the entry stands for every duplicate of its incident raised since the
    /// previous write, see [`Waiting`]); 0 for the other outcomes.
    pub duplicates: u64,
    /// The targets it was stored for (a folded alert: those its rule's digest goes to).
    pub targets: Vec<String>,
    /// How many alerts the entry stands for: 1, or for a deduplicated one the duplicates
    /// of its incident folded into it while they waited (see [`Waiting`]).
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// Which entries a history query returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this rule.
    pub rule: Option<String>,
    /// Only alerts at least this severe.
    pub min_severity: Option<Severity>,
    /// Only alerts raised at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only alerts whose title, text or a field value contains this, ignoring case.
    pub text: Option<String>,
    /// Most entries returned (newest first).
    pub limit: usize,
}

impl HistoryQuery {
    /// Whether `raised` passes every filter but the time.
    fn matches(&self, raised: &Raised, needle: Option<&str>) -> bool {
        let alert = &raised.alert;
        self.rule.as_ref().is_none_or(|rule| *rule == alert.rule)
            && self.min_severity.is_none_or(|min| alert.severity >= min)
            && needle.is_none_or(|needle| mentions(alert, needle))
    }
}

/// Whether the alert's title, text or a field value contains `needle` (lowercase).
fn mentions(alert: &Alert, needle: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(needle);
    has(&alert.title) || has(&alert.text) || alert.fields.values().any(|v| has(v))
}

/// An entry ready to store: when it was raised, and its JSON.
pub(super) type Encoded = (i64, Vec<u8>);

/// Encodes entries for storing (once, so that waiting in memory costs no copy of them).
pub(super) fn encode(raised: &[Raised]) -> Result<Vec<Encoded>, OutboxError> {
    raised
        .iter()
        .map(|r| Ok((r.raised_at_ms, serde_json::to_vec(r)?)))
        .collect()
}

/// How many entries a prune dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Pruned {
    /// Older than the retention time.
    pub age: u64,
    /// Past the size bound.
    pub size: u64,
}

/// Stores `raised` in `txn` under new sequence numbers, then prunes the oldest entries
/// past the bounds (at most a few more than were added); sets the entries gauge.
pub(super) fn record(
    txn: &WriteTransaction,
    raised: &[Encoded],
    settings: HistorySettings,
    now_ms: i64,
) -> Result<(), OutboxError> {
    if raised.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META).store()?;
    let mut seq = meta.get(NEXT_SEQ).store()?.map_or(1, |v| v.value());
    let mut table = txn.open_table(HISTORY).store()?;
    for (raised_at_ms, json) in raised {
        table
            .insert((*raised_at_ms, seq), json.as_slice())
            .store()?;
        seq += 1;
    }
    meta.insert(NEXT_SEQ, seq).store()?;
    let pruned = prune(&mut table, settings, now_ms, raised.len() + PRUNE_SLACK)?;
    counted(&table, pruned)
}

/// Prunes up to [`FLUSH_PRUNE_LIMIT`] entries past the bounds in `txn`; returns whether
/// it dropped any.
pub(super) fn prune_in(
    txn: &WriteTransaction,
    settings: HistorySettings,
    now_ms: i64,
) -> Result<bool, OutboxError> {
    let mut table = txn.open_table(HISTORY).store()?;
    let pruned = prune(&mut table, settings, now_ms, FLUSH_PRUNE_LIMIT)?;
    counted(&table, pruned)?;
    Ok(pruned != Pruned::default())
}

/// Reports the table's size and what was pruned to the metrics.
fn counted(table: &Table<'_, (i64, u64), &[u8]>, pruned: Pruned) -> Result<(), OutboxError> {
    telemetry::history_pruned("retention", pruned.age);
    telemetry::history_pruned("size", pruned.size);
    telemetry::history_entries(table.len().store()?);
    Ok(())
}

/// Whether the oldest entry is past the retention time or the table past its size (and
/// the entries gauge told the table's size).
pub(super) fn needs_pruning(
    table: &impl ReadableTable<(i64, u64), &'static [u8]>,
    settings: HistorySettings,
    now_ms: i64,
) -> Result<bool, OutboxError> {
    let len = table.len().store()?;
    telemetry::history_entries(len);
    if len > settings.max_entries {
        return Ok(true);
    }
    let oldest = table.first().store()?.map(|(key, _)| key.value().0);
    Ok(oldest.is_some_and(|at| at < cutoff(settings, now_ms)))
}

/// Entries raised before this are past the retention time.
fn cutoff(settings: HistorySettings, now_ms: i64) -> i64 {
    now_ms.saturating_sub(duration_ms(settings.retention))
}

/// Pops the oldest entries while the table is over its size or they are past the
/// retention time, at most `limit` of them.
fn prune(
    table: &mut Table<'_, (i64, u64), &[u8]>,
    settings: HistorySettings,
    now_ms: i64,
    limit: usize,
) -> Result<Pruned, OutboxError> {
    let cutoff = cutoff(settings, now_ms);
    let mut pruned = Pruned::default();
    let mut len = table.len().store()?;
    while pruned.age + pruned.size < limit as u64 {
        let Some(oldest) = table.first().store()?.map(|(key, _)| key.value().0) else {
            break;
        };
        if len > settings.max_entries {
            pruned.size += 1;
        } else if oldest < cutoff {
            pruned.age += 1;
        } else {
            break;
        }
        table.pop_first().store()?;
        len -= 1;
    }
    Ok(pruned)
}

/// The entries `query` selects from `table`, newest first.
pub(super) fn select(
    table: &impl ReadableTable<(i64, u64), &'static [u8]>,
    query: &HistoryQuery,
) -> Result<Vec<Raised>, OutboxError> {
    let needle = query.text.as_ref().map(|t| t.to_lowercase());
    let from = (query.since_ms.unwrap_or(i64::MIN), 0);
    let mut out = Vec::new();
    for row in table.range(from..).store()?.rev() {
        if out.len() >= query.limit {
            break;
        }
        let (key, value) = row.store()?;
        let mut raised: Raised = serde_json::from_slice(value.value())?;
        if query.matches(&raised, needle.as_deref()) {
            raised.seq = key.value().1;
            out.push(raised);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Access, Outbox};
    use super::*;
    use redb::ReadableDatabase;

    fn raised(rule: &str, title: &str, at_ms: i64) -> Raised {
        Raised {
            seq: 0,
            raised_at_ms: at_ms,
            alert: Alert::new(rule, title),
            outcome: "admitted".to_owned(),
            silenced_by: None,
            duplicates: 0,
            count: 1,
            targets: vec!["slack".to_owned()],
        }
    }

    fn titles(outbox: &Outbox, query: &HistoryQuery, now_ms: i64) -> Vec<String> {
        let found = outbox.history(query, now_ms).unwrap();
        found.into_iter().map(|r| r.alert.title).collect()
    }

    fn all(limit: usize) -> HistoryQuery {
        HistoryQuery {
            limit,
            ..HistoryQuery::default()
        }
    }

    #[test]
    fn the_size_bound_drops_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.set_history(HistorySettings {
            max_entries: 3,
            ..HistorySettings::default()
        });
        for (i, title) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let at = 1_000 + i as i64;
            let delivery = super::super::Delivery {
                target: "slack".to_owned(),
                alert: Alert::new("r", title),
            };
            let batch = [raised("r", title, at)];
            outbox
                .enqueue_batch(
                    &[delivery],
                    &super::super::Processed::default(),
                    batch.to_vec(),
                    at,
                )
                .unwrap();
        }
        assert_eq!(titles(&outbox, &all(10), 2_000), ["e", "d", "c"]);
        let found = outbox.history(&all(1), 2_000).unwrap();
        assert_eq!(found[0].seq, 5, "sequence numbers keep growing");
    }

    #[test]
    fn history_of_a_batch_that_stores_nothing_else_waits_for_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let processed = super::super::Processed::default();
        let quiet = [raised("r", "held", 10)];
        outbox
            .enqueue_batch(&[], &processed, quiet.to_vec(), 10)
            .unwrap();
        assert_eq!(outbox.buffered_history(), 1, "no write of its own");
        // A query flushes first, so it sees everything raised so far.
        assert_eq!(titles(&outbox, &all(10), 20), ["held"]);
        assert_eq!(outbox.buffered_history(), 0);
    }

    #[test]
    fn a_flood_of_alerts_that_store_nothing_else_is_written_once_enough_wait() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let processed = super::super::Processed::default();
        let flood: Vec<Raised> = (0..FLUSH_AT as i64)
            .map(|i| raised("r", "dup", i))
            .collect();
        let (last, first) = flood.split_at(1);
        outbox
            .enqueue_batch(&[], &processed, first.to_vec(), 1)
            .unwrap();
        assert!(!outbox.flush_history_if_many(1).unwrap());
        assert_eq!(outbox.buffered_history(), FLUSH_AT - 1);
        outbox
            .enqueue_batch(&[], &processed, last.to_vec(), 2)
            .unwrap();
        assert!(outbox.flush_history_if_many(2).unwrap());
        assert_eq!(outbox.buffered_history(), 0, "written at once");
        let stored = outbox.with_db(Access::Read, |db| {
            let txn = db.begin_read().store()?;
            txn.open_table(HISTORY).store()?.len().store()
        });
        assert_eq!(stored.unwrap(), FLUSH_AT as u64);
    }

    fn duplicate(key: &str, count: u64, at_ms: i64) -> Raised {
        let mut dup = raised("r", &format!("{key} ×{count}"), at_ms);
        dup.alert.dedup_key = key.to_owned();
        dup.outcome = DEDUPLICATED.to_owned();
        dup.duplicates = count;
        dup
    }

    #[test]
    fn duplicates_of_one_incident_that_wait_together_are_one_entry_with_the_latest_count() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let processed = super::super::Processed::default();
        let mut first = raised("r", "first", 1);
        first.alert.dedup_key = "a".to_owned();
        let mut silenced = raised("r", "held", 2);
        silenced.outcome = "silenced".to_owned();
        let quiet = vec![
            first,
            duplicate("a", 1, 2),
            silenced.clone(),
            duplicate("b", 1, 3),
            duplicate("a", 2, 3),
            silenced,
        ];
        outbox.enqueue_batch(&[], &processed, quiet, 3).unwrap();
        outbox
            .enqueue_batch(&[], &processed, vec![duplicate("a", 3, 4)], 4)
            .unwrap();
        assert_eq!(outbox.buffered_history(), 5, "a's duplicates wait as one");
        let delivery = super::super::Delivery {
            target: "slack".to_owned(),
            alert: Alert::new("r", "sent"),
        };
        // A batch that stores deliveries folds its own duplicates the same way.
        let batch = vec![
            duplicate("a", 4, 5),
            duplicate("a", 5, 5),
            raised("r", "sent", 5),
        ];
        outbox
            .enqueue_batch(&[delivery], &processed, batch, 5)
            .unwrap();
        assert_eq!(
            titles(&outbox, &all(20), 6),
            ["sent", "a ×5", "a ×3", "b ×1", "held", "held", "first"],
            "newest first: non-duplicates are never folded, other incidents stay apart"
        );
        let counts: Vec<u64> = outbox
            .history(&all(20), 6)
            .unwrap()
            .iter()
            .map(|r| r.count)
            .collect();
        assert_eq!(
            counts,
            [1, 2, 3, 1, 1, 1, 1],
            "the alerts each entry stands for"
        );
    }

    #[test]
    fn retention_drops_what_is_older_and_the_background_flush_prunes_without_new_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let hour = 3_600_000;
        outbox.set_history(HistorySettings {
            retention: Duration::from_secs(3600),
            max_entries: 100,
        });
        let processed = super::super::Processed::default();
        let old = [raised("r", "old", 0), raised("r", "newer", hour / 2)];
        outbox
            .enqueue_batch(&[], &processed, old.to_vec(), 0)
            .unwrap();
        outbox.flush_history(0).unwrap();
        assert_eq!(titles(&outbox, &all(10), 0), ["newer", "old"]);
        // An hour and a bit later "old" is past retention; the flush alone drops it.
        outbox.flush_history(hour + 1).unwrap();
        assert_eq!(titles(&outbox, &all(10), hour + 1), ["newer"]);
    }

    #[test]
    fn queries_filter_by_rule_severity_time_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let mut warn = raised("exec", "Shell in web-1", 30);
        warn.alert.severity = Severity::Warning;
        warn.alert
            .fields
            .insert("command".to_owned(), "BASH -i".to_owned());
        let batch = [
            raised("pod_created", "Pod web-1 created", 10),
            raised("pod_created", "Pod db-0 created", 20),
            warn,
        ];
        let processed = super::super::Processed::default();
        outbox
            .enqueue_batch(&[], &processed, batch.to_vec(), 30)
            .unwrap();
        let query = |f: fn(&mut HistoryQuery)| {
            let mut q = all(10);
            f(&mut q);
            titles(&outbox, &q, 40)
        };
        assert_eq!(
            query(|q| q.rule = Some("pod_created".to_owned())),
            ["Pod db-0 created", "Pod web-1 created"]
        );
        assert_eq!(
            query(|q| q.min_severity = Some(Severity::Notice)),
            ["Shell in web-1"]
        );
        assert_eq!(
            query(|q| q.since_ms = Some(20)),
            ["Shell in web-1", "Pod db-0 created"]
        );
        assert_eq!(
            query(|q| q.text = Some("WEB-1".to_owned())),
            ["Shell in web-1", "Pod web-1 created"]
        );
        assert_eq!(
            query(|q| q.text = Some("bash".to_owned())),
            ["Shell in web-1"],
            "field values are searched"
        );
        assert_eq!(query(|q| q.limit = 1), ["Shell in web-1"]);
    }
}
