//! Running klaxon's server in-process for tests: config from TOML text, an ephemeral port,
//! and a shutdown that drains delivery.

use std::net::SocketAddr;
use std::path::Path;

use klaxon::config::{self, Config, Sources};
use klaxon::rules::Ruleset;
use klaxon::server::{ReloadSource, Server};
use tokio::sync::oneshot;

/// Writes `toml` to `dir/klaxon.toml` and loads it as klaxon would.
pub fn config_from(toml: &str, dir: &Path) -> Config {
    let path = dir.join("klaxon.toml");
    std::fs::write(&path, toml).unwrap();
    config::load(Some(&path)).unwrap_or_else(|e| panic!("config: {e}"))
}

/// The lines every test config starts with: an ephemeral loopback port, and the scripts
/// directory and outbox of `dir`.
pub fn base_toml(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[scripts]\ndirs = [\"{dir}/scripts\"]\n[outbox]\npath = \"{dir}/data\"\n"
    )
}

/// Writes each `(name, source)` as `dir/scripts/NAME.rhai`.
pub fn scripts(dir: &Path, scripts: &[(&str, &str)]) {
    let scripts_dir = dir.join("scripts");
    std::fs::create_dir_all(&scripts_dir).unwrap();
    for (name, source) in scripts {
        std::fs::write(scripts_dir.join(format!("{name}.rhai")), source).unwrap();
    }
}

/// A server running on an ephemeral port.
pub struct Running {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The webhook's address.
    pub addr: SocketAddr,
    /// The probe listener's address, when `server.probe_listen` is set.
    pub probe: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the server of `config` with its scripts.
pub async fn start(config: &Config) -> Running {
    start_server(config, None).await
}

/// Starts the server of `config`, reloading from `config_path` on changes.
pub async fn start_with_reload(config: &Config, config_path: &Path) -> Running {
    let source = Sources::config_file(config_path).reload_source(config);
    start_server(config, Some(source)).await
}

async fn start_server(config: &Config, reload: Option<ReloadSource>) -> Running {
    let rules = Ruleset::load(&config.script_dirs, &config.limits, &config.cluster_name).unwrap();
    let mut server = Server::bind(&config.serve, rules).await.unwrap();
    if let Some(source) = reload {
        server = server.with_reload(source);
    }
    run(server)
}

/// Runs a bound server until [`Running::shutdown`].
fn run(server: Server) -> Running {
    let addr = server.local_addr().unwrap();
    let base = format!("http://{addr}");
    let probe = server.probe_addr();
    let (stop, stopped) = oneshot::channel();
    let done = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        base,
        addr,
        probe,
        stop,
        done,
    }
}

impl Running {
    /// GETs `path` and returns the status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// POSTs `body` to `/audit` and returns the status and the reply's JSON.
    pub async fn post_json(&self, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/audit", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// POSTs `body` to `/audit` and returns the status.
    pub async fn post(&self, body: String) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/audit", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Stops accepting, drains delivery, and returns once the server has stopped.
    pub async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.done.await.unwrap().unwrap();
    }
}

/// Starts the server of `config` on `outbox`, which the test opened itself (for example on
/// a storage backend that fails on demand); `config.serve.outbox_path` is not used.
pub async fn start_with_outbox(
    config: &Config,
    outbox: std::sync::Arc<klaxon::outbox::Outbox>,
) -> Running {
    let rules = Ruleset::load(&config.script_dirs, &config.limits, &config.cluster_name).unwrap();
    let server = Server::bind_with_outbox(&config.serve, rules, outbox)
        .await
        .unwrap();
    run(server)
}
