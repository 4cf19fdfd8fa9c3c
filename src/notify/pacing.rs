//! The grouping-and-pacing model of one target: from its pending entries (in outbox order)
//! and the time, what its delivery task does next — send these entries as one notice,
//! wait until a time, or nothing — and, through its rate bucket, when a notice may go.
//!
//! `serve`'s dispatcher (`dispatch.rs`, on the wall clock) and the replay of `dry-run`,
//! `replay` and `klaxon test` (`pipeline::replay`, on the event clock) both step this model,
//! so what is predicted and what is sent are decided by the same code.
//!
//! Owns the decision only: no I/O, no clock (times are ms since the epoch, passed in), no
//! async. Calls nothing but its parent's `Pacing` and `Rate`.

use super::{Pacing, Rate};

/// A pending entry as the model sees it; the slice it comes in is the outbox order.
pub trait Queued {
    /// When it was stored (ms since the epoch).
    fn enqueued_at_ms(&self) -> i64;
    /// Not before this time (ms since the epoch): later than now while in backoff. By
    /// default its enqueue time: an entry that never failed.
    fn next_attempt_ms(&self) -> i64 {
        self.enqueued_at_ms()
    }
    /// Entries of one target with the same group key go out as one notice.
    fn group_key(&self) -> &str;
}

/// Whether group windows are waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Running: the oldest entry's group window must have passed.
    Serve,
    /// Shutting down: group windows no longer wait, and an oldest entry in backoff ends
    /// delivery (it and what follows it wait in the outbox for the next start).
    Drain,
}

/// What a target's task does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send the entries at these positions of the pending slice as one notice, now.
    Send(Vec<usize>),
    /// Nothing is due before this time (ms since the epoch).
    Wait(i64),
    /// Nothing is pending (or, draining, nothing can go before a retry).
    Idle,
}

/// One target's model: its group window, the notice size limit and its rate bucket.
#[derive(Debug, Clone)]
pub struct Pacer {
    group_wait_ms: i64,
    max_per_notice: usize,
    rate: Option<Rate>,
    bucket: Option<RateBucket>,
}

impl Pacer {
    /// The model of a target paced by `pacing`, with at most `max_per_notice` alerts per
    /// notice (at least 1); its bucket starts full.
    pub fn new(pacing: &Pacing, max_per_notice: usize) -> Self {
        Self {
            group_wait_ms: i64::try_from(pacing.group_wait.as_millis()).unwrap_or(i64::MAX),
            max_per_notice: max_per_notice.max(1),
            rate: pacing.rate,
            bucket: pacing.rate.map(RateBucket::new),
        }
    }

    /// The target's rate, when it is paced.
    pub fn rate(&self) -> Option<Rate> {
        self.rate
    }

    /// How many of the oldest pending entries [`Pacer::due`] needs to see: the head's group
    /// is looked for among these only (ten notices' worth).
    pub fn lookahead(&self) -> usize {
        self.max_per_notice.saturating_mul(10)
    }

    /// What is due at `now` among `pending` (oldest first, at most
    /// [`Pacer::lookahead`] of them are looked at).
    ///
    /// The oldest entry (the head) decides, so order is kept per target: while it waits
    /// for a retry, everything waits; otherwise its group window (`group_wait` from its
    /// enqueue time) must have passed. Then the entries of the head's group key that are
    /// not in backoff, oldest first and at most `max_alerts_per_notice`, form the notice.
    pub fn due<Q: Queued>(&self, now: i64, pending: &[Q], mode: Mode) -> Due {
        let pending = &pending[..pending.len().min(self.lookahead())];
        let Some(head) = pending.first() else {
            return Due::Idle;
        };
        if head.next_attempt_ms() > now {
            return match mode {
                Mode::Serve => Due::Wait(head.next_attempt_ms()),
                Mode::Drain => Due::Idle,
            };
        }
        let window_ends = self.window_end(head);
        if mode == Mode::Serve && window_ends > now {
            return Due::Wait(window_ends);
        }
        let key = head.group_key();
        Due::Send(
            pending
                .iter()
                .enumerate()
                .filter(|(_, e)| e.group_key() == key && e.next_attempt_ms() <= now)
                .map(|(i, _)| i)
                .take(self.max_per_notice)
                .collect(),
        )
    }

    /// When the group window opened by `head` ends: its enqueue time plus `group_wait`.
    pub fn window_end<Q: Queued>(&self, head: &Q) -> i64 {
        head.enqueued_at_ms().saturating_add(self.group_wait_ms)
    }

    /// Takes the target's next rate slot at or after `now` and returns its time: the
    /// notice goes then (`now` when the target is unpaced or its burst has room).
    pub fn slot(&mut self, now: i64) -> i64 {
        match &mut self.bucket {
            Some(bucket) => bucket.take(now),
            None => now,
        }
    }
}

/// Splits `items` into those at `positions` (increasing, as [`Due::Send`] gives them) and
/// the rest, both in their order.
pub fn pick<T>(items: Vec<T>, positions: &[usize]) -> (Vec<T>, Vec<T>) {
    let mut picked = Vec::with_capacity(positions.len());
    let mut rest = Vec::with_capacity(items.len().saturating_sub(positions.len()));
    for (i, item) in items.into_iter().enumerate() {
        match positions.binary_search(&i) {
            Ok(_) => picked.push(item),
            Err(_) => rest.push(item),
        }
    }
    (picked, rest)
}

/// A target's rate as GCRA (the generic cell rate algorithm, a token bucket kept as one
/// number): `burst` notices may go at once, then one every `1 / per_second` seconds. The
/// same algorithm, on Redis's clock, paces a target across replicas (`state::redis`).
#[derive(Debug, Clone)]
pub struct RateBucket {
    /// Time between notices at the sustained rate, ms.
    interval: f64,
    /// How far ahead of the sustained rate a burst may run, ms.
    tolerance: f64,
    /// The theoretical arrival time of the next notice (ms); `None` before the first.
    tat: Option<f64>,
    /// The `now` of the last slot taken: a later `now` before it means the clock went back.
    last_now: i64,
}

impl RateBucket {
    /// A full bucket for `rate`.
    pub fn new(rate: Rate) -> Self {
        let interval = 1000.0 / rate.per_second.max(1e-6);
        Self {
            interval,
            tolerance: interval * f64::from(rate.burst.max(1) - 1),
            tat: None,
            last_now: i64::MIN,
        }
    }

    /// When the next notice may go, asked at `now` (`now` when it may go at once).
    pub fn ready_at(&self, now: i64) -> i64 {
        match self.tat_at(now) {
            Some(tat) => now.max((tat - self.tolerance).ceil() as i64),
            None => now,
        }
    }

    /// Takes the next slot at or after `now`; returns its time.
    pub fn take(&mut self, now: i64) -> i64 {
        let at = self.ready_at(now);
        let tat = self
            .tat_at(now)
            .map_or(now as f64, |tat| tat.max(now as f64));
        self.tat = Some(tat + self.interval);
        self.last_now = now;
        at
    }

    /// The theoretical arrival time as seen at `now`: a clock that went back moves it back
    /// as far, so the wait never grows by the jump.
    fn tat_at(&self, now: i64) -> Option<f64> {
        let back = self.last_now.saturating_sub(now).max(0);
        self.tat.map(|tat| tat - back as f64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A pending entry: (enqueued at, next attempt, group key).
    struct E(i64, i64, String);

    impl Queued for E {
        fn enqueued_at_ms(&self) -> i64 {
            self.0
        }
        fn next_attempt_ms(&self) -> i64 {
            self.1
        }
        fn group_key(&self) -> &str {
            &self.2
        }
    }

    /// Stored at `at`, not in backoff.
    fn fresh(at: i64, key: &str) -> E {
        E(at, at, key.to_owned())
    }

    /// Stored at `at`, in backoff until `retry_at`.
    fn retrying(at: i64, retry_at: i64, key: &str) -> E {
        E(at, retry_at, key.to_owned())
    }

    fn pacer(group_wait_ms: u64, rate: Option<(f64, u32)>, max: usize) -> Pacer {
        Pacer::new(
            &Pacing {
                group_wait: Duration::from_millis(group_wait_ms),
                rate: rate.map(|(per_second, burst)| Rate { per_second, burst }),
            },
            max,
        )
    }

    /// Steps the model as a delivery task would, from `start` until nothing is left: each
    /// entry of `arrivals` (in order) is pending from its enqueue time on. Each notice as
    /// (send time, group key, enqueue times of its entries).
    fn run(mut p: Pacer, arrivals: Vec<E>, start: i64) -> Vec<(i64, String, Vec<i64>)> {
        let mut arrivals = std::collections::VecDeque::from(arrivals);
        let mut pending: Vec<E> = Vec::new();
        let mut now = start;
        let mut out = Vec::new();
        loop {
            while arrivals.front().is_some_and(|e| e.0 <= now) {
                pending.extend(arrivals.pop_front());
            }
            let next_arrival = arrivals.front().map_or(i64::MAX, |e| e.0);
            match p.due(now, &pending, Mode::Serve) {
                Due::Idle if arrivals.is_empty() => return out,
                Due::Idle => now = next_arrival,
                Due::Wait(t) => {
                    assert!(t > now, "waits for the past: {t} at {now}");
                    now = t.min(next_arrival);
                }
                Due::Send(picked) => {
                    let at = p.slot(now);
                    let key = pending[picked[0]].2.clone();
                    let (sent, rest) = pick(std::mem::take(&mut pending), &picked);
                    pending = rest;
                    out.push((at, key, sent.iter().map(|e| e.0).collect()));
                    now = at;
                }
            }
        }
    }

    #[test]
    fn nothing_pending_is_idle() {
        assert_eq!(
            pacer(500, None, 10).due::<E>(0, &[], Mode::Serve),
            Due::Idle
        );
        assert_eq!(
            pacer(500, None, 10).due::<E>(0, &[], Mode::Drain),
            Due::Idle
        );
    }

    #[test]
    fn a_burst_of_one_group_waits_for_the_heads_window_and_goes_as_one_notice() {
        let p = pacer(500, None, 100);
        let burst: Vec<E> = (0..20).map(|i| fresh(1_000 + i * 10, "a")).collect();
        assert_eq!(p.due(1_000, &burst, Mode::Serve), Due::Wait(1_500));
        assert_eq!(p.due(1_499, &burst, Mode::Serve), Due::Wait(1_500));
        assert_eq!(
            p.due(1_500, &burst, Mode::Serve),
            Due::Send((0..20).collect())
        );
        let notices = run(p, burst, 1_000);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].0, 1_500);
        assert_eq!(notices[0].2.len(), 20);
    }

    #[test]
    fn many_groups_go_in_order_of_their_oldest_entry_each_after_its_window() {
        let pending = vec![
            fresh(0, "a"),
            fresh(100, "b"),
            fresh(150, "a"),
            fresh(200, "c"),
            fresh(450, "b"),
            fresh(700, "a"),
        ];
        let notices = run(pacer(500, None, 100), pending, 0);
        assert_eq!(
            notices,
            [
                // a's window ends at 500 and takes every a entry pending then; the one
                // stored at 700 forms a notice of its own, after b and c.
                (500, "a".to_owned(), vec![0, 150]),
                (600, "b".to_owned(), vec![100, 450]),
                (700, "c".to_owned(), vec![200]),
                (1_200, "a".to_owned(), vec![700]),
            ]
        );
    }

    #[test]
    fn the_head_holds_back_later_groups_whose_window_ended_first() {
        // Order is kept per target: b's window ended at 300, but a (older) goes first.
        let pending = vec![retrying(0, 2_000, "a"), fresh(100, "b")];
        let p = pacer(200, None, 100);
        assert_eq!(p.due(300, &pending, Mode::Serve), Due::Wait(2_000));
        assert_eq!(p.due(300, &pending, Mode::Drain), Due::Idle);
        assert_eq!(p.due(2_000, &pending, Mode::Serve), Due::Send(vec![0]));
    }

    #[test]
    fn entries_of_the_heads_group_in_backoff_stay_behind() {
        let pending = vec![fresh(0, "a"), retrying(10, 5_000, "a"), fresh(20, "a")];
        let p = pacer(100, None, 100);
        assert_eq!(p.due(100, &pending, Mode::Serve), Due::Send(vec![0, 2]));
    }

    #[test]
    fn more_than_max_per_notice_goes_as_several_notices_at_once() {
        // Seven alerts of one batch (one enqueue time): three notices when the window ends.
        let pending: Vec<E> = (0..7).map(|_| fresh(0, "a")).collect();
        let notices = run(pacer(300, None, 3), pending, 0);
        let shape: Vec<(i64, usize)> = notices.iter().map(|n| (n.0, n.2.len())).collect();
        assert_eq!(shape, [(300, 3), (300, 3), (300, 1)]);
        // Stored 100 ms apart: each notice waits for the window of its own oldest entry.
        let pending: Vec<E> = (0..7).map(|i| fresh(i * 100, "a")).collect();
        let notices = run(pacer(300, None, 3), pending, 0);
        let shape: Vec<(i64, usize)> = notices.iter().map(|n| (n.0, n.2.len())).collect();
        assert_eq!(shape, [(300, 3), (600, 3), (900, 1)]);
    }

    #[test]
    fn only_the_lookahead_is_searched_for_the_heads_group() {
        let p = pacer(0, None, 2);
        assert_eq!(p.lookahead(), 20);
        let mut pending: Vec<E> = vec![fresh(0, "a")];
        pending.extend((1..25).map(|i| fresh(i, "b")));
        pending.push(fresh(25, "a"));
        assert_eq!(p.due(100, &pending, Mode::Serve), Due::Send(vec![0]));
    }

    #[test]
    fn draining_ignores_group_windows() {
        let pending = vec![fresh(1_000, "a"), fresh(1_001, "a")];
        let p = pacer(10_000, None, 100);
        assert_eq!(p.due(1_002, &pending, Mode::Serve), Due::Wait(11_000));
        assert_eq!(p.due(1_002, &pending, Mode::Drain), Due::Send(vec![0, 1]));
    }

    #[test]
    fn pacing_lets_a_burst_go_then_one_per_interval() {
        // Twelve groups stored at once, 1 notice/s with a burst of 3.
        let pending: Vec<E> = (0..12).map(|i| fresh(0, &format!("g{i}"))).collect();
        let notices = run(pacer(500, Some((1.0, 3)), 100), pending, 0);
        let times: Vec<i64> = notices.iter().map(|n| n.0).collect();
        assert_eq!(
            times,
            [
                500, 500, 500, 1_500, 2_500, 3_500, 4_500, 5_500, 6_500, 7_500, 8_500, 9_500
            ]
        );
    }

    #[test]
    fn a_notice_is_composed_before_it_waits_for_its_slot() {
        // a and b close at 500; b's slot comes only at 1 500 (burst 1), and the b entry stored
        // at 800, while b waited, goes in a notice of its own.
        let pending = vec![fresh(0, "a"), fresh(0, "b"), fresh(800, "b")];
        let notices = run(pacer(500, Some((1.0, 1)), 100), pending, 0);
        assert_eq!(
            notices,
            [
                (500, "a".to_owned(), vec![0]),
                (1_500, "b".to_owned(), vec![0]),
                (2_500, "b".to_owned(), vec![800]),
            ]
        );
    }

    /// Takes a slot of a full bucket at each `now`; the slots' times.
    fn slots(per_second: f64, burst: u32, nows: &[i64]) -> Vec<i64> {
        let mut bucket = RateBucket::new(Rate { per_second, burst });
        nows.iter().map(|&now| bucket.take(now)).collect()
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let nows = [0, 0, 0, 600, 10_000, 10_000, 10_000];
        // A burst of 2, then one per 500 ms; a long quiet spell refills the burst, not more.
        let want = [0, 0, 500, 1_000, 10_000, 10_000, 10_500];
        assert_eq!(slots(2.0, 2, &nows), want);
        let mut bucket = RateBucket::new(Rate {
            per_second: 2.0,
            burst: 2,
        });
        bucket.take(0);
        bucket.take(0);
        assert_eq!(bucket.ready_at(0), 500);
        assert_eq!(bucket.ready_at(700), 700);
    }

    #[test]
    fn a_fractional_interval_rounds_up_to_whole_ms() {
        assert_eq!(slots(3.0, 1, &[0, 0, 0, 0]), [0, 334, 667, 1_000]);
    }

    #[test]
    fn a_clock_that_goes_back_does_not_lengthen_the_wait() {
        // After a slot at an hour, the wall clock steps back an hour: the next slot is one
        // interval later on the new clock, not an hour.
        assert_eq!(
            slots(1.0, 1, &[3_600_000, 0, 1_000]),
            [3_600_000, 1_000, 2_000]
        );
    }

    #[test]
    fn pick_splits_in_order() {
        let (picked, rest) = pick(vec!['a', 'b', 'c', 'd', 'e'], &[1, 3, 4]);
        assert_eq!((picked, rest), (vec!['b', 'd', 'e'], vec!['a', 'c']));
    }

    #[test]
    fn an_unpaced_target_always_has_a_slot() {
        let mut p = pacer(0, None, 1);
        assert_eq!(p.rate(), None);
        assert_eq!((p.slot(5), p.slot(5), p.slot(5)), (5, 5, 5));
    }
}
