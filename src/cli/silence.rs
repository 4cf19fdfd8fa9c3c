//! `klaxon silence add|list|expire`: runtime silences of a running klaxon, through its
//! admin API (`/api/v1/silences`).
//!
//! `--url` defaults to the configured listen address (`https` with `[server.tls]`,
//! `localhost` when it listens on every interface); credentials are `[server.admin]`'s,
//! else `[server.auth]`'s bearer token or Basic user; with TLS the server's own
//! certificate file (`[server.tls] cert_file`, its chain) is trusted beside the system's
//! roots, or `--ca FILE`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use crate::config::Config;
use crate::pipeline::silence::{FieldMatcher, NewSilence, SilenceJson, SilenceList};
use crate::server::auth::AuthSettings;

/// How to reach the running klaxon.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// Base URL of the running klaxon (default: from `server.listen` and `[server.tls]`).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// PEM CA bundle to trust for an https URL (default: `[server.tls] cert_file`'s
    /// certificates and the system's roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// `klaxon silence` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Silence matching alerts from now (or --starts-at) for --duration (or until --ends-at).
    Add {
        /// `NAME=VALUE`, `NAME!=VALUE`, `NAME=~REGEX` or `NAME!~REGEX`; NAME is rule,
        /// severity, namespace, user, target, or an alert label or field. Repeat: all must hold.
        #[arg(long = "matcher", short = 'm', required = true, value_name = "MATCHER")]
        matchers: Vec<String>,
        /// How long (`2h`, `30m`).
        #[arg(long, conflicts_with = "ends_at", required_unless_present = "ends_at")]
        duration: Option<String>,
        /// Start, RFC 3339 (default: now).
        #[arg(long, value_name = "TIME")]
        starts_at: Option<String>,
        /// End, RFC 3339.
        #[arg(long, value_name = "TIME")]
        ends_at: Option<String>,
        /// Why (required).
        #[arg(long)]
        comment: String,
        /// Who (default: $USER).
        #[arg(long, value_name = "NAME")]
        created_by: Option<String>,
        /// Print the silence as JSON instead of its id.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the silences: active and pending first, then expired ones still kept.
    List {
        /// A table, or the API's JSON.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        remote: Remote,
    },
    /// End a silence now.
    Expire {
        /// The silence's id (`s-…`).
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// The API's JSON.
    Json,
}

pub(super) fn run(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(config, command))
}

async fn run_async(config: &Config, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add {
            matchers,
            duration,
            starts_at,
            ends_at,
            comment,
            created_by,
            format,
            remote,
        } => {
            let matchers = matchers
                .iter()
                .map(|m| FieldMatcher::parse(m).map_err(|e| anyhow::anyhow!("--matcher {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let new = NewSilence {
                matchers,
                starts_at: starts_at.clone(),
                ends_at: ends_at.clone(),
                duration: duration.clone(),
                created_by: created_by.clone().or_else(|| std::env::var("USER").ok()),
                comment: comment.clone(),
            };
            let api = Api::new(config, remote)?;
            let silence: SilenceJson = api.send(api.post("/api/v1/silences").json(&new)).await?;
            match format {
                Format::Json => print_json(&silence)?,
                Format::Text => println!("{}", silence.id),
            }
        }
        Command::List { format, remote } => {
            let api = Api::new(config, remote)?;
            let list: SilenceList = api.send(api.get("/api/v1/silences")).await?;
            match format {
                Format::Json => print_json(&list)?,
                Format::Text => print_table(&list)?,
            }
        }
        Command::Expire { id, remote } => {
            let api = Api::new(config, remote)?;
            let path = format!("/api/v1/silences/{}", urlencode(id));
            let silence: SilenceJson = api.send(api.delete(&path)).await?;
            println!("{} expired at {}", silence.id, silence.ends_at);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A path segment, percent-encoded.
fn urlencode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_table(list: &SilenceList) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if list.silences.is_empty() {
        writeln!(out, "no silences")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:<8} {:<21} {:<21} {:<12} MATCHERS / COMMENT",
        "ID", "STATE", "STARTS", "ENDS", "CREATED BY"
    )?;
    for s in &list.silences {
        let matchers: Vec<String> = s
            .matchers
            .iter()
            .map(|m| format!("{}{}{}", m.name, m.op.as_str(), m.value))
            .collect();
        let state = s.state.map_or("?", |state| match state {
            crate::pipeline::silence::SilenceState::Pending => "pending",
            crate::pipeline::silence::SilenceState::Active => "active",
            crate::pipeline::silence::SilenceState::Expired => "expired",
        });
        writeln!(
            out,
            "{:<20} {:<8} {:<21} {:<21} {:<12} {} — {}",
            s.id,
            state,
            s.starts_at,
            s.ends_at,
            s.created_by,
            matchers.join(", "),
            s.comment
        )?;
    }
    Ok(())
}

/// The running klaxon's admin API.
struct Api {
    client: reqwest::Client,
    base: String,
    auth: AuthSettings,
}

impl Api {
    fn new(config: &Config, remote: &Remote) -> anyhow::Result<Self> {
        let server = &config.serve.server;
        let scheme = if server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = match &remote.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => default_url(config.serve.listen, scheme),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("klaxon-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(30));
        let ca = remote
            .ca
            .clone()
            .or_else(|| server.tls.as_ref().map(|t| t.cert_file.clone()));
        if let Some(path) = ca.filter(|_| base.starts_with("https://")) {
            let pem = std::fs::read(&path)
                .with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no valid PEM certificate", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let auth = server.admin.clone().unwrap_or_else(|| server.auth.clone());
        Ok(Self {
            client: builder.build().context("cannot build the HTTP client")?,
            base,
            auth,
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.get(format!("{}{path}", self.base)))
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.post(format!("{}{path}", self.base)))
    }

    fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.delete(format!("{}{path}", self.base)))
    }

    /// The configured credentials: the bearer token, else the Basic user.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.auth.bearer_token, &self.auth.basic) {
            (Some(token), _) => request.bearer_auth(token.expose()),
            (None, Some((user, password))) => request.basic_auth(user, Some(password.expose())),
            (None, None) => request,
        }
    }

    /// Sends `request`; a refusal becomes an error with the server's reason.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach klaxon at {}", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("cannot read klaxon's answer")?;
        if !status.is_success() {
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("klaxon answered {status}: {reason}");
        }
        serde_json::from_slice(&body).context("klaxon's answer is not the expected JSON")
    }
}

/// `http(s)://LISTEN`, with `localhost` for an address of every interface.
fn default_url(listen: std::net::SocketAddr, scheme: &str) -> String {
    if listen.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", listen.port())
    } else {
        format!("{scheme}://{listen}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_is_the_listen_address_with_localhost_for_every_interface() {
        let any = "0.0.0.0:8443".parse().unwrap();
        assert_eq!(default_url(any, "https"), "https://localhost:8443");
        let one = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(default_url(one, "http"), "http://127.0.0.1:8080");
        let v6 = "[::1]:8080".parse().unwrap();
        assert_eq!(default_url(v6, "http"), "http://[::1]:8080");
    }
}
