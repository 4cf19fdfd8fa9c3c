//! Runtime silences: made through the API or the CLI while klaxon runs, beside the
//! config file's `[[silences]]`.
//!
//! A silence is a set of matchers (`name` `op` `value`; ops `=`, `!=`, `=~`, `!~`, the
//! regexes anchored to the whole value and compiled once), a start and an end, who made it
//! and why. Names: `rule`, `severity`, `namespace`, `user`, `target`; `labels.NAME` and
//! `fields.NAME`; any other name is a label, else a field (absent: the empty string).
//! A silence with a `target` matcher holds alerts back from the targets it matches only:
//! the other targets still get them (an alert all of whose targets are held is silenced).
//!
//! [`SilenceSet`] is what the pipeline reads (in memory, swapped whole on change).
//! [`SilenceStore`] keeps it durable in the outbox database and, with Redis, shared by
//! the replicas: writes go to Redis first, and each replica re-reads Redis when its
//! version counter moved ([`SilenceStore::refresh`], once a second from serve's ticker, and
//! before an API listing), never per alert. Expired silences are kept for a retention time,
//! then dropped.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::clock::{duration_ms, format_time_ms, parse_time_ms};
use crate::outbox::Outbox;
use crate::rules::Alert;
use crate::state::SharedSilences;
use crate::telemetry;

/// Longest a silence may last (a year): a typo in a duration should not silence forever.
pub const MAX_SILENCE: Duration = Duration::from_secs(366 * 24 * 3600);

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// Equal to the value.
    #[serde(rename = "=")]
    Equal,
    /// Not equal to the value.
    #[serde(rename = "!=")]
    NotEqual,
    /// Matched whole by the regex.
    #[serde(rename = "=~")]
    Regex,
    /// Not matched whole by the regex.
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    /// The operator as written (`=`, `!=`, `=~`, `!~`).
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// A matcher as written: `{"name":…,"op":…,"value":…}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatcherJson {
    name: String,
    op: MatchOp,
    value: String,
}

/// One condition of a silence, its regex compiled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "MatcherJson", into = "MatcherJson")]
pub struct FieldMatcher {
    /// What it looks at.
    pub name: String,
    /// How it compares.
    pub op: MatchOp,
    /// The value or the regex.
    pub value: String,
    regex: Option<Regex>,
}

impl FieldMatcher {
    /// A matcher; a regex that does not compile is refused with the reason.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        if name.trim().is_empty() {
            return Err("name: must not be empty".to_owned());
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("value: not a valid regex: {e}"))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Parses `NAME=VALUE`, `NAME!=VALUE`, `NAME=~REGEX` or `NAME!~REGEX` (the CLI's form).
    pub fn parse(text: &str) -> Result<Self, String> {
        let at = text.find(['=', '!']).ok_or_else(|| {
            format!("`{text}`: expected NAME=VALUE, NAME!=VALUE, NAME=~RE or NAME!~RE")
        })?;
        let (name, rest) = text.split_at(at);
        let (op, value) = [
            ("!=", MatchOp::NotEqual),
            ("=~", MatchOp::Regex),
            ("!~", MatchOp::NotRegex),
            ("=", MatchOp::Equal),
        ]
        .into_iter()
        .find_map(|(sign, op)| rest.strip_prefix(sign).map(|value| (op, value)))
        .ok_or_else(|| format!("`{text}`: unknown operator"))?;
        Self::new(name.trim(), op, value)
    }

    /// Whether `value` meets the condition.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    fn is_target(&self) -> bool {
        self.name == "target"
    }
}

impl TryFrom<MatcherJson> for FieldMatcher {
    type Error = String;

    fn try_from(m: MatcherJson) -> Result<Self, String> {
        Self::new(&m.name, m.op, &m.value)
    }
}

impl From<FieldMatcher> for MatcherJson {
    fn from(m: FieldMatcher) -> Self {
        Self {
            name: m.name,
            op: m.op,
            value: m.value,
        }
    }
}

/// The value of `name` on `alert` (empty when it has none); `target` is not the alert's.
fn alert_value<'a>(alert: &'a Alert, name: &str) -> &'a str {
    let found = match name {
        "rule" => Some(alert.rule.as_str()),
        "severity" => Some(alert.severity.as_str()),
        "namespace" => Some(alert.context.namespace.as_str()),
        "user" => Some(alert.context.user.as_str()),
        _ => match (name.strip_prefix("labels."), name.strip_prefix("fields.")) {
            (Some(label), _) => alert.labels.get(label).map(String::as_str),
            (_, Some(field)) => alert.fields.get(field).map(String::as_str),
            _ => alert
                .labels
                .get(name)
                .or_else(|| alert.fields.get(name))
                .map(String::as_str),
        },
    };
    found.unwrap_or("")
}

/// Where a silence stands at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    /// Not started yet.
    Pending,
    /// Holding alerts back.
    Active,
    /// Ended (kept for the retention time).
    Expired,
}

/// A runtime silence.
#[derive(Debug, Clone)]
pub struct RuntimeSilence {
    /// `s-` and 16 hex digits.
    pub id: String,
    /// All must hold (at least one).
    pub matchers: Vec<FieldMatcher>,
    /// Start, ms since the epoch.
    pub starts_at_ms: i64,
    /// End, ms since the epoch (exclusive).
    pub ends_at_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// A silence as the API, the CLI and `--silences FILE` write it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SilenceJson {
    /// The id.
    pub id: String,
    /// The matchers.
    pub matchers: Vec<FieldMatcher>,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// End, RFC 3339.
    pub ends_at: String,
    /// Who made it.
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// pending, active or expired, when written (ignored when read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SilenceState>,
}

/// `{"silences":[…]}`: `GET /api/v1/silences` and the `--silences FILE` of dry-run and
/// replay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SilenceList {
    /// The silences.
    pub silences: Vec<SilenceJson>,
}

impl RuntimeSilence {
    /// Where it stands at `now_ms`.
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms < self.starts_at_ms {
            SilenceState::Pending
        } else if now_ms < self.ends_at_ms {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether it holds alerts at `now_ms`.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.state(now_ms) == SilenceState::Active
    }

    /// Whether it names targets (then it holds alerts back from those targets only).
    pub fn names_targets(&self) -> bool {
        self.matchers.iter().any(FieldMatcher::is_target)
    }

    /// Whether every matcher but the `target` ones holds for `alert`.
    fn matches_alert(&self, alert: &Alert) -> bool {
        self.matchers
            .iter()
            .filter(|m| !m.is_target())
            .all(|m| m.matches(alert_value(alert, &m.name)))
    }

    /// Whether every `target` matcher holds for `target`.
    fn matches_target(&self, target: &str) -> bool {
        self.matchers
            .iter()
            .filter(|m| m.is_target())
            .all(|m| m.matches(target))
    }

    /// The JSON form, with its state at `now_ms`.
    pub fn to_json(&self, now_ms: i64) -> SilenceJson {
        SilenceJson {
            state: Some(self.state(now_ms)),
            ..self.stored_json()
        }
    }

    /// The JSON form without a state (what is stored).
    fn stored_json(&self) -> SilenceJson {
        SilenceJson {
            id: self.id.clone(),
            matchers: self.matchers.clone(),
            starts_at: format_time_ms(self.starts_at_ms),
            ends_at: format_time_ms(self.ends_at_ms),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            state: None,
        }
    }

    /// Its stored bytes.
    fn encode(&self) -> String {
        serde_json::to_string(&self.stored_json()).unwrap_or_default()
    }
}

impl TryFrom<SilenceJson> for RuntimeSilence {
    type Error = SilenceError;

    fn try_from(json: SilenceJson) -> Result<Self, SilenceError> {
        let time = |field: &str, text: &str| {
            parse_time_ms(text)
                .ok_or_else(|| invalid(field, format!("`{text}` is not an RFC 3339 time")))
        };
        let silence = Self {
            starts_at_ms: time("starts_at", &json.starts_at)?,
            ends_at_ms: time("ends_at", &json.ends_at)?,
            id: json.id,
            matchers: json.matchers,
            created_by: json.created_by,
            comment: json.comment,
        };
        if silence.id.is_empty() {
            return Err(invalid("id", "must not be empty".to_owned()));
        }
        if silence.matchers.is_empty() {
            return Err(invalid("matchers", "needs at least one matcher".to_owned()));
        }
        Ok(silence)
    }
}

/// Why a silence was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// A field of the request is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field (`matchers[0].value`, `ends_at`, …).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No silence has this id.
    #[error("no silence with id `{0}`")]
    NotFound(String),
    /// The outbox database failed.
    #[error("cannot store the silence: {0}")]
    Store(#[from] crate::outbox::OutboxError),
    /// Redis (shared by the replicas) did not answer; nothing was changed.
    #[error("cannot share the silence with the other replicas: {0}")]
    Shared(#[from] crate::state::Unavailable),
}

fn invalid(field: &str, reason: String) -> SilenceError {
    SilenceError::Invalid {
        field: field.to_owned(),
        reason,
    }
}

/// `POST /api/v1/silences`'s body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// At least one.
    pub matchers: Vec<FieldMatcher>,
    /// RFC 3339; absent: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// RFC 3339; or `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// From the start (`2h`, `30m`); or `ends_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Who makes it; absent: `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Why; required.
    #[serde(default)]
    pub comment: String,
}

impl NewSilence {
    /// Parses a request body: a bad field is named with its path (`matchers[1].op`).
    pub fn from_json(body: &[u8]) -> Result<Self, SilenceError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let field = err.path().to_string();
            let field = if field == "." {
                "body".to_owned()
            } else {
                field
            };
            invalid(&field, err.into_inner().to_string())
        })
    }

    /// The silence it asks for, made at `now_ms` with the id `id`.
    pub fn validate(self, id: String, now_ms: i64) -> Result<RuntimeSilence, SilenceError> {
        if self.matchers.is_empty() {
            return Err(invalid("matchers", "needs at least one matcher".to_owned()));
        }
        if self.comment.trim().is_empty() {
            return Err(invalid("comment", "must not be empty: say why".to_owned()));
        }
        let starts_at_ms = match &self.starts_at {
            None => now_ms,
            Some(text) => parse_time_ms(text)
                .ok_or_else(|| invalid("starts_at", format!("`{text}` is not an RFC 3339 time")))?,
        };
        let ends_at_ms = match (&self.ends_at, &self.duration) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "duration",
                    "give ends_at or duration, not both".to_owned(),
                ));
            }
            (None, None) => {
                return Err(invalid("ends_at", "give ends_at or duration".to_owned()));
            }
            (Some(text), None) => parse_time_ms(text)
                .ok_or_else(|| invalid("ends_at", format!("`{text}` is not an RFC 3339 time")))?,
            (None, Some(text)) => {
                let duration = humantime::parse_duration(text)
                    .map_err(|e| invalid("duration", format!("`{text}`: {e}")))?;
                if duration > MAX_SILENCE {
                    return Err(invalid("duration", "longer than a year".to_owned()));
                }
                starts_at_ms.saturating_add(duration_ms(duration))
            }
        };
        if ends_at_ms <= starts_at_ms {
            return Err(invalid("ends_at", "must be after starts_at".to_owned()));
        }
        if ends_at_ms <= now_ms {
            return Err(invalid("ends_at", "is in the past".to_owned()));
        }
        if ends_at_ms.saturating_sub(starts_at_ms) > duration_ms(MAX_SILENCE) {
            return Err(invalid(
                "ends_at",
                "more than a year after starts_at".to_owned(),
            ));
        }
        let created_by = self
            .created_by
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| "anonymous".to_owned());
        Ok(RuntimeSilence {
            id,
            matchers: self.matchers,
            starts_at_ms,
            ends_at_ms,
            created_by,
            comment: self.comment,
        })
    }
}

/// A new silence id: `s-` and 16 random hex digits.
pub fn new_id() -> String {
    format!("s-{:016x}", rand::random::<u64>())
}

/// Parses `{"silences":[…]}` (dry-run's and replay's `--silences FILE`); a bad entry is
/// named by its path.
pub fn parse_list(json: &[u8]) -> Result<Vec<RuntimeSilence>, SilenceError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    let list: SilenceList = serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        invalid(&field, err.into_inner().to_string())
    })?;
    list.silences
        .into_iter()
        .enumerate()
        .map(|(i, json)| {
            RuntimeSilence::try_from(json).map_err(|err| match err {
                SilenceError::Invalid { field, reason } => {
                    invalid(&format!("silences[{i}].{field}"), reason)
                }
                other => other,
            })
        })
        .collect()
}

/// The runtime silences the pipeline reads: swapped whole, read without locks.
#[derive(Debug, Default)]
pub struct SilenceSet {
    all: ArcSwap<Vec<RuntimeSilence>>,
}

impl SilenceSet {
    /// Replaces every silence.
    pub fn replace(&self, silences: Vec<RuntimeSilence>) {
        self.all.store(Arc::new(silences));
    }

    /// Every silence, active or not.
    pub fn all(&self) -> Arc<Vec<RuntimeSilence>> {
        self.all.load_full()
    }

    /// Adds `silence`, or replaces the one with its id.
    fn upsert(&self, silence: RuntimeSilence) {
        self.all.rcu(|all| {
            let mut next: Vec<RuntimeSilence> =
                all.iter().filter(|s| s.id != silence.id).cloned().collect();
            next.push(silence.clone());
            next
        });
    }

    /// The id of an active silence holding `alert` back from every target (one naming no
    /// target).
    pub fn holding(&self, alert: &Alert, now_ms: i64) -> Option<String> {
        self.all
            .load()
            .iter()
            .find(|s| s.is_active(now_ms) && !s.names_targets() && s.matches_alert(alert))
            .map(|s| s.id.clone())
    }

    /// The id of an active silence holding `alert` back from `target` (one naming targets).
    pub fn holding_target(&self, alert: &Alert, target: &str, now_ms: i64) -> Option<String> {
        self.all
            .load()
            .iter()
            .find(|s| {
                s.is_active(now_ms)
                    && s.names_targets()
                    && s.matches_target(target)
                    && s.matches_alert(alert)
            })
            .map(|s| s.id.clone())
    }

    /// Whether an active silence names targets (only then are an alert's targets worked
    /// out before dedup).
    pub fn any_naming_targets(&self, now_ms: i64) -> bool {
        self.all
            .load()
            .iter()
            .any(|s| s.is_active(now_ms) && s.names_targets())
    }

    /// How many hold alerts at `now_ms`.
    pub fn active(&self, now_ms: i64) -> usize {
        self.all
            .load()
            .iter()
            .filter(|s| s.is_active(now_ms))
            .count()
    }
}

/// The runtime silences kept durable (outbox) and, with Redis, shared by the replicas.
pub struct SilenceStore {
    set: Arc<SilenceSet>,
    outbox: Arc<Outbox>,
    shared: Option<Arc<dyn SharedSilences>>,
    retention_ms: i64,
    /// The shared version the set was last read at; `None`: not read yet.
    seen_version: Mutex<Option<u64>>,
    /// One change at a time (read, modify, write).
    writing: Mutex<()>,
}

impl SilenceStore {
    /// Loads the silences stored in `outbox` into `set` (an unreadable record is logged
    /// and skipped), then, with `shared`, takes the replicas' silences.
    pub fn open(
        set: Arc<SilenceSet>,
        outbox: Arc<Outbox>,
        shared: Option<Arc<dyn SharedSilences>>,
        retention: Duration,
    ) -> Result<Self, SilenceError> {
        let stored = outbox
            .silences()?
            .into_iter()
            .filter_map(|(id, json)| decode(&id, &json))
            .collect();
        set.replace(stored);
        Ok(Self {
            set,
            outbox,
            shared,
            retention_ms: duration_ms(retention),
            seen_version: Mutex::new(None),
            writing: Mutex::new(()),
        })
    }

    /// Creates a silence from a request at `now_ms`.
    pub fn create(&self, new: NewSilence, now_ms: i64) -> Result<RuntimeSilence, SilenceError> {
        let silence = new.validate(new_id(), now_ms)?;
        // Up to date first (and an empty Redis seeded), so no replica's silences are lost.
        self.pull()?;
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        self.write(std::slice::from_ref(&silence), &[])?;
        telemetry::silence_change("created");
        tracing::info!(id = %silence.id, created_by = %silence.created_by, ends_at = %format_time_ms(silence.ends_at_ms), "silence created");
        self.gauge(now_ms);
        Ok(silence)
    }

    /// Expires silence `id` at `now_ms` (an expired one is returned as it is).
    pub fn expire(&self, id: &str, now_ms: i64) -> Result<RuntimeSilence, SilenceError> {
        self.pull()?;
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut silence = self
            .set
            .all()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| SilenceError::NotFound(id.to_owned()))?;
        if silence.state(now_ms) == SilenceState::Expired {
            return Ok(silence);
        }
        silence.ends_at_ms = now_ms;
        silence.starts_at_ms = silence.starts_at_ms.min(now_ms);
        self.write(std::slice::from_ref(&silence), &[])?;
        telemetry::silence_change("expired");
        tracing::info!(id = %silence.id, "silence expired");
        self.gauge(now_ms);
        Ok(silence)
    }

    /// Every silence kept, fresh from the replicas: active and pending first (soonest end
    /// first), then expired (latest end first).
    pub fn list(&self, now_ms: i64) -> Vec<RuntimeSilence> {
        self.refresh(now_ms);
        let mut all: Vec<RuntimeSilence> = self.set.all().iter().cloned().collect();
        all.sort_by_key(|s| match s.state(now_ms) {
            SilenceState::Expired => (1, -s.ends_at_ms),
            SilenceState::Active | SilenceState::Pending => (0, s.ends_at_ms),
        });
        all
    }

    /// Takes the replicas' silences when their version moved (one `GET` otherwise), seeds
    /// an empty Redis with this replica's, drops silences expired longer than the
    /// retention, and sets the gauge. Failures are logged; the set stays as it was.
    pub fn refresh(&self, now_ms: i64) {
        if let Err(err) = self.pull().and_then(|()| self.prune(now_ms)) {
            tracing::debug!(error = %err, "silences not refreshed");
        }
        self.gauge(now_ms);
    }

    fn pull(&self) -> Result<(), SilenceError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let version = shared.silences_version()?;
        let mut seen = self
            .seen_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Unchanged, or nothing anywhere: nothing to read.
        if version == *seen && (version.is_some() || self.set.all().is_empty()) {
            return Ok(());
        }
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let crate::state::SilenceRecords { version, records } = shared.silences()?;
        let Some(version) = version else {
            // A new (or emptied) Redis: this replica's silences become everyone's.
            let local: Vec<(String, String)> = self
                .set
                .all()
                .iter()
                .map(|s| (s.id.clone(), s.encode()))
                .collect();
            if !local.is_empty() {
                shared.write_silences(&local, &[])?;
                tracing::info!(
                    silences = local.len(),
                    "shared state held no silences: seeded it with this replica's"
                );
            }
            return Ok(());
        };
        let silences: Vec<RuntimeSilence> = records
            .iter()
            .filter_map(|(id, json)| decode(id, json.as_bytes()))
            .collect();
        let gone: Vec<String> = self
            .set
            .all()
            .iter()
            .filter(|s| !silences.iter().any(|n| n.id == s.id))
            .map(|s| s.id.clone())
            .collect();
        let put: Vec<(String, Vec<u8>)> = silences
            .iter()
            .map(|s| (s.id.clone(), s.encode().into_bytes()))
            .collect();
        self.outbox.write_silences(&put, &gone)?;
        self.set.replace(silences);
        *seen = Some(version);
        Ok(())
    }

    /// Drops the silences that ended more than the retention time before `now_ms`.
    fn prune(&self, now_ms: i64) -> Result<(), SilenceError> {
        let cutoff = now_ms.saturating_sub(self.retention_ms);
        let old: Vec<String> = self
            .set
            .all()
            .iter()
            .filter(|s| s.ends_at_ms < cutoff)
            .map(|s| s.id.clone())
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = &self.shared {
            shared.write_silences(&[], &old)?;
        }
        self.outbox.write_silences(&[], &old)?;
        let kept = self
            .set
            .all()
            .iter()
            .filter(|s| !old.contains(&s.id))
            .cloned()
            .collect();
        self.set.replace(kept);
        for _ in &old {
            telemetry::silence_change("dropped");
        }
        Ok(())
    }

    /// Writes `put` and removes `remove`: Redis first (nothing changes when it does not
    /// answer), then the outbox, then the set the pipeline reads.
    fn write(&self, put: &[RuntimeSilence], remove: &[String]) -> Result<(), SilenceError> {
        if let Some(shared) = &self.shared {
            let records: Vec<(String, String)> =
                put.iter().map(|s| (s.id.clone(), s.encode())).collect();
            shared.write_silences(&records, remove)?;
        }
        let records: Vec<(String, Vec<u8>)> = put
            .iter()
            .map(|s| (s.id.clone(), s.encode().into_bytes()))
            .collect();
        self.outbox.write_silences(&records, remove)?;
        for silence in put {
            self.set.upsert(silence.clone());
        }
        Ok(())
    }

    fn gauge(&self, now_ms: i64) {
        telemetry::silences_active(self.set.active(now_ms));
    }
}

/// A stored record, or `None` (logged) when it cannot be read.
fn decode(id: &str, json: &[u8]) -> Option<RuntimeSilence> {
    let parsed = serde_json::from_slice::<SilenceJson>(json)
        .map_err(|e| e.to_string())
        .and_then(|j| RuntimeSilence::try_from(j).map_err(|e| e.to_string()));
    match parsed {
        Ok(silence) => Some(silence),
        Err(err) => {
            tracing::warn!(id = %id, error = %err, "stored silence unreadable; skipped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Severity;

    fn alert(rule: &str, namespace: &str) -> Alert {
        let mut alert = Alert::new(rule, "t");
        alert.context.namespace = namespace.to_owned();
        alert.severity = Severity::Warning;
        alert
            .labels
            .insert("team".to_owned(), "payments".to_owned());
        alert
            .fields
            .insert("image".to_owned(), "nginx:1.27".to_owned());
        alert
    }

    fn silence(matchers: &[&str]) -> RuntimeSilence {
        RuntimeSilence {
            id: "s-1".to_owned(),
            matchers: matchers
                .iter()
                .map(|m| FieldMatcher::parse(m).unwrap())
                .collect(),
            starts_at_ms: 1_000,
            ends_at_ms: 2_000,
            created_by: "alice".to_owned(),
            comment: "rollout".to_owned(),
        }
    }

    #[test]
    fn the_four_operators_compare_whole_values() {
        let a = alert("pod_created", "shop");
        let holds = |m: &str| silence(&[m]).matches_alert(&a);
        assert!(holds("rule=pod_created"));
        assert!(!holds("rule=pod"));
        assert!(holds("namespace!=web"));
        assert!(!holds("namespace!=shop"));
        assert!(holds("namespace=~shop|web"));
        assert!(!holds("namespace=~sho"), "anchored to the whole value");
        assert!(holds("namespace!~kube-.*"));
        assert!(holds("severity=warning"));
        assert!(holds("team=payments"));
        assert!(holds("labels.team=~pay.*"));
        assert!(holds("image=nginx:1.27"));
        assert!(holds("fields.image!~redis.*"));
        assert!(holds("missing="), "an absent name is the empty string");
        assert!(!holds("user=alice"));
    }

    #[test]
    fn parse_reads_each_operator_and_refuses_bad_input() {
        let m = FieldMatcher::parse("namespace!~kube-.*").unwrap();
        assert_eq!(
            (m.name.as_str(), m.op, m.value.as_str()),
            ("namespace", MatchOp::NotRegex, "kube-.*")
        );
        assert_eq!(FieldMatcher::parse("a=b=c").unwrap().value, "b=c");
        assert!(FieldMatcher::parse("namespace").is_err());
        assert!(FieldMatcher::parse("=x").is_err());
        let bad = FieldMatcher::parse("rule=~(").unwrap_err();
        assert!(bad.starts_with("value: not a valid regex"), "{bad}");
    }

    #[test]
    fn a_silence_holds_only_while_active_and_target_silences_only_their_targets() {
        let set = SilenceSet::default();
        let mut slack_only = silence(&["rule=pod_created", "target=slack"]);
        slack_only.id = "s-2".to_owned();
        set.replace(vec![silence(&["namespace=shop"]), slack_only]);
        let shop = alert("pod_created", "shop");
        assert_eq!(set.holding(&shop, 999), None, "pending");
        assert_eq!(set.holding(&shop, 1_000).as_deref(), Some("s-1"));
        assert_eq!(set.holding(&shop, 2_000), None, "expired");
        let web = alert("pod_created", "web");
        assert_eq!(set.holding(&web, 1_500), None);
        assert_eq!(
            set.holding_target(&web, "slack", 1_500).as_deref(),
            Some("s-2")
        );
        assert_eq!(set.holding_target(&web, "email", 1_500), None);
        assert_eq!(set.active(1_500), 2);
    }

    #[test]
    fn a_request_is_validated_naming_the_field() {
        let field = |body: &str| match NewSilence::from_json(body.as_bytes())
            .and_then(|n| n.validate("s-x".to_owned(), 10_000))
        {
            Err(SilenceError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let m = r#"[{"name":"rule","op":"=","value":"x"}]"#;
        assert_eq!(
            field(r#"{"matchers":[],"duration":"1h","comment":"c"}"#),
            "matchers"
        );
        assert_eq!(
            field(&format!(r#"{{"matchers":{m},"duration":"1h"}}"#)),
            "comment"
        );
        assert_eq!(
            field(&format!(r#"{{"matchers":{m},"comment":"c"}}"#)),
            "ends_at"
        );
        assert_eq!(
            field(&format!(
                r#"{{"matchers":{m},"duration":"soon","comment":"c"}}"#
            )),
            "duration"
        );
        assert_eq!(
            field(
                r#"{"matchers":[{"name":"rule","op":"==","value":"x"}],"duration":"1h","comment":"c"}"#
            ),
            "matchers[0].op"
        );
        assert_eq!(
            field(
                r#"{"matchers":[{"name":"rule","op":"=~","value":"("}],"duration":"1h","comment":"c"}"#
            ),
            "matchers[0]"
        );
        assert_eq!(
            field(&format!(
                r#"{{"matchers":{m},"ends_at":"1970-01-01T00:00:01Z","comment":"c"}}"#
            )),
            "ends_at"
        );
        let ok = NewSilence::from_json(
            format!(r#"{{"matchers":{m},"duration":"2h","comment":"c"}}"#).as_bytes(),
        )
        .and_then(|n| n.validate("s-x".to_owned(), 10_000))
        .unwrap();
        assert_eq!(
            (ok.starts_at_ms, ok.ends_at_ms),
            (10_000, 10_000 + 7_200_000)
        );
        assert_eq!(ok.created_by, "anonymous");
    }

    #[test]
    fn the_json_form_round_trips_through_a_silence_list() {
        let s = silence(&["namespace=~shop|web"]);
        let list = SilenceList {
            silences: vec![s.to_json(1_500)],
        };
        let text = serde_json::to_string(&list).unwrap();
        assert!(text.contains(r#""state":"active""#), "{text}");
        assert!(text.contains(r#""op":"=~""#), "{text}");
        let back = parse_list(text.as_bytes()).unwrap();
        assert_eq!(back[0].ends_at_ms, 2_000);
        assert_eq!(back[0].matchers[0].value, "shop|web");
        let bad =
            parse_list(br#"{"silences":[{"id":"s","matchers":[],"starts_at":"x","ends_at":"y"}]}"#)
                .unwrap_err();
        assert!(
            bad.to_string().starts_with("silences[0].starts_at"),
            "{bad}"
        );
    }

    /// A shared store in memory, counting the reads of the whole set.
    #[derive(Default)]
    struct FakeShared {
        version: Mutex<Option<u64>>,
        records: Mutex<Vec<(String, String)>>,
        full_reads: std::sync::atomic::AtomicUsize,
    }

    impl SharedSilences for FakeShared {
        fn silences_version(&self) -> Result<Option<u64>, crate::state::Unavailable> {
            Ok(*self.version.lock().unwrap())
        }

        fn silences(&self) -> Result<crate::state::SilenceRecords, crate::state::Unavailable> {
            self.full_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(crate::state::SilenceRecords {
                version: *self.version.lock().unwrap(),
                records: self.records.lock().unwrap().clone(),
            })
        }

        fn write_silences(
            &self,
            put: &[(String, String)],
            remove: &[String],
        ) -> Result<(), crate::state::Unavailable> {
            let mut records = self.records.lock().unwrap();
            records.retain(|(id, _)| !remove.contains(id) && !put.iter().any(|(p, _)| p == id));
            records.extend(put.iter().cloned());
            let mut version = self.version.lock().unwrap();
            *version = Some(version.unwrap_or(0) + 1);
            Ok(())
        }
    }

    fn store(dir: &std::path::Path, shared: Option<Arc<FakeShared>>) -> SilenceStore {
        let outbox = Arc::new(Outbox::open(dir).unwrap());
        let shared = shared.map(|s| s as Arc<dyn SharedSilences>);
        let day = Duration::from_secs(24 * 3600);
        SilenceStore::open(Arc::default(), outbox, shared, day).unwrap()
    }

    fn request(namespace: &str) -> NewSilence {
        NewSilence {
            matchers: vec![FieldMatcher::parse(&format!("namespace={namespace}")).unwrap()],
            duration: Some("1h".to_owned()),
            comment: "rollout".to_owned(),
            ..NewSilence::default()
        }
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn stored_silences_come_back_and_expired_ones_go_after_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_000 * HOUR;
        let first = store(dir.path(), None);
        let kept = first.create(request("shop"), now).unwrap();
        let expired = first.create(request("web"), now).unwrap();
        first.expire(&expired.id, now + 1).unwrap();
        assert_eq!(
            first.expire(&expired.id, now + 2).unwrap().ends_at_ms,
            now + 1
        );
        assert!(matches!(
            first.expire("s-none", now),
            Err(SilenceError::NotFound(_))
        ));
        drop(first);

        let second = store(dir.path(), None);
        let ids: Vec<String> = second.list(now + 2).iter().map(|s| s.id.clone()).collect();
        assert_eq!(
            ids,
            vec![kept.id.clone(), expired.id.clone()],
            "active first"
        );
        // The expired one is listed for a day after its end, then dropped for good.
        assert_eq!(second.list(now + 1 + 24 * HOUR).len(), 2);
        let after = second.list(now + 2 + 24 * HOUR);
        assert!(after.iter().all(|s| s.id == kept.id), "{after:?}");
        drop(second);
        assert!(
            store(dir.path(), None)
                .set
                .all()
                .iter()
                .all(|s| s.id == kept.id)
        );
    }

    #[test]
    fn a_replica_reads_the_shared_set_only_when_its_version_moved() {
        let shared = Arc::new(FakeShared::default());
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = store(dir_a.path(), Some(shared.clone()));
        let b = store(dir_b.path(), Some(shared.clone()));
        let now = 1_000 * HOUR;
        let made = a.create(request("shop"), now).unwrap();
        b.refresh(now);
        let reads = shared.full_reads.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(b.set.all()[0].id, made.id);
        for _ in 0..5 {
            b.refresh(now);
        }
        assert_eq!(
            shared.full_reads.load(std::sync::atomic::Ordering::Relaxed),
            reads,
            "unchanged: one version read per refresh, no full read"
        );
        let shop = alert("pod_created", "shop");
        assert_eq!(b.set.holding(&shop, now).as_deref(), Some(made.id.as_str()));
        b.expire(&made.id, now + 1).unwrap();
        a.refresh(now + 2);
        assert_eq!(a.set.holding(&shop, now + 2), None);
        assert_eq!(a.set.all()[0].state(now + 2), SilenceState::Expired);
    }

    #[test]
    fn an_empty_shared_store_is_seeded_with_a_replicas_silences() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_000 * HOUR;
        let made = store(dir.path(), None)
            .create(request("shop"), now)
            .unwrap();
        let shared = Arc::new(FakeShared::default());
        let replica = store(dir.path(), Some(shared.clone()));
        replica.refresh(now);
        let records = shared.records.lock().unwrap().clone();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0, made.id);
        replica.refresh(now);
        assert_eq!(
            replica.set.all().len(),
            1,
            "read back from the shared store"
        );
    }

    #[test]
    fn the_admission_names_the_silence_that_held_each_alert() {
        use crate::notify::{ConsoleFormat, Target, Targets};
        use crate::pipeline::{Matcher, Outcome, Pipeline, PipelineSettings, Silence};
        let console = || Target::Console(ConsoleFormat::Json);
        let targets = Targets {
            by_name: [("a".to_owned(), console()), ("b".to_owned(), console())].into(),
            pacing: Default::default(),
        };
        let settings = PipelineSettings {
            default_targets: vec!["a".to_owned(), "b".to_owned()],
            silences: vec![Silence {
                matcher: Matcher {
                    rules: vec!["cfg_*".to_owned()],
                    ..Matcher::default()
                },
                ends_at_ms: i64::MAX,
                comment: String::new(),
            }],
            ..PipelineSettings::default()
        };
        let pipeline = Pipeline::new(settings, Arc::new(targets));
        let mut only_a = silence(&["rule=pod_created", "target=a"]);
        only_a.id = "s-2".to_owned();
        pipeline
            .silences()
            .replace(vec![silence(&["namespace=shop"]), only_a]);
        let alerts = vec![
            alert("pod_created", "shop"),
            alert("cfg_changed", "web"),
            alert("pod_created", "web"),
        ];
        let admission = pipeline.admit(alerts, 1_500);
        let held: Vec<Option<&str>> = admission
            .raised
            .iter()
            .map(|r| r.silenced_by.as_deref())
            .collect();
        assert_eq!(held, vec![Some("s-1"), Some("config:0"), None]);
        let outcomes: Vec<Outcome> = admission.outcomes.iter().map(|(_, o)| *o).collect();
        assert_eq!(
            outcomes,
            vec![Outcome::Silenced, Outcome::Silenced, Outcome::Admitted]
        );
        let to: Vec<&str> = admission
            .deliveries
            .iter()
            .map(|d| d.target.as_str())
            .collect();
        assert_eq!(to, vec!["b"], "held back from `a` only");
    }
}
