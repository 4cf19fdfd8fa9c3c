//! The seen filter: (auditID, stage) pairs already processed are skipped, so an apiserver
//! retry of a batch raises no second alert.
//!
//! Memory is bounded: two generations of 64-bit hashes, each holding at most half of
//! `max_entries` (about 20 bytes per entry with the hash table's overhead), rotated when
//! full or after half the window. A pair is remembered at least until the earlier of
//! `window / 2` and the time the filter takes to see `max_entries / 2` new pairs.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Remembers recently processed (auditID, stage) pairs.
pub struct SeenFilter {
    hasher: RandomState,
    half_window: Duration,
    half_capacity: usize,
    state: Mutex<Generations>,
}

struct Generations {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    started: Instant,
}

impl SeenFilter {
    /// A filter remembering pairs for about `window`, at most `max_entries` of them.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            half_window: window / 2,
            half_capacity: (max_entries / 2).max(1),
            state: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                started: Instant::now(),
            }),
        }
    }

    /// The key of a pair; `None` for events without an auditID (never deduplicated).
    pub fn key(&self, audit_id: &str, stage: &str) -> Option<u64> {
        (!audit_id.is_empty()).then(|| self.hasher.hash_one((audit_id, stage)))
    }

    /// Whether the pair with this key was recorded recently.
    pub fn contains(&self, key: u64) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.current.contains(&key) || state.previous.contains(&key)
    }

    /// Records pairs as processed.
    pub fn record(&self, keys: impl IntoIterator<Item = u64>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if state.current.len() >= self.half_capacity
                || state.started.elapsed() >= self.half_window
            {
                let current = std::mem::take(&mut state.current);
                state.previous = current;
                state.started = Instant::now();
            }
            state.current.insert(key);
        }
    }

    /// Pairs remembered now (both generations).
    pub fn len(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.current.len() + state.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_pairs_and_stays_within_its_capacity() {
        let filter = SeenFilter::new(Duration::from_secs(600), 1000);
        let key = |id: &str, stage: &str| filter.key(id, stage);
        filter.record(key("a", "ResponseComplete"));
        assert!(filter.contains(key("a", "ResponseComplete").unwrap()));
        assert!(!filter.contains(key("a", "ResponseStarted").unwrap()));
        assert_eq!(key("", "ResponseComplete"), None);
        let ids: Vec<String> = (0..10_000).map(|i| format!("id-{i}")).collect();
        filter.record(ids.iter().filter_map(|id| key(id, "ResponseComplete")));
        assert!(filter.len() <= 1000);
        // The most recent half-capacity is always remembered.
        let recent = &ids[9_600..];
        assert!(
            recent
                .iter()
                .all(|id| filter.contains(key(id, "ResponseComplete").unwrap()))
        );
        assert!(!filter.contains(key("a", "ResponseComplete").unwrap()));
    }
}
