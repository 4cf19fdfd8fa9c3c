//! Configuration: one TOML file, every key overridable by `KLAXON_…` environment variables
//! (`__` for nesting), validated at load into ready-to-use types.
//!
//! Owns loading and validation, and the one loading sequence of config and scripts
//! (`sources.rs`). Calls `server` (its settings types and the reload closure it builds),
//! `pipeline`, `notify`, `outbox` (the history's settings), `rules`, `state`, `sources`
//! (the followed files' settings), `clock` and `secret`, at load only.

mod raw;
mod sources;
mod targets;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Serialized};

pub use raw::{
    RawAdmin, RawAuth, RawConfig, RawDelivery, RawEventDedup, RawFileSource, RawHistory, RawOutbox,
    RawRouting, RawRulePolicy, RawScripts, RawServer, RawSilence, RawSources, RawState, RawTarget,
    RawTls, StateBackend, TargetType,
};
pub use sources::{LoadError, Sources, rules};

use crate::clock::parse_time_ms;
use crate::notify::{DeliveryPolicy, Target, Targets};
use crate::outbox::HistorySettings;
use crate::pipeline::{PipelineSettings, RulePolicy, Silence};
use crate::rules::{ScriptLimits, settings_problems};
use crate::server::auth::AuthSettings;
use crate::server::tls::{ClientAuth, TlsSettings};
use crate::server::{ServeSettings, ServerSettings};
use crate::sources::{FileSource, Input};
use crate::state::{RedisSettings, StateSettings};

/// The config file used when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "config/klaxon.toml";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    /// Name shown on every alert.
    pub cluster_name: String,
    /// Script directories.
    pub script_dirs: Vec<PathBuf>,
    /// Script sandbox limits.
    pub limits: ScriptLimits,
    /// `[scripts.settings]`, as JSON values.
    pub script_settings: BTreeMap<String, serde_json::Value>,
    /// What `serve` runs with: listener, targets, pipeline, delivery, outbox, shared state.
    pub serve: ServeSettings,
}

/// One problem in the configuration: which key, where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// `file:line` or `file:line:column` when known, else the file or `environment`.
    pub location: String,
    /// Dotted key, e.g. `server.listen`; empty for whole-file problems.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.is_empty() {
            true => write!(f, "{}: {}", self.location, self.message),
            false => write!(f, "{}: {}: {}", self.location, self.key, self.message),
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<ConfigProblem>);

/// Where keys are, so a problem can name its line.
struct SourceMap {
    path: Option<PathBuf>,
    document: Option<toml_edit::ImDocument<String>>,
}

impl SourceMap {
    /// Where `key` was set: an environment variable that overrides it, else its line in
    /// the file (or the line of its nearest enclosing table).
    fn locate(&self, key: &str) -> String {
        let var = env_var_name(key);
        if std::env::var_os(&var).is_some() {
            return format!("environment {var}");
        }
        let Some(path) = &self.path else {
            return "built-in defaults".to_owned();
        };
        match self.line_of(key) {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        }
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.document.as_ref()?;
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut span = None;
        let mut parts = key.split('.');
        while let Some(part) = parts.next() {
            let Some((k, item)) = table.get_key_value(part) else {
                break;
            };
            span = k.span().or_else(|| item.span()).or(span);
            // `[[name]]`: the next part is the index of one of its tables.
            if let Some(array) = item.as_array_of_tables() {
                let Some(entry) = parts.next().and_then(|i| array.get(i.parse().ok()?)) else {
                    break;
                };
                span = entry.span().or(span);
                table = entry;
                continue;
            }
            match item.as_table_like() {
                Some(t) => table = t,
                None => break,
            }
        }
        let start = span?.start;
        Some(line_at(doc.raw(), start))
    }
}

/// The environment variable that overrides `key`: `server.listen` → `KLAXON_SERVER__LISTEN`.
fn env_var_name(key: &str) -> String {
    format!("KLAXON_{}", key.replace('.', "__").to_uppercase())
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Loads `path` (or [`DEFAULT_PATH`] when it exists, or the embedded defaults), applies
/// `KLAXON_…` environment overrides, and validates the result.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let path = match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
    };
    let (raw, sources) = read(path)?;
    validate(raw, &sources)
}

/// Reads and parses the file once (its spans name the lines of problems), then lets
/// figment merge it over the defaults and under the `KLAXON_…` environment.
fn read(path: Option<PathBuf>) -> Result<(RawConfig, SourceMap), ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    let mut document = None;
    if let Some(path) = &path {
        let doc = parse_file(path)?;
        let in_file =
            |err: toml_edit::de::Error| file_problem(path, doc.raw(), err.span(), err.message());
        // The file alone against the schema first: serde's own words, at the line.
        toml_edit::de::from_document::<RawConfig>(doc.clone()).map_err(in_file)?;
        let values =
            toml_edit::de::from_document::<figment::value::Dict>(doc.clone()).map_err(in_file)?;
        figment = figment.merge(Serialized::defaults(values));
        document = Some(doc);
    }
    figment = figment.merge(
        Env::prefixed("KLAXON_")
            .filter(|key| !is_service_link(key.as_str()))
            .split("__"),
    );
    let sources = SourceMap { path, document };
    let raw = figment.extract::<RawConfig>().map_err(|err| {
        ConfigError(
            err.into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    ConfigProblem {
                        location: sources.locate(&key),
                        key,
                        message: e.kind.to_string(),
                    }
                })
                .collect(),
        )
    })?;
    Ok((raw, sources))
}

/// The file's text as a TOML document; a syntax error names its line.
fn parse_file(path: &Path) -> Result<toml_edit::ImDocument<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![ConfigProblem {
            location: path.display().to_string(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    toml_edit::ImDocument::parse(text.clone())
        .map_err(|err| file_problem(path, &text, err.span(), err.message()))
}

/// A problem of the file as a whole, at the line of `span`.
fn file_problem(
    path: &Path,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    message: &str,
) -> ConfigError {
    let location = match span {
        Some(span) => format!("{}:{}", path.display(), line_at(text, span.start)),
        None => path.display().to_string(),
    };
    ConfigError(vec![ConfigProblem {
        location,
        key: String::new(),
        message: message.trim().lines().collect::<Vec<_>>().join("; "),
    }])
}

fn validate(raw: RawConfig, sources: &SourceMap) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| {
        problems.push(ConfigProblem {
            location: sources.locate(key),
            key: key.to_owned(),
            message,
        });
    };
    let listen = raw.server.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
        problem(
            "server.listen",
            format!(
                "`{}` is not an address like 127.0.0.1:8080: {e}",
                raw.server.listen
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let positive = [
        ("server.max_body_bytes", raw.server.max_body_bytes as u64),
        (
            "scripts.limits.max_operations",
            raw.scripts.limits.max_operations,
        ),
        (
            "delivery.max_alerts_per_notice",
            raw.delivery.max_alerts_per_notice as u64,
        ),
        ("rule_defaults.budget", u64::from(raw.rule_defaults.budget)),
    ];
    for (key, value) in positive {
        if value == 0 {
            problem(key, "must be greater than 0".to_owned());
        }
    }
    if raw.scripts.dirs.is_empty() {
        problem(
            "scripts.dirs",
            "name at least one scripts directory".to_owned(),
        );
    }
    let script_settings = validate_script_settings(&raw.scripts.settings, &mut problem);
    let targets = validate_targets(&raw, &mut problem);
    let server = validate_server(&raw, &mut problem);
    let state = validate_state(&raw.state, &mut problem);
    let followed = validate_sources(&raw.sources, &mut problem);
    let known = |name: &str| raw.targets.contains_key(name);
    let defined = || raw.targets.keys().cloned().collect::<Vec<_>>().join(", ");
    if raw.routing.default_targets.is_empty() {
        problem(
            "routing.default_targets",
            "name at least one target".to_owned(),
        );
    }
    for name in &raw.routing.default_targets {
        if !known(name) {
            problem(
                "routing.default_targets",
                format!("no target named `{name}` (defined: {})", defined()),
            );
        }
    }
    for (i, route) in raw.routes.iter().enumerate() {
        if route.targets.is_empty() {
            problem(
                &format!("routes.{i}.targets"),
                "name at least one target".to_owned(),
            );
        }
        for name in route.targets.iter().filter(|n| !known(n)) {
            problem(
                &format!("routes.{i}.targets"),
                format!("no target named `{name}` (defined: {})", defined()),
            );
        }
    }
    let mut silences = Vec::new();
    for (i, silence) in raw.silences.iter().enumerate() {
        match parse_time_ms(&silence.ends_at) {
            Some(ends_at_ms) => silences.push(Silence {
                matcher: silence.matcher(),
                ends_at_ms,
                comment: silence.comment.clone(),
            }),
            None => problem(
                &format!("silences.{i}.ends_at"),
                format!(
                    "`{}` is not an RFC 3339 time like 2026-12-01T00:00:00Z",
                    silence.ends_at
                ),
            ),
        }
    }
    let mut rule_policies = BTreeMap::new();
    for (rule, policy) in &raw.rules {
        if policy.budget == Some(0) {
            problem(
                &format!("rules.{rule}.budget"),
                "must be greater than 0".to_owned(),
            );
        }
        rule_policies.insert(
            rule.clone(),
            RulePolicy {
                dedup_window: policy
                    .dedup_window
                    .unwrap_or(raw.rule_defaults.dedup_window),
                budget: policy.budget.unwrap_or(raw.rule_defaults.budget),
                budget_window: policy
                    .budget_window
                    .unwrap_or(raw.rule_defaults.budget_window),
            },
        );
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    let d = &raw.delivery;
    Ok(Config {
        source: sources.path.clone(),
        cluster_name: raw.cluster_name,
        script_dirs: raw.scripts.dirs,
        limits: raw.scripts.limits,
        script_settings,
        serve: ServeSettings {
            listen,
            max_body_bytes: raw.server.max_body_bytes,
            targets,
            pipeline: PipelineSettings {
                routes: raw.routes,
                silences,
                default_targets: raw.routing.default_targets,
                rule_defaults: raw.rule_defaults,
                rule_policies,
            },
            delivery: DeliveryPolicy {
                retry_base: d.retry_base,
                retry_cap: d.retry_cap,
                retry_budget: d.retry_budget,
                max_alerts_per_notice: d.max_alerts_per_notice,
                poll_interval: d.poll_interval,
            },
            drain_timeout: d.drain_timeout,
            outbox_path: raw.outbox.path,
            server,
            state,
            sources: followed,
        },
    })
}

/// `[[sources.file]]`: a path each (`-` for standard input), none twice.
fn validate_sources(raw: &RawSources, problem: &mut impl FnMut(&str, String)) -> Vec<FileSource> {
    let mut sources: Vec<FileSource> = Vec::new();
    for (i, file) in raw.file.iter().enumerate() {
        let key = format!("sources.file.{i}.path");
        if file.path.trim().is_empty() {
            problem(&key, "name a file (or `-` for standard input)".to_owned());
            continue;
        }
        let source = FileSource {
            input: Input::parse(&file.path),
            start_at: file.start_at,
        };
        if sources.iter().any(|s| s.input == source.input) {
            problem(&key, format!("`{}` is followed twice", file.path));
            continue;
        }
        sources.push(source);
    }
    sources
}

/// Whether `key` (after `KLAXON_`) is one of the variables Kubernetes sets in every pod
/// for a Service whose name starts with `klaxon` (`KLAXON_PORT`,
/// `KLAXON_PORT_8080_TCP_ADDR`, `KLAXON_SERVICE_HOST`, and for `klaxon-redis`
/// `KLAXON_REDIS_PORT`, `KLAXON_REDIS_SERVICE_PORT`, …). Config keys below the top level
/// have `__` in them, and the only top-level scalar is `cluster_name`, so none of these
/// shapes is config.
fn is_service_link(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.contains("__") {
        return false;
    }
    let segment = |word: &str| {
        key == word
            || key.starts_with(&format!("{word}_"))
            || key.ends_with(&format!("_{word}"))
            || key.contains(&format!("_{word}_"))
    };
    segment("port") || key.ends_with("service_host") || key.contains("service_port")
}

/// `[state]`: the backend, and for Redis a URL without a password in it.
fn validate_state(raw: &RawState, problem: &mut impl FnMut(&str, String)) -> StateSettings {
    let password = targets::read_secret(
        "state.redis_password",
        &raw.redis_password,
        &raw.redis_password_env,
        &raw.redis_password_file,
    )
    .unwrap_or_else(|(key, message)| {
        problem(key, message);
        None
    });
    if raw.backend == StateBackend::Memory {
        return StateSettings::Memory;
    }
    match url::Url::parse(&raw.redis_url) {
        Ok(u) if u.scheme() != "redis" && u.scheme() != "rediss" => problem(
            "state.redis_url",
            format!("must be redis:// or rediss://, not {}://", u.scheme()),
        ),
        Ok(u) if u.password().is_some() => problem(
            "state.redis_url",
            "holds a password: give it as redis_password_env or redis_password_file".to_owned(),
        ),
        Ok(_) => {}
        Err(e) => problem("state.redis_url", format!("not a URL: {e}")),
    }
    if raw.key_prefix.is_empty() {
        problem(
            "state.key_prefix",
            "must not be empty (replicas of one deployment share it)".to_owned(),
        );
    }
    if raw.timeout.is_zero() {
        problem("state.timeout", "must be greater than 0".to_owned());
    }
    StateSettings::Redis(RedisSettings {
        url: raw.redis_url.clone(),
        password,
        ca_file: raw.redis_ca_file.clone(),
        key_prefix: raw.key_prefix.clone(),
        timeout: raw.timeout,
    })
}

/// The `[server]` settings of a config file that sets none of them.
impl Default for ServerSettings {
    fn default() -> Self {
        let raw = RawConfig::default();
        validate_server(&raw, &mut |_: &str, _: String| {})
    }
}

/// `[server]` beyond the address: TLS, auth, load bounds, event dedup, the outbox's
/// health bound.
fn validate_server(raw: &RawConfig, problem: &mut impl FnMut(&str, String)) -> ServerSettings {
    let s = &raw.server;
    let tls = s.tls.as_ref().map(|t| TlsSettings {
        cert_file: t.cert_file.clone(),
        key_file: t.key_file.clone(),
        client_ca_file: t.client_ca_file.clone(),
        client_auth: t.client_auth,
        handshake_timeout: t.handshake_timeout,
    });
    if let Some(t) = &tls
        && t.client_auth != ClientAuth::None
        && t.client_ca_file.is_none()
    {
        problem(
            "server.tls.client_ca_file",
            "client_auth needs the CA bundle client certificates chain to".to_owned(),
        );
    }
    let a = &s.auth;
    let mut secret = |key, v, e, f| table_secret("server.auth", key, (v, e, f), problem);
    let bearer_token = secret(
        "bearer_token",
        &a.bearer_token,
        &a.bearer_token_env,
        &a.bearer_token_file,
    );
    let password = secret(
        "basic_password",
        &a.basic_password,
        &a.basic_password_env,
        &a.basic_password_file,
    );
    let firehose_access_key = secret(
        "firehose_access_key",
        &a.firehose_access_key,
        &a.firehose_access_key_env,
        &a.firehose_access_key_file,
    );
    let push_token = secret(
        "push_token",
        &a.push_token,
        &a.push_token_env,
        &a.push_token_file,
    );
    let named = |v: &Option<String>, e: &Option<String>, f: &Option<PathBuf>| {
        v.is_some() || e.is_some() || f.is_some()
    };
    for (key, written, read) in [
        (
            "server.auth.bearer_token",
            named(&a.bearer_token, &a.bearer_token_env, &a.bearer_token_file),
            bearer_token.is_some(),
        ),
        (
            "server.auth.firehose_access_key",
            named(
                &a.firehose_access_key,
                &a.firehose_access_key_env,
                &a.firehose_access_key_file,
            ),
            firehose_access_key.is_some(),
        ),
        (
            "server.auth.push_token",
            named(&a.push_token, &a.push_token_env, &a.push_token_file),
            push_token.is_some(),
        ),
    ] {
        if written && !read {
            problem(
                key,
                "configured but empty (an unset environment variable or an empty file?)".to_owned(),
            );
        }
    }
    let basic = match (&a.basic_username, password) {
        (Some(user), Some(password)) => Some((user.clone(), password)),
        (None, None) => None,
        (Some(_), None) => {
            problem(
                "server.auth.basic_password",
                "basic_username needs basic_password, basic_password_env or basic_password_file"
                    .to_owned(),
            );
            None
        }
        (None, Some(_)) => {
            problem(
                "server.auth.basic_username",
                "basic_password needs basic_username".to_owned(),
            );
            None
        }
    };
    if !a.client_cert_subjects.is_empty()
        && tls
            .as_ref()
            .is_none_or(|t| t.client_auth == ClientAuth::None)
    {
        problem(
            "server.auth.client_cert_subjects",
            "needs [server.tls] with client_auth = \"optional\" or \"required\"".to_owned(),
        );
    }
    if raw.event_dedup.max_entries == 0 {
        problem(
            "event_dedup.max_entries",
            "must be greater than 0".to_owned(),
        );
    }
    if s.body_read_timeout.is_zero() {
        problem(
            "server.body_read_timeout",
            "must be longer than 0s (e.g. \"30s\")".to_owned(),
        );
    }
    if raw.outbox.unhealthy_after.is_zero() {
        problem(
            "outbox.unhealthy_after",
            "must be greater than 0".to_owned(),
        );
    }
    let admin = validate_admin(&s.admin, problem);
    if raw.history.retention.is_zero() {
        problem(
            "history.retention",
            "must be longer than 0s (e.g. \"7d\")".to_owned(),
        );
    }
    if raw.history.max_entries == 0 {
        problem("history.max_entries", "must be greater than 0".to_owned());
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    ServerSettings {
        tls,
        auth: AuthSettings {
            bearer_token,
            basic,
            client_cert_subjects: a.client_cert_subjects.clone(),
            firehose_access_key,
            push_token,
        },
        admin,
        silence_retention: raw.outbox.silence_retention,
        max_concurrent_batches: match s.max_concurrent_batches {
            0 => cores,
            n => n,
        },
        max_queued_batches: s.max_queued_batches,
        retry_after: Duration::from_secs(s.retry_after_secs.max(1)),
        header_read_timeout: s.header_read_timeout,
        body_read_timeout: s.body_read_timeout,
        body_buffer_bytes: body_buffer_bytes(s, problem),
        shutdown_timeout: s.shutdown_timeout,
        probe_listen: probe_listen(s, problem),
        event_dedup_window: raw.event_dedup.window,
        event_dedup_max_entries: raw.event_dedup.max_entries,
        outbox_unhealthy_after: raw.outbox.unhealthy_after,
        history: HistorySettings {
            retention: raw.history.retention,
            max_entries: raw.history.max_entries,
        },
    }
}

/// The secret `key` of `table`, given as its value, `KEY_env` or `KEY_file`; a problem is
/// reported under `TABLE.KEY`.
fn table_secret(
    table: &str,
    key: &'static str,
    (value, env, file): (&Option<String>, &Option<String>, &Option<PathBuf>),
    problem: &mut impl FnMut(&str, String),
) -> Option<crate::secret::Secret> {
    targets::read_secret(key, value, env, file).unwrap_or_else(|(key, msg)| {
        problem(&format!("{table}.{key}"), msg);
        None
    })
}

/// `[server.admin]`: a bearer token and/or a Basic user and password; `None` when it sets
/// neither (the admin API then takes `[server.auth]`).
fn validate_admin(a: &RawAdmin, problem: &mut impl FnMut(&str, String)) -> Option<AuthSettings> {
    let mut secret = |key, v, e, f| table_secret("server.admin", key, (v, e, f), problem);
    let bearer_token = secret(
        "bearer_token",
        &a.bearer_token,
        &a.bearer_token_env,
        &a.bearer_token_file,
    );
    let password = secret("password", &a.password, &a.password_env, &a.password_file);
    let password_named =
        a.password.is_some() || a.password_env.is_some() || a.password_file.is_some();
    let token_named =
        a.bearer_token.is_some() || a.bearer_token_env.is_some() || a.bearer_token_file.is_some();
    if token_named && bearer_token.is_none() {
        problem(
            "server.admin.bearer_token",
            "configured but empty (an unset environment variable or an empty file?)".to_owned(),
        );
    }
    let basic = match (&a.username, password) {
        (Some(user), Some(password)) => Some((user.clone(), password)),
        (Some(_), None) => {
            problem(
                "server.admin.password",
                "username needs password, password_env or password_file (set and not empty)"
                    .to_owned(),
            );
            None
        }
        (None, Some(_)) => {
            problem(
                "server.admin.username",
                "password needs username".to_owned(),
            );
            None
        }
        (None, None) if password_named => {
            problem(
                "server.admin.password",
                "configured but empty (an unset environment variable or an empty file?)".to_owned(),
            );
            None
        }
        (None, None) => None,
    };
    let admin = AuthSettings {
        bearer_token,
        basic,
        ..AuthSettings::default()
    };
    admin.is_enabled().then_some(admin)
}

/// `server.body_buffer_bytes`, 0 standing for four bodies of `max_body_bytes`; one
/// largest body must fit, or it could never be read.
fn body_buffer_bytes(s: &RawServer, problem: &mut impl FnMut(&str, String)) -> usize {
    let bytes = match s.body_buffer_bytes {
        0 => s.max_body_bytes.saturating_mul(4),
        n => n,
    };
    if bytes < s.max_body_bytes {
        problem(
            "server.body_buffer_bytes",
            format!(
                "{bytes} is less than server.max_body_bytes ({}): a largest batch could never be read",
                s.max_body_bytes
            ),
        );
    }
    bytes
}

/// `server.probe_listen`: an address unlike `server.listen`, when set.
fn probe_listen(s: &RawServer, problem: &mut impl FnMut(&str, String)) -> Option<SocketAddr> {
    let given = s.probe_listen.as_deref()?;
    match given.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 && s.listen.parse::<SocketAddr>().ok() == Some(addr) => {
            problem(
                "server.probe_listen",
                format!("`{given}` is server.listen itself; give the probes their own port"),
            );
            None
        }
        Ok(addr) => Some(addr),
        Err(e) => {
            problem(
                "server.probe_listen",
                format!("`{given}` is not an address like 0.0.0.0:8081: {e}"),
            );
            None
        }
    }
}

/// `[scripts.settings]` as JSON values, with the problems of the settings klaxon gives a
/// meaning to (`cluster_networks`, `trusted_principals`).
fn validate_script_settings(
    settings: &BTreeMap<String, toml::Value>,
    problem: &mut impl FnMut(&str, String),
) -> BTreeMap<String, serde_json::Value> {
    let settings = settings
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
        .collect();
    for p in settings_problems(&settings) {
        problem(&format!("scripts.settings.{}", p.name), p.message);
    }
    settings
}

/// Every target resolved and paced; a fallback must lead to a usable target.
fn validate_targets(raw: &RawConfig, problem: &mut impl FnMut(&str, String)) -> Targets {
    let mut out = Targets::default();
    for (name, target) in &raw.targets {
        match targets::resolve_target(target) {
            Ok(t) => {
                out.by_name.insert(name.clone(), t);
            }
            Err((key, message)) => problem(&format!("targets.{name}.{key}"), message),
        }
        match targets::pacing(target, &raw.delivery) {
            Ok(p) => {
                out.pacing.insert(name.clone(), p);
            }
            Err((key, message)) => problem(&format!("targets.{name}.{key}"), message),
        }
    }
    for (name, target) in &out.by_name {
        if let Target::Fallback { to, .. } = target {
            match out.by_name.get(to) {
                None if !raw.targets.contains_key(to) => problem(
                    &format!("targets.{name}.fallback"),
                    format!("no target named `{to}`"),
                ),
                Some(Target::Fallback { .. }) => problem(
                    &format!("targets.{name}.fallback"),
                    format!("`{to}` is itself unusable; fall back to a usable target"),
                ),
                _ => {}
            }
        }
    }
    out
}
