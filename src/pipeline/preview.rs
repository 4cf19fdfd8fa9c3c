//! Preview: what the alerts of a few events would become and the exact payloads each
//! target would receive — `dry-run`'s view of where an alert goes and of one target's
//! payloads (`--target NAME`), and the console's playground, which shows every target's.
//!
//! A target is previewed as `dry-run --target NAME` does it: a replay (`Replay`, fresh
//! pipeline state, event clock) in which that target, when it falls back (its secret is
//! unset), stands in as configured, so its alerts reach it and its payloads can be
//! rendered. Owns nothing durable; calls the `Replay` and `notify` (targets, payloads).

use std::sync::Arc;

use serde::Serialize;

use super::{Outcome, Pipeline, PipelineSettings, Replay, TimedNotice};
use crate::notify::{self, ConsoleFormat, Target, Targets};
use crate::rules::Alert;

/// The targets as `serve` would use them, except that `shown`, when it falls back, is
/// simulated as configured, so its payloads can be inspected.
pub fn simulated_targets(targets: &Targets, shown: Option<&str>) -> Targets {
    let mut out = targets.clone();
    if let Some(name) = shown
        && let Some(target @ Target::Fallback { .. }) = out.by_name.get_mut(name)
    {
        // Stands in for the real target: only its name and pacing matter to a replay.
        *target = Target::Console(ConsoleFormat::Json);
    }
    out
}

/// Where `alert` would go, naming fallbacks: `slack (not configured: console)`.
pub fn destinations(pipeline: &Pipeline, targets: &Targets, alert: &Alert) -> Vec<String> {
    pipeline
        .requested_targets(alert)
        .into_iter()
        .map(|name| match targets.by_name.get(&name) {
            Some(Target::Fallback { to, .. }) => format!("{name} (not configured: {to})"),
            _ => name,
        })
        .collect()
}

/// The alerts of one event, at its time (ms since the epoch, the replay's clock).
pub struct EventAlerts {
    /// The event's time.
    pub at_ms: i64,
    /// What the scripts raised on it.
    pub alerts: Vec<Alert>,
}

/// One alert and what the pipeline decided.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewAlert {
    /// The alert as raised.
    pub alert: Alert,
    /// admitted, deduplicated, silenced or folded.
    pub outcome: &'static str,
    /// The targets it is routed to, fallbacks named.
    pub destinations: Vec<String>,
}

/// What one target would receive.
#[derive(Debug, Clone, Serialize)]
pub struct TargetPreview {
    /// Its name in the config.
    pub name: String,
    /// console, slack, http or email.
    pub kind: &'static str,
    /// When it falls back: the target that gets its alerts instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_to: Option<String>,
    /// Each notice's exact payload, in send order, as `dry-run --target NAME` prints it.
    pub payloads: Vec<String>,
}

/// The whole preview.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// Every alert in order, with its outcome.
    pub alerts: Vec<PreviewAlert>,
    /// Every configured target, by name.
    pub targets: Vec<TargetPreview>,
}

/// Replays `events` through fresh pipelines with `settings`: the alerts' outcomes and
/// destinations, and every target's payloads (each target's own replay, as dry-run does).
pub fn preview(
    settings: &PipelineSettings,
    targets: &Targets,
    max_per_notice: usize,
    events: &[EventAlerts],
) -> Preview {
    let shared = Arc::new(targets.clone());
    let mut replay = Replay::new(settings.clone(), shared.clone(), max_per_notice);
    let mut alerts = Vec::new();
    for event in events {
        let routed: Vec<Vec<String>> = event
            .alerts
            .iter()
            .map(|a| destinations(replay.pipeline(), &shared, a))
            .collect();
        let outcomes = replay.push(event.alerts.clone(), event.at_ms);
        for ((alert, destinations), (_, outcome)) in event.alerts.iter().zip(routed).zip(outcomes) {
            alerts.push(PreviewAlert {
                alert: alert.clone(),
                outcome: Outcome::as_str(outcome),
                destinations,
            });
        }
    }
    let targets = targets
        .by_name
        .iter()
        .map(|(name, target)| TargetPreview {
            name: name.clone(),
            kind: target.kind(),
            fallback_to: match target {
                Target::Fallback { to, .. } => Some(to.clone()),
                _ => None,
            },
            payloads: payloads(settings, targets, max_per_notice, events, name, target),
        })
        .collect();
    Preview { alerts, targets }
}

/// What `dry-run --target NAME` prints for `events`: each notice `name` would receive,
/// rendered for `target` (a rendering error in its place, as dry-run shows it).
fn payloads(
    settings: &PipelineSettings,
    targets: &Targets,
    max_per_notice: usize,
    events: &[EventAlerts],
    name: &str,
    target: &Target,
) -> Vec<String> {
    let simulated = Arc::new(simulated_targets(targets, Some(name)));
    let mut replay = Replay::new(settings.clone(), simulated, max_per_notice);
    let mut notices: Vec<TimedNotice> = Vec::new();
    for event in events {
        replay.push(event.alerts.clone(), event.at_ms);
        notices.extend(replay.take_notices());
    }
    notices.extend(replay.finish().0);
    notices
        .iter()
        .filter(|timed| timed.notice.target == name)
        .map(|timed| render(target, &timed.notice))
        .collect()
}

/// The exact payload `target` would receive for `notice`, or why it cannot be rendered.
pub fn render(target: &Target, notice: &notify::Notice) -> String {
    notify::payload(target, notice).unwrap_or_else(|err| format!("(cannot render: {err})"))
}
