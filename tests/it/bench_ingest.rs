//! `klaxon bench-ingest` as a user runs it: the real binary, from a directory without the
//! repository's files (its templates are embedded), against a real `klaxon serve` with the
//! shipped config and scripts on a free loopback port; and against a closed port, where
//! every batch fails and the exit code says so.

use crate::support;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use predicates::str::contains;
use support::process::Daemon;
use tempfile::TempDir;

/// `klaxon bench-ingest ARGS` run in an empty directory.
fn bench_ingest(dir: &TempDir, args: &[&str]) -> Command {
    let mut cmd = cargo_bin_cmd!("klaxon");
    cmd.current_dir(dir.path()).arg("bench-ingest").args(args);
    cmd
}

#[test]
fn four_batches_to_a_shipped_klaxon_are_all_accepted() {
    let data = TempDir::new().unwrap();
    let daemon = Daemon::start(
        &[],
        &[
            ("KLAXON_OUTBOX__PATH", data.path().to_str().unwrap()),
            ("SLACK_WEBHOOK_URL", ""),
        ],
    );
    let url = format!("http://{}/audit", daemon.addr);
    let elsewhere = TempDir::new().unwrap();

    let output = bench_ingest(
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

    let output = bench_ingest(
        &elsewhere,
        &["--url", &url, "--batches", "2", "--format", "json"],
    )
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let report: serde_json::Value = serde_json::from_slice(&output).unwrap();
    assert_eq!(report["batches"], 2);
    assert_eq!(report["accepted_events"], 800);
    assert_eq!(report["failures"], 0);
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_batch_failing_exits_non_zero() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/audit", listener.local_addr().unwrap());
    drop(listener);
    let dir = TempDir::new().unwrap();
    bench_ingest(&dir, &["--url", &url, "--batches", "2"])
        .assert()
        .failure()
        .stdout(contains("sent 2 batches (800 events)"))
        .stdout(contains("failures: 2 (connect×2)"));
}
