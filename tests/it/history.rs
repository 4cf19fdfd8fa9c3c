//! The alert history through a running server: every alert raised is recorded with what
//! became of it (admitted, deduplicated with its count, silenced, folded) and its targets;
//! `GET /api/v1/alerts` filters by rule, minimum severity, time and text, newest first;
//! the size bound and the retention time drop the oldest; the history survives a restart;
//! and `klaxon alerts list` reads it over HTTP with the configured credentials.
//!
//! The events are the kubeadm v1.31 fixtures of examples/events (see its README): alice's
//! `kubectl run` (pod-created.jsonl), bob's `kubectl exec` (exec-into-pod.jsonl, its
//! ResponseComplete event) and carol's `kubectl get secret` (secret-read.jsonl), given new
//! auditIDs and pod names.

use std::path::Path;
use std::sync::Arc;

use klaxon::clock::{format_time_ms, parse_time_ms, wall_clock_ms};
use klaxon::outbox::{HistoryQuery, HistorySettings, Outbox, Processed, Raised};
use klaxon::rules::Alert;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::klaxon::{Running, base_toml, config_from, scripts, start, start_with_outbox};
use crate::support::process::klaxon_command;
use crate::support::slack::SlackStandIn;

const POD_CREATED: &str = r#"
if event.verb == "create" && event.objectRef.resource == "pods" && event.objectRef.subresource == "" {
    alert(#{ title: `Pod ${event.objectRef.name} created`, fields: #{ user: event.user.username } });
}
"#;
const EXEC: &str = r#"
if event.objectRef.subresource == "exec" {
    alert(#{ title: `Shell in ${event.objectRef.name}`, severity: "warning", text: "Interactive exec" });
}
"#;
const NOISY_READ: &str = r#"
if event.verb == "get" && event.objectRef.resource == "secrets" {
    alert(#{ title: `Secret ${event.objectRef.name} read` });
}
"#;

/// The ResponseComplete event of fixture `file`, with `audit_id` and the object's `name`.
fn fixture(file: &str, audit_id: &str, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/events")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    let mut event: Value = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|e| e["stage"] == "ResponseComplete")
        .unwrap();
    event["auditID"] = json!(audit_id);
    event["objectRef"]["name"] = json!(name);
    event
}

fn pod(audit_id: &str, name: &str) -> Value {
    fixture("pod-created.jsonl", audit_id, name)
}

fn event_list(items: Vec<Value>) -> String {
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).to_string()
}

/// A server with the three rules, Slack as the only target, `pod_created`'s budget 2, the
/// `noisy_*` rules silenced, and `extra` TOML at the end; returns it with its data dir.
async fn server_with(slack: &SlackStandIn, extra: &str) -> (Running, TempDir) {
    let dir = TempDir::new().unwrap();
    scripts(
        dir.path(),
        &[
            ("pod_created", POD_CREATED),
            ("exec", EXEC),
            ("noisy_read", NOISY_READ),
        ],
    );
    let toml = format!(
        "{base}[delivery]\ngroup_wait = \"0s\"\n[routing]\ndefault_targets = [\"slack\"]\n\
         [targets.slack]\ntype = \"slack\"\nwebhook_url = \"{url}\"\n\
         [rules.pod_created]\nbudget = 2\n\
         [[silences]]\nrules = [\"noisy_*\"]\nends_at = \"2999-01-01T00:00:00Z\"\ncomment = \"test\"\n{extra}",
        base = base_toml(dir.path()),
        url = slack.url(),
    );
    let config = config_from(&toml, dir.path());
    (start(&config).await, dir)
}

/// One batch whose seven alerts meet every fate: web-1 admitted, then deduplicated twice;
/// web-2 admitted (the budget's second); web-3 folded; bob's shell admitted; carol's read
/// silenced.
fn every_fate() -> String {
    event_list(vec![
        pod("h-1", "web-1"),
        pod("h-2", "web-1"),
        pod("h-3", "web-1"),
        pod("h-4", "web-2"),
        pod("h-5", "web-3"),
        fixture("exec-into-pod.jsonl", "h-6", "web-1"),
        fixture("secret-read.jsonl", "h-7", "db-password"),
    ])
}

async fn alerts(server: &Running, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/api/v1/alerts{query}")).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["alerts"].as_array().unwrap().clone()
}

/// (title, outcome) of each listed alert.
fn fates(alerts: &[Value]) -> Vec<(String, String)> {
    alerts
        .iter()
        .map(|a| {
            let text = |k: &str| a[k].as_str().unwrap().to_owned();
            (text("title"), text("outcome"))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_is_recorded_with_its_outcome_count_and_targets() {
    let slack = SlackStandIn::start().await;
    let (server, _dir) = server_with(&slack, "").await;
    let before = wall_clock_ms();
    let (status, reply) = server.post_json(every_fate()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["alerts"], 7);

    let listed = alerts(&server, "").await;
    assert_eq!(
        fates(&listed),
        pairs(&[
            ("Secret db-password read", "silenced"),
            ("Shell in web-1", "admitted"),
            ("Pod web-3 created", "folded"),
            ("Pod web-2 created", "admitted"),
            ("Pod web-1 created", "deduplicated"),
            ("Pod web-1 created", "admitted"),
        ])
    );
    // web-1's two duplicates came in one batch: one entry with the incident's count.
    let duplicates: Vec<u64> = listed
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap())
        .collect();
    assert_eq!(duplicates, [0, 0, 0, 0, 2, 0]);
    let counts: Vec<u64> = listed
        .iter()
        .map(|a| a["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        [1, 1, 1, 1, 2, 1],
        "the alerts each entry stands for"
    );
    let targets: Vec<&Value> = listed.iter().map(|a| &a["targets"]).collect();
    let slack_only = json!(["slack"]);
    let nowhere = json!([]);
    assert_eq!(
        targets,
        [
            &nowhere,
            &slack_only,
            &slack_only,
            &slack_only,
            &nowhere,
            &slack_only
        ],
        "a folded alert lists where its digest goes"
    );
    for alert in &listed {
        let held_by = match alert["outcome"].as_str() {
            Some("silenced") => json!("config:0"),
            _ => Value::Null,
        };
        assert_eq!(alert["silenced_by"], held_by, "{alert}");
    }

    // The first alert in full, as the contract shapes it.
    let first = &listed[5];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected_keys = [
        "id",
        "raised_at",
        "rule",
        "severity",
        "title",
        "text",
        "labels",
        "fields",
        "attack",
        "dedup_key",
        "event",
        "outcome",
        "silenced_by",
        "duplicates",
        "count",
        "targets",
    ];
    expected_keys.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected_keys);
    assert!(first["id"].as_str().unwrap().starts_with("a-"));
    let raised_at = parse_time_ms(first["raised_at"].as_str().unwrap()).unwrap();
    assert!(raised_at >= before && raised_at <= wall_clock_ms());
    assert_eq!(first["rule"], "pod_created");
    assert_eq!(first["severity"], "info");
    assert_eq!(first["dedup_key"], "Pod web-1 created");
    assert_eq!(first["fields"], json!({"user": "alice"}));
    assert_eq!(
        first["event"],
        json!({
            "audit_id": "h-1", "verb": "create", "resource": "pods", "subresource": "",
            "namespace": "payments", "name": "web-1", "user": "alice",
            "source_ips": ["192.168.10.23"], "cluster": "kubernetes",
            "stage": "ResponseComplete", "code": 201,
        })
    );
    assert_eq!(listed[1]["event"]["subresource"], "exec");
    assert_eq!(listed[1]["event"]["user"], "bob");
    // The admitted ones really went to Slack.
    assert!(!slack.wait_for(1).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_filter_by_rule_severity_time_and_text_and_refuse_bad_parameters() {
    let slack = SlackStandIn::start().await;
    let (server, _dir) = server_with(&slack, "").await;
    assert_eq!(server.post_json(every_fate()).await.0, 200);

    let future = format!("?since={}", format_time_ms(wall_clock_ms() + 60_000));
    let shell = vec!["Shell in web-1"];
    let cases: [(&str, Vec<&str>); 8] = [
        ("?rule=exec", shell.clone()),
        ("?severity=notice", shell.clone()),
        (
            "?since=1h&severity=info&limit=2",
            vec!["Secret db-password read", "Shell in web-1"],
        ),
        (&future, vec![]),
        // Case-insensitive, in titles, texts and field values (alice's pods).
        ("?q=interactive", shell.clone()),
        ("?rule=pod_created&q=web-2", vec!["Pod web-2 created"]),
        (
            "?q=ALICE&rule=pod_created&limit=1",
            vec!["Pod web-3 created"],
        ),
        ("?q=carol", vec![]),
    ];
    for (query, expected) in cases {
        let listed = alerts(&server, query).await;
        let titles: Vec<&str> = listed
            .iter()
            .map(|a| a["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, expected, "{query}");
    }
    // Minimum severity and the hour include everything; alice's five pods match her name.
    assert_eq!(alerts(&server, "?severity=info&since=1h").await.len(), 6);
    assert_eq!(alerts(&server, "?q=Alice").await.len(), 4);

    for (query, parameter) in [
        ("severity=loud", "severity"),
        ("since=soon", "since"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("level=info", "level"),
    ] {
        let (status, body) = server.get(&format!("/api/v1/alerts?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["field"], parameter, "{query}: {body}");
        let reason = body["error"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("{parameter}: ")),
            "{query}: {reason}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_bound_keeps_the_newest() {
    let slack = SlackStandIn::start().await;
    let (server, _dir) = server_with(&slack, "[history]\nmax_entries = 3\n").await;
    for i in 1..=5 {
        let body = event_list(vec![fixture(
            "exec-into-pod.jsonl",
            &format!("s-{i}"),
            &format!("web-{i}"),
        )]);
        assert_eq!(server.post_json(body).await.0, 200);
    }
    let titles: Vec<Value> = alerts(&server, "")
        .await
        .iter()
        .map(|a| a["title"].clone())
        .collect();
    assert_eq!(
        titles,
        [
            json!("Shell in web-5"),
            json!("Shell in web-4"),
            json!("Shell in web-3")
        ]
    );
    server.shutdown().await;
}

/// An entry raised `ago_ms` before now, stored by the outbox itself at that time.
fn stored_long_ago(outbox: &Outbox, title: &str, ago_ms: i64) {
    let at = wall_clock_ms() - ago_ms;
    let raised = Raised {
        seq: 0,
        raised_at_ms: at,
        alert: Alert::new("exec", title),
        outcome: "admitted".to_owned(),
        silenced_by: None,
        duplicates: 0,
        count: 1,
        targets: vec!["slack".to_owned()],
    };
    outbox
        .enqueue_batch(&[], &Processed::default(), vec![raised], at)
        .unwrap();
    outbox.flush_history(at).unwrap();
    let all = HistoryQuery {
        limit: 10,
        ..HistoryQuery::default()
    };
    let found = outbox.history(&all, at).unwrap();
    assert_eq!(found.len(), 1, "stored, as of then");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_the_old_and_the_history_survives_a_restart() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("exec", EXEC)]);
    let toml = format!(
        "{base}[routing]\ndefault_targets = [\"slack\"]\n[targets.slack]\ntype = \"slack\"\n\
         webhook_url = \"{url}\"\n[history]\nretention = \"1h\"\n",
        base = base_toml(dir.path()),
        url = slack.url(),
    );
    let config = config_from(&toml, dir.path());
    // Two hours ago (the outbox clocked by the test): past the server's one-hour retention.
    let outbox = Arc::new(Outbox::open(&config.serve.outbox_path).unwrap());
    outbox.set_history(HistorySettings::default());
    stored_long_ago(&outbox, "Shell two hours ago", 2 * 3_600_000);

    let server = start_with_outbox(&config, outbox).await;
    let body = event_list(vec![fixture("exec-into-pod.jsonl", "r-1", "web-1")]);
    assert_eq!(server.post_json(body).await.0, 200);
    let titles =
        |alerts: Vec<Value>| -> Vec<Value> { alerts.iter().map(|a| a["title"].clone()).collect() };
    assert_eq!(titles(alerts(&server, "").await), [json!("Shell in web-1")]);
    server.shutdown().await;

    let again = start(&config).await;
    let listed = alerts(&again, "").await;
    assert_eq!(titles(listed.clone()), [json!("Shell in web-1")]);
    assert_eq!(listed[0]["event"]["audit_id"], "r-1");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_the_history_of_a_running_server_with_its_credentials() {
    let slack = SlackStandIn::start().await;
    let (server, dir) =
        server_with(&slack, "[server.auth]\nbearer_token = \"history-token\"\n").await;
    let post = reqwest::Client::new()
        .post(format!("{}/audit", server.base))
        .bearer_auth("history-token")
        .body(every_fate())
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let (status, _) = server.get("/api/v1/alerts").await;
    assert_eq!(
        status, 401,
        "the history is behind the webhook's authentication"
    );

    let config = dir.path().join("klaxon.toml");
    let run = |args: &[&str]| {
        let mut cmd = klaxon_command(dir.path());
        cmd.args([
            "alerts",
            "list",
            "--config",
            config.to_str().unwrap(),
            "--url",
            &server.base,
        ]);
        cmd.args(args);
        cmd.output().unwrap()
    };
    let json_run =
        tokio::task::block_in_place(|| run(&["--format", "json", "--rule", "pod_created"]));
    assert!(
        json_run.status.success(),
        "{}",
        String::from_utf8_lossy(&json_run.stderr)
    );
    let body: Value = serde_json::from_slice(&json_run.stdout).unwrap();
    let listed = body["alerts"].as_array().unwrap();
    assert_eq!(
        fates(listed),
        pairs(&[
            ("Pod web-3 created", "folded"),
            ("Pod web-2 created", "admitted"),
            ("Pod web-1 created", "deduplicated"),
            ("Pod web-1 created", "admitted"),
        ])
    );

    let human =
        tokio::task::block_in_place(|| run(&["--since", "1h", "--query", "web-1", "--limit", "3"]));
    assert!(
        human.status.success(),
        "{}",
        String::from_utf8_lossy(&human.stderr)
    );
    let text = String::from_utf8(human.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("RAISED"), "{text}");
    assert!(
        lines[1].contains("admitted") && lines[1].contains("Shell in web-1"),
        "{text}"
    );
    assert!(
        lines[2].contains("deduplicated ×2") && lines[2].contains("Pod web-1 created"),
        "{text}"
    );
    assert!(
        lines[3].contains("admitted") && lines[3].contains("Pod web-1 created"),
        "{text}"
    );

    let refused = tokio::task::block_in_place(|| run(&["--severity", "loud"]));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("severity: "),
        "{stderr}"
    );
    server.shutdown().await;
}
