//! Hot reload: on a change under the script directories or to the config file (watched by
//! directory, as Kubernetes swaps a `..data` symlink), on SIGHUP, or on `POST /-/reload`,
//! scripts and pipeline settings (routes, silences, policies) are rebuilt and swapped in
//! atomically. A reload that fails keeps the running set and reports every error.
//!
//! Changes to `[server]`, `[outbox]`, `[delivery]` and targets take effect on restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AppState;
use crate::config::{self, Config};
use crate::rules::Ruleset;
use crate::telemetry;

/// Quiet time after a file change before reloading, so an editor's or a ConfigMap's
/// several writes become one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where a reload reads config and scripts from.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// The config file (`--config`), or `None` for the default lookup.
    pub config_path: Option<PathBuf>,
    /// `--scripts` directories, which replace `scripts.dirs` when given.
    pub scripts_override: Vec<PathBuf>,
    /// Directories watched for changes.
    pub watch: Vec<PathBuf>,
}

impl ReloadSource {
    /// Reloads from the same places `config` was loaded from.
    pub fn new(
        config_path: Option<PathBuf>,
        scripts_override: Vec<PathBuf>,
        config: &Config,
    ) -> Self {
        let mut watch = config.script_dirs.clone();
        if let Some(parent) = config.source.as_deref().and_then(Path::parent) {
            watch.push(if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            });
        }
        watch.sort();
        watch.dedup();
        Self {
            config_path,
            scripts_override,
            watch,
        }
    }
}

/// The outcome of the last reload, for `/readyz`.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct ReloadStatus {
    /// `None` until the first reload.
    last: Option<LastReload>,
}

#[derive(Debug, Clone, Serialize)]
struct LastReload {
    ok: bool,
    at_ms: i64,
    rules: usize,
    errors: Vec<String>,
}

/// The last reload's outcome as JSON.
pub(super) fn status(state: &AppState) -> serde_json::Value {
    let status = state
        .reload_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    serde_json::to_value(status.last).unwrap_or_default()
}

/// Reloads now; returns the number of rules, or every error.
pub(super) async fn run(state: Arc<AppState>) -> Result<usize, Vec<String>> {
    tokio::task::spawn_blocking(move || reload(&state))
        .await
        .unwrap_or_else(|e| Err(vec![format!("reload task failed: {e}")]))
}

fn reload(state: &AppState) -> Result<usize, Vec<String>> {
    let Some(source) = &state.reload else {
        return Err(vec!["hot reload is not enabled for this server".to_owned()]);
    };
    let result = build(source);
    let now = crate::pipeline::wall_clock_ms();
    let (last, outcome) = match result {
        Ok((config, mut rules)) => {
            rules.adopt_state(&state.rules.load());
            let count = rules.rules().len();
            state.rules.store(Arc::new(rules));
            state.pipeline.set_settings(config.pipeline);
            telemetry::rules_loaded(count);
            tracing::info!(rules = count, "reloaded scripts and pipeline settings");
            (
                LastReload {
                    ok: true,
                    at_ms: now,
                    rules: count,
                    errors: Vec::new(),
                },
                Ok(count),
            )
        }
        Err(errors) => {
            for error in &errors {
                tracing::error!(error = %error, "reload failed; the running scripts stay");
            }
            let running = state.rules.load().rules().len();
            (
                LastReload {
                    ok: false,
                    at_ms: now,
                    rules: running,
                    errors: errors.clone(),
                },
                Err(errors),
            )
        }
    };
    telemetry::reload(last.ok);
    state
        .reload_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last = Some(last);
    outcome
}

fn build(source: &ReloadSource) -> Result<(Config, Ruleset), Vec<String>> {
    let config = config::load(source.config_path.as_deref())
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let dirs = if source.scripts_override.is_empty() {
        config.script_dirs.clone()
    } else {
        source.scripts_override.clone()
    };
    let mut rules = Ruleset::load(&dirs, &config.limits, &config.cluster_name)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    rules.set_settings(&config.script_settings);
    Ok((config, rules))
}

/// Starts the file watcher and the SIGHUP listener when reload is enabled.
pub(super) fn spawn_triggers(state: Arc<AppState>) -> Option<JoinHandle<()>> {
    let source = state.reload.clone()?;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = watch(&source, tx);
    Some(tokio::spawn(async move {
        // Owned by the task: dropping it stops the watching.
        let _watcher = watcher;
        let mut hangup = hangup_signal();
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {
                    // Debounce: wait for DEBOUNCE without further changes.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                }
                Some(()) = recv_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading");
                }
                else => return,
            }
            let _ = run(state.clone()).await;
        }
    }))
}

fn watch(source: &ReloadSource, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let config_name = source
        .config_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let config_name = config_name.file_name().map(|n| n.to_os_string());
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            let name = p.file_name();
            p.extension().is_some_and(|e| e == "rhai")
                || name.is_some_and(|n| n.to_string_lossy().starts_with(".."))
                || (name.is_some() && name.map(|n| n.to_os_string()) == config_name)
        });
        if relevant {
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch files; reload with SIGHUP or POST /-/reload");
            return None;
        }
    };
    for dir in &source.watch {
        if let Err(err) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory for changes");
        }
    }
    Some(watcher)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_hangup(signal: &mut Hangup) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}
