//! `klaxon serve`: run the webhook until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{Config, Sources};
use crate::notify::Target;
use crate::server::Server;

/// Serves `config` (loaded from `sources`), reloading from `sources` on changes.
pub(super) fn run(sources: &Sources, config: Config) -> anyhow::Result<ExitCode> {
    let rules = super::load_rules(&config)?;
    let reload = sources.reload_source(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        for (name, target) in &config.serve.targets.by_name {
            if let Target::Fallback { to, reason, .. } = target {
                tracing::warn!(target_name = %name, fallback = %to, "{reason}; its alerts go to {to}");
            }
        }
        let server = Server::bind(&config.serve, rules)
            .await
            .context("cannot start the server")?
            .with_reload(reload);
        tracing::info!(
            listen = %server.local_addr()?,
            config = %config.source.as_ref().map_or("built-in defaults".into(), |p| p.display().to_string()),
            "klaxon listening for audit batches on POST / and /audit"
        );
        server.run(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight batches and deliveries");
}
