//! Replay: the pipeline and the targets' grouping and pacing simulated on the event clock,
//! for `dry-run`, `replay` and script tests — what a day of audit log would really have sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Outcome, Pipeline, PipelineSettings};
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
    /// Notices its rate limit would have held back.
    pub paced: u64,
    /// Longest such wait, in ms.
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

struct OpenGroup {
    closes_at_ms: i64,
    alerts: Vec<Alert>,
}

/// Token bucket of one paced target, in event time.
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// A replay in progress.
pub struct Replay {
    pipeline: Pipeline,
    targets: Arc<Targets>,
    max_per_notice: usize,
    open: BTreeMap<(String, String), OpenGroup>,
    buckets: BTreeMap<String, Bucket>,
    closed: Vec<TimedNotice>,
    report: Report,
}

impl Replay {
    /// A replay with fresh pipeline state.
    pub fn new(settings: PipelineSettings, targets: Arc<Targets>, max_per_notice: usize) -> Self {
        Self {
            pipeline: Pipeline::new(settings, targets.clone()),
            targets,
            max_per_notice: max_per_notice.max(1),
            open: BTreeMap::new(),
            buckets: BTreeMap::new(),
            closed: Vec::new(),
            report: Report::default(),
        }
    }

    /// The pipeline (for routing questions).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Feeds the alerts of one event at its time; returns each alert's outcome.
    pub fn push(&mut self, alerts: Vec<Alert>, now_ms: i64) -> Vec<(String, Outcome)> {
        self.close_groups(now_ms);
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
        self.add(admission.deliveries, now_ms);
        admission.outcomes
    }

    /// Notices closed so far, oldest first; each is returned once.
    pub fn take_notices(&mut self) -> Vec<TimedNotice> {
        std::mem::take(&mut self.closed)
    }

    /// Ends the replay: emits pending budget digests, closes every group.
    pub fn finish(mut self) -> (Vec<TimedNotice>, Report) {
        let last = self
            .open
            .values()
            .map(|g| g.closes_at_ms)
            .max()
            .unwrap_or(0);
        let digests = self.pipeline.flush();
        self.add(digests, last);
        self.close_groups(i64::MAX);
        self.closed.sort_by_key(|n| n.at_ms);
        (self.closed, self.report)
    }

    fn add(&mut self, deliveries: Vec<Delivery>, now_ms: i64) {
        for delivery in deliveries {
            let wait = self.targets.pacing(&delivery.target).group_wait;
            let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            self.report
                .targets
                .entry(delivery.target.clone())
                .or_default()
                .alerts += 1;
            let key = (delivery.target, delivery.alert.group_key.clone());
            let group = self.open.entry(key.clone()).or_insert_with(|| OpenGroup {
                closes_at_ms: now_ms.saturating_add(wait),
                alerts: Vec::new(),
            });
            group.alerts.push(delivery.alert);
            if group.alerts.len() >= self.max_per_notice {
                let group = self.open.remove(&key).unwrap_or_else(|| unreachable!());
                self.emit(key, group.alerts, now_ms);
            }
        }
    }

    fn close_groups(&mut self, now_ms: i64) {
        let mut due: Vec<((String, String), i64)> = self
            .open
            .iter()
            .filter(|(_, g)| g.closes_at_ms <= now_ms)
            .map(|(k, g)| (k.clone(), g.closes_at_ms))
            .collect();
        due.sort_by_key(|(_, at)| *at);
        for (key, at) in due {
            if let Some(group) = self.open.remove(&key) {
                self.emit(key, group.alerts, at);
            }
        }
    }

    /// Records a notice, delayed by its target's pacing.
    fn emit(&mut self, (target, group_key): (String, String), alerts: Vec<Alert>, at_ms: i64) {
        let sent_at = self.pace(&target, at_ms);
        let tally = self.report.targets.entry(target.clone()).or_default();
        tally.notices += 1;
        if sent_at > at_ms {
            tally.paced += 1;
            tally.max_pacing_ms = tally.max_pacing_ms.max(sent_at - at_ms);
        }
        self.closed.push(TimedNotice {
            at_ms: sent_at,
            notice: Notice {
                target,
                group_key,
                alerts,
            },
        });
    }

    fn pace(&mut self, target: &str, at_ms: i64) -> i64 {
        let Some(rate) = self.targets.pacing(target).rate else {
            return at_ms;
        };
        let burst = f64::from(rate.burst.max(1));
        let bucket = self.buckets.entry(target.to_owned()).or_insert(Bucket {
            tokens: burst,
            at_ms,
        });
        let now = at_ms.max(bucket.at_ms);
        let refill = (now - bucket.at_ms) as f64 / 1000.0 * rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at_ms = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return now;
        }
        let wait_ms = ((1.0 - bucket.tokens) / rate.per_second * 1000.0).ceil() as i64;
        bucket.tokens = 0.0;
        bucket.at_ms = now + wait_ms;
        now + wait_ms
    }
}
