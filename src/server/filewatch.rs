//! Watching directories for changes, for TLS certificate reload and script reload alike:
//! one `notify` watcher over the directories (by directory, since Kubernetes replaces a
//! mounted Secret's or ConfigMap's files by swapping a `..data` symlink), our own reads
//! ignored, and a burst of events settled into one call.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Events closer together than this are handled as one change (a rewrite is several events).
const SETTLE: Duration = Duration::from_millis(150);
/// Longest a stream of events may postpone the call.
const SETTLE_MAX: Duration = Duration::from_secs(1);

/// Why the handler is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// Files changed (a burst, settled).
    Changed,
    /// The tick passed without a change.
    Tick,
}

/// Watches `dirs` on a thread of its own named `name`: calls `handler` once per settled
/// burst of events on files that `matters` accepts, and once per `tick` without one. The
/// thread ends when the handler breaks. Without a working watcher (logged), only ticks come.
pub(super) fn watch_dirs(
    name: &str,
    dirs: &[PathBuf],
    matters: impl Fn(&Path) -> bool + Send + 'static,
    tick: Duration,
    mut handler: impl FnMut(Wake) -> ControlFlow<()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<()>();
    let watcher = start(name, dirs, matters, tx);
    let spawned = std::thread::Builder::new()
        .name(format!("klaxon-{name}"))
        .spawn(move || {
            // Owned by the thread: dropping it stops the events.
            let _watcher = watcher;
            loop {
                let wake = match rx.recv_timeout(tick) {
                    Ok(()) => {
                        settle(&rx);
                        Wake::Changed
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => Wake::Tick,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                };
                if handler(wake).is_break() {
                    return;
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "cannot start the {name} thread");
    }
}

/// Waits until events stop for [`SETTLE`], or [`SETTLE_MAX`] has passed.
fn settle(rx: &mpsc::Receiver<()>) {
    let deadline = Instant::now() + SETTLE_MAX;
    while Instant::now() < deadline && rx.recv_timeout(SETTLE).is_ok() {}
}

/// The watcher over `dirs`, sending `()` for each event that may be a change of a file
/// `matters` accepts; `None` (logged) when the platform cannot watch.
fn start(
    name: &str,
    dirs: &[PathBuf],
    matters: impl Fn(&Path) -> bool + Send + 'static,
    tx: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let what = name.to_owned();
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if is_change(&event) && event.paths.iter().any(|p| matters(p)) => {
            let _ = tx.send(());
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "{what}: file watch error"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, "{name}: cannot watch files for changes");
            return None;
        }
    };
    for dir in dirs {
        if let Err(err) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %err, "{name}: cannot watch directory for changes");
        }
    }
    Some(watcher)
}

/// Whether an event may mean a file changed (reads, ours included, do not; a close after
/// writing does).
fn is_change(event: &notify::Event) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    !matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    )
}
