//! `klaxon-bench ingest` as a user runs it: the real binary, from a directory without the
//! repository's files (the traces are found at the path the binary was built with),
//! against klaxon's real server (in-process, on a free loopback port) with the shipped
//! scripts; against a closed port, where every batch fails and the exit code says so; and
//! with a trace directory that does not exist.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use klaxon::rules::Ruleset;
use klaxon::server::Server;
use predicates::str::contains;
use tempfile::TempDir;

/// The repository's root (this crate lives in crates/klaxon-bench).
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `klaxon-bench ingest ARGS` run in an empty directory.
fn ingest(dir: &TempDir, args: &[&str]) -> Command {
    let mut cmd = cargo_bin_cmd!("klaxon-bench");
    cmd.current_dir(dir.path()).arg("ingest").args(args);
    cmd
}

/// klaxon with the shipped scripts on 127.0.0.1:0, its outbox in `data`, every alert
/// silenced (nothing to deliver: the run is about ingest); returns its `/audit` URL. It
/// serves on `runtime`'s worker threads while the test waits for the child process.
fn start_klaxon(runtime: &tokio::runtime::Runtime, data: &TempDir) -> String {
    let scripts = repository().join("scripts");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[scripts]
dirs = ["{}"]
[outbox]
path = "{}"
[routing]
default_targets = ["console"]
[[silences]]
rules = ["*"]
ends_at = "2999-01-01T00:00:00Z"
comment = "load test"
"#,
        scripts.display(),
        data.path().join("outbox").display(),
    );
    let config_path = data.path().join("klaxon.toml");
    std::fs::write(&config_path, toml).unwrap();
    let config = klaxon::config::load(Some(&config_path)).unwrap();
    let rules = Ruleset::load(&config.script_dirs, &config.limits, "test").unwrap();
    assert!(rules.rules().len() >= 5, "the shipped scripts load");
    let server = runtime
        .block_on(Server::bind(&config.serve, rules))
        .unwrap();
    let url = format!("http://{}/audit", server.local_addr().unwrap());
    runtime.spawn(server.run(std::future::pending()));
    url
}

#[test]
fn batches_to_a_klaxon_with_the_shipped_scripts_are_all_accepted() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = TempDir::new().unwrap();
    let url = start_klaxon(&runtime, &data);
    let elsewhere = TempDir::new().unwrap();

    let output = ingest(
        &elsewhere,
        &["--url", &url, "--batches", "4", "--concurrency", "2"],
    )
    .assert()
    .success()
    .stdout(contains("sent 4 batches (1600 events) in "))
    .get_output()
    .stdout
    .clone();
    let line = String::from_utf8(output).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.trim_end().ends_with("; failures: 0"), "{line}");

    let output = ingest(
        &elsewhere,
        &[
            "--url",
            &url,
            "--batches",
            "2",
            "--batch-size",
            "150",
            "--format",
            "json",
        ],
    )
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(report["batches"], 2);
    assert_eq!(report["accepted_events"], 300);
    assert_eq!(report["failures"], 0);
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_batch_failing_exits_non_zero() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/audit", listener.local_addr().unwrap());
    drop(listener);
    let dir = TempDir::new().unwrap();
    ingest(&dir, &["--url", &url, "--batches", "2"])
        .assert()
        .failure()
        .stdout(contains("sent 2 batches (800 events)"))
        .stdout(contains("failures: 2 (connect×2)"));
}

#[test]
fn a_missing_trace_directory_is_named_and_nothing_is_sent() {
    let dir = TempDir::new().unwrap();
    // Nothing listens there; the run must stop before sending anything.
    let url = "http://127.0.0.1:1/audit";
    ingest(
        &dir,
        &["--url", url, "--traces", "no-such-dir", "--batches", "1"],
    )
    .assert()
    .failure()
    .stdout("")
    .stderr(contains(
        "error: cannot read the trace directory no-such-dir (set it with --traces DIR)",
    ));
}
