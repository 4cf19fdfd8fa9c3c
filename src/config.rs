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

/// `[targets.NAME]` as written; `type` selects the kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawTarget {
    /// `type = "console"`.
    Console {
        /// `human` or `json`.
        #[serde(default)]
        format: ConsoleFormat,
    },
    /// `type = "slack"`.
    Slack {
        /// The webhook URL itself (prefer `webhook_url_env` or `webhook_url_file`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook_url: Option<String>,
        /// Name of the environment variable holding the webhook URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook_url_env: Option<String>,
        /// File holding the webhook URL (e.g. a mounted Kubernetes Secret).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook_url_file: Option<PathBuf>,
        /// Target that receives this one's alerts when its URL is not set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
        /// Timeout of one POST, in seconds.
        #[serde(default = "default_timeout_secs")]
        timeout_secs: u64,
    },
}

fn default_timeout_secs() -> u64 {
    10
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            cluster_name: "kubernetes".to_owned(),
            server: RawServer::default(),
            scripts: RawScripts::default(),
            routing: RawRouting::default(),
            targets: BTreeMap::from([(
                "console".to_owned(),
                RawTarget::Console {
                    format: ConsoleFormat::Human,
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
    fn locate(&self, key: &str) -> String {
        let Some(path) = &self.path else {
            return "configuration".to_owned();
        };
        match self.line_of(key) {
            Some(line) => format!("{}:{line}", path.display()),
            None => format!("{} (or environment)", path.display()),
        }
    }

    fn line_of(&self, key: &str) -> Option<usize> {
        let doc = self.document.as_ref()?;
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut span = None;
        for part in key.split('.') {
            let (k, item) = table.get_key_value(part)?;
            span = k.span().or_else(|| item.span());
            match item.as_table_like() {
                Some(t) => table = t,
                None => break,
            }
        }
        let start = span?.start;
        Some(line_at(doc.raw(), start))
    }
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
                message: err.message().to_owned(),
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
    match raw {
        RawTarget::Console { format } => Ok(Target::Console(*format)),
        RawTarget::Slack {
            webhook_url,
            webhook_url_env,
            webhook_url_file,
            fallback,
            timeout_secs,
        } => {
            let url = read_secret(webhook_url, webhook_url_env, webhook_url_file)?;
            match (url, fallback) {
                (Some(url), _) => {
                    check_url(url.expose()).map_err(|m| ("webhook_url", m))?;
                    Ok(Target::Slack(SlackSettings {
                        webhook_url: url,
                        timeout: Duration::from_secs(*timeout_secs),
                    }))
                }
                (None, Some(to)) => Ok(Target::Fallback {
                    to: to.clone(),
                    reason: unset_reason(webhook_url_env),
                    renders_as: Render::Slack,
                }),
                (None, None) => Err(("webhook_url", unset_reason(webhook_url_env))),
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
