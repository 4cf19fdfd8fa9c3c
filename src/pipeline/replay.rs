//! Replay: the pipeline and the targets' grouping and pacing simulated on the event clock,
//! for `dry-run`, `replay` and script tests — what a day of audit log would really have sent.
//!
//! Each target has an in-memory queue standing for its outbox entries and the same
//! [`Pacer`] the dispatcher of `serve` steps: before the alerts of an event at time `t` are
//! admitted, every target's model runs up to `t`, emitting notices with the time they go
//! out; budget digests are stored when their window ends (`serve`'s one-second ticker
//! stores them within a second of it).
//! The simulation's clock only moves forward: an event older than one before it is stored
//! with its own time (so its group window may already have passed) but wakes no task
//! earlier. Nothing here fails, so nothing is retried.
//!
//! Owns the simulated queues and the report; calls the `Pipeline` and `notify` (the
//! model in `notify::pacing`, `Notice`, `Targets`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Outcome, Pipeline, PipelineSettings};
use crate::notify::pacing::{Due, Mode, Pacer, Queued, pick};
use crate::notify::{Notice, Targets};
use crate::outbox::Delivery;
use crate::rules::Alert;

/// A notice and when it would have gone out (ms since the epoch, event clock).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedNotice {
    /// When the target would have received it, pacing included.
    pub at_ms: i64,
    /// What it would have received.
    pub notice: Notice,
}

/// Per-rule counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleTally {
    /// Alerts the scripts raised.
    pub fired: u64,
    /// Alerts admitted for delivery.
    pub admitted: u64,
    /// Alerts suppressed as duplicates.
    pub deduplicated: u64,
    /// Alerts silenced.
    pub silenced: u64,
    /// Alerts folded into budget digests.
    pub folded: u64,
}

/// Per-target counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetTally {
    /// Alerts (and digests) delivered to it.
    pub alerts: u64,
    /// Notices it would have received.
    pub notices: u64,
    /// Notices its rate limit would have held back past their group window (their own
    /// slot, or paced notices ahead of them).
    pub paced: u64,
    /// Longest such wait past the group window, in ms.
    pub max_pacing_ms: i64,
}

/// What a replay counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// By rule.
    pub rules: BTreeMap<String, RuleTally>,
    /// By target.
    pub targets: BTreeMap<String, TargetTally>,
}

/// An alert waiting in a target's queue (what its outbox entry would be).
struct Waiting {
    /// The event's time.
    enqueued_at_ms: i64,
    /// The simulation's time when it was stored (later than the event's when events come
    /// out of order).
    stored_ms: i64,
    alert: Alert,
}

impl Queued for Waiting {
    // Delivery never fails in a replay: no entry is ever in backoff (the default).
    fn enqueued_at_ms(&self) -> i64 {
        self.enqueued_at_ms
    }

    fn group_key(&self) -> &str {
        &self.alert.group_key
    }
}

/// One target's delivery task, simulated.
struct Lane {
    pacer: Pacer,
    queue: Vec<Waiting>,
    /// When the task next looks at its queue: the last time it was woken, or when the
    /// notice it is sending goes out.
    clock_ms: i64,
}

impl Lane {
    /// Runs the task until `until` (or, busy sending, until it is done): each notice it
    /// sends, with the time it could have gone without pacing and the time it goes.
    fn run_until(&mut self, until: i64, target: &str, out: &mut Vec<Sent>) {
        while self.clock_ms <= until {
            let now = self.clock_ms;
            match self.pacer.due(now, &self.queue, Mode::Serve) {
                Due::Send(picked) => {
                    let (taken, rest) = pick(std::mem::take(&mut self.queue), &picked);
                    self.queue = rest;
                    // The head (always picked first) decided when its group could go.
                    let ready_ms = self.pacer.window_end(&taken[0]).max(taken[0].stored_ms);
                    let alerts: Vec<Alert> = taken.into_iter().map(|w| w.alert).collect();
                    let at_ms = self.pacer.slot(now);
                    out.push(Sent {
                        ready_ms,
                        timed: TimedNotice {
                            at_ms,
                            notice: Notice {
                                target: target.to_owned(),
                                group_key: alerts[0].group_key.clone(),
                                alerts,
                            },
                        },
                    });
                    self.clock_ms = at_ms;
                }
                Due::Wait(t) if t <= until => self.clock_ms = t,
                // Asleep until then, or until entries are stored (woken at `until`).
                Due::Wait(_) | Due::Idle => {
                    self.clock_ms = until;
                    return;
                }
            }
        }
    }
}

/// A notice, and when its group window let it go: later than that, pacing held it back
/// (its own rate slot, or the paced notices ahead of it).
struct Sent {
    ready_ms: i64,
    timed: TimedNotice,
}

/// A replay in progress.
pub struct Replay {
    pipeline: Pipeline,
    targets: Arc<Targets>,
    max_per_notice: usize,
    lanes: BTreeMap<String, Lane>,
    /// The simulation's clock: the latest time it ran to (events, digests).
    clock_ms: i64,
    /// Notices composed, not yet taken, in the order they were composed.
    sent: Vec<TimedNotice>,
    report: Report,
}

impl Replay {
    /// A replay with fresh pipeline state.
    pub fn new(settings: PipelineSettings, targets: Arc<Targets>, max_per_notice: usize) -> Self {
        Self {
            pipeline: Pipeline::new(settings, targets.clone()),
            targets,
            max_per_notice: max_per_notice.max(1),
            lanes: BTreeMap::new(),
            clock_ms: i64::MIN,
            sent: Vec::new(),
            report: Report::default(),
        }
    }

    /// The pipeline (for routing questions).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Feeds the alerts of one event at its time; returns each alert's outcome.
    pub fn push(&mut self, alerts: Vec<Alert>, now_ms: i64) -> Vec<(String, Outcome)> {
        self.advance(now_ms);
        for alert in &alerts {
            self.report
                .rules
                .entry(alert.rule.clone())
                .or_default()
                .fired += 1;
        }
        let admission = self.pipeline.admit(alerts, now_ms);
        for (rule, outcome) in &admission.outcomes {
            let tally = self.report.rules.entry(rule.clone()).or_default();
            match outcome {
                Outcome::Admitted => tally.admitted += 1,
                Outcome::Deduplicated => tally.deduplicated += 1,
                Outcome::Silenced => tally.silenced += 1,
                Outcome::Folded => tally.folded += 1,
            }
        }
        self.store(admission.deliveries, now_ms);
        admission.outcomes
    }

    /// Notices sent by the time of the latest event, oldest first; each is returned once.
    /// (A notice composed earlier but held back by its target's rate until later comes
    /// with a later call.)
    pub fn take_notices(&mut self) -> Vec<TimedNotice> {
        let clock = self.clock_ms;
        let (due, later): (Vec<TimedNotice>, Vec<TimedNotice>) = std::mem::take(&mut self.sent)
            .into_iter()
            .partition(|n| n.at_ms <= clock);
        self.sent = later;
        sorted(due)
    }

    /// Ends the replay: budget digests are stored when their windows end, and every target
    /// sends what it holds; the rest of the notices, oldest first.
    pub fn finish(mut self) -> (Vec<TimedNotice>, Report) {
        self.advance(i64::MAX);
        (sorted(self.sent), self.report)
    }

    /// Runs the targets and the budget digests up to `until`.
    fn advance(&mut self, until: i64) {
        while let Some(due) = self.pipeline.next_digest_at().filter(|t| *t <= until) {
            let due = due.max(self.clock_ms);
            self.run_lanes(due);
            let digests = self.pipeline.due_digests(due);
            self.store(digests, due);
        }
        self.run_lanes(until);
    }

    /// Runs every target's task up to `until`.
    fn run_lanes(&mut self, until: i64) {
        self.clock_ms = self.clock_ms.max(until);
        let mut sent = Vec::new();
        for (target, lane) in &mut self.lanes {
            lane.run_until(until, target, &mut sent);
        }
        for Sent { ready_ms, timed } in sent {
            let tally = self
                .report
                .targets
                .entry(timed.notice.target.clone())
                .or_default();
            tally.notices += 1;
            if timed.at_ms > ready_ms {
                tally.paced += 1;
                tally.max_pacing_ms = tally.max_pacing_ms.max(timed.at_ms - ready_ms);
            }
            self.sent.push(timed);
        }
    }

    /// Stores deliveries in their targets' queues, as the outbox would, stamped `now_ms`
    /// (the event's time; the pipeline decided them at that time).
    fn store(&mut self, deliveries: Vec<Delivery>, now_ms: i64) {
        let stored_ms = self.clock_ms.max(now_ms);
        for delivery in deliveries {
            self.report
                .targets
                .entry(delivery.target.clone())
                .or_default()
                .alerts += 1;
            let lane = match self.lanes.entry(delivery.target) {
                std::collections::btree_map::Entry::Occupied(lane) => lane.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let pacing = self.targets.pacing(slot.key());
                    slot.insert(Lane {
                        pacer: Pacer::new(&pacing, self.max_per_notice),
                        queue: Vec::new(),
                        clock_ms: stored_ms,
                    })
                }
            };
            // A task asleep is woken by the store and looks at once.
            lane.clock_ms = lane.clock_ms.max(stored_ms);
            lane.queue.push(Waiting {
                enqueued_at_ms: now_ms,
                stored_ms,
                alert: delivery.alert,
            });
        }
    }
}

/// `notices` ordered by send time (stable: composition order breaks ties).
fn sorted(mut notices: Vec<TimedNotice>) -> Vec<TimedNotice> {
    notices.sort_by_key(|n| n.at_ms);
    notices
}
