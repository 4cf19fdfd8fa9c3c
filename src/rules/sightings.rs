//! The sightings of the stateful helpers `count_over(key, window)` and
//! `first_seen(key, window)`: which keys each rule saw and when, clocked by the caller (the
//! wall clock in `serve`, the event's time in dry-run and replay). With the Redis backend the answers come from the replicas' shared memory (`state`
//! module) while it answers; this memory records every sighting either way.
//!
//! A batch's sightings are staged ([`Staged`]): the scripts of that batch see them at once,
//! but the store (and the shared memory) records them only when the batch's alerts are
//! stored ([`Sightings::commit`]), so a batch that fails to store leaves no trace and its
//! retry counts the same sightings again, once.
//!
//! Keys are scoped per rule. Memory is bounded: at most [`MAX_TIMESTAMPS`] remembered
//! sightings in all (8 bytes each plus the key), past which the least recently used keys
//! are forgotten first; expired sightings are dropped whenever a key is touched and on a
//! sweep every [`SWEEP_EVERY`] calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use crate::state::{SharedHelpers, SharedSighting};

/// Most sightings remembered across all keys (about 8 MiB plus keys).
pub const MAX_TIMESTAMPS: usize = 1_000_000;

/// Calls between sweeps of expired keys.
pub const SWEEP_EVERY: usize = 4096;

#[derive(Default)]
struct KeyState {
    /// Sighting times (ms since the epoch), oldest first.
    times: VecDeque<i64>,
    /// The window this key was last used with, for sweeping.
    window_ms: i64,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, KeyState>,
    total: usize,
    calls: usize,
}

/// Which helper staged a sighting (the shared memory keeps them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `count_over`: every sighting counts.
    Count,
    /// `first_seen`: one sighting per window.
    First,
}

/// One sighting staged by a batch.
#[derive(Debug, Clone)]
struct Sighting {
    key: String,
    window_ms: i64,
    at_ms: i64,
    kind: Kind,
}

/// The sightings a batch's evaluation made, not yet recorded; dropped when the batch
/// fails, committed with [`Sightings::commit`] when it is stored.
#[derive(Debug, Default)]
pub struct Staged {
    sightings: Vec<Sighting>,
}

impl Staged {
    /// Whether nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.sightings.is_empty()
    }

    /// Staged sightings of `key` after `cutoff`.
    fn count_after(&self, key: &str, cutoff: i64) -> usize {
        self.sightings
            .iter()
            .filter(|s| s.at_ms > cutoff && s.key == key)
            .count()
    }

    fn push(&mut self, key: &str, window_ms: i64, at_ms: i64, kind: Kind) {
        self.sightings.push(Sighting {
            key: key.to_owned(),
            window_ms,
            at_ms,
            kind,
        });
    }
}

/// The stateful helpers' memory, shared by every script of a rule set and kept across
/// reloads.
#[derive(Default)]
pub struct Sightings {
    inner: Mutex<Inner>,
    /// The replicas' shared memory (Redis): its answers win while it answers.
    shared: OnceLock<Arc<dyn SharedHelpers>>,
}

impl Sightings {
    /// Shares the helpers' memory with other replicas through `shared` from now on; this
    /// store still records every sighting, and answers alone when `shared` does not.
    pub fn share(&self, shared: Arc<dyn SharedHelpers>) {
        let _ = self.shared.set(shared);
    }

    /// `count_over`: the sightings of `key` within `window_ms` recorded by all replicas
    /// while the shared store answers (else by this replica), plus those `staged` by this
    /// batch, plus this one, which is staged.
    pub fn count_over(&self, key: &str, window_ms: i64, now_ms: i64, staged: &mut Staged) -> i64 {
        let recorded = self.shared_or(
            || self.count_locally(key, window_ms, now_ms),
            |shared| shared.count_within(key, window_ms, now_ms),
        );
        let count = recorded + as_i64(staged.count_after(key, now_ms - window_ms)) + 1;
        staged.push(key, window_ms, now_ms, Kind::Count);
        count
    }

    /// `first_seen`: true when neither the recorded sightings (all replicas' while the
    /// shared store answers) nor this batch's `staged` ones hold `key` within `window_ms`;
    /// then this sighting is staged.
    pub fn first_seen(&self, key: &str, window_ms: i64, now_ms: i64, staged: &mut Staged) -> bool {
        let seen = self.shared_or(
            || self.count_locally(key, window_ms, now_ms) > 0,
            |shared| shared.seen_within(key, window_ms, now_ms),
        ) || staged.count_after(key, now_ms - window_ms) > 0;
        if !seen {
            staged.push(key, window_ms, now_ms, Kind::First);
        }
        !seen
    }

    /// Records a batch's staged sightings (its alerts are stored): in this replica's
    /// memory always, and in the shared memory while it answers.
    pub fn commit(&self, staged: Staged) {
        if staged.is_empty() {
            return;
        }
        if let Some(shared) = self.shared.get() {
            let sightings: Vec<SharedSighting<'_>> = staged
                .sightings
                .iter()
                .map(|s| SharedSighting {
                    key: &s.key,
                    window_ms: s.window_ms,
                    at_ms: s.at_ms,
                    once_per_window: s.kind == Kind::First,
                })
                .collect();
            // Not recorded there when it does not answer: a later count is lower, a later
            // first_seen may be true again (a duplicate, never a loss).
            let _ = shared.record(&sightings);
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for sighting in staged.sightings {
            inner.record(sighting);
        }
    }

    /// The shared store's answer, else (without one or when it does not answer) `local`'s.
    fn shared_or<T>(
        &self,
        local: impl FnOnce() -> T,
        ask: impl FnOnce(&dyn SharedHelpers) -> Result<T, crate::state::Unavailable>,
    ) -> T {
        match self.shared.get().map(|shared| ask(shared.as_ref())) {
            Some(Ok(answer)) => answer,
            _ => local(),
        }
    }

    /// This replica's recorded sightings of `key` within the last `window_ms`.
    fn count_locally(&self, key: &str, window_ms: i64, now_ms: i64) -> i64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let count = {
            let Inner { keys, total, .. } = &mut *inner;
            match keys.get_mut(key) {
                Some(state) => {
                    *total -= prune(&mut state.times, now_ms - window_ms);
                    state.times.len()
                }
                None => 0,
            }
        };
        inner.after_call(now_ms);
        as_i64(count)
    }

    /// Sightings remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Records a committed sighting, in time order (batches commit in any order).
    fn record(&mut self, sighting: Sighting) {
        let state = self.keys.entry(sighting.key).or_default();
        state.window_ms = sighting.window_ms;
        self.total -= prune(&mut state.times, sighting.at_ms - sighting.window_ms);
        let first_in_window = state.times.is_empty();
        if sighting.kind == Kind::Count || first_in_window {
            let at = state.times.partition_point(|t| *t <= sighting.at_ms);
            state.times.insert(at, sighting.at_ms);
            self.total += 1;
        }
        self.after_call(sighting.at_ms);
    }

    fn after_call(&mut self, now_ms: i64) {
        self.calls += 1;
        if self.calls.is_multiple_of(SWEEP_EVERY) {
            self.sweep(now_ms);
        }
        if self.total > MAX_TIMESTAMPS {
            self.sweep(now_ms);
            self.evict_least_recent();
        }
    }

    /// Drops expired sightings and empty keys.
    fn sweep(&mut self, now_ms: i64) {
        let mut dropped = 0;
        self.keys.retain(|_, state| {
            dropped += prune(&mut state.times, now_ms - state.window_ms);
            !state.times.is_empty()
        });
        self.total -= dropped;
    }

    /// Forgets the keys seen least recently until 90% of the cap is left.
    fn evict_least_recent(&mut self) {
        let target = MAX_TIMESTAMPS / 10 * 9;
        if self.total <= target {
            return;
        }
        let mut by_last: Vec<(i64, String)> = self
            .keys
            .iter()
            .map(|(k, s)| (s.times.back().copied().unwrap_or(i64::MIN), k.clone()))
            .collect();
        by_last.sort_unstable();
        for (_, key) in by_last {
            if self.total <= target {
                break;
            }
            if let Some(state) = self.keys.remove(&key) {
                self.total -= state.times.len();
            }
        }
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Removes sightings older than `cutoff`; returns how many.
fn prune(times: &mut VecDeque<i64>, cutoff: i64) -> usize {
    let before = times.len();
    while times.front().is_some_and(|t| *t <= cutoff) {
        times.pop_front();
    }
    before - times.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// `count_over` in a batch of its own, committed.
    fn count(store: &Sightings, key: &str, window_ms: i64, now_ms: i64) -> i64 {
        let mut staged = Staged::default();
        let n = store.count_over(key, window_ms, now_ms, &mut staged);
        store.commit(staged);
        n
    }

    /// `first_seen` in a batch of its own, committed.
    fn first(store: &Sightings, key: &str, window_ms: i64, now_ms: i64) -> bool {
        let mut staged = Staged::default();
        let first = store.first_seen(key, window_ms, now_ms, &mut staged);
        store.commit(staged);
        first
    }

    #[test]
    fn count_over_counts_sightings_in_the_window_this_one_included() {
        let store = Sightings::default();
        let counts: Vec<i64> = (0..5)
            .map(|i| count(&store, "10.0.0.9", 5 * MIN, i * MIN))
            .collect();
        assert_eq!(counts, [1, 2, 3, 4, 5]);
        // At 5 min the first sighting (at 0) has left the window.
        assert_eq!(count(&store, "10.0.0.9", 5 * MIN, 5 * MIN), 5);
        assert_eq!(count(&store, "other", 5 * MIN, 5 * MIN), 1);
        assert_eq!(count(&store, "10.0.0.9", 5 * MIN, 20 * MIN), 1);
    }

    #[test]
    fn first_seen_is_true_once_per_window() {
        let store = Sightings::default();
        let day = 24 * 60 * MIN;
        assert!(first(&store, "alice/payments", day, 0));
        assert!(!first(&store, "alice/payments", day, 10 * MIN));
        assert!(first(&store, "bob/payments", day, 10 * MIN));
        assert!(!first(&store, "alice/payments", day, day - 1));
        assert!(first(&store, "alice/payments", day, day));
    }

    #[test]
    fn a_batch_sees_its_own_sightings_and_records_them_only_when_committed() {
        let store = Sightings::default();
        let mut failed = Staged::default();
        assert_eq!(store.count_over("ip", 5 * MIN, 0, &mut failed), 1);
        assert_eq!(store.count_over("ip", 5 * MIN, 1, &mut failed), 2);
        assert!(store.first_seen("user", 5 * MIN, 1, &mut failed));
        assert!(!store.first_seen("user", 5 * MIN, 2, &mut failed));
        // The batch failed to store: dropped, nothing recorded.
        drop(failed);
        assert!(store.is_empty());
        // Its retry counts the same sightings, once.
        let mut retry = Staged::default();
        assert_eq!(store.count_over("ip", 5 * MIN, 0, &mut retry), 1);
        assert_eq!(store.count_over("ip", 5 * MIN, 1, &mut retry), 2);
        assert!(store.first_seen("user", 5 * MIN, 1, &mut retry));
        store.commit(retry);
        assert_eq!(store.len(), 3);
        assert_eq!(count(&store, "ip", 5 * MIN, 2), 3);
        assert!(!first(&store, "user", 5 * MIN, 3));
    }

    #[test]
    fn batches_committed_out_of_order_keep_their_sightings_in_time_order() {
        let store = Sightings::default();
        let mut later = Staged::default();
        store.count_over("k", 10 * MIN, 5 * MIN, &mut later);
        let mut earlier = Staged::default();
        store.count_over("k", 10 * MIN, MIN, &mut earlier);
        store.commit(later);
        store.commit(earlier);
        // At 11.5 min the sighting at 1 min has left the window; the one at 5 min has not.
        assert_eq!(count(&store, "k", 10 * MIN, 11 * MIN + MIN / 2), 2);
    }

    #[test]
    fn memory_stays_under_the_cap() {
        let store = Sightings::default();
        for i in 0..(MAX_TIMESTAMPS as i64 + 10_000) {
            count(&store, &format!("k{}", i % 50_000), i64::MAX / 4, i);
        }
        assert!(store.len() <= MAX_TIMESTAMPS);
    }
}
