//! Routes alerts to one delivery task per target, so a slow target never holds up another.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{SendError, Target, Targets, console, slack};
use crate::rules::Alert;
use crate::telemetry;

/// Alerts queued per target before `submit` waits.
const QUEUE_DEPTH: usize = 1024;

/// Hands alerts to per-target delivery tasks; `shutdown` drains them.
pub struct Dispatcher {
    targets: Arc<Targets>,
    queues: BTreeMap<String, mpsc::Sender<Arc<Alert>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts one delivery task per usable target.
    pub fn start(targets: Targets, client: reqwest::Client) -> Self {
        let mut queues = BTreeMap::new();
        let mut workers = Vec::new();
        for (name, target) in &targets.by_name {
            if matches!(target, Target::Fallback { .. }) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
            queues.insert(name.clone(), tx);
            workers.push(tokio::spawn(deliver_all(
                name.clone(),
                target.clone(),
                client.clone(),
                rx,
            )));
        }
        Self {
            targets: Arc::new(targets),
            queues,
            workers,
        }
    }

    /// Queues `alert` for every target it routes to (after fallbacks, each target once).
    pub async fn submit(&self, alert: Alert) {
        for name in self.targets.unknown(&alert) {
            tracing::warn!(rule = %alert.rule, target = %name, "alert names an unknown target; using its other or the default targets");
            telemetry::unknown_target(&alert.rule);
        }
        let mut concrete: Vec<String> = self
            .targets
            .route(&alert)
            .into_iter()
            .filter_map(|name| self.targets.resolve(name).map(|(n, _)| n.to_owned()))
            .collect();
        concrete.sort_unstable();
        concrete.dedup();
        let alert = Arc::new(alert);
        for name in concrete {
            if let Some(queue) = self.queues.get(&name) {
                // A send fails only once the worker is gone, i.e. during shutdown.
                let _ = queue.send(alert.clone()).await;
            }
        }
    }

    /// Stops taking alerts and waits until every queued alert has been delivered or failed.
    pub async fn shutdown(self) {
        drop(self.queues);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

async fn deliver_all(
    name: String,
    target: Target,
    client: reqwest::Client,
    mut queue: mpsc::Receiver<Arc<Alert>>,
) {
    while let Some(alert) = queue.recv().await {
        let result = deliver(&target, &client, &alert).await;
        match &result {
            Ok(()) => telemetry::notification(&name, &alert.rule, "sent"),
            Err(err) => {
                tracing::warn!(target_name = %name, rule = %alert.rule, error = %err, "delivery failed");
                telemetry::notification(&name, &alert.rule, "failed");
            }
        }
    }
}

async fn deliver(
    target: &Target,
    client: &reqwest::Client,
    alert: &Alert,
) -> Result<(), SendError> {
    match target {
        Target::Console(format) => {
            let text = console::render(alert, *format);
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").map_err(|e| SendError::Network(e.to_string()))
        }
        Target::Slack(settings) => slack::send(client, settings, &slack::message(alert)).await,
        Target::Fallback { .. } => Ok(()),
    }
}
