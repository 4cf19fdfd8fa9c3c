//! The HTTP client of a running klaxon's admin API, shared by `klaxon silence` and
//! `klaxon alerts`.
//!
//! `--url` defaults to the configured listen address (`https` with `[server.tls]`,
//! `localhost` when it listens on every interface); credentials are `[server.admin]`'s,
//! else `[server.auth]`'s bearer token or Basic user; with TLS the server's own
//! certificate file (`[server.tls] cert_file`, its chain) is trusted beside the system's
//! roots, or `--ca FILE`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::config::Config;
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

/// The running klaxon's admin API.
pub(super) struct Api {
    client: reqwest::Client,
    base: String,
    auth: AuthSettings,
}

impl Api {
    pub(super) fn new(config: &Config, remote: &Remote) -> anyhow::Result<Self> {
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

    pub(super) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.get(format!("{}{path}", self.base)))
    }

    pub(super) fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorized(self.client.post(format!("{}{path}", self.base)))
    }

    pub(super) fn delete(&self, path: &str) -> reqwest::RequestBuilder {
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
    pub(super) async fn send<T: serde::de::DeserializeOwned>(
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
