//! Delivery against the Slack stand-in, over loopback, with the durable outbox: a flood is
//! paced to Slack's limit with every alert accounted for; an outage is ridden out with
//! every alert delivered once, in order; Retry-After is honoured; a removed webhook
//! dead-letters and `klaxon outbox retry` delivers once it is back.

use crate::support;

use std::path::Path;

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::{Value, json};
use support::klaxon::{config_from, scripts, start};
use support::slack::{Mode, SlackStandIn};
use tempfile::TempDir;

/// A config for `dir` with everything routed to the stand-in; `extra` is appended.
fn toml(dir: &Path, slack_url: &str, extra: &str) -> String {
    format!(
        r#"
cluster_name = "test"
[server]
listen = "127.0.0.1:0"
[scripts]
dirs = ["{dir}/scripts"]
[outbox]
path = "{dir}/data"
[delivery]
group_wait = "0s"
retry_base = "100ms"
retry_cap = "400ms"
drain_timeout = "30s"
poll_interval = "100ms"
[routing]
default_targets = ["slack"]
[targets.slack]
type = "slack"
webhook_url = "{slack_url}"
{extra}
"#,
        dir = dir.display()
    )
}

/// `n` create events in `namespaces` (round robin), auditIDs `e-0000`…, as an EventList.
fn events(n: usize, namespaces: &[&str]) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "auditID": format!("e-{i:04}"),
                "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api",
                "verb": "create",
                "objectRef": {"resource": "configmaps", "namespace": namespaces[i % namespaces.len()]},
                "user": {"username": "alice"},
                "stageTimestamp": "2026-11-20T10:00:00.000000Z"
            })
        })
        .collect();
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).to_string()
}

/// Alerts a message stands for: a digest's count, a budget digest's folded count, else 1.
fn alerts_in(message: &Value) -> u64 {
    let header = message["blocks"][0]["text"]["text"].as_str().unwrap_or("");
    let words: Vec<&str> = header.split_whitespace().collect();
    if let Some(pos) = words.iter().position(|w| *w == "fired") {
        return words[pos + 1].parse().unwrap();
    }
    if words.get(2) == Some(&"alerts:") {
        return words[1].parse().unwrap();
    }
    1
}

/// The title of a single-alert message (its header without the severity emoji).
fn title(message: &Value) -> String {
    let header = message["blocks"][0]["text"]["text"].as_str().unwrap();
    header.split_once(' ').unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_paced_to_slacks_limit_and_every_alert_is_accounted_for() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let rule = |name: &str| {
        format!(
            r#"if event.verb == "create" {{ alert(#{{ title: `{name} ${{event.auditID}}`, severity: "warning" }}); }}"#
        )
    };
    let (a, b, c) = (rule("a"), rule("b"), rule("c"));
    scripts(dir.path(), &[("a", &a), ("b", &b), ("c", &c)]);
    let config = config_from(
        &toml(
            dir.path(),
            &slack.url(),
            "group_wait = \"1s\"\n[rule_defaults]\nbudget = 30\nbudget_window = \"2s\"",
        ),
        dir.path(),
    );
    let server = start(&config).await;
    // 100 events × 3 rules = 300 alerts over two namespaces, in four batches.
    let all = events(100, &["payments", "search"]);
    let items: Vec<Value> = serde_json::from_str::<Value>(&all).unwrap()["items"]
        .as_array()
        .unwrap()
        .clone();
    for chunk in items.chunks(25) {
        let body = json!({"kind": "EventList", "items": chunk}).to_string();
        assert_eq!(server.post(body).await, 200);
    }
    // Wait until every alert shows up in Slack: 90 within budget, 210 in three digests.
    loop {
        let messages = slack.wait_for(slack.messages().len() + 1).await;
        let total: u64 = messages.iter().map(alerts_in).sum();
        assert!(total <= 300, "more alerts than raised: {total}");
        if total == 300 {
            break;
        }
    }
    server.shutdown().await;
    let messages = slack.messages();
    let digests: Vec<String> = messages
        .iter()
        .map(title)
        .filter(|t| t.contains("fired 70 more times"))
        .collect();
    assert_eq!(digests.len(), 3, "{digests:?}");
    assert!(slack.rate_limited() <= 1, "429s: {}", slack.rate_limited());
    assert!(slack.rejections().is_empty(), "{:?}", slack.rejections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_ridden_out_and_every_alert_arrives_once_in_order() {
    let slack = SlackStandIn::start().await;
    slack.set_mode(Mode::Unavailable(5));
    let dir = TempDir::new().unwrap();
    scripts(
        dir.path(),
        &[(
            "each",
            r#"alert(#{ title: event.auditID, group_key: event.auditID });"#,
        )],
    );
    let config = config_from(
        &toml(dir.path(), &slack.url(), "rate = 100.0\nburst = 100"),
        dir.path(),
    );
    let server = start(&config).await;
    assert_eq!(server.post(events(12, &["ns"])).await, 200);
    let messages = slack.wait_for(12).await;
    server.shutdown().await;
    let titles: Vec<String> = messages.iter().map(title).collect();
    let expected: Vec<String> = (0..12).map(|i| format!("e-{i:04}")).collect();
    assert_eq!(titles, expected);
    assert_eq!(slack.messages().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_when_slack_rate_limits() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(
        dir.path(),
        &[(
            "each",
            r#"alert(#{ title: event.auditID, group_key: event.auditID });"#,
        )],
    );
    // Paced far faster than Slack allows: Slack's 429s and Retry-After must slow it down.
    let config = config_from(
        &toml(dir.path(), &slack.url(), "rate = 50.0\nburst = 50"),
        dir.path(),
    );
    let server = start(&config).await;
    assert_eq!(server.post(events(6, &["ns"])).await, 200);
    let messages = slack.wait_for(6).await;
    server.shutdown().await;
    let titles: Vec<String> = messages.iter().map(title).collect();
    let expected: Vec<String> = (0..6).map(|i| format!("e-{i:04}")).collect();
    assert_eq!(titles, expected);
    let limited = slack.rate_limited();
    assert!((1..=3).contains(&limited), "429s: {limited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_webhook_dead_letters_and_outbox_retry_delivers_it() {
    let slack = SlackStandIn::start().await;
    slack.set_mode(Mode::Archived);
    let dir = TempDir::new().unwrap();
    scripts(
        dir.path(),
        &[("each", r#"alert(#{ title: event.auditID });"#)],
    );
    let config_text = toml(dir.path(), &slack.url(), "");
    let config = config_from(&config_text, dir.path());
    let server = start(&config).await;
    assert_eq!(server.post(events(1, &["ns"])).await, 200);

    // The 410 is permanent: wait until the entry is a dead letter.
    let config_path = dir.path().join("klaxon.toml");
    let list = |json: bool| {
        let mut cmd = cargo_bin_cmd!("klaxon");
        cmd.args(["--config", config_path.to_str().unwrap(), "outbox", "list"]);
        if json {
            cmd.arg("--json");
        }
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    };
    slack.wait_for_requests(1).await;
    // The answer is in; the outbox update follows within moments.
    while !list(true).contains(r#""state":"dead""#) {
        tokio::task::yield_now().await;
    }
    let table = list(false);
    assert!(table.contains("dead letters: 1"), "{table}");
    assert!(table.contains("HTTP 410: channel_is_archived"), "{table}");
    assert!(slack.messages().is_empty());

    // Fixed: retry it while the daemon runs; its delivery task picks it up.
    slack.set_mode(Mode::Up);
    cargo_bin_cmd!("klaxon")
        .args([
            "--config",
            config_path.to_str().unwrap(),
            "outbox",
            "retry",
            "--all",
        ])
        .assert()
        .success()
        .stdout("1 dead letter queued for delivery\n");
    let messages = slack.wait_for(1).await;
    server.shutdown().await;
    assert_eq!(title(&messages[0]), "e-0000");
    assert!(list(false).contains("pending: 0\ndead letters: 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_receiver_refusing_with_400_dead_letters_and_retry_by_id_delivers() {
    use support::receiver::{Answer, Receiver};
    let receiver = Receiver::start().await;
    receiver.answer(Answer::new(400, "bad payload"));
    let dir = TempDir::new().unwrap();
    scripts(
        dir.path(),
        &[("each", r#"alert(#{ title: event.auditID });"#)],
    );
    let config_text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[scripts]
dirs = ["{dir}/scripts"]
[outbox]
path = "{dir}/data"
[delivery]
group_wait = "0s"
poll_interval = "100ms"
[routing]
default_targets = ["hook"]
[targets.hook]
type = "http"
url = "{url}"
headers = {{ "X-Team" = "platform" }}
bearer_token_file = "{dir}/token"
"#,
        dir = dir.path().display(),
        url = receiver.url("/hook")
    );
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let config = config_from(&config_text, dir.path());
    let server = start(&config).await;
    assert_eq!(server.post(events(1, &["ns"])).await, 200);
    let first = receiver.wait_for(1).await;
    assert_eq!(first[0].header("authorization"), "Bearer s3cret");
    assert_eq!(first[0].header("x-team"), "platform");
    assert_eq!(first[0].json()["version"], "klaxon.v1");
    assert_eq!(first[0].json()["alerts"][0]["title"], "e-0000");

    let config_path = dir.path().join("klaxon.toml");
    let list = || {
        let out = cargo_bin_cmd!("klaxon")
            .args([
                "--config",
                config_path.to_str().unwrap(),
                "outbox",
                "list",
                "--json",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let dead_id = loop {
        let listed = list();
        if let Some(line) = listed.lines().find(|l| l.contains(r#""state":"dead""#)) {
            let letter: Value = serde_json::from_str(line).unwrap();
            assert!(
                letter["letter"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("HTTP 400")
            );
            break letter["letter"]["entry"]["id"].as_u64().unwrap();
        }
        tokio::task::yield_now().await;
    };

    receiver.answer(Answer::new(200, "ok"));
    cargo_bin_cmd!("klaxon")
        .args(["--config", config_path.to_str().unwrap(), "outbox", "retry"])
        .arg(dead_id.to_string())
        .assert()
        .success();
    let all = receiver.wait_for(2).await;
    server.shutdown().await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].json()["alerts"][0]["title"], "e-0000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_past_the_retry_budget_become_dead_letters() {
    let slack = SlackStandIn::start().await;
    slack.set_mode(Mode::Unavailable(usize::MAX));
    let dir = TempDir::new().unwrap();
    scripts(
        dir.path(),
        &[("each", r#"alert(#{ title: event.auditID });"#)],
    );
    let config = config_from(
        &toml(dir.path(), &slack.url(), "").replace(
            "drain_timeout = \"30s\"",
            "drain_timeout = \"30s\"\nretry_budget = \"300ms\"",
        ),
        dir.path(),
    );
    let server = start(&config).await;
    assert_eq!(server.post(events(1, &["ns"])).await, 200);
    // 503s are retried (100 ms, then up to 400 ms apart) until the first failure is 300 ms old.
    slack.wait_for_requests(3).await;
    let outbox = klaxon::outbox::Outbox::open(&config.serve.outbox_path).unwrap();
    let letter = loop {
        if let Some(letter) = outbox.dead_letters().unwrap().pop() {
            break letter;
        }
        tokio::task::yield_now().await;
    };
    server.shutdown().await;
    assert!(
        letter
            .reason
            .starts_with("retry budget of 300ms exhausted; last error: HTTP 503"),
        "{}",
        letter.reason
    );
    assert!(letter.entry.attempts >= 2, "{:?}", letter.entry);
    assert!(slack.messages().is_empty());
}
