//! Counting what a run sent and how each batch was answered, and the report it ends with:
//! one summary line for people, or the same as one JSON object.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// How one batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a 2xx status.
    Accepted(u16),
    /// Answered with another status.
    Rejected(u16),
    /// No connection could be made.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// Any other transport error (reset connection, protocol error, …).
    Transport,
}

/// A kind of failure, as counted in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// A non-2xx status.
    Status(u16),
    /// No connection could be made.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// Any other transport error.
    Transport,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "{code}"),
            Self::Connect => f.write_str("connect"),
            Self::Timeout => f.write_str("timeout"),
            Self::Transport => f.write_str("error"),
        }
    }
}

/// Running counts of one sender (or of the whole run once merged).
#[derive(Debug, Default)]
pub struct Tally {
    batches: u64,
    events: u64,
    accepted_batches: u64,
    accepted_events: u64,
    /// Per accepted batch, in microseconds (a quick 429 says nothing of how long storing takes).
    latencies_us: Vec<u64>,
    failures: BTreeMap<Failure, u64>,
    missed: u64,
}

impl Tally {
    /// Counts one sent batch of `events` events that ended in `outcome` after `latency`.
    pub fn record(&mut self, outcome: Outcome, events: u64, latency: Duration) {
        self.batches += 1;
        self.events += events;
        let failure = match outcome {
            Outcome::Accepted(_) => {
                self.accepted_batches += 1;
                self.accepted_events += events;
                None
            }
            Outcome::Rejected(code) => Some(Failure::Status(code)),
            Outcome::Connect => Some(Failure::Connect),
            Outcome::Timeout => Some(Failure::Timeout),
            Outcome::Transport => Some(Failure::Transport),
        };
        if matches!(outcome, Outcome::Accepted(_)) {
            self.latencies_us
                .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        }
        if let Some(failure) = failure {
            *self.failures.entry(failure).or_default() += 1;
        }
    }

    /// Counts one batch that was due but not sent, because the in-flight cap was reached.
    pub fn record_missed(&mut self) {
        self.missed += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Tally) {
        self.batches += other.batches;
        self.events += other.events;
        self.accepted_batches += other.accepted_batches;
        self.accepted_events += other.accepted_events;
        self.latencies_us.extend(other.latencies_us);
        for (failure, n) in other.failures {
            *self.failures.entry(failure).or_default() += n;
        }
        self.missed += other.missed;
    }

    /// The report of a run of this tally's batches that took `elapsed`.
    pub fn into_report(mut self, mode: Mode, elapsed: Duration) -> Report {
        self.latencies_us.sort_unstable();
        let secs = elapsed.as_secs_f64();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let failures = self.failures.values().sum();
        let (missed, max_in_flight) = match mode {
            Mode::Closed { .. } => (None, None),
            Mode::Open { max_in_flight, .. } => (Some(self.missed), Some(max_in_flight)),
        };
        Report {
            mode: mode.name(),
            batches: self.batches,
            events: self.events,
            elapsed_secs: secs,
            events_per_sec: rate(self.events),
            batches_per_sec: rate(self.batches),
            accepted_batches: self.accepted_batches,
            accepted_events: self.accepted_events,
            accepted_events_per_sec: rate(self.accepted_events),
            latency_ms: Latency::of(&self.latencies_us),
            failures,
            failures_by_kind: self
                .failures
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            missed,
            max_in_flight,
        }
    }
}

/// How the batches were paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each sender sends its next batch when the previous one was answered.
    Closed {
        /// Number of senders.
        concurrency: usize,
    },
    /// Batches are sent at fixed intervals regardless of answers.
    Open {
        /// Offered load.
        events_per_sec: f64,
        /// Most batches awaiting an answer at once.
        max_in_flight: usize,
    },
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
        }
    }
}

/// Answer latency percentiles in milliseconds, over the accepted (2xx) batches: a quick 429
/// or 503 is not a stored batch, and the apiserver would send it again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `sorted_us` (ascending microseconds); `None` when empty.
    fn of(sorted_us: &[u64]) -> Option<Self> {
        let max = *sorted_us.last()?;
        let at = |p: f64| {
            let rank = (p * sorted_us.len() as f64).ceil() as usize;
            ms(sorted_us[rank.clamp(1, sorted_us.len()) - 1])
        };
        Some(Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: ms(max),
        })
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Batches sent (answered or failed).
    pub batches: u64,
    /// Events in those batches.
    pub events: u64,
    /// From the first batch sent to the last answer.
    pub elapsed_secs: f64,
    /// `events` per second of `elapsed_secs`.
    pub events_per_sec: f64,
    /// `batches` per second of `elapsed_secs`.
    pub batches_per_sec: f64,
    /// Batches answered 2xx.
    pub accepted_batches: u64,
    /// Events in batches answered 2xx.
    pub accepted_events: u64,
    /// `accepted_events` per second of `elapsed_secs`.
    pub accepted_events_per_sec: f64,
    /// Latency of the accepted batches; `None` when none was accepted.
    pub latency_ms: Option<Latency>,
    /// Batches that failed (non-2xx status or transport error).
    pub failures: u64,
    /// Failures by kind: the status code, `connect`, `timeout` or `error`.
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Open loop: batches that were due but not sent because `max_in_flight` were awaiting answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    /// Open loop: the in-flight cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

impl Report {
    /// Whether at least one batch was accepted.
    pub fn any_accepted(&self) -> bool {
        self.accepted_batches > 0
    }
}

/// `sent 1200 batches (480000 events) in 10.0 s: 48000 events/s, 120 batches/s; latency p50
/// 2.1 ms p90 3.0 ms p99 4.2 ms max 9.8 ms; failures: 4 (429×3 503×1 connect×0)`, then for
/// an open loop `; missed: 0 (in-flight cap 64)`.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} batches ({} events) in {:.1} s: {:.0} events/s, {:.1} batches/s; ",
            self.batches, self.events, self.elapsed_secs, self.events_per_sec, self.batches_per_sec
        )?;
        match &self.latency_ms {
            Some(l) => write!(
                f,
                "latency p50 {} p90 {} p99 {} max {}",
                Millis(l.p50),
                Millis(l.p90),
                Millis(l.p99),
                Millis(l.max)
            )?,
            None => f.write_str("latency n/a")?,
        }
        write!(f, "; failures: {}", self.failures)?;
        if self.failures > 0 {
            let mut kinds: Vec<String> = self
                .failures_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind}×{n}"))
                .collect();
            if !self.failures_by_kind.contains_key("connect") {
                kinds.push("connect×0".to_owned());
            }
            write!(f, " ({})", kinds.join(" "))?;
        }
        if let (Some(missed), Some(cap)) = (self.missed, self.max_in_flight) {
            write!(f, "; missed: {missed} (in-flight cap {cap})")?;
        }
        Ok(())
    }
}

/// Milliseconds with one decimal, two below 1 ms.
struct Millis(f64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 1.0 {
            write!(f, "{:.2} ms", self.0)
        } else {
            write!(f, "{:.1} ms", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `(outcome, latency in ms)`; events alternate 400 and 401.
    fn tally(outcomes: &[(Outcome, u64)]) -> Tally {
        let mut t = Tally::default();
        for (i, (outcome, ms)) in outcomes.iter().enumerate() {
            t.record(*outcome, 400 + i as u64 % 2, Duration::from_millis(*ms));
        }
        t
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|i| i * 1_000).collect();
        let l = Latency::of(&sorted).unwrap();
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        let one = Latency::of(&[2_500]).unwrap();
        assert_eq!((one.p50, one.max), (2.5, 2.5));
        assert_eq!(Latency::of(&[]), None);
    }

    #[test]
    fn the_summary_line_counts_failures_by_kind() {
        let mut t = tally(&[
            (Outcome::Accepted(200), 2),
            (Outcome::Rejected(429), 1),
            (Outcome::Rejected(503), 3),
            (Outcome::Accepted(201), 4),
        ]);
        t.merge(tally(&[(Outcome::Rejected(429), 1), (Outcome::Connect, 0)]));
        let report = t.into_report(Mode::Closed { concurrency: 2 }, Duration::from_secs(2));
        assert_eq!(report.batches, 6);
        assert_eq!(report.events, 400 + 401 + 400 + 401 + 400 + 401);
        assert_eq!(report.accepted_events, 400 + 401);
        let line = report.to_string();
        assert_eq!(
            line,
            "sent 6 batches (2403 events) in 2.0 s: 1202 events/s, 3.0 batches/s; latency p50 2.0 ms p90 4.0 ms p99 4.0 ms max 4.0 ms; failures: 4 (429×2 503×1 connect×1)"
        );
    }

    #[test]
    fn open_loop_reports_missed_batches() {
        let mut t = tally(&[(Outcome::Accepted(200), 1)]);
        t.record_missed();
        let mode = Mode::Open {
            events_per_sec: 400.0,
            max_in_flight: 8,
        };
        let report = t.into_report(mode, Duration::from_secs(1));
        assert_eq!(report.missed, Some(1));
        let line = report.to_string();
        assert!(
            line.ends_with("failures: 0; missed: 1 (in-flight cap 8)"),
            "{line}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["missed"], 1);
        assert_eq!(json["latency_ms"]["p50"], 1.0);
    }
}
