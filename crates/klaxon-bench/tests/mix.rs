//! `klaxon-bench mix` as a user runs it: the JSON lines it writes decode, with klaxon's own
//! decoder (the one `klaxon bench-rules` and `dry-run` read files with), into exactly the
//! events asked for, in the mix's proportions; a reader that stops early is not an error.

use std::collections::HashSet;
use std::io::Read as _;
use std::process::Stdio;

use assert_cmd::cargo::cargo_bin_cmd;
use klaxon::audit;
use tempfile::TempDir;

/// The stdout of a successful `klaxon-bench mix ARGS` run in an empty directory.
fn mix(args: &[&str]) -> Vec<u8> {
    let dir = TempDir::new().unwrap();
    cargo_bin_cmd!("klaxon-bench")
        .current_dir(dir.path())
        .arg("mix")
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone()
}

#[test]
fn the_mix_file_holds_the_events_asked_for_in_batches() {
    let out = mix(&["--events", "2050", "--batch-size", "400"]);
    let text = String::from_utf8(out.clone()).unwrap();
    // Five whole batches and one of the 50 left over, one EventList per line.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    for line in &lines {
        assert!(line.starts_with(r#"{"kind":"EventList","#), "{line:.80}");
    }
    let decoded = audit::decode(&out);
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    assert_eq!(decoded.events.len(), 2050);
    let ids: HashSet<&str> = decoded.events.iter().map(|e| e.audit_id.as_str()).collect();
    assert_eq!(ids.len(), 2050, "auditIDs are unique");
    let writes = decoded
        .events
        .iter()
        .filter(|e| ["create", "update", "patch", "delete"].contains(&e.verb.as_str()))
        .count();
    let share = writes as f64 / 2050.0;
    assert!((0.12..=0.18).contains(&share), "write share {share}");
}

#[test]
fn the_same_seed_gives_the_same_events() {
    let verbs = |args: &[&str]| -> Vec<(String, String)> {
        audit::decode(&mix(args))
            .events
            .into_iter()
            .map(|e| (e.verb, e.request_uri))
            .collect()
    };
    let a = verbs(&["--events", "300", "--seed", "7"]);
    assert_eq!(a, verbs(&["--events", "300", "--seed", "7"]));
    assert_ne!(a, verbs(&["--events", "300", "--seed", "8"]));
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // `klaxon-bench mix --events 1000000 | head -c 1000`: stdout closes long before the end.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_klaxon-bench"))
        .args(["mix", "--events", "1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 1000];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(stderr.is_empty(), "{stderr}");
    assert!(head.starts_with(br#"{"kind":"EventList","#));
}

#[test]
fn traces_without_a_write_event_are_refused_with_the_directory_named() {
    let dir = TempDir::new().unwrap();
    let read = r#"{"verb":"get","stage":"ResponseComplete","level":"Metadata","requestURI":"/api/v1/pods"}"#;
    std::fs::write(dir.path().join("reads.json"), format!("{read}\n")).unwrap();
    let traces = dir.path().display().to_string();
    let output = cargo_bin_cmd!("klaxon-bench")
        .args(["mix", "--traces", &traces])
        .assert()
        .failure()
        .get_output()
        .clone();
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "no write event (create, update, patch, delete) in the traces of {traces}"
        )),
        "{stderr}"
    );
}
