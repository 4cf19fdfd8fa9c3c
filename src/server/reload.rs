//! Hot reload: on a change under the script directories or to the config file (watched by
//! directory, as Kubernetes swaps a `..data` symlink), on SIGHUP, or on `POST /-/reload`,
//! scripts and pipeline settings (routes, silences, policies) are rebuilt and swapped in
//! atomically. A reload that fails keeps the running set and reports every error.
//!
//! Changes to `[server]`, `[outbox]`, `[delivery]` and targets take effect on restart.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::AppState;
use super::filewatch::Wake;
use crate::pipeline::PipelineSettings;
use crate::rules::Ruleset;
use crate::telemetry;

/// What a reload swaps in.
pub struct Reloaded {
    /// The new scripts.
    pub rules: Ruleset,
    /// The new routes, silences and policies.
    pub pipeline: PipelineSettings,
}

/// Builds what a reload swaps in, or every problem found; made by the caller (the command
/// line), so the server need not know how config and scripts are read.
pub type Reload = Arc<dyn Fn() -> Result<Reloaded, Vec<String>> + Send + Sync>;

/// What a reload watches and how it loads.
#[derive(Clone)]
pub struct ReloadSource {
    /// Directories watched for changes (`.rhai` files, the config file, `..data` swaps).
    pub watch: Vec<PathBuf>,
    /// The config file; a change to a file of its name in a watched directory reloads.
    pub config_file: PathBuf,
    /// Builds the new set.
    pub load: Reload,
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
    let result = (source.load)();
    let now = crate::clock::wall_clock_ms();
    let (last, outcome) = match result {
        Ok(Reloaded {
            mut rules,
            pipeline,
        }) => {
            rules.adopt_state(&state.rules.load());
            let count = rules.rules().len();
            state.rules.store(Arc::new(rules));
            state.pipeline.set_settings(pipeline);
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

/// How often the file-watch thread looks whether the server still runs.
const WATCH_TICK: Duration = Duration::from_secs(1);

/// Starts the file watcher and the SIGHUP listener when reload is enabled.
pub(super) fn spawn_triggers(state: Arc<AppState>) -> Option<JoinHandle<()>> {
    let source = state.reload.clone()?;
    let (tx, mut rx) = mpsc::channel::<()>(1);
    watch_files(&source, tx);
    Some(tokio::spawn(async move {
        let mut hangup = hangup_signal();
        loop {
            tokio::select! {
                Some(()) = rx.recv() => {}
                Some(()) = recv_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading");
                }
                else => return,
            }
            let _ = run(state.clone()).await;
        }
    }))
}

/// Sends `()` on `tx` once a burst of changes to scripts or the config file has settled;
/// stops once the receiving task is gone.
fn watch_files(source: &ReloadSource, tx: mpsc::Sender<()>) {
    let config_name = source.config_file.file_name().map(|n| n.to_os_string());
    let matters = move |path: &std::path::Path| {
        let name = path.file_name();
        path.extension().is_some_and(|e| e == "rhai")
            || name.is_some_and(|n| n.to_string_lossy().starts_with(".."))
            || (name.is_some() && name.map(|n| n.to_os_string()) == config_name)
    };
    super::filewatch::watch_dirs(
        "script-reload",
        &source.watch,
        matters,
        WATCH_TICK,
        move |wake| {
            if tx.is_closed() {
                return ControlFlow::Break(());
            }
            if wake == Wake::Changed {
                // Full: a reload is already due, which will see this change too.
                let _ = tx.try_send(());
            }
            ControlFlow::Continue(())
        },
    );
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
