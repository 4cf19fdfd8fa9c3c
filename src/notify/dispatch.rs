//! Per-target delivery from the outbox: group window → rate limit → send → retry with
//! backoff (or the target's Retry-After) → remove on success, dead-letter when hopeless.
//!
//! One task per target, so a slow or failing target never holds up another. Each task
//! delivers its target's entries in order: a notice in backoff blocks the ones behind it.
//! When the outbox cannot be read or updated (an I/O error broke it), a task pauses for
//! `poll_interval` and tries again, so delivery resumes by itself once the outbox reopens;
//! a notice the target accepted meanwhile is remembered and removed then, not sent again.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::{Disposition, Notice, Notifier, Pacing, SendError, Targets};
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
    pacing: Pacing,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The target's rate across replicas (Redis); the local limiter when it does not answer.
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
    /// `shared_rate` (all replicas) while it answers, else from their own limiter.
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
            let pacing = targets.pacing(name);
            let worker = Worker {
                name: name.clone(),
                notifier,
                limiter: pacing.rate.map(|r| RateLimiter::direct(r.quota())),
                shared_rate: shared_rate.clone(),
                delivered: Vec::new(),
                pacing,
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

impl super::Rate {
    fn quota(self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_second.max(1e-6));
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
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

    /// Picks the oldest pending entry and the entries of its group that are due with it.
    async fn next_step(&self, draining: bool) -> Result<Step, OutboxError> {
        let outbox = self.outbox.clone();
        let name = self.name.clone();
        let limit = self.policy.max_alerts_per_notice.max(1) * 10;
        let entries = blocking(move || outbox.pending(&name, limit)).await?;
        let now = wall_clock_ms();
        let Some(head) = entries.first() else {
            return Ok(if draining {
                Step::Done
            } else {
                Step::Wait(None)
            });
        };
        if head.next_attempt_ms > now {
            // In backoff: at shutdown it waits in the outbox for the next start.
            return Ok(if draining {
                Step::Done
            } else {
                Step::Wait(Some(head.next_attempt_ms))
            });
        }
        let group_wait = i64::try_from(self.pacing.group_wait.as_millis()).unwrap_or(i64::MAX);
        let window_ends = head.enqueued_at_ms.saturating_add(group_wait);
        if !draining && window_ends > now {
            return Ok(Step::Wait(Some(window_ends)));
        }
        let key = head.alert.group_key.clone();
        Ok(Step::Send(
            entries
                .into_iter()
                .filter(|e| e.alert.group_key == key && e.next_attempt_ms <= now)
                .take(self.policy.max_alerts_per_notice.max(1))
                .collect(),
        ))
    }

    /// Waits for a slot of the target's rate: across replicas while the shared state
    /// answers, else (and without one) from this replica's own limiter.
    async fn pace(&self) {
        let Some(rate) = self.pacing.rate else {
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
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
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
