//! The outbox's health: healthy, or broken by an I/O error until the database file is
//! reopened, and when the next reopen may be tried (100 ms doubling up to 5 s).
//!
//! Owns the state machine only; does no I/O and calls nothing.

use std::time::{Duration, Instant};

/// Wait before the first reopen after a failure.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest wait between reopen attempts.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Whether the outbox can be used, as the probes report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The database answers.
    Healthy,
    /// An I/O error broke the database; it is reopened with backoff.
    Broken {
        /// When the trouble started.
        since: Instant,
        /// Why, in a few words (never a path or a secret).
        reason: String,
    },
}

impl Health {
    /// True when the outbox answers.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }

    /// How long it has been broken; `None` when healthy.
    pub fn broken_for(&self) -> Option<Duration> {
        match self {
            Health::Healthy => None,
            Health::Broken { since, .. } => Some(since.elapsed()),
        }
    }

    /// The reason it is broken; `None` when healthy.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Healthy => None,
            Health::Broken { reason, .. } => Some(reason),
        }
    }
}

/// Trouble that is not over yet: since when, and how many reopens did not cure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trouble {
    since: Instant,
    failures: u32,
}

/// The state machine behind [`Health`], with the reopen schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// Usable. `probation` is set after a reopen until a write commits: if the database
    /// breaks again before that, the trouble (its start, its backoff) simply continues.
    Healthy { probation: Option<Trouble> },
    /// Broken; no operation runs before `next_try`.
    Broken {
        trouble: Trouble,
        reason: String,
        next_try: Instant,
    },
}

/// What an operation may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Gate {
    /// Use the database.
    Open,
    /// Close and reopen the database first.
    Reopen,
    /// Fail fast, with this reason.
    Closed(String),
}

impl Default for State {
    fn default() -> Self {
        State::Healthy { probation: None }
    }
}

impl State {
    /// What an operation starting at `now` may do.
    pub(super) fn gate(&self, now: Instant) -> Gate {
        match self {
            State::Healthy { .. } => Gate::Open,
            State::Broken { next_try, .. } if now >= *next_try => Gate::Reopen,
            State::Broken { reason, .. } => Gate::Closed(reason.clone()),
        }
    }

    /// An operation failed with an I/O-class error; true when this broke a usable database.
    pub(super) fn broke(&mut self, reason: String, now: Instant) -> bool {
        let trouble = match self {
            State::Broken { .. } => return false,
            State::Healthy {
                probation: Some(trouble),
            } => Trouble {
                failures: trouble.failures + 1,
                ..*trouble
            },
            State::Healthy { probation: None } => Trouble {
                since: now,
                failures: 0,
            },
        };
        *self = State::Broken {
            trouble,
            reason,
            next_try: now + delay(trouble.failures),
        };
        true
    }

    /// A reopen attempt failed: wait longer before the next one.
    pub(super) fn reopen_failed(&mut self, reason: String, now: Instant) {
        if let State::Broken { trouble, .. } = self {
            let trouble = Trouble {
                failures: trouble.failures + 1,
                ..*trouble
            };
            *self = State::Broken {
                trouble,
                reason,
                next_try: now + delay(trouble.failures),
            };
        }
    }

    /// The database was reopened: usable again, on probation until a write commits.
    pub(super) fn reopened(&mut self) {
        if let State::Broken { trouble, .. } = self {
            *self = State::Healthy {
                probation: Some(*trouble),
            };
        }
    }

    /// A write committed: the trouble is over.
    pub(super) fn confirmed(&mut self) {
        if let State::Healthy { probation } = self {
            *probation = None;
        }
    }

    /// The public view.
    pub(super) fn health(&self) -> Health {
        match self {
            State::Healthy { .. } => Health::Healthy,
            State::Broken {
                trouble, reason, ..
            } => Health::Broken {
                since: trouble.since,
                reason: reason.clone(),
            },
        }
    }
}

/// The wait after `failures` failed reopens: 100 ms doubling, at most 5 s.
fn delay(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_100ms_up_to_5s() {
        let delays: Vec<u128> = (0..8).map(|n| delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(delay(u32::MAX), MAX_RETRY);
    }

    #[test]
    fn a_break_fails_fast_until_the_reopen_is_due() {
        let start = Instant::now();
        let mut state = State::default();
        assert_eq!(state.gate(start), Gate::Open);
        assert!(state.broke("I/O error".to_owned(), start));
        assert!(!state.broke("a previous I/O error".to_owned(), start));
        assert_eq!(state.gate(start), Gate::Closed("I/O error".to_owned()));
        assert_eq!(state.gate(start + FIRST_RETRY), Gate::Reopen);
        state.reopen_failed("reopen: I/O error".to_owned(), start + FIRST_RETRY);
        let later = start + FIRST_RETRY * 2;
        assert_eq!(
            state.gate(later),
            Gate::Closed("reopen: I/O error".to_owned())
        );
        assert_eq!(state.gate(start + FIRST_RETRY * 3), Gate::Reopen);
        assert_eq!(
            state.health(),
            Health::Broken {
                since: start,
                reason: "reopen: I/O error".to_owned()
            }
        );
        state.reopened();
        assert_eq!(state.health(), Health::Healthy);
    }

    #[test]
    fn breaking_again_before_a_write_commits_continues_the_trouble() {
        let start = Instant::now();
        let mut state = State::default();
        state.broke("first".to_owned(), start);
        state.reopened();
        let again = start + Duration::from_secs(1);
        state.broke("second".to_owned(), again);
        let Health::Broken { since, .. } = state.health() else {
            panic!("broken expected");
        };
        assert_eq!(since, start, "the trouble started with the first break");
        assert_eq!(
            state.gate(again + FIRST_RETRY),
            Gate::Closed("second".into())
        );
        assert_eq!(state.gate(again + FIRST_RETRY * 2), Gate::Reopen);
        state.reopened();
        state.confirmed();
        state.broke("third".to_owned(), again);
        let Health::Broken { since, .. } = state.health() else {
            panic!("broken expected");
        };
        assert_eq!(since, again, "a committed write ended the earlier trouble");
    }
}
