//! Per-target delivery from the outbox: group window → rate limit → send → retry with
//! backoff (or the target's Retry-After) → remove on success, dead-letter when hopeless.
//!
//! One task per target, so a slow or failing target never holds up another. What is due,
//! which entries form a notice and when the rate lets it go are decided by the target's
//! [`Pacer`] (`pacing.rs`), the model the event-clock replay steps too; this module does
//! the waiting, the sending and the outbox updates. Each task delivers its target's
//! entries in order: a notice in backoff blocks the ones behind it.
//! When the outbox cannot be read or updated (an I/O error broke it), a task pauses for
//! `poll_interval` and tries again, so delivery resumes by itself once the outbox reopens;
//! a notice the target accepted meanwhile is remembered and removed then, not sent again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::pacing::{Due, Mode, Pacer, Queued, pick};
use super::{Disposition, Notice, Notifier, SendError, Targets};
use crate::clock::wall_clock_ms;
use crate::outbox::{Entry, Outbox, OutboxError};
use crate::state::SharedRate;
use crate::telemetry;

/// How delivery retries and drains, for every target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// First retry delay; doubles per failed attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// Give up (dead-letter) once the first failure is this old.
    pub retry_budget: Duration,
    /// Most alerts in one notice.
    pub max_alerts_per_notice: usize,
    /// How often an idle target looks for entries stored by another process.
    pub poll_interval: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            retry_budget: Duration::from_secs(24 * 3600),
            max_alerts_per_notice: 100,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// The delivery tasks; `wake` them after storing, `shutdown` to drain and stop.
pub struct Dispatcher {
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

/// Wakes the delivery tasks after entries were stored.
#[derive(Clone)]
pub struct Waker(Arc<Notify>);

impl Waker {
    /// Tells every task to look at the outbox now.
    pub fn wake(&self) {
        self.0.notify_waiters();
    }
}

/// Everything one target's task needs.
struct Worker {
    name: String,
    notifier: Notifier,
    /// What is due and when the target's own rate lets a notice go.
    pacer: Pacer,
    /// The target's rate across replicas (Redis); the pacer's bucket when it does not answer.
    shared_rate: Option<Arc<dyn SharedRate>>,
    outbox: Arc<Outbox>,
    policy: DeliveryPolicy,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    /// Entries the target accepted whose removal the outbox did not take (it broke): removed
    /// before anything else is read, never sent again by this process.
    delivered: Vec<u64>,
}

impl Dispatcher {
    /// Starts one delivery task per usable target; paced targets take their slots from
    /// `shared_rate` (all replicas) while it answers, else from their own rate bucket.
    pub fn start(
        targets: &Targets,
        outbox: Arc<Outbox>,
        policy: DeliveryPolicy,
        client: reqwest::Client,
        shared_rate: Option<Arc<dyn SharedRate>>,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let mut workers = JoinSet::new();
        for (name, target) in &targets.by_name {
            let Some(notifier) = Notifier::for_target(target, &client) else {
                continue;
            };
            let worker = Worker {
                name: name.clone(),
                notifier,
                pacer: Pacer::new(&targets.pacing(name), policy.max_alerts_per_notice),
                shared_rate: shared_rate.clone(),
                delivered: Vec::new(),
                outbox: outbox.clone(),
                policy,
                wake: wake.clone(),
                stop: stopped.clone(),
            };
            workers.spawn(worker.run());
        }
        Self {
            wake,
            stop,
            workers,
        }
    }

    /// A handle that tells every task that new entries were stored.
    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// Drains: sends what is due now (group windows no longer wait), for at most `drain`;
    /// what is left stays in the outbox for the next start.
    /// With a zero `drain`, nothing more is sent.
    pub async fn shutdown(mut self, drain: Duration) {
        if drain.is_zero() {
            self.workers.abort_all();
            while self.workers.join_next().await.is_some() {}
            return;
        }
        let _ = self.stop.send(true);
        let all_done = async { while self.workers.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, all_done).await.is_err() {
            tracing::warn!(
                drain_secs = drain.as_secs_f64(),
                "delivery did not drain in time; what is left stays in the outbox"
            );
            self.workers.abort_all();
        }
    }
}

impl Queued for Entry {
    fn enqueued_at_ms(&self) -> i64 {
        self.enqueued_at_ms
    }

    fn next_attempt_ms(&self) -> i64 {
        self.next_attempt_ms
    }

    fn group_key(&self) -> &str {
        &self.alert.group_key
    }
}

/// What a task does next.
enum Step {
    /// Send these entries as one notice now.
    Send(Vec<Entry>),
    /// Nothing is due before this time (ms since the epoch); `None`: nothing is pending.
    Wait(Option<i64>),
    /// Draining and nothing more is due: stop.
    Done,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let notified = self.wake.clone();
            let notified = notified.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let draining = *self.stop.borrow();
            if let Err(err) = self.remove_delivered().await {
                if draining {
                    // Sent once already; still pending in the outbox for the next start.
                    return;
                }
                self.pause("cannot remove delivered entries from the outbox", &err)
                    .await;
                continue;
            }
            match self.next_step(draining).await {
                Ok(Step::Send(entries)) => {
                    if let Err(err) = self.deliver(entries).await {
                        self.pause("cannot update the outbox", &err).await;
                    }
                }
                Ok(Step::Done) => return,
                Ok(Step::Wait(until)) => {
                    let wait = until.map_or(self.policy.poll_interval, |t| {
                        Duration::from_millis(u64::try_from(t - wall_clock_ms()).unwrap_or(0))
                            .min(self.policy.poll_interval)
                    });
                    tokio::select! {
                        () = notified => {}
                        _ = self.stop.changed() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                // Draining and the outbox cannot be read: what is left waits for the next start.
                Err(_) if draining => return,
                Err(err) => self.pause("cannot read the outbox", &err).await,
            }
        }
    }

    /// Removes the entries delivered while the outbox could not take their removal.
    async fn remove_delivered(&mut self) -> Result<(), OutboxError> {
        if self.delivered.is_empty() {
            return Ok(());
        }
        let outbox = self.outbox.clone();
        let name = self.name.clone();
        let ids = self.delivered.clone();
        blocking(move || outbox.complete(&name, &ids)).await?;
        self.delivered.clear();
        Ok(())
    }

    /// After an outbox failure: waits `poll_interval` (or until shutdown), then the task
    /// tries again, so it resumes by itself once the outbox has been reopened.
    async fn pause(&mut self, what: &str, err: &OutboxError) {
        match err {
            // The outbox logged the break once; it is reopening.
            OutboxError::Unavailable { .. } => {
                tracing::debug!(target_name = %self.name, error = %err, "{what}");
            }
            _ => tracing::error!(target_name = %self.name, error = %err, "{what}"),
        }
        tokio::select! {
            _ = self.stop.changed() => {}
            () = tokio::time::sleep(self.policy.poll_interval) => {}
        }
    }

    /// Asks the pacer what is due now among the target's oldest pending entries.
    async fn next_step(&self, draining: bool) -> Result<Step, OutboxError> {
        let outbox = self.outbox.clone();
        let name = self.name.clone();
        let lookahead = self.pacer.lookahead();
        let entries = blocking(move || outbox.pending(&name, lookahead)).await?;
        let mode = if draining { Mode::Drain } else { Mode::Serve };
        Ok(match self.pacer.due(wall_clock_ms(), &entries, mode) {
            Due::Send(picked) => Step::Send(pick(entries, &picked).0),
            Due::Wait(until) => Step::Wait(Some(until)),
            Due::Idle if draining => Step::Done,
            Due::Idle => Step::Wait(None),
        })
    }

    /// Waits for a slot of the target's rate: across replicas while the shared state
    /// answers, else (and without one) from the pacer's own bucket.
    async fn pace(&mut self) {
        let Some(rate) = self.pacer.rate() else {
            return;
        };
        if let Some(shared) = &self.shared_rate {
            while let Ok(wait) = shared
                .take_slot(&self.name, rate.per_second, rate.burst)
                .await
            {
                if wait.is_zero() {
                    return;
                }
                tokio::time::sleep(wait).await;
            }
        }
        let at = self.pacer.slot(wall_clock_ms());
        let wait = u64::try_from(at - wall_clock_ms()).unwrap_or(0);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Sends one notice and settles its entries; an error means the outbox could not be
    /// updated (the entries stay as they were).
    async fn deliver(&mut self, entries: Vec<Entry>) -> Result<(), OutboxError> {
        self.pace().await;
        let notice = Notice {
            target: self.name.clone(),
            group_key: entries[0].alert.group_key.clone(),
            alerts: entries.iter().map(|e| e.alert.clone()).collect(),
        };
        let result = self.notifier.send(&notice).await;
        let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
        let now = wall_clock_ms();
        let settle = match &result {
            Ok(()) => Settle::Delivered,
            Err(err) => self.after_failure(&entries[0], err, now),
        };
        let (outcome, settled) = self.settle(settle, &ids, now).await;
        for entry in &entries {
            telemetry::notification(&self.name, &entry.alert.rule, outcome);
        }
        if result.is_ok() && settled.is_err() {
            // Sent: remembered, so that it is removed, not sent again, once the outbox heals.
            self.delivered.extend(ids);
        }
        settled
    }

    /// What to do with the entries after `err`.
    fn after_failure(&self, head: &Entry, err: &SendError, now: i64) -> Settle {
        let message = err.to_string();
        let budget = i64::try_from(self.policy.retry_budget.as_millis()).unwrap_or(i64::MAX);
        let first_failure = head.first_failure_ms.unwrap_or(now);
        match err.disposition() {
            Disposition::Permanent => Settle::Dead(format!("permanent failure: {message}")),
            Disposition::Retry { .. } if now.saturating_sub(first_failure) >= budget => {
                Settle::Dead(format!(
                    "retry budget of {} exhausted; last error: {message}",
                    humantime::format_duration(self.policy.retry_budget)
                ))
            }
            Disposition::Retry { after } => {
                let delay = after.unwrap_or_else(|| backoff(&self.policy, head.attempts));
                let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                Settle::Retry {
                    at: now.saturating_add(delay),
                    error: message,
                }
            }
        }
    }

    /// Records the fate of the entries; returns the outcome's label and whether the
    /// outbox took it.
    async fn settle(
        &self,
        settle: Settle,
        ids: &[u64],
        now: i64,
    ) -> (&'static str, Result<(), OutboxError>) {
        let outbox = self.outbox.clone();
        let name = self.name.clone();
        let ids = ids.to_vec();
        let (label, result) = match settle {
            Settle::Delivered => ("sent", blocking(move || outbox.complete(&name, &ids)).await),
            Settle::Retry { at, error } => {
                tracing::warn!(target_name = %self.name, error = %error, retry_in_ms = at - now, "delivery failed; will retry");
                (
                    "retried",
                    blocking(move || outbox.reschedule(&name, &ids, at, now, &error)).await,
                )
            }
            Settle::Dead(reason) => {
                tracing::error!(target_name = %self.name, reason = %reason, "delivery failed for good; moved to the dead letters");
                (
                    "dead",
                    blocking(move || outbox.bury(&name, &ids, &reason, now)).await,
                )
            }
        };
        (label, result)
    }
}

/// The fate of a notice's entries.
enum Settle {
    Delivered,
    Retry { at: i64, error: String },
    Dead(String),
}

/// `base × 2^attempts`, capped, with jitter: a random point in its upper half.
fn backoff(policy: &DeliveryPolicy, attempts: u32) -> Duration {
    let exp = policy
        .retry_base
        .saturating_mul(2u32.saturating_pow(attempts.min(30)));
    let full = exp.min(policy.retry_cap);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(rand::random::<f64>())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(OutboxError::Task(join.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let policy = DeliveryPolicy {
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            ..DeliveryPolicy::default()
        };
        for attempts in 0..4 {
            let full = Duration::from_secs(1 << attempts);
            let d = backoff(&policy, attempts);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?}");
        }
        let capped = backoff(&policy, 40);
        assert!(capped >= Duration::from_secs(30) && capped <= Duration::from_secs(60));
    }
}
