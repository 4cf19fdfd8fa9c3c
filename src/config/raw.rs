//! The configuration as written: serde types for the TOML file and the environment, with
//! their defaults. Every table refuses unknown keys, so a typo is reported with its line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::notify::ConsoleFormat;
use crate::pipeline::{Matcher, Route, RulePolicy};
use crate::rules::ScriptLimits;
use crate::sources::StartAt;

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
    /// `[event_dedup]`.
    pub event_dedup: RawEventDedup,
    /// `[state]`.
    pub state: RawState,
    /// `[outbox]`.
    pub outbox: RawOutbox,
    /// `[history]`: how long and how much alert history the outbox keeps.
    pub history: RawHistory,
    /// `[sources]`: audit log files followed beside the webhook.
    pub sources: RawSources,
    /// `[delivery]`.
    pub delivery: RawDelivery,
    /// `[routing]`.
    pub routing: RawRouting,
    /// `[[routes]]`.
    pub routes: Vec<Route>,
    /// `[[silences]]`.
    pub silences: Vec<RawSilence>,
    /// `[rule_defaults]`.
    pub rule_defaults: RulePolicy,
    /// `[rules.NAME]`.
    pub rules: BTreeMap<String, RawRulePolicy>,
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
    /// Batches evaluated at once (0: one per core).
    pub max_concurrent_batches: usize,
    /// Batches waiting for an evaluator; past it the webhook answers 429.
    pub max_queued_batches: usize,
    /// `Retry-After` of a 429, in seconds.
    pub retry_after_secs: u64,
    /// Longest a client may take to send a request's headers (slow-loris guard).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request's whole body, from its headers on
    /// (slow senders get 408).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most bytes of request bodies being read at once, over all requests (0: four times
    /// `max_body_bytes`); a request whose next bytes do not fit gets 429.
    pub body_buffer_bytes: usize,
    /// Longest shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Address of a plain-HTTP listener serving only `/healthz`, `/readyz` and `/metrics`
    /// (for kubelet probes and Prometheus when client certificates are required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_listen: Option<String>,
    /// `[server.tls]`; absent: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// `[server.auth]`; empty: no authentication.
    pub auth: RawAuth,
    /// `[server.admin]`: who may use the admin API; empty: the same as `[server.auth]`.
    pub admin: RawAdmin,
}

/// `[server.admin]` as written. Secrets as the value, `…_env` or `…_file`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Bearer token of the admin API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// Environment variable holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// File holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic-auth user name of the admin API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// File holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// `[server.tls]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first (reloaded when it changes).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA bundle for client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// `none`, `optional` or `required`.
    #[serde(default)]
    pub client_auth: crate::server::tls::ClientAuth,
    /// Longest a TLS handshake may take.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[server.auth]` as written. Secrets as the value, `…_env` or `…_file`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// Bearer token the apiserver sends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// Environment variable holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// File holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic-auth user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_username: Option<String>,
    /// Basic-auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_password: Option<String>,
    /// Environment variable holding the basic-auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_password_env: Option<String>,
    /// File holding the basic-auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_password_file: Option<PathBuf>,
    /// Client certificate subjects let in (`CN=kube-apiserver`).
    pub client_cert_subjects: Vec<String>,
    /// Access key Amazon Data Firehose sends in `X-Amz-Firehose-Access-Key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firehose_access_key: Option<String>,
    /// Environment variable holding the Firehose access key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firehose_access_key_env: Option<String>,
    /// File holding the Firehose access key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firehose_access_key_file: Option<PathBuf>,
    /// Token a Pub/Sub push subscription sends in its endpoint's query (`?token=…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_token: Option<String>,
    /// Environment variable holding the push token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_token_env: Option<String>,
    /// File holding the push token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_token_file: Option<PathBuf>,
}

/// `[event_dedup]` as written: (auditID, stage) pairs already processed are skipped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawEventDedup {
    /// How long a pair is remembered (the apiserver retries a batch for about 90 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Most pairs remembered (about 20 bytes each).
    pub max_entries: usize,
}

impl Default for RawEventDedup {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            max_entries: 1_000_000,
        }
    }
}

/// Where the state shared by replicas lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// In the process (one replica).
    #[default]
    Memory,
    /// In a Redis server shared by the replicas.
    Redis,
}

/// `[state]` as written. The password: `redis_password`, `…_env` or `…_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawState {
    /// `memory` or `redis`.
    pub backend: StateBackend,
    /// `redis://host:port/db` or `rediss://…`.
    pub redis_url: String,
    /// The password, as the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password: Option<String>,
    /// The password, from this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password_env: Option<String>,
    /// The password, from this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA bundle for a `rediss://` server with a private CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Longest a batch waits for Redis before deciding with local state.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RawState {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            redis_url: "redis://127.0.0.1:6379/0".to_owned(),
            redis_password: None,
            redis_password_env: None,
            redis_password_file: None,
            redis_ca_file: None,
            key_prefix: "klaxon:".to_owned(),
            timeout: Duration::from_millis(500),
        }
    }
}

/// `[scripts]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawScripts {
    /// Directories whose `*.rhai` files are the rules.
    pub dirs: Vec<PathBuf>,
    /// `[scripts.limits]`.
    pub limits: ScriptLimits,
    /// `[scripts.settings]`: values scripts read with `setting(name, default)`.
    pub settings: BTreeMap<String, toml::Value>,
}

/// `[outbox]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOutbox {
    /// Data directory holding `outbox.redb`.
    pub path: PathBuf,
    /// How long the outbox may stay broken (I/O errors, not reopenable) before `/healthz`
    /// fails, so that Kubernetes restarts the pod.
    #[serde(with = "humantime_serde")]
    pub unhealthy_after: Duration,
    /// How long expired runtime silences are kept (listed) before they are dropped.
    #[serde(with = "humantime_serde")]
    pub silence_retention: Duration,
}

/// `[history]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawHistory {
    /// Alerts older than this are dropped from the history.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most alerts kept in the history; past it the oldest are dropped.
    pub max_entries: u64,
}

impl Default for RawHistory {
    fn default() -> Self {
        let defaults = crate::outbox::HistorySettings::default();
        Self {
            retention: defaults.retention,
            max_entries: defaults.max_entries,
        }
    }
}

/// `[sources]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSources {
    /// `[[sources.file]]`: JSON-lines audit log files (the apiserver's `--audit-log-path`).
    pub file: Vec<RawFileSource>,
}

/// `[[sources.file]]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSource {
    /// The file followed (across rotation); `-` is standard input.
    pub path: String,
    /// Where a file followed for the first time is read from: `end` or `beginning`.
    #[serde(default)]
    pub start_at: StartAt,
}

/// `[delivery]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDelivery {
    /// Grouping window of targets that set none.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// Most alerts in one notice.
    pub max_alerts_per_notice: usize,
    /// First retry delay (doubles per attempt, with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_cap: Duration,
    /// How long failures are retried before the alert is dead-lettered.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// How long shutdown may spend sending what is due.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How often an idle target checks for entries another process stored.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

/// `[routing]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRouting {
    /// Targets for alerts that name none and match no route.
    pub default_targets: Vec<String>,
}

/// `[[silences]]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSilence {
    /// Rule name globs; empty: any rule.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Lowest severity silenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<crate::rules::Severity>,
    /// Labels an alert must carry to be silenced.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// End of the silence, RFC 3339 (`2026-12-01T00:00:00Z`).
    pub ends_at: String,
    /// Why; shown by `klaxon check`.
    #[serde(default)]
    pub comment: String,
}

impl RawSilence {
    /// The alerts it applies to.
    pub fn matcher(&self) -> Matcher {
        Matcher {
            rules: self.rules.clone(),
            min_severity: self.min_severity,
            labels: self.labels.clone(),
        }
    }
}

/// `[rules.NAME]` as written: overrides of `[rule_defaults]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRulePolicy {
    /// Dedup window of this rule.
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedup_window: Option<Duration>,
    /// Alerts per budget window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<u32>,
    /// The budget's window.
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub budget_window: Option<Duration>,
}

/// The kinds of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// Print to stdout.
    Console,
    /// Post to a Slack incoming webhook.
    Slack,
    /// Send mail over SMTP.
    Email,
    /// POST JSON (or a template) to any HTTP endpoint.
    Http,
}

impl TargetType {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Console => "console",
            TargetType::Slack => "slack",
            TargetType::Email => "email",
            TargetType::Http => "http",
        }
    }
}

/// `[targets.NAME]` as written. One flat table for every kind (so that a typo is located
/// to its line); validation refuses keys that do not apply to the `type`. Secrets come as
/// the value, `…_env` (an environment variable's name) or `…_file`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTarget {
    /// `console`, `slack`, `email` or `http`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<TargetType>,
    /// Grouping window of this target.
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_wait: Option<Duration>,
    /// Notices per second (slack default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Notices at once after a quiet spell (slack default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Timeout of one delivery, in seconds (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Target that receives this one's alerts while its secret is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,

    /// console: `human` or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<ConsoleFormat>,

    /// slack: the incoming webhook URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// slack: environment variable holding the webhook URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url_env: Option<String>,
    /// slack: file holding the webhook URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url_file: Option<PathBuf>,

    /// email: SMTP server host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_host: Option<String>,
    /// email: SMTP port (default 587 for starttls, 465 for implicit, 25 for none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_port: Option<u16>,
    /// email: `starttls` (default), `implicit` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<crate::notify::email::SmtpSecurity>,
    /// email: SMTP user name (auth when a password is set too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: SMTP password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// email: environment variable holding the SMTP password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// email: file holding the SMTP password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// email: sender mailbox (`klaxon <klaxon@example.com>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: recipients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// email: copy recipients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cc: Option<Vec<String>>,
    /// email: subject template (minijinja, notice payload as context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// email and http: extra CA certificate (PEM) to trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,

    /// http: the receiver's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// http: extra request headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// http: bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// http: environment variable holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// http: file holding the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// http: basic-auth user name (with `password…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_username: Option<String>,
    /// http: body template (minijinja); absent: the JSON payload of docs/PAYLOAD.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
    /// http: Content-Type of a templated body (default `application/json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            cluster_name: "kubernetes".to_owned(),
            server: RawServer::default(),
            scripts: RawScripts::default(),
            event_dedup: RawEventDedup::default(),
            state: RawState::default(),
            outbox: RawOutbox::default(),
            history: RawHistory::default(),
            sources: RawSources::default(),
            delivery: RawDelivery::default(),
            routing: RawRouting::default(),
            routes: Vec::new(),
            silences: Vec::new(),
            rule_defaults: RulePolicy::default(),
            rules: BTreeMap::new(),
            targets: BTreeMap::from([(
                "console".to_owned(),
                RawTarget {
                    kind: Some(TargetType::Console),
                    ..RawTarget::default()
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
            max_concurrent_batches: 0,
            max_queued_batches: 16,
            retry_after_secs: 1,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            body_buffer_bytes: 0,
            shutdown_timeout: Duration::from_secs(30),
            probe_listen: None,
            tls: None,
            auth: RawAuth::default(),
            admin: RawAdmin::default(),
        }
    }
}

impl Default for RawScripts {
    fn default() -> Self {
        Self {
            dirs: vec![PathBuf::from("scripts")],
            limits: ScriptLimits::default(),
            settings: BTreeMap::new(),
        }
    }
}

impl Default for RawOutbox {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data"),
            unhealthy_after: Duration::from_secs(300),
            silence_retention: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl Default for RawDelivery {
    fn default() -> Self {
        Self {
            group_wait: Duration::from_secs(10),
            max_alerts_per_notice: 100,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            retry_budget: Duration::from_secs(24 * 3600),
            drain_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(2),
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
