//! Configuration: one TOML file, every key overridable by `KLAXON_…` environment variables
//! (`__` for nesting), validated at load into ready-to-use types.
//!
//! Owns loading and validation; builds `notify` and `rules` settings, calls nothing at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::notify::{ConsoleFormat, Render, Secret, SlackSettings, Target, Targets};
use crate::rules::ScriptLimits;

/// The config file used when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "config/klaxon.toml";

/// The file as written, before validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Name shown on every alert.
    pub cluster_name: String,
    /// `[server]`.
    pub server: RawServer,
    /// `[scripts]`.
    pub scripts: RawScripts,
    /// `[routing]`.
    pub routing: RawRouting,
    /// `[targets.NAME]`.
    pub targets: BTreeMap<String, RawTarget>,
}

/// `[server]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on.
    pub listen: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

/// `[scripts]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawScripts {
    /// Directories whose `*.rhai` files are the rules.
    pub dirs: Vec<PathBuf>,
    /// `[scripts.limits]`.
    pub limits: ScriptLimits,
}

/// `[routing]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRouting {
    /// Targets for alerts that name none.
    pub default_targets: Vec<String>,
}

/// The kinds of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// Print to stdout.
    Console,
    /// Post to a Slack incoming webhook.
    Slack,
}

/// `[targets.NAME]` as written. One flat table for every kind (so that a typo is located
/// to its line); validation refuses keys that do not apply to the `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// `console` or `slack`.
    #[serde(rename = "type")]
    pub kind: TargetType,
    /// console: `human` or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ConsoleFormat>,
    /// slack: the webhook URL itself (prefer `webhook_url_env` or `webhook_url_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// slack: name of the environment variable holding the webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_env: Option<String>,
    /// slack: file holding the webhook URL (e.g. a mounted Kubernetes Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url_file: Option<PathBuf>,
    /// slack: target that receives this one's alerts when its URL is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// slack: timeout of one POST, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Seconds a Slack POST may take when `timeout_secs` is not set.
const DEFAULT_TIMEOUT_SECS: u64 = 10;

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            cluster_name: "kubernetes".to_owned(),
            server: RawServer::default(),
            scripts: RawScripts::default(),
            routing: RawRouting::default(),
            targets: BTreeMap::from([(
                "console".to_owned(),
                RawTarget {
                    kind: TargetType::Console,
                    format: Some(ConsoleFormat::Human),
                    webhook_url: None,
                    webhook_url_env: None,
                    webhook_url_file: None,
                    fallback: None,
                    timeout_secs: None,
                },
            )]),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 64 << 20,
        }
    }
}

impl Default for RawScripts {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from("scripts")],
            limits: ScriptLimits::default(),
        }
    }
}

impl Default for RawRouting {
    fn default() -> Self {
        Self {
            default_targets: vec!["console".to_owned()],
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    /// Name shown on every alert.
    pub cluster_name: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Script directories.
    pub script_dirs: Vec<PathBuf>,
    /// Script sandbox limits.
    pub limits: ScriptLimits,
    /// Targets and default routing.
    pub targets: Targets,
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
        for part in key.split('.') {
            let Some((k, item)) = table.get_key_value(part) else {
                break;
            };
            span = k.span().or_else(|| item.span()).or(span);
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

fn read(path: Option<PathBuf>) -> Result<(RawConfig, SourceMap), ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    let mut document = None;
    if let Some(path) = &path {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(vec![ConfigProblem {
                location: path.display().to_string(),
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        // Parse the file alone first: toml's errors carry the line and column.
        if let Err(err) = toml::from_str::<RawConfig>(&text) {
            let location = match err.span() {
                Some(span) => format!("{}:{}", path.display(), line_at(&text, span.start)),
                None => path.display().to_string(),
            };
            return Err(ConfigError(vec![ConfigProblem {
                location,
                key: String::new(),
                message: err.message().trim().lines().collect::<Vec<_>>().join("; "),
            }]));
        }
        document = toml_edit::ImDocument::parse(text).ok();
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed("KLAXON_").split("__"));
    let sources = SourceMap { path, document };
    let raw = figment.extract::<RawConfig>().map_err(|err| {
        ConfigError(
            err.into_iter()
                .map(|e| ConfigProblem {
                    location: e
                        .metadata
                        .as_ref()
                        .map_or("configuration".to_owned(), |m| m.name.to_string()),
                    key: e.path.join("."),
                    message: e.kind.to_string(),
                })
                .collect(),
        )
    })?;
    Ok((raw, sources))
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
    if raw.server.max_body_bytes == 0 {
        problem("server.max_body_bytes", "must be greater than 0".to_owned());
    }
    if raw.scripts.dirs.is_empty() {
        problem(
            "scripts.dirs",
            "name at least one scripts directory".to_owned(),
        );
    }
    if raw.scripts.limits.max_operations == 0 {
        problem(
            "scripts.limits.max_operations",
            "must be greater than 0".to_owned(),
        );
    }
    let mut by_name = BTreeMap::new();
    for (name, target) in &raw.targets {
        match resolve_target(target) {
            Ok(t) => {
                by_name.insert(name.clone(), t);
            }
            Err((field, message)) => problem(&format!("targets.{name}.{field}"), message),
        }
    }
    for (name, target) in &by_name {
        if let Target::Fallback { to, .. } = target {
            match by_name.get(to) {
                None => problem(
                    &format!("targets.{name}.fallback"),
                    format!("no target named `{to}`"),
                ),
                Some(Target::Fallback { .. }) => problem(
                    &format!("targets.{name}.fallback"),
                    format!("`{to}` is itself unusable; fall back to a usable target"),
                ),
                Some(_) => {}
            }
        }
    }
    if raw.routing.default_targets.is_empty() {
        problem(
            "routing.default_targets",
            "name at least one target".to_owned(),
        );
    }
    for name in &raw.routing.default_targets {
        if !raw.targets.contains_key(name) {
            problem(
                "routing.default_targets",
                format!(
                    "no target named `{name}` (defined: {})",
                    known(&raw.targets)
                ),
            );
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    Ok(Config {
        source: sources.path.clone(),
        cluster_name: raw.cluster_name,
        listen,
        max_body_bytes: raw.server.max_body_bytes,
        script_dirs: raw.scripts.dirs,
        limits: raw.scripts.limits,
        targets: Targets {
            by_name,
            defaults: raw.routing.default_targets,
        },
    })
}

fn known(targets: &BTreeMap<String, RawTarget>) -> String {
    targets.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Turns a target as written into a usable target; the error names the field.
fn resolve_target(raw: &RawTarget) -> Result<Target, (&'static str, String)> {
    let set = |present: bool, field: &'static str| present.then_some(field);
    let foreign = match raw.kind {
        TargetType::Console => [
            set(raw.webhook_url.is_some(), "webhook_url"),
            set(raw.webhook_url_env.is_some(), "webhook_url_env"),
            set(raw.webhook_url_file.is_some(), "webhook_url_file"),
            set(raw.fallback.is_some(), "fallback"),
            set(raw.timeout_secs.is_some(), "timeout_secs"),
        ],
        TargetType::Slack => [set(raw.format.is_some(), "format"), None, None, None, None],
    };
    if let Some(field) = foreign.into_iter().flatten().next() {
        return Err((
            field,
            format!("does not apply to a {:?} target", raw.kind).to_lowercase(),
        ));
    }
    match raw.kind {
        TargetType::Console => Ok(Target::Console(raw.format.unwrap_or_default())),
        TargetType::Slack => {
            let url = read_secret(
                &raw.webhook_url,
                &raw.webhook_url_env,
                &raw.webhook_url_file,
            )?;
            match (url, &raw.fallback) {
                (Some(url), _) => {
                    check_url(url.expose()).map_err(|m| ("webhook_url", m))?;
                    Ok(Target::Slack(SlackSettings {
                        webhook_url: url,
                        timeout: Duration::from_secs(
                            raw.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
                        ),
                    }))
                }
                (None, Some(to)) => Ok(Target::Fallback {
                    to: to.clone(),
                    reason: unset_reason(&raw.webhook_url_env),
                    renders_as: Render::Slack,
                }),
                (None, None) => Err(("webhook_url", unset_reason(&raw.webhook_url_env))),
            }
        }
    }
}

fn unset_reason(env: &Option<String>) -> String {
    match env {
        Some(var) => format!("webhook URL not set (environment variable {var} is unset or empty)"),
        None => {
            "webhook URL not set (set webhook_url, webhook_url_env or webhook_url_file)".to_owned()
        }
    }
}

/// Reads a secret from exactly one of: the value, an environment variable, a file.
fn read_secret(
    value: &Option<String>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, (&'static str, String)> {
    let given = [value.is_some(), env.is_some(), file.is_some()]
        .into_iter()
        .filter(|g| *g)
        .count();
    if given > 1 {
        return Err((
            "webhook_url",
            "set only one of webhook_url, webhook_url_env, webhook_url_file".to_owned(),
        ));
    }
    if let Some(v) = value.as_ref().filter(|v| !v.trim().is_empty()) {
        return Ok(Some(Secret::new(v.trim())));
    }
    if let Some(var) = env {
        return Ok(std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret::new(v.trim())));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            (
                "webhook_url_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        return Ok(Some(Secret::new(text.trim())).filter(|s| !s.expose().is_empty()));
    }
    Ok(None)
}

fn check_url(url: &str) -> Result<(), String> {
    // The URL is a secret: say what is wrong without repeating it.
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        Ok(u) => Err(format!(
            "webhook URL must be http or https, not {}",
            u.scheme()
        )),
        Err(e) => Err(format!("webhook URL is not a URL: {e}")),
    }
}
