//! The stateful helpers `count_over` and `first_seen` on the event clock, through the
//! example scripts in examples/rules/stateful and through `klaxon dry-run`.

use std::path::PathBuf;
use std::sync::Arc;

use assert_cmd::cargo::cargo_bin_cmd;
use klaxon::audit::decode;
use klaxon::rules::{Ruleset, ScriptLimits, ScriptSource};
use serde_json::json;

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000;

fn pack() -> Ruleset {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/rules/stateful"
    ));
    Ruleset::load(&[dir], &ScriptLimits::default(), "test").unwrap()
}

fn event(value: serde_json::Value) -> Arc<klaxon::audit::Event> {
    let decoded = decode(value.to_string().as_bytes());
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    Arc::new(decoded.events.into_iter().next().unwrap())
}

fn failed_login(ip: &str) -> Arc<klaxon::audit::Event> {
    event(json!({
        "auditID": "x", "stage": "ResponseComplete", "level": "Metadata", "verb": "list",
        "requestURI": "/api/v1/secrets", "sourceIPs": [ip],
        "user": {"username": "system:anonymous"},
        "responseStatus": {"code": 401}
    }))
}

fn exec(user: &str, ns: &str) -> Arc<klaxon::audit::Event> {
    event(json!({
        "auditID": "y", "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api", "verb": "get",
        "objectRef": {"resource": "pods", "subresource": "exec", "namespace": ns, "name": "web"},
        "user": {"username": user}
    }))
}

#[test]
fn the_fifth_failure_from_one_source_within_five_minutes_alerts() {
    let rules = pack();
    let fired: Vec<usize> = (0..10)
        .map(|i| {
            rules
                .evaluate_at(failed_login("10.0.0.9"), T0 + i * 30_000)
                .alerts
                .len()
        })
        .collect();
    assert_eq!(fired, [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    let fifth = rules.evaluate_at(failed_login("10.9.9.9"), T0).alerts;
    assert!(fifth.is_empty(), "another source counts on its own");
    // Spread over more than five minutes, the count never reaches five.
    let slow = pack();
    let fired: usize = (0..10)
        .map(|i| {
            slow.evaluate_at(failed_login("10.0.0.7"), T0 + i * 2 * MIN)
                .alerts
                .len()
        })
        .sum();
    assert_eq!(fired, 0);
}

#[test]
fn the_first_exec_per_user_and_namespace_in_24_hours_alerts() {
    let rules = pack();
    let titles = |e| -> Vec<String> {
        rules
            .evaluate_at(e, T0)
            .alerts
            .into_iter()
            .map(|a| a.title)
            .collect()
    };
    assert_eq!(titles(exec("alice", "payments")).len(), 1);
    assert!(titles(exec("alice", "payments")).is_empty());
    assert_eq!(titles(exec("alice", "search")).len(), 1);
    assert_eq!(titles(exec("bob", "payments")).len(), 1);
    let next_day = rules.evaluate_at(exec("alice", "payments"), T0 + 24 * 60 * MIN);
    assert_eq!(next_day.alerts.len(), 1);
}

#[test]
fn keys_are_per_rule_and_a_bad_window_is_a_script_error() {
    let source = |name: &str, text: &str| ScriptSource {
        name: name.to_owned(),
        path: PathBuf::from(format!("{name}.rhai")),
        text: text.to_owned(),
    };
    let rules = Ruleset::compile(
        vec![
            source("a", r#"alert(#{ title: `${count_over("k", "1h")}` });"#),
            source("b", r#"alert(#{ title: `${count_over("k", "1h")}` });"#),
            source("bad", r#"count_over("k", "soon");"#),
        ],
        &ScriptLimits::default(),
        "test",
    )
    .unwrap();
    let ev = failed_login("1.2.3.4");
    let first = rules.evaluate_at(ev.clone(), T0);
    let second = rules.evaluate_at(ev, T0 + 1);
    let titles: Vec<&str> = first
        .alerts
        .iter()
        .chain(&second.alerts)
        .map(|a| a.title.as_str())
        .collect();
    assert_eq!(titles, ["1", "1", "2", "2"]);
    assert_eq!(first.errors.len(), 1);
    assert!(
        first.errors[0].message.contains("`soon` is not a window"),
        "{}",
        first.errors[0].message
    );
}

#[test]
fn dry_run_clocks_the_helpers_by_the_events_time() {
    let dir = tempfile::TempDir::new().unwrap();
    let lines: Vec<String> = (0..5)
        .map(|i| {
            json!({
                "auditID": format!("f{i}"), "stage": "ResponseComplete", "level": "Metadata", "verb": "list",
                "requestURI": "/api/v1/secrets", "sourceIPs": ["10.0.0.9"],
                "user": {"username": "system:anonymous"}, "responseStatus": {"code": 403},
                // One minute apart: all five within 5 minutes by event time, however fast
                // the dry-run reads them.
                "stageTimestamp": format!("2026-11-20T10:0{i}:00.000000Z"),
            })
            .to_string()
        })
        .collect();
    std::fs::write(dir.path().join("events.jsonl"), lines.join("\n") + "\n").unwrap();
    cargo_bin_cmd!("klaxon")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SLACK_WEBHOOK_URL")
        .args([
            "--scripts",
            "examples/rules/stateful",
            "dry-run",
            "--format",
            "json",
        ])
        .arg(dir.path().join("events.jsonl"))
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "5 failed authentications from 10.0.0.9 in 5 minutes",
        ));
}
