//! Pacing a run: the closed loop (N senders, each sending its next batch once the previous
//! one was answered), the open loop (batches due at fixed intervals whatever the answers,
//! latency counted from when each was due), and the generator alone.

use std::fmt;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::LoadgenError;
use super::client::Target;
use super::mix::Generator;
use super::stats::{Mode, Outcome, Report, Tally};

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long: no batch is started (closed loop) or due (open loop) later.
    Duration(Duration),
    /// After this many batches (open loop: this many due, sent or missed).
    Batches(u64),
}

impl Stop {
    /// Whether batch `seq`, starting or due `offset` after the run's start, belongs to the run.
    fn allows(self, seq: u64, offset: Duration) -> bool {
        match self {
            Self::Duration(limit) => offset < limit,
            Self::Batches(n) => seq < n,
        }
    }
}

/// How batches are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `concurrency` senders, each sending its next batch once the previous one was answered.
    Closed {
        /// Number of senders.
        concurrency: usize,
        /// When to stop.
        stop: Stop,
    },
    /// One batch every `batch_size / events_per_sec` seconds whatever the answers; a batch
    /// due while `max_in_flight` batches await answers is not sent and counted as missed.
    Open {
        /// Offered load.
        events_per_sec: f64,
        /// Most batches awaiting answers at once.
        max_in_flight: usize,
        /// When to stop.
        stop: Stop,
    },
}

/// Runs `load` against `target` with bodies from `generator` and reports the result.
pub async fn run(
    target: &Target,
    generator: Arc<Generator>,
    load: Load,
) -> Result<Report, LoadgenError> {
    match load {
        Load::Closed { concurrency, stop } => {
            if concurrency == 0 {
                return Err(LoadgenError::Load("concurrency must be at least 1".into()));
            }
            Ok(closed_loop(target, generator, concurrency, stop).await)
        }
        Load::Open {
            events_per_sec,
            max_in_flight,
            stop,
        } => {
            let interval = batch_interval(generator.batch_size(), events_per_sec)?;
            if max_in_flight == 0 {
                return Err(LoadgenError::Load(
                    "max in-flight must be at least 1".into(),
                ));
            }
            let schedule = Schedule {
                interval,
                events_per_sec,
                max_in_flight,
            };
            Ok(open_loop(target, generator, schedule, stop).await)
        }
    }
}

/// The time between two batches of `batch_size` events at `events_per_sec`.
fn batch_interval(batch_size: usize, events_per_sec: f64) -> Result<Duration, LoadgenError> {
    let invalid = || {
        LoadgenError::Load(format!(
            "rate {events_per_sec} events/s gives no usable interval between batches of {batch_size}"
        ))
    };
    if events_per_sec.is_nan() || events_per_sec <= 0.0 {
        return Err(invalid());
    }
    match Duration::try_from_secs_f64(batch_size as f64 / events_per_sec) {
        Ok(interval) if !interval.is_zero() => Ok(interval),
        _ => Err(invalid()),
    }
}

async fn closed_loop(
    target: &Target,
    generator: Arc<Generator>,
    concurrency: usize,
    stop: Stop,
) -> Report {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut senders = JoinSet::new();
    for _ in 0..concurrency {
        let sender = Sender {
            target: target.clone(),
            generator: generator.clone(),
            next: next.clone(),
            start,
            stop,
        };
        senders.spawn(sender.run());
    }
    let mut tally = Tally::default();
    while let Some(done) = senders.join_next().await {
        if let Ok(sender_tally) = done {
            tally.merge(sender_tally);
        }
    }
    tally.into_report(Mode::Closed { concurrency }, start.elapsed())
}

/// One closed-loop sender; the senders share the batch sequence.
struct Sender {
    target: Target,
    generator: Arc<Generator>,
    next: Arc<AtomicU64>,
    start: Instant,
    stop: Stop,
}

impl Sender {
    async fn run(self) -> Tally {
        let mut tally = Tally::default();
        let events = self.generator.batch_size() as u64;
        loop {
            let seq = self.next.fetch_add(1, Ordering::Relaxed);
            if !self.stop.allows(seq, self.start.elapsed()) {
                return tally;
            }
            let body = self.generator.batch(seq, OffsetDateTime::now_utc());
            let sent = Instant::now();
            let outcome = self.target.send(body).await;
            tally.record(outcome, events, sent.elapsed());
        }
    }
}

/// The open loop's pacing.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval: Duration,
    events_per_sec: f64,
    max_in_flight: usize,
}

impl Schedule {
    /// When batch `seq` is due, after the start; `None` past what a clock can hold.
    fn offset(&self, seq: u64) -> Option<Duration> {
        Duration::try_from_secs_f64(self.interval.as_secs_f64() * seq as f64).ok()
    }
}

async fn open_loop(
    target: &Target,
    generator: Arc<Generator>,
    schedule: Schedule,
    stop: Stop,
) -> Report {
    let permits = Arc::new(Semaphore::new(schedule.max_in_flight));
    let events = generator.batch_size() as u64;
    let mut tally = Tally::default();
    let mut in_flight = JoinSet::new();
    let start = Instant::now();
    for seq in 0u64.. {
        let Some(offset) = schedule.offset(seq).filter(|o| stop.allows(seq, *o)) else {
            break;
        };
        let Some(due) = start.checked_add(offset) else {
            break;
        };
        tokio::time::sleep_until(due.into()).await;
        while let Some(done) = in_flight.try_join_next() {
            record(&mut tally, done, events);
        }
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let batch = Due {
                    seq,
                    due,
                    _permit: permit,
                };
                in_flight.spawn(batch.send(target.clone(), generator.clone()));
            }
            Err(_) => tally.record_missed(),
        }
    }
    while let Some(done) = in_flight.join_next().await {
        record(&mut tally, done, events);
    }
    let mode = Mode::Open {
        events_per_sec: schedule.events_per_sec,
        max_in_flight: schedule.max_in_flight,
    };
    tally.into_report(mode, start.elapsed())
}

fn record(
    tally: &mut Tally,
    done: Result<(Outcome, Duration), tokio::task::JoinError>,
    events: u64,
) {
    if let Ok((outcome, latency)) = done {
        tally.record(outcome, events, latency);
    }
}

/// An open-loop batch, holding its in-flight slot until answered.
struct Due {
    seq: u64,
    due: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Due {
    /// Sends the batch; the latency counts from when it was due, not from when it went out.
    async fn send(self, target: Target, generator: Arc<Generator>) -> (Outcome, Duration) {
        let body = generator.batch(self.seq, OffsetDateTime::now_utc());
        let outcome = target.send(body).await;
        (outcome, self.due.elapsed())
    }
}

/// How fast the generator alone builds bodies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratorSpeed {
    /// Bodies built.
    pub batches: u64,
    /// Events in them.
    pub events: u64,
    /// Their total size.
    pub bytes: u64,
    /// Time taken.
    pub elapsed_secs: f64,
    /// `events` per second.
    pub events_per_sec: f64,
}

/// `generated 1200 batches (480000 events, 430.2 MiB) in 2.0 s: 240000 events/s, 215.1 MiB/s`.
impl fmt::Display for GeneratorSpeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "generated {} batches ({} events, {mib:.1} MiB) in {:.1} s: {:.0} events/s, {:.1} MiB/s",
            self.batches,
            self.events,
            self.elapsed_secs,
            self.events_per_sec,
            mib / self.elapsed_secs.max(f64::MIN_POSITIVE),
        )
    }
}

/// Builds bodies on this thread, sending nothing, until `stop`; each with a fresh clock
/// reading, as a run does.
pub fn generate_only(generator: &Generator, stop: Stop) -> GeneratorSpeed {
    let start = Instant::now();
    let (mut batches, mut bytes) = (0u64, 0u64);
    while stop.allows(batches, start.elapsed()) {
        let body = black_box(generator.batch(batches, OffsetDateTime::now_utc()));
        bytes += body.len() as u64;
        batches += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let events = batches * generator.batch_size() as u64;
    GeneratorSpeed {
        batches,
        events,
        bytes,
        elapsed_secs: elapsed,
        events_per_sec: if elapsed > 0.0 {
            events as f64 / elapsed
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::StatusCode;
    use axum::routing::post;

    use klaxon::audit::EventList;

    use super::*;
    use crate::loadgen::{ClientOptions, test_generator};

    /// What a scripted server saw: requests, events, and the statuses it answered.
    #[derive(Default)]
    struct Seen {
        requests: AtomicU64,
        events: AtomicU64,
        statuses: Mutex<BTreeMap<u16, u64>>,
    }

    impl Seen {
        fn statuses(&self) -> BTreeMap<u16, u64> {
            self.statuses.lock().unwrap().clone()
        }
    }

    /// The n-th request (from 1) is answered 429 when n is a multiple of 5, else 503 when
    /// a multiple of 7, else 200.
    async fn scripted(State(seen): State<Arc<Seen>>, body: Bytes) -> StatusCode {
        let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let list: EventList = serde_json::from_slice(&body).unwrap_or_default();
        let events = list.items.map_or(0, |items| items.len() as u64);
        seen.events.fetch_add(events, Ordering::SeqCst);
        let status = match (n % 5, n % 7) {
            (0, _) => StatusCode::TOO_MANY_REQUESTS,
            (_, 0) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        };
        *seen
            .statuses
            .lock()
            .unwrap()
            .entry(status.as_u16())
            .or_default() += 1;
        status
    }

    async fn start_scripted() -> (Target, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/audit", post(scripted))
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/audit", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let target = Target::new(&ClientOptions::new(url.parse().unwrap())).unwrap();
        (target, seen)
    }

    /// The report's counts equal what the server counted, status by status.
    fn assert_matches_server(report: &Report, seen: &Seen, batch_size: u64) {
        let statuses = seen.statuses();
        assert_eq!(report.batches, seen.requests.load(Ordering::SeqCst));
        assert_eq!(report.events, seen.events.load(Ordering::SeqCst));
        assert_eq!(report.events, report.batches * batch_size);
        assert_eq!(
            report.accepted_batches,
            statuses.get(&200).copied().unwrap_or(0)
        );
        assert_eq!(report.accepted_events, report.accepted_batches * batch_size);
        let failures: BTreeMap<String, u64> = statuses
            .iter()
            .filter(|(code, _)| **code != 200)
            .map(|(code, n)| (code.to_string(), *n))
            .collect();
        assert_eq!(report.failures_by_kind, failures);
        assert_eq!(report.failures, report.batches - report.accepted_batches);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_counts_equal_the_servers() {
        let (target, seen) = start_scripted().await;
        let generator = Arc::new(test_generator(1, 100));
        let load = Load::Closed {
            concurrency: 3,
            stop: Stop::Batches(40),
        };
        let report = run(&target, generator, load).await.unwrap();
        assert_matches_server(&report, &seen, 100);
        assert_eq!(report.batches, 40);
        // Of requests 1..=40: 8 multiples of 5; 7, 14, 21, 28 (35 is a multiple of 5).
        assert_eq!(
            seen.statuses(),
            BTreeMap::from([(200, 28), (429, 8), (503, 4)])
        );
        let line = report.to_string();
        assert!(
            line.starts_with("sent 40 batches (4000 events) in "),
            "{line}"
        );
        assert!(
            line.ends_with("failures: 12 (429×8 503×4 connect×0)"),
            "{line}"
        );
        assert!(report.latency_ms.is_some());
        assert_eq!(report.missed, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_counts_equal_the_servers() {
        let (target, seen) = start_scripted().await;
        let generator = Arc::new(test_generator(2, 100));
        let load = Load::Open {
            events_per_sec: 20_000.0,
            max_in_flight: 30,
            stop: Stop::Batches(30),
        };
        let report = run(&target, generator, load).await.unwrap();
        assert_matches_server(&report, &seen, 100);
        assert_eq!(report.batches, 30);
        assert_eq!(report.missed, Some(0));
        assert_eq!(
            seen.statuses(),
            BTreeMap::from([(200, 20), (429, 6), (503, 4)])
        );
        // 30 batches due 5 ms apart: the last is due 145 ms after the start.
        assert!(report.elapsed_secs >= 0.145, "{}", report.elapsed_secs);
    }

    /// On a current-thread runtime nothing else runs while every batch is already due, so
    /// exactly `max_in_flight` batches go out and the rest are missed.
    #[tokio::test(flavor = "current_thread")]
    async fn open_loop_counts_batches_past_the_in_flight_cap_as_missed() {
        let (target, seen) = start_scripted().await;
        let generator = Arc::new(test_generator(3, 10));
        let load = Load::Open {
            events_per_sec: 1e9,
            max_in_flight: 2,
            stop: Stop::Batches(10),
        };
        let report = run(&target, generator, load).await.unwrap();
        assert_matches_server(&report, &seen, 10);
        assert_eq!(report.batches, 2);
        assert_eq!(report.missed, Some(8));
        let line = report.to_string();
        assert!(line.ends_with("; missed: 8 (in-flight cap 2)"), "{line}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_connections_are_connect_failures() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/audit", listener.local_addr().unwrap());
        drop(listener);
        let target = Target::new(&ClientOptions::new(url.parse().unwrap())).unwrap();
        let load = Load::Closed {
            concurrency: 1,
            stop: Stop::Batches(3),
        };
        let report = run(&target, Arc::new(test_generator(1, 5)), load)
            .await
            .unwrap();
        assert_eq!(report.batches, 3);
        assert_eq!(
            report.failures_by_kind,
            BTreeMap::from([("connect".into(), 3)])
        );
        assert!(!report.any_accepted());
        assert!(
            report
                .to_string()
                .contains("latency n/a; failures: 3 (connect×3)")
        );
    }

    #[tokio::test]
    async fn invalid_loads_are_refused() {
        let target = Target::new(&ClientOptions::new(
            "http://127.0.0.1:1/audit".parse().unwrap(),
        ))
        .unwrap();
        let generator = Arc::new(test_generator(1, 5));
        for load in [
            Load::Closed {
                concurrency: 0,
                stop: Stop::Batches(1),
            },
            Load::Open {
                events_per_sec: 0.0,
                max_in_flight: 1,
                stop: Stop::Batches(1),
            },
            Load::Open {
                events_per_sec: f64::NAN,
                max_in_flight: 1,
                stop: Stop::Batches(1),
            },
            Load::Open {
                events_per_sec: 10.0,
                max_in_flight: 0,
                stop: Stop::Batches(1),
            },
            Load::Open {
                events_per_sec: 1e300,
                max_in_flight: 1,
                stop: Stop::Batches(1),
            },
            Load::Open {
                events_per_sec: 1e-300,
                max_in_flight: 1,
                stop: Stop::Batches(1),
            },
        ] {
            assert!(
                run(&target, generator.clone(), load).await.is_err(),
                "{load:?}"
            );
        }
    }

    #[test]
    fn generate_only_builds_the_asked_batches() {
        let speed = generate_only(&test_generator(1, 400), Stop::Batches(5));
        assert_eq!((speed.batches, speed.events), (5, 2000));
        assert!(speed.bytes > 2000 * 700, "{}", speed.bytes);
        assert!(
            speed
                .to_string()
                .starts_with("generated 5 batches (2000 events, ")
        );
    }
}
