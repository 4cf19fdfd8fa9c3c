//! Sources: audit events read from files instead of posted to the webhook.
//!
//! Owns reading files: following a JSON-lines audit log (`--follow`, `[[sources.file]]`)
//! across rotation by rename and by copytruncate, holding back a partial last line, and
//! the position ([`Position`]: the file's identity and fingerprint, the byte offset) that
//! the caller stores with what each chunk did; and standard input (`--follow -`). Hands
//! chunks of whole lines to the [`Sink`] its caller (the server) gives it, and retries a
//! chunk the sink refused, so nothing is skipped. Each source polls on a thread of its
//! own. Calls `telemetry` (a skipped overlong line counts as a decode error).

mod tail;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use tail::{FileId, Fingerprint, Position, Read, Tail};

use crate::telemetry;

/// How often a followed file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// First wait before a refused chunk is offered again (doubling up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between offers of a refused chunk.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file, followed across rotation.
    File(PathBuf),
    /// Standard input, until its end (`-`); no position is kept.
    Stdin,
}

impl Input {
    /// `-` is standard input, anything else a file.
    pub fn parse(text: &str) -> Self {
        match text {
            "-" => Input::Stdin,
            path => Input::File(PathBuf::from(path)),
        }
    }
}

/// Where a file followed for the first time is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// After its last whole line: only what is written from now on.
    #[default]
    End,
    /// From its first line.
    Beginning,
}

/// One source of audit lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// What it reads.
    pub input: Input,
    /// Where a file is read from the first time (later: where it stopped).
    pub start_at: StartAt,
}

impl FileSource {
    /// The name its position is stored under: the file's absolute path (`None` for
    /// standard input).
    pub fn key(&self) -> Option<String> {
        match &self.input {
            Input::File(path) => Some(key_of(path)),
            Input::Stdin => None,
        }
    }
}

/// The name a position is stored under: the absolute path, symbolic links kept.
fn key_of(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// A file's position, named by its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// [`FileSource::key`].
    pub source: String,
    /// Where reading stands once the chunk is handled.
    pub position: Position,
}

/// Whole lines for the sink.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// JSON lines (may be empty: only the position moves).
    pub lines: Bytes,
    /// The file they come from (or `-`), for logs.
    pub origin: String,
    /// Their byte offset in it.
    pub at: u64,
    /// The position to store with what the lines did; `None` for standard input.
    pub cursor: Option<Cursor>,
}

/// Takes chunks: `Ok` once a chunk's outcome (and its cursor) is stored; an error leaves
/// it to be offered again.
pub type Sink =
    Arc<dyn Fn(Chunk) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The stop signal every follower waits on.
#[derive(Debug, Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Waits up to `timeout` for the stop; true once stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *stopped
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }
}

/// The running followers.
#[derive(Debug)]
pub struct Followers {
    stop: Arc<Stop>,
    files: Vec<JoinHandle<()>>,
    stdin: Option<JoinHandle<()>>,
}

impl Followers {
    /// Starts one thread per source: a file from `saved` (its stored position, by
    /// [`FileSource::key`]) or its `start_at`; standard input until its end. Chunks go to
    /// `sink`, run on `runtime`.
    pub fn start(
        sources: &[FileSource],
        saved: impl Fn(&str) -> Option<Position>,
        sink: &Sink,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(Stop::default());
        let mut files = Vec::new();
        let mut stdin = None;
        for source in sources {
            let follower = Follower {
                sink: sink.clone(),
                runtime: runtime.clone(),
                stop: stop.clone(),
            };
            match &source.input {
                Input::File(path) => {
                    let key = key_of(path);
                    let tail = Tail::new(path, saved(&key), source.start_at);
                    tracing::info!(path = %path.display(), "following audit log file");
                    files.push(
                        std::thread::Builder::new()
                            .name("klaxon-follow".to_owned())
                            .spawn(move || follower.follow(tail, &key))?,
                    );
                }
                Input::Stdin => {
                    tracing::info!("reading audit lines from standard input");
                    stdin = Some(
                        std::thread::Builder::new()
                            .name("klaxon-stdin".to_owned())
                            .spawn(move || follower.read_stdin())?,
                    );
                }
            }
        }
        Ok(Self { stop, files, stdin })
    }

    /// Stops every follower and waits for the file followers: a chunk being handled is
    /// finished first. Standard input is left to end with the process if it is blocked
    /// in a read.
    pub async fn stop(self) {
        self.stop.stop();
        let Self { files, stdin, .. } = self;
        let _ = tokio::task::spawn_blocking(move || {
            for handle in files {
                let _ = handle.join();
            }
            if let Some(handle) = stdin.filter(JoinHandle::is_finished) {
                let _ = handle.join();
            }
        })
        .await;
    }
}

/// What every follower thread holds.
struct Follower {
    sink: Sink,
    runtime: tokio::runtime::Handle,
    stop: Arc<Stop>,
}

impl Follower {
    /// Polls `tail` until stopped, handing over each read and advancing once it is stored.
    fn follow(&self, mut tail: Tail, key: &str) {
        let mut failing: Option<String> = None;
        loop {
            let read = match tail.poll() {
                Ok(read) => {
                    if failing.take().is_some() {
                        tracing::info!(path = %tail.path().display(), "the followed file is readable again");
                    }
                    read
                }
                Err(err) => {
                    // Logged when it starts or changes, not at every poll.
                    let error = err.to_string();
                    if failing.as_ref() != Some(&error) {
                        tracing::warn!(path = %tail.path().display(), error = %error, "cannot read the followed file; trying again every poll");
                    }
                    failing = Some(error);
                    None
                }
            };
            let Some(mut read) = read else {
                if self.stop.wait(POLL_INTERVAL) {
                    return;
                }
                continue;
            };
            if read.skipped > 0 {
                tracing::warn!(file = %read.from.display(), offset = read.at, bytes = read.skipped, "skipped a line longer than 64 MiB");
                telemetry::decode_errors(1);
            }
            let chunk = Chunk {
                lines: Bytes::from(std::mem::take(&mut read.lines)),
                origin: read.from.display().to_string(),
                at: read.at,
                cursor: Some(Cursor {
                    source: key.to_owned(),
                    position: read.position,
                }),
            };
            if !self.hand_over(chunk) {
                return;
            }
            tail.advance(&read);
        }
    }

    /// Offers `chunk` to the sink until it takes it (backing off between offers); false
    /// when stopped first.
    fn hand_over(&self, chunk: Chunk) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.runtime.block_on((self.sink)(chunk.clone())) {
                Ok(()) => return true,
                Err(err) => {
                    tracing::warn!(origin = %chunk.origin, offset = chunk.at, error = %err, retry_in = ?backoff, "audit lines not stored; offering them again");
                }
            }
            if self.stop.wait(backoff) {
                return false;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Hands standard input over in chunks of the whole lines at hand, until its end (a
    /// last line without newline included).
    fn read_stdin(&self) {
        let mut input = std::io::BufReader::with_capacity(256 << 10, std::io::stdin().lock());
        let mut at = 0u64;
        loop {
            let mut lines = Vec::new();
            let ended = match input.read_until(b'\n', &mut lines) {
                Ok(0) => true,
                Ok(_) => false,
                Err(err) => {
                    tracing::error!(error = %err, "cannot read standard input; no more lines from it");
                    true
                }
            };
            // Whatever else is already buffered and whole goes in the same chunk.
            while !ended && lines.len() < tail::MAX_CHUNK && input.buffer().contains(&b'\n') {
                if input.read_until(b'\n', &mut lines).is_err() {
                    break;
                }
            }
            if !lines.is_empty() {
                let len = lines.len() as u64;
                let chunk = Chunk {
                    lines: Bytes::from(lines),
                    origin: "-".to_owned(),
                    at,
                    cursor: None,
                };
                if !self.hand_over(chunk) {
                    return;
                }
                at += len;
            }
            if ended {
                tracing::info!("standard input ended; still serving");
                return;
            }
        }
    }
}
