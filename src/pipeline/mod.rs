//! Pipeline: what happens to a candidate alert before it is stored for delivery —
//! silence → dedup → per-rule budget → routing to concrete targets.
//!
//! Silences are the config file's `[[silences]]` and the runtime ones (`silence.rs`: made
//! through the API, stored in the outbox, shared through Redis). Every alert leaves a
//! history record ([`Admission::raised`]): its outcome, the silence that held it, its
//! duplicate count and its targets.
//!
//! Clocked by the caller: `serve` passes the wall clock, `dry-run` and `replay` the event's
//! time, so a replay shows the decisions that day would have produced. Owns the dedup and
//! budget state (bounded; see [`MAX_DEDUP_KEYS`]); `preview.rs` replays a few events for
//! dry-run's `--target` and the console's playground. Calls `notify` (targets), `outbox` (the
//! `Delivery` and `Raised` it produces), `rules` (types), `state` (`SharedDedup`), `clock` and `telemetry`.

mod policy;
pub mod preview;
mod replay;
pub mod silence;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use policy::{Matcher, PipelineSettings, Route, RulePolicy, Silence};
pub use replay::{Replay, Report, RuleTally, TargetTally, TimedNotice};
pub use silence::{SilenceSet, SilenceStore};

use crate::clock::duration_ms;
use crate::notify::{Target, Targets};
use crate::outbox::{Delivery, Raised};
use crate::rules::{Alert, Severity};
use crate::state::{AdmissionKey, SharedDedup, Verdict};
use crate::telemetry;

/// Dedup keys kept at most; past it the oldest windows are forgotten first.
pub const MAX_DEDUP_KEYS: usize = 100_000;

/// Examples of folded alerts kept per rule for its budget digest.
pub const DIGEST_EXAMPLES: usize = 3;

/// Label set on budget digests.
pub const DIGEST_LABEL: &str = "klaxon_digest";

/// What became of one candidate alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Stored for delivery to its targets.
    Admitted,
    /// Same dedup key within its window: counted, shown on the next notice.
    Deduplicated,
    /// Matched an active silence.
    Silenced,
    /// Over its rule's budget: folded into the rule's next digest.
    Folded,
}

impl Outcome {
    /// Lowercase name for metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Admitted => "admitted",
            Outcome::Deduplicated => "deduplicated",
            Outcome::Silenced => "silenced",
            Outcome::Folded => "folded",
        }
    }
}

/// What the shared store decided for one alert.
#[derive(Debug, Clone, Copy)]
enum SharedDecision {
    /// Silenced: not sent to the store.
    NotAsked,
    /// The verdict of all replicas.
    Answered(Verdict),
}

/// The id of the config-file silence holding `alert` (`config:N`, N its index in
/// `[[silences]]`).
fn config_silence(settings: &PipelineSettings, alert: &Alert, now_ms: i64) -> Option<String> {
    settings
        .silences
        .iter()
        .position(|s| now_ms < s.ends_at_ms && s.matcher.matches(alert))
        .map(|i| format!("config:{i}"))
}

/// The duplicates this replica has counted in the incident of a deduplicated alert, this
/// one included (at least 1: the shared store may know of a first one this replica missed).
fn duplicates(state: &State, alert: &Alert) -> u64 {
    let entry = state.dedup.get(&dedup_key(alert));
    entry.map_or(1, |e| e.suppressed.max(1))
}

/// The dedup key of an alert: its rule and its (filled-in) dedup key.
fn dedup_key(alert: &Alert) -> String {
    format!("{}\u{1f}{}", alert.rule, alert.dedup_key)
}

/// This replica's dedup: `None` inside the key's window (counted), else the suppressed
/// count of the window that ended, and the key's window restarts.
fn local_dedup(state: &mut State, key: String, window: i64, now_ms: i64) -> Option<u64> {
    match state.dedup.get_mut(&key) {
        Some(entry) if now_ms < entry.window_start.saturating_add(entry.window) => {
            entry.suppressed += 1;
            None
        }
        Some(entry) => {
            let suppressed = entry.suppressed;
            *entry = DedupEntry {
                window_start: now_ms,
                window,
                suppressed: 0,
            };
            Some(suppressed)
        }
        None => {
            state.dedup.insert(
                key,
                DedupEntry {
                    window_start: now_ms,
                    window,
                    suppressed: 0,
                },
            );
            Some(0)
        }
    }
}

/// The result of admitting a set of alerts.
#[derive(Debug, Default)]
pub struct Admission {
    /// What to store for delivery: admitted alerts and any budget digests now due.
    pub deliveries: Vec<Delivery>,
    /// One `(rule, outcome)` per input alert, in input order.
    pub outcomes: Vec<(String, Outcome)>,
    /// The history of each input alert, in input order: the alert, its outcome and targets.
    pub raised: Vec<Raised>,
}

#[derive(Clone)]
struct DedupEntry {
    window_start: i64,
    window: i64,
    suppressed: u64,
}

#[derive(Default, Clone)]
struct Budget {
    window_start: i64,
    sent: u32,
    folded: u64,
    examples: Vec<String>,
    severity: Severity,
    first_folded: Option<Alert>,
}

#[derive(Default)]
struct State {
    dedup: HashMap<String, DedupEntry>,
    budgets: HashMap<String, Budget>,
    since_sweep: usize,
}

/// What an uncommitted admission changed, to put back if its batch is not stored: each
/// touched entry as it was before its first change (`None`: it did not exist).
#[derive(Default)]
struct Undo {
    dedup: Vec<(String, Option<DedupEntry>)>,
    budgets: HashMap<String, Option<Budget>>,
}

impl Undo {
    fn dedup(&mut self, state: &State, key: &str) {
        self.dedup
            .push((key.to_owned(), state.dedup.get(key).cloned()));
    }

    fn budget(&mut self, state: &State, rule: &str) {
        if !self.budgets.contains_key(rule) {
            self.budgets
                .insert(rule.to_owned(), state.budgets.get(rule).cloned());
        }
    }

    /// Puts every touched entry back as it was (the latest change first).
    fn roll_back(self, state: &mut State) {
        for (key, before) in self.dedup.into_iter().rev() {
            match before {
                Some(entry) => state.dedup.insert(key, entry),
                None => state.dedup.remove(&key),
            };
        }
        for (rule, before) in self.budgets {
            match before {
                Some(budget) => state.budgets.insert(rule, budget),
                None => state.budgets.remove(&rule),
            };
        }
    }
}

/// The admission stage, shared by every batch.
pub struct Pipeline {
    settings: ArcSwap<PipelineSettings>,
    targets: Arc<Targets>,
    state: Mutex<State>,
    /// Dedup shared with other replicas; its decisions win while it answers.
    shared: Option<Arc<dyn SharedDedup>>,
    /// The runtime silences (kept by a [`SilenceStore`] in serve, read from a file in
    /// dry-run and replay).
    silences: Arc<SilenceSet>,
}

impl Pipeline {
    /// A pipeline with empty state.
    pub fn new(settings: PipelineSettings, targets: Arc<Targets>) -> Self {
        Self {
            settings: ArcSwap::from_pointee(settings),
            targets,
            state: Mutex::new(State::default()),
            shared: None,
            silences: Arc::default(),
        }
    }

    /// Decides dedup with `shared` (the state of all replicas) while it answers, and with
    /// this pipeline's own state when it does not (fail open).
    pub fn with_shared(mut self, shared: Arc<dyn SharedDedup>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The runtime silences this pipeline honours.
    pub fn silences(&self) -> &Arc<SilenceSet> {
        &self.silences
    }

    /// Replaces routes, silences and policies (hot reload); dedup and budget state stay.
    pub fn set_settings(&self, settings: PipelineSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// The routes, silences and policies in force (the console's playground replays them).
    pub fn settings(&self) -> Arc<PipelineSettings> {
        self.settings.load_full()
    }

    /// The targets alerts are routed to.
    pub fn targets(&self) -> &Arc<Targets> {
        &self.targets
    }

    /// Admits `alerts` at `now_ms` (milliseconds since the Unix epoch), after emitting any
    /// budget digest whose window has ended by then; the decisions take effect at once.
    pub fn admit(&self, alerts: Vec<Alert>, now_ms: i64) -> Admission {
        match self.transact(alerts, now_ms, |_| Ok::<_, std::convert::Infallible>(())) {
            Ok((admission, ())) => admission,
            Err(never) => match never {},
        }
    }

    /// Admits `alerts` as [`Pipeline::admit`] does, then hands the admission to `store`
    /// (the outbox write) while no other admission can start. The dedup, budget and shared
    /// state changes take effect only if `store` succeeds; if it fails they are undone, so
    /// the batch leaves no trace and its retry is decided as it was the first time.
    pub fn transact<T, E>(
        &self,
        mut alerts: Vec<Alert>,
        now_ms: i64,
        store: impl FnOnce(&mut Admission) -> Result<T, E>,
    ) -> Result<(Admission, T), E> {
        alerts.iter_mut().for_each(fill_keys);
        let held: Vec<Option<String>> = alerts
            .iter()
            .map(|alert| self.silenced_by(alert, now_ms))
            .collect();
        let (shared, asked) = self.shared_decisions(&alerts, &held, now_ms);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut undo = Undo::default();
        let mut out = Admission {
            deliveries: self.due_digests_locked(&mut state, &mut undo, now_ms),
            outcomes: Vec::with_capacity(alerts.len()),
            raised: Vec::with_capacity(alerts.len()),
        };
        for ((i, mut alert), held) in alerts.into_iter().enumerate().zip(held) {
            let shared = shared.as_ref().map(|decisions| decisions[i]);
            let outcome = match held {
                Some(_) => Outcome::Silenced,
                None => self.decide(&mut state, &mut undo, &mut alert, shared, now_ms),
            };
            let mut raised = Raised {
                seq: 0,
                raised_at_ms: now_ms,
                alert,
                outcome: outcome.as_str().to_owned(),
                silenced_by: held,
                duplicates: 0,
                count: 1,
                targets: Vec::new(),
            };
            match outcome {
                Outcome::Admitted => {
                    let deliveries = self.route(&raised.alert, now_ms);
                    raised.targets = deliveries.iter().map(|d| d.target.clone()).collect();
                    out.deliveries.extend(deliveries);
                }
                // Its rule's digest is routed like the alert itself.
                Outcome::Folded => {
                    raised.targets = self.concrete_targets(self.requested_targets(&raised.alert));
                }
                Outcome::Deduplicated => raised.duplicates = duplicates(&state, &raised.alert),
                Outcome::Silenced => {}
            }
            out.outcomes.push((raised.alert.rule.clone(), outcome));
            out.raised.push(raised);
        }
        let stored = match store(&mut out) {
            Ok(stored) => stored,
            Err(err) => {
                undo.roll_back(&mut state);
                return Err(err);
            }
        };
        state.since_sweep += out.outcomes.len();
        if state.since_sweep >= 1024 || state.dedup.len() > MAX_DEDUP_KEYS {
            sweep(&mut state, now_ms);
        }
        // Stored: a Redis round trip need not hold up the next batch's admission.
        drop(state);
        self.record_shared(&asked, now_ms);
        for (rule, outcome) in &out.outcomes {
            telemetry::alert_outcome(rule, outcome.as_str());
        }
        Ok((out, stored))
    }

    /// How many dedup keys are remembered now.
    pub fn dedup_keys(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dedup
            .len()
    }

    /// Budget digests whose window has ended by `now_ms`, taken at once.
    pub fn due_digests(&self, now_ms: i64) -> Vec<Delivery> {
        self.admit(Vec::new(), now_ms).deliveries
    }

    /// Hands the budget digests due by `now_ms` to `store`; they stay pending (and due) if
    /// it fails.
    pub fn store_due_digests<T, E>(
        &self,
        now_ms: i64,
        store: impl FnOnce(&[Delivery]) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transact(Vec::new(), now_ms, |admission| store(&admission.deliveries))
            .map(|(_, stored)| stored)
    }

    /// Every pending budget digest, due or not (end of a replay).
    pub fn flush(&self) -> Vec<Delivery> {
        self.due_digests(i64::MAX)
    }

    /// When the next budget digest falls due (the end of its rule's budget window), if
    /// any rule has one pending.
    pub fn next_digest_at(&self) -> Option<i64> {
        let settings = self.settings.load();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .budgets
            .iter()
            .filter(|(_, b)| b.sent > 0 || b.folded > 0)
            .map(|(rule, b)| {
                let window = duration_ms(settings.policy(rule).budget_window);
                b.window_start.saturating_add(window)
            })
            .min()
    }

    /// The shared store's verdict for each alert (`NotAsked` for a silenced one, which
    /// never reaches dedup), or `None` when there is no shared store or it did not answer;
    /// and the keys it was asked, to record once the batch is stored.
    fn shared_decisions(
        &self,
        alerts: &[Alert],
        held: &[Option<String>],
        now_ms: i64,
    ) -> (Option<Vec<SharedDecision>>, Vec<AdmissionKey>) {
        let Some(shared) = self.shared.as_ref() else {
            return (None, Vec::new());
        };
        let settings = self.settings.load();
        let mut positions = Vec::new();
        let mut keys = Vec::new();
        for (i, (alert, held)) in alerts.iter().zip(held).enumerate() {
            if held.is_none() {
                positions.push(i);
                let policy = settings.policy(&alert.rule);
                keys.push(AdmissionKey {
                    dedup_key: dedup_key(alert),
                    dedup_window_ms: duration_ms(policy.dedup_window),
                    rule: alert.rule.clone(),
                    budget_window_ms: duration_ms(policy.budget_window),
                });
            }
        }
        let Ok(verdicts) = shared.decide(&keys, now_ms) else {
            // Not recorded there either: the replicas' state misses this batch's alerts
            // (a duplicate later, never a loss).
            return (None, Vec::new());
        };
        let mut decisions = vec![SharedDecision::NotAsked; alerts.len()];
        for (i, verdict) in positions.into_iter().zip(verdicts) {
            decisions[i] = SharedDecision::Answered(verdict);
        }
        (Some(decisions), keys)
    }

    /// Records a stored batch's decided keys in the shared store. When it does not answer
    /// now, the keys are missing there (another replica may send a duplicate, never less).
    fn record_shared(&self, keys: &[AdmissionKey], now_ms: i64) {
        if let Some(shared) = self.shared.as_ref().filter(|_| !keys.is_empty()) {
            let _ = shared.record(keys, now_ms);
        }
    }

    fn decide(
        &self,
        state: &mut State,
        undo: &mut Undo,
        alert: &mut Alert,
        shared: Option<SharedDecision>,
        now_ms: i64,
    ) -> Outcome {
        let settings = self.settings.load();
        let policy = settings.policy(&alert.rule);
        let window = duration_ms(policy.dedup_window);
        // The local state is kept either way, so an outage of the shared store starts
        // from this replica's recent history.
        let key = dedup_key(alert);
        undo.dedup(state, &key);
        let local = local_dedup(state, key, window, now_ms);
        let (first, shared_sent) = match shared {
            Some(SharedDecision::Answered(Verdict::Duplicate)) => (None, None),
            Some(SharedDecision::Answered(Verdict::First { suppressed, sent })) => {
                (Some(suppressed), Some(sent))
            }
            Some(SharedDecision::NotAsked) | None => (local, None),
        };
        match first {
            None => return Outcome::Deduplicated,
            Some(suppressed) => alert.suppressed = suppressed,
        }
        undo.budget(state, &alert.rule);
        let budget = state.budgets.entry(alert.rule.clone()).or_default();
        if budget.sent == 0 && budget.folded == 0 {
            budget.window_start = now_ms;
        }
        // Within budget: by the count of all replicas when the shared store answered.
        let within = match shared_sent {
            Some(sent) => sent <= u64::from(policy.budget),
            None => budget.sent < policy.budget,
        };
        if within {
            budget.sent += 1;
            return Outcome::Admitted;
        }
        budget.folded += 1;
        budget.severity = budget.severity.max(alert.severity);
        if budget.examples.len() < DIGEST_EXAMPLES {
            budget.examples.push(alert.title.clone());
        }
        if budget.first_folded.is_none() {
            budget.first_folded = Some(alert.clone());
        }
        Outcome::Folded
    }

    fn due_digests_locked(&self, state: &mut State, undo: &mut Undo, now_ms: i64) -> Vec<Delivery> {
        let settings = self.settings.load();
        let mut due: Vec<String> = state
            .budgets
            .iter()
            .filter(|(rule, b)| {
                let window = duration_ms(settings.policy(rule).budget_window);
                (b.sent > 0 || b.folded > 0) && now_ms >= b.window_start.saturating_add(window)
            })
            .map(|(rule, _)| rule.clone())
            .collect();
        due.sort();
        let mut out = Vec::new();
        for rule in due {
            undo.budget(state, &rule);
            let Some(budget) = state.budgets.get_mut(&rule) else {
                continue;
            };
            let policy = settings.policy(&rule);
            if let Some(digest) = digest(&rule, &policy, std::mem::take(budget)) {
                out.extend(self.route(&digest, now_ms));
            }
        }
        out
    }

    /// The target names an alert asks for: its own `targets` (those the config knows), else
    /// the matching routes, else the defaults. Fallbacks are not followed yet.
    /// Names the config does not know are logged and counted.
    pub fn requested_targets(&self, alert: &Alert) -> Vec<String> {
        let unknown = alert
            .targets
            .iter()
            .filter(|name| !self.targets.by_name.contains_key(*name));
        for name in unknown {
            tracing::warn!(rule = %alert.rule, target = %name, "alert names an unknown target; routing it by the config instead");
            telemetry::unknown_target(&alert.rule);
        }
        self.requested_quietly(alert)
    }

    /// [`Pipeline::requested_targets`] without logging or counting unknown names.
    fn requested_quietly(&self, alert: &Alert) -> Vec<String> {
        let settings = self.settings.load();
        let mut names: Vec<String> = alert
            .targets
            .iter()
            .filter(|name| self.targets.by_name.contains_key(*name))
            .cloned()
            .collect();
        if names.is_empty() {
            for route in &settings.routes {
                if route.matches(alert) {
                    names.extend(route.targets.iter().cloned());
                    if !route.continue_matching {
                        break;
                    }
                }
            }
        }
        if names.is_empty() {
            names.extend(settings.default_targets.iter().cloned());
        }
        names
    }

    /// The concrete targets of the `requested` target names: fallbacks followed, each
    /// target once.
    fn concrete_targets(&self, requested: Vec<String>) -> Vec<String> {
        let mut concrete: Vec<String> = Vec::new();
        for name in requested {
            if let Some((resolved, target)) = self.targets.resolve(&name)
                && !matches!(target, Target::Fallback { .. })
                && !concrete.iter().any(|c| c == resolved)
            {
                concrete.push(resolved.to_owned());
            }
        }
        concrete
    }

    /// The silence holding `alert` at `now_ms`, if any: a config-file silence, a runtime
    /// silence naming no target, or runtime silences holding it back from every one of its
    /// targets (the first one's id).
    pub fn silenced_by(&self, alert: &Alert, now_ms: i64) -> Option<String> {
        let settings = self.settings.load();
        if let Some(id) = config_silence(&settings, alert, now_ms) {
            return Some(id);
        }
        if let Some(id) = self.silences.holding(alert, now_ms) {
            return Some(id);
        }
        if !self.silences.any_naming_targets(now_ms) {
            return None;
        }
        let mut held = None;
        for target in self.concrete_targets(self.requested_quietly(alert)) {
            let id = self.silences.holding_target(alert, &target, now_ms)?;
            held.get_or_insert(id);
        }
        held
    }

    /// One delivery per concrete target of `alert` that no runtime silence holds it back
    /// from.
    fn route(&self, alert: &Alert, now_ms: i64) -> Vec<Delivery> {
        self.concrete_targets(self.requested_targets(alert))
            .into_iter()
            .filter(|target| {
                self.silences
                    .holding_target(alert, target, now_ms)
                    .is_none()
            })
            .map(|target| Delivery {
                target,
                alert: alert.clone(),
            })
            .collect()
    }
}

/// Default keys: dedup by rule and title, group by rule and namespace.
fn fill_keys(alert: &mut Alert) {
    if alert.dedup_key.is_empty() {
        alert.dedup_key = alert.title.clone();
    }
    if alert.group_key.is_empty() {
        alert.group_key = format!("{}/{}", alert.rule, alert.context.namespace);
    }
}

/// The digest for a rule's folded alerts, or nothing when none were folded.
fn digest(rule: &str, policy: &RulePolicy, budget: Budget) -> Option<Alert> {
    let mut alert = budget.first_folded?;
    let window = humantime::format_duration(policy.budget_window);
    alert.title = format!("{rule} fired {} more times", budget.folded);
    alert.text = format!(
        "Over its budget of {} alerts per {window}; examples:\n{}",
        policy.budget,
        budget
            .examples
            .iter()
            .map(|t| format!("• {t}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    alert.severity = budget.severity;
    alert.fields = [
        ("folded".to_owned(), budget.folded.to_string()),
        (
            "budget".to_owned(),
            format!("{} per {window}", policy.budget),
        ),
    ]
    .into();
    alert
        .labels
        .insert(DIGEST_LABEL.to_owned(), "budget".to_owned());
    alert.dedup_key = format!("{rule} budget digest");
    alert.group_key = format!("{rule}/budget");
    alert.suppressed = 0;
    Some(alert)
}

/// Forgets dedup windows that ended with nothing suppressed, or ended a day ago; then, past
/// [`MAX_DEDUP_KEYS`], the oldest, down to 90% of it so that a flood of new keys does not
/// sweep on every admission.
fn sweep(state: &mut State, now_ms: i64) {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    state.since_sweep = 0;
    state.dedup.retain(|_, e| {
        let end = e.window_start.saturating_add(e.window);
        now_ms < end || (e.suppressed > 0 && now_ms < end.saturating_add(DAY_MS))
    });
    if state.dedup.len() > MAX_DEDUP_KEYS {
        let keep = MAX_DEDUP_KEYS / 10 * 9;
        let mut starts: Vec<i64> = state.dedup.values().map(|e| e.window_start).collect();
        starts.sort_unstable();
        let cutoff = starts[state.dedup.len() - keep];
        state.dedup.retain(|_, e| e.window_start > cutoff);
    }
}
