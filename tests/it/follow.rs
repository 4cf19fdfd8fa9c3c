//! `klaxon serve --follow`: the apiserver's JSON-lines audit log file (`--audit-log-path`)
//! followed beside the webhook, with the real binary on real files. Lines are Falco's
//! recorded audit traces (tests/fixtures/falco, see its NOTICE: one event per line, as
//! the log backend writes them), each given an auditID of its own. The rule raises one
//! alert per event and the dedup window is zero, so an event evaluated twice would be
//! delivered twice: every test counts the alerts at an HTTP receiver by auditID and asserts
//! each exactly once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support;
use support::process::Daemon;
use support::receiver::Receiver;

const PREFIX: &str = "follow-";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `n` audit lines: Falco's traces in turn, the i-th with auditID `follow-0000i`.
fn audit_lines(n: usize) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("tests/fixtures/falco"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let traces: Vec<Value> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v.get("auditID").is_some())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(traces.len() > 50, "Falco's traces hold many events");
    (0..n)
        .map(|i| {
            let mut event = traces[i % traces.len()].clone();
            event["auditID"] = json!(id(i));
            format!("{event}\n")
        })
        .collect()
}

fn id(i: usize) -> String {
    format!("{PREFIX}{i:05}")
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(id).collect()
}

/// The rule and a config (outbox in `dir/data`, every alert to `receiver`, then `extra`);
/// returns the config's path.
fn config(dir: &Path, receiver: &Receiver, extra: &str) -> String {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("each.rhai"),
        "alert(#{ title: event.auditID, dedup_key: event.auditID, group_key: event.auditID });",
    )
    .unwrap();
    let path = dir.join("klaxon.toml");
    std::fs::write(
        &path,
        format!(
            r#"[scripts]
dirs = ["{scripts}"]
[outbox]
path = "{data}"
[delivery]
group_wait = "0s"
poll_interval = "100ms"
[rule_defaults]
dedup_window = "0s"
budget = 1000000
[routing]
default_targets = ["hook"]
[targets.hook]
type = "http"
url = "{url}"
{extra}
"#,
            scripts = scripts.display(),
            data = dir.join("data").display(),
            url = receiver.url("/alerts"),
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// A receiver, a directory and the path of a config in it with `extra(dir)` added.
async fn setup(extra: impl Fn(&Path) -> String) -> (Receiver, TempDir, String) {
    let receiver = Receiver::start().await;
    let dir = TempDir::new().unwrap();
    let config = config(dir.path(), &receiver, &extra(dir.path()));
    (receiver, dir, config)
}

/// `[[sources.file]]` for `dir/audit.log`, read from its beginning.
fn following_audit_log(dir: &Path) -> String {
    format!(
        "[[sources.file]]\npath = \"{}/audit.log\"\nstart_at = \"beginning\"\n",
        dir.display()
    )
}

/// How many times each alert title reached the receiver.
fn delivered(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in receiver.requests() {
        for alert in request.json()["alerts"].as_array().unwrap() {
            *counts
                .entry(alert["title"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    counts
}

/// Calls `probe` every 50 ms until it returns `Some`, for at most 60 s.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every one of `expected` reached the receiver, then asserts each came once
/// and nothing else came.
async fn assert_each_delivered_once(receiver: &Receiver, expected: &[String]) {
    // Woken by each request the receiver records, not by a timer.
    let everything = async {
        loop {
            let seen = receiver.requests().len();
            let got = delivered(receiver);
            if expected.iter().all(|id| got.contains_key(id)) {
                return;
            }
            receiver.wait_for(seen + 1).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), everything)
        .await
        .expect("timed out waiting for every alert delivered");
    let got = delivered(receiver);
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "alerts delivered more than once: {twice:?}"
    );
    let unexpected: Vec<_> = got.keys().filter(|id| !expected.contains(id)).collect();
    assert!(
        unexpected.is_empty(),
        "alerts of lines that should not be read: {unexpected:?}"
    );
    assert_eq!(got.len(), expected.len());
}

/// A counter of the daemon's `/metrics` (0 before it is counted).
async fn counter(daemon: &Daemon, series: &str) -> f64 {
    support::metrics::scrape(&format!("http://{}", daemon.addr), series)
        .await
        .unwrap_or(0.0)
}

/// Waits until the daemon has decoded at least `n` events.
async fn wait_received(daemon: &Daemon, n: usize) {
    eventually(&format!("{n} events received"), || async {
        (counter(daemon, "klaxon_events_received_total").await >= n as f64).then_some(())
    })
    .await;
}

/// Waits until the daemon has logged a line containing `text`.
async fn wait_logged(daemon: &Daemon, text: &str) {
    eventually(text, || async {
        daemon.logs().iter().any(|l| l.contains(text)).then_some(())
    })
    .await;
}

fn start(config: &str, serve_args: &[&str], envs: &[(&str, &str)]) -> Daemon {
    tokio::task::block_in_place(|| {
        Daemon::start_serving(&["--config", config], serve_args, envs, Stdio::null())
    })
}

/// Appends to the audit log as the apiserver does: one open handle, whole lines.
struct Writer {
    path: PathBuf,
    file: File,
}

impl Writer {
    fn open(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Self {
            path: path.to_path_buf(),
            file,
        }
    }

    fn write(&mut self, text: &str) {
        self.file.write_all(text.as_bytes()).unwrap();
    }

    fn lines(&mut self, lines: &[String]) {
        for line in lines {
            self.write(line);
        }
    }

    /// Rotation by rename, as the apiserver's lumberjack does: the file becomes
    /// `audit-<timestamp>.log` and a new one is opened under the old name.
    fn rotate_by_rename(&mut self, stamp: usize) {
        let dir = self.path.parent().unwrap();
        std::fs::rename(
            &self.path,
            dir.join(format!("audit-2026-12-03T15-{stamp:02}-00.000.log")),
        )
        .unwrap();
        *self = Self::open(&self.path.clone());
    }

    /// Rotation by logrotate's copytruncate: older copies shift (`audit.log.1` →
    /// `audit.log.2`), the file is copied to `audit.log.1`, then truncated in place.
    fn rotate_by_copytruncate(&mut self, generations: usize) {
        let dir = self.path.parent().unwrap().to_path_buf();
        for n in (1..generations).rev() {
            let older = dir.join(format!("audit.log.{n}"));
            if older.exists() {
                std::fs::rename(&older, dir.join(format!("audit.log.{}", n + 1))).unwrap();
            }
        }
        std::fs::copy(&self.path, dir.join("audit.log.1")).unwrap();
        self.file.set_len(0).unwrap();
    }
}

/// Follows `audit.log` (from its beginning) while three generations of 100 lines are
/// written to it, each rotated by `rotate` while the follower is in the middle of it (half
/// its lines written after the follower reached it, the next generation's at once after
/// the rotation). Two lines of the second generation are not audit events (plain text, a
/// torn object): they are skipped and counted as decode errors. Every event is evaluated
/// and delivered once.
async fn follow_across(mut rotate: impl FnMut(&mut Writer, usize)) {
    let (receiver, dir, config) = setup(following_audit_log).await;
    let log = dir.path().join("audit.log");
    let lines = audit_lines(300);
    let mut writer = Writer::open(&log);
    let daemon = start(&config, &[], &[]);
    for generation in 0..3 {
        let first = generation * 100;
        writer.lines(&lines[first..first + 50]);
        if generation == 1 {
            writer.write("this is not an audit event\n");
            writer.write("{\"kind\":\"Event\",\"auditID\":\"torn\"\n");
        }
        wait_received(&daemon, first + 1).await;
        writer.lines(&lines[first + 50..first + 100]);
        rotate(&mut writer, generation);
    }
    assert_each_delivered_once(&receiver, &ids(0..300)).await;
    assert_eq!(
        counter(&daemon, "klaxon_events_received_total").await,
        300.0
    );
    assert_eq!(counter(&daemon, "klaxon_decode_errors_total").await, 2.0);
}

/// Rotation by rename (the apiserver's own, `--audit-log-maxsize`): the old file is read
/// to its end, then the new one from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_across_renames_are_each_evaluated_and_delivered_once() {
    follow_across(Writer::rotate_by_rename).await;
}

/// Rotation by logrotate's copytruncate: the copy's rest is read from the position, then
/// the truncated file from its start (it has grown again past the position by then, so
/// only the fingerprint tells).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_written_across_copytruncate_are_each_evaluated_and_delivered_once() {
    follow_across(|writer, _| writer.rotate_by_copytruncate(3)).await;
}

/// kill -9 with half a line written, then again while a writer is appending (lines in two
/// writes each, so the kill may fall between lines, inside one, or while a chunk is being
/// stored), then a restart on the same data directory: no line lost, none read twice.
/// Nothing is sent before the last life (a long group window), so every delivery counted
/// comes from the outbox's single copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_between_and_inside_lines_loses_nothing_and_repeats_nothing() {
    let (receiver, dir, config) = setup(following_audit_log).await;
    let log = dir.path().join("audit.log");
    let lines = audit_lines(400);
    let hold = [("KLAXON_DELIVERY__GROUP_WAIT", "1h")];
    let mut writer = Writer::open(&log);

    // First life: 40 whole lines and half of the 41st, then kill -9.
    let first = start(&config, &[], &hold);
    writer.lines(&lines[..40]);
    let (head, tail) = lines[40].split_at(lines[40].len() / 2);
    writer.write(head);
    wait_received(&first, 40).await;
    first.signal("-KILL");
    drop(first);

    // Second life: the rest of that line, then a writer appending while the process is
    // killed at some point of its stream.
    let second = start(&config, &[], &hold);
    writer.write(tail);
    let rest = lines[41..].to_vec();
    let appending = std::thread::spawn(move || {
        for line in &rest {
            let (a, b) = line.split_at(line.len() / 2);
            writer.write(a);
            std::thread::yield_now();
            writer.write(b);
        }
    });
    wait_received(&second, 100).await;
    second.signal("-KILL");
    drop(second);
    appending.join().unwrap();
    assert!(
        receiver.requests().is_empty(),
        "nothing sent before the last life"
    );

    // Last life: every line once.
    let third = start(&config, &[], &[]);
    assert_each_delivered_once(&receiver, &ids(0..400)).await;
    assert_eq!(
        counter(&third, "klaxon_duplicate_events_total").await,
        0.0,
        "no line read again (the seen filter would hide its alert)"
    );
    third.signal("-TERM");
}

/// A fresh start reads from the end of the existing file (only new lines), a restart after
/// a stop goes on where the last run stopped (lines written meanwhile included), and
/// `--follow-from-start` reads a fresh file from its beginning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_reads_from_the_end_and_a_restart_from_where_it_stopped() {
    let (receiver, dir, config) = setup(|_| String::new()).await;
    let log = dir.path().join("audit.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let lines = audit_lines(20);
    let mut writer = Writer::open(&log);
    writer.lines(&lines[..5]);

    let mut first = start(&config, &["--follow", &log_arg], &[]);
    // The start position is stored before the first new line: wait for it to be taken.
    wait_logged(&first, "reading from its end").await;
    writer.lines(&lines[5..8]);
    assert_each_delivered_once(&receiver, &ids(5..8)).await;
    first.signal("-TERM");
    assert!(first.child.wait().unwrap().success());

    writer.lines(&lines[8..12]);
    let mut second = start(&config, &["--follow", &log_arg], &[]);
    writer.lines(&lines[12..14]);
    assert_each_delivered_once(&receiver, &ids(5..14)).await;
    // Wait for the graceful exit: dropping the daemon kills it (-9), which may come before
    // it records a delivery it made, and the next start on this data dir would repeat it.
    second.signal("-TERM");
    assert!(second.child.wait().unwrap().success());

    let other = dir.path().join("other.log");
    std::fs::write(&other, lines[14..20].concat()).unwrap();
    let third = start(
        &config,
        &["--follow", other.to_str().unwrap(), "--follow-from-start"],
        &[],
    );
    assert_each_delivered_once(&receiver, &ids(5..20)).await;
    third.signal("-TERM");
}

/// `--follow -`: standard input is read to its end (its non-audit lines skipped and
/// counted), then the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_input_is_read_to_its_end_and_the_server_keeps_serving() {
    let (receiver, _dir, config) = setup(|_| String::new()).await;
    let lines = audit_lines(30);
    let mut daemon = tokio::task::block_in_place(|| {
        Daemon::start_serving(
            &["--config", &config],
            &["--follow", "-"],
            &[],
            Stdio::piped(),
        )
    });
    let mut stdin = daemon.child.stdin.take().unwrap();
    stdin.write_all(lines[..15].concat().as_bytes()).unwrap();
    stdin.write_all(b"not an audit event\n").unwrap();
    stdin.write_all(lines[15..].concat().as_bytes()).unwrap();
    drop(stdin);
    assert_each_delivered_once(&receiver, &ids(0..30)).await;
    wait_logged(&daemon, "standard input ended").await;
    assert_eq!(counter(&daemon, "klaxon_decode_errors_total").await, 1.0);
    let health = reqwest::get(format!("http://{}/healthz", daemon.addr))
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "still serving after standard input ended"
    );
    assert!(daemon.child.try_wait().unwrap().is_none());
}

/// The command line refuses a path followed twice and `--follow-from-start` without
/// `--follow`, before anything starts.
#[test]
fn command_line_mistakes_are_refused_before_serving() {
    let twice = assert_cmd::cargo::cargo_bin_cmd!("klaxon")
        .args(["serve", "--follow", "/tmp/a.log", "--follow", "/tmp/a.log"])
        .output()
        .unwrap();
    assert!(!twice.status.success());
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(
        stderr.contains("--follow /tmp/a.log is given twice"),
        "{stderr}"
    );
    let alone = assert_cmd::cargo::cargo_bin_cmd!("klaxon")
        .args(["serve", "--follow-from-start"])
        .output()
        .unwrap();
    assert!(!alone.status.success());
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--follow <PATH>"), "{stderr}");
}
