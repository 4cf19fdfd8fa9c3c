//! State for the stateful helpers `count_over(key, window)` and `first_seen(key, window)`,
//! clocked by the caller (the wall clock in `serve`, the event's time in dry-run and replay).
//! With the Redis backend the answers come from the replicas' shared memory (`state`
//! module) while it answers; this memory records every sighting either way.
//!
//! Keys are scoped per rule. Memory is bounded: at most [`MAX_TIMESTAMPS`] remembered
//! sightings in all (8 bytes each plus the key), past which the least recently used keys
//! are forgotten first; expired sightings are dropped whenever a key is touched and on a
//! sweep every [`SWEEP_EVERY`] calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use crate::state::SharedHelpers;

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

/// The stateful helpers' memory, shared by every script of a rule set and kept across
/// reloads.
#[derive(Default)]
pub struct StateStore {
    inner: Mutex<Inner>,
    /// The replicas' shared memory (Redis): its answers win while it answers.
    shared: OnceLock<Arc<dyn SharedHelpers>>,
}

impl StateStore {
    /// Shares the helpers' memory with other replicas through `shared` from now on; this
    /// store still records every sighting, and answers alone when `shared` does not.
    pub fn share(&self, shared: Arc<dyn SharedHelpers>) {
        let _ = self.shared.set(shared);
    }

    /// `count_over`: all replicas' sightings while the shared store answers, else this
    /// replica's.
    pub fn count_over(&self, key: &str, window_ms: i64, now_ms: i64) -> i64 {
        let local = self.count_over_locally(key, window_ms, now_ms);
        self.shared_or(local, |shared| shared.count_over(key, window_ms, now_ms))
    }

    /// `first_seen`: across all replicas while the shared store answers, else on this
    /// replica.
    pub fn first_seen(&self, key: &str, window_ms: i64, now_ms: i64) -> bool {
        let local = self.first_seen_locally(key, window_ms, now_ms);
        self.shared_or(local, |shared| shared.first_seen(key, window_ms, now_ms))
    }

    /// The shared store's answer, or `local` without one or when it does not answer.
    fn shared_or<T>(
        &self,
        local: T,
        ask: impl FnOnce(&dyn SharedHelpers) -> Result<T, crate::state::Unavailable>,
    ) -> T {
        self.shared
            .get()
            .and_then(|shared| ask(shared.as_ref()).ok())
            .unwrap_or(local)
    }

    /// Records a sighting of `key` at `now_ms` and returns how many sightings fall within
    /// the last `window_ms`, this one included.
    fn count_over_locally(&self, key: &str, window_ms: i64, now_ms: i64) -> i64 {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let count = {
            let Inner { keys, total, .. } = &mut *inner;
            let state = keys.entry(key.to_owned()).or_default();
            state.window_ms = window_ms;
            *total -= prune(&mut state.times, now_ms - window_ms);
            state.times.push_back(now_ms);
            *total += 1;
            state.times.len()
        };
        inner.after_call(now_ms);
        i64::try_from(count).unwrap_or(i64::MAX)
    }

    /// True when `key` was not seen within the last `window_ms` (then it is recorded as
    /// seen now); false otherwise (the earlier sighting is kept).
    fn first_seen_locally(&self, key: &str, window_ms: i64, now_ms: i64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = {
            let Inner { keys, total, .. } = &mut *inner;
            let state = keys.entry(key.to_owned()).or_default();
            state.window_ms = window_ms;
            *total -= prune(&mut state.times, now_ms - window_ms);
            let first = state.times.is_empty();
            if first {
                state.times.push_back(now_ms);
                *total += 1;
            }
            first
        };
        inner.after_call(now_ms);
        first
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

    #[test]
    fn count_over_counts_sightings_in_the_window_this_one_included() {
        let store = StateStore::default();
        let counts: Vec<i64> = (0..5)
            .map(|i| store.count_over("10.0.0.9", 5 * MIN, i * MIN))
            .collect();
        assert_eq!(counts, [1, 2, 3, 4, 5]);
        // At 5 min the first sighting (at 0) has left the window.
        assert_eq!(store.count_over("10.0.0.9", 5 * MIN, 5 * MIN), 5);
        assert_eq!(store.count_over("other", 5 * MIN, 5 * MIN), 1);
        assert_eq!(store.count_over("10.0.0.9", 5 * MIN, 20 * MIN), 1);
    }

    #[test]
    fn first_seen_is_true_once_per_window() {
        let store = StateStore::default();
        let day = 24 * 60 * MIN;
        assert!(store.first_seen("alice/payments", day, 0));
        assert!(!store.first_seen("alice/payments", day, 10 * MIN));
        assert!(store.first_seen("bob/payments", day, 10 * MIN));
        assert!(!store.first_seen("alice/payments", day, day - 1));
        assert!(store.first_seen("alice/payments", day, day));
    }

    #[test]
    fn memory_stays_under_the_cap() {
        let store = StateStore::default();
        for i in 0..(MAX_TIMESTAMPS as i64 + 10_000) {
            store.count_over(&format!("k{}", i % 50_000), i64::MAX / 4, i);
        }
        assert!(store.len() <= MAX_TIMESTAMPS);
    }
}
