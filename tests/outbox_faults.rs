//! The outbox heals itself, in a running server: an I/O error injected into the outbox
//! (a storage backend whose writes fail on demand) turns batches that raise alerts into
//! 503 + Retry-After and `/readyz` into 503 with the reason; once the fault clears, every
//! alert (stored before the fault, or re-sent after it) reaches the Slack stand-in without a
//! restart. `/healthz` fails once the outbox has been broken for `outbox.unhealthy_after`.
//! A real full disk (a small tmpfs; the test needs root to mount it) behaves the same.
//!
//! The tests share the process's metrics recorder, so they run one at a time (`SERIAL`).

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use klaxon::outbox::Outbox;
use klaxon::outbox::testing::FaultSwitch;
use serde_json::{Value, json};
use support::klaxon::{Running, config_from, scripts, start, start_with_outbox};
use support::slack::{Mode, SlackStandIn};
use support::tmpfs::{Tmpfs, fill};
use tempfile::TempDir;

/// One test at a time: the gauges in `/metrics` belong to the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One alert per created object, keyed by its auditID (so every event is its own incident
/// and its own notice).
const RULE: &str = r#"
if event.verb == "create" {
    alert(#{
        title: `created ${event.auditID}`,
        severity: "warning",
        dedup_key: event.auditID,
        group_key: event.auditID,
    });
}
"#;

/// A config for `dir` with everything routed to the stand-in; `extra` goes into `[outbox]`.
fn toml(dir: &Path, outbox: &Path, slack_url: &str, extra: &str) -> String {
    format!(
        r#"
cluster_name = "test"
[server]
listen = "127.0.0.1:0"
retry_after_secs = 2
[scripts]
dirs = ["{dir}/scripts"]
[delivery]
group_wait = "0s"
retry_base = "100ms"
retry_cap = "400ms"
drain_timeout = "5s"
poll_interval = "100ms"
[routing]
default_targets = ["slack"]
[targets.slack]
type = "slack"
webhook_url = "{slack_url}"
[outbox]
path = "{outbox}"
{extra}
"#,
        dir = dir.display(),
        outbox = outbox.display(),
    )
}

/// A create event with this auditID (an EventList item; with `kind` and `apiVersion` a
/// line of the apiserver's log backend).
fn event(id: &str) -> Value {
    json!({
        "auditID": id,
        "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api",
        "verb": "create",
        "objectRef": {"resource": "configmaps", "namespace": "payments"},
        "user": {"username": "alice"},
        "stageTimestamp": "2026-11-20T10:00:00.000000Z"
    })
}

/// An EventList of create events with these auditIDs.
fn batch(ids: &[&str]) -> String {
    let items: Vec<Value> = ids.iter().map(|id| event(id)).collect();
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).to_string()
}

/// A server's answer: status, `Retry-After`, JSON body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn post(server: &Running, body: &str) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{}/audit", server.base))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn get(server: &Running, path: &str) -> Answer {
    answer(
        reqwest::get(format!("{}{path}", server.base))
            .await
            .unwrap(),
    )
    .await
}

/// Asserts a 503 with an integer `Retry-After` of the configured 2 s.
fn assert_unavailable(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert_eq!(
        answer.retry_after.as_deref(),
        Some("2"),
        "{what}: integer Retry-After expected"
    );
}

/// Calls `probe` every 50 ms until it returns `Some`, for at most 30 s.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of an unlabelled metric in `/metrics`.
async fn metric(server: &Running, name: &str) -> Option<f64> {
    support::metrics::scrape(&server.base, name).await
}

/// Titles of the alerts the stand-in accepted.
fn delivered(slack: &SlackStandIn) -> BTreeSet<String> {
    let headers = slack.messages();
    let headers = headers
        .iter()
        .filter_map(|m| m["blocks"][0]["text"]["text"].as_str())
        .filter_map(|h| h.split_once(' ').map(|(_, title)| title.to_owned()));
    headers.collect()
}

/// Waits until the stand-in has accepted every one of `titles`.
async fn wait_delivered(slack: &SlackStandIn, titles: &[&str]) {
    eventually("every alert delivered", || async {
        let got = delivered(slack);
        titles.iter().all(|t| got.contains(*t)).then_some(())
    })
    .await;
}

/// Re-POSTs `body` until it is stored (200); every answer before that is a 503 with
/// Retry-After (the outbox may still wait for its next reopen).
async fn post_until_stored(server: &Running, body: &str) -> Answer {
    eventually("the batch stored again", || async {
        let answer = post(server, body).await;
        if answer.status != 200 {
            assert_unavailable(&answer, "retried batch while the outbox reopens");
        }
        (answer.status == 200).then_some(answer)
    })
    .await
}

/// Waits until `/readyz` answers 200 (the outbox reopens by itself).
async fn wait_ready(server: &Running) {
    eventually("/readyz 200", || async {
        (get(server, "/readyz").await.status == 200).then_some(())
    })
    .await;
}

/// Asserts that a re-sent batch's alert was stored, naming the known cause when not.
fn assert_stored(reply: &Value) {
    assert_eq!(
        reply["queued"], 1,
        "the retried batch's alert must be stored; `queued: 0` means the failed attempt left \
         dedup state behind and the retry was judged a duplicate: {reply}"
    );
}

/// A server whose outbox lies on a [`FaultSwitch`], with Slack down until the test says;
/// `extra(dir)` is added to its config.
async fn start_on_a_faulty_outbox(
    extra: impl Fn(&Path) -> String,
) -> (SlackStandIn, TempDir, FaultSwitch, Arc<Outbox>, Running) {
    let slack = SlackStandIn::start().await;
    slack.set_mode(Mode::Unavailable(usize::MAX));
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("created", RULE)]);
    let data = dir.path().join("data");
    let extra = extra(dir.path());
    let config = config_from(&toml(dir.path(), &data, &slack.url(), &extra), dir.path());
    let switch = FaultSwitch::new();
    let outbox = Arc::new(Outbox::open_with_backend(&data, switch.backend()).unwrap());
    let server = start_with_outbox(&config, outbox.clone()).await;
    (slack, dir, switch, outbox, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_fault_is_ridden_out_and_every_alert_is_delivered_without_a_restart() {
    let _serial = SERIAL.lock().await;
    let (slack, _dir, switch, outbox, server) = start_on_a_faulty_outbox(|_| String::new()).await;

    // Two alerts stored while Slack is down: they wait in the outbox, retried.
    let first = post(&server, &batch(&["a-1", "a-2"])).await;
    assert_eq!((first.status, &first.body["queued"]), (200, &json!(2)));
    slack.wait_for_requests(2).await;

    switch.fail_writes();
    let refused = post(&server, &batch(&["b-1"])).await;
    assert_unavailable(
        &refused,
        "a batch raising an alert while the outbox is broken",
    );
    assert!(!outbox.health().is_healthy());
    let ready = get(&server, "/readyz").await;
    assert_unavailable(&ready, "/readyz while the outbox is broken");
    let reason = ready.body["outbox"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("I/O error"), "reason: {}", ready.body);
    assert_eq!(ready.body["ready"], false);
    assert_eq!(metric(&server, "klaxon_outbox_healthy").await, Some(0.0));
    let health = get(&server, "/healthz").await;
    assert_eq!(health.status, 200, "not broken for 5 min yet");

    // The fault clears, Slack comes back: no restart.
    switch.heal();
    slack.set_mode(Mode::Up);
    let stored = post_until_stored(&server, &batch(&["b-1"])).await;
    assert_stored(&stored.body);
    wait_delivered(&slack, &["created a-1", "created a-2", "created b-1"]).await;
    assert!(outbox.health().is_healthy());
    let ready = get(&server, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["outbox"]["healthy"], true);
    eventually("klaxon_outbox_pending back to 0", || async {
        (metric(&server, "klaxon_outbox_pending").await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(metric(&server, "klaxon_outbox_healthy").await, Some(1.0));
    let reopens = metric(&server, "klaxon_outbox_reopens_total").await;
    assert!(reopens.is_some_and(|n| n >= 1.0), "reopens: {reopens:?}");
    server.shutdown().await;
}

/// A disk that fails in the middle of a commit, after its commit record reached the file
/// (redb's second sync succeeds, what follows fails): the batch is answered 503, yet the
/// file holds it. The apiserver's retry must be skipped, not raise its alerts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stored_by_a_commit_that_failed_part_way_is_not_raised_again_by_its_retry() {
    let _serial = SERIAL.lock().await;
    let (slack, _dir, switch, outbox, server) = start_on_a_faulty_outbox(|_| String::new()).await;

    switch.fail_after_syncs(2);
    let body = batch(&["s-1", "s-2"]);
    let refused = post(&server, &body).await;
    assert_unavailable(&refused, "a batch whose commit failed part-way");
    switch.heal();
    wait_ready(&server).await;
    assert_eq!(
        outbox.pending("slack", 10).unwrap().len(),
        2,
        "the failed commit reached the file"
    );
    let retried = post_until_stored(&server, &body).await;
    assert_eq!(
        (&retried.body["duplicates"], &retried.body["queued"]),
        (&json!(2), &json!(0)),
        "the retry is recognised as stored: {}",
        retried.body
    );
    slack.set_mode(Mode::Up);
    wait_delivered(&slack, &["created s-1", "created s-2"]).await;
    // The stand-in has both before the dispatcher records them delivered: wait for that.
    eventually("both deliveries recorded", || async {
        outbox
            .pending("slack", 10)
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(delivered(&slack).len(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_once_the_outbox_stays_broken_past_unhealthy_after() {
    let _serial = SERIAL.lock().await;
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("created", RULE)]);
    let data = dir.path().join("data");
    let extra = "unhealthy_after = \"1s\"";
    let config = config_from(&toml(dir.path(), &data, &slack.url(), extra), dir.path());
    let switch = FaultSwitch::new();
    let outbox = Arc::new(Outbox::open_with_backend(&data, switch.backend()).unwrap());
    let server = start_with_outbox(&config, outbox).await;
    assert_eq!(get(&server, "/healthz").await.status, 200);

    switch.fail_writes();
    let refused = post(&server, &batch(&["c-1"])).await;
    assert_unavailable(
        &refused,
        "a batch raising an alert while the outbox is broken",
    );
    let broken_at = Instant::now();
    let unhealthy = eventually("/healthz 503", || async {
        let health = get(&server, "/healthz").await;
        (health.status != 200).then_some(health)
    })
    .await;
    assert!(
        broken_at.elapsed() >= Duration::from_millis(900),
        "too early"
    );
    assert_unavailable(&unhealthy, "/healthz past unhealthy_after");
    let reason = unhealthy.body["outbox"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("I/O error"), "reason: {}", unhealthy.body);

    // Once the fault clears, the outbox reopens by itself and the pod is alive again.
    switch.heal();
    eventually("/healthz 200 again", || async {
        (get(&server, "/healthz").await.status == 200).then_some(())
    })
    .await;
    wait_ready(&server).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_answered_503_and_the_retry_after_space_is_freed_is_delivered() {
    let _serial = SERIAL.lock().await;
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("created", RULE)]);
    let data = dir.path().join("data");
    let tmpfs = Tmpfs::mount(&data, "4m");
    let config = config_from(&toml(dir.path(), &data, &slack.url(), ""), dir.path());
    let server = start(&config).await;
    let first = post(&server, &batch(&["d-0"])).await;
    assert_eq!(first.status, 200, "{}", first.body);
    wait_delivered(&slack, &["created d-0"]).await;

    let filler = data.join("filler");
    fill(&filler);
    let body = batch(&["d-1"]);
    let refused = post(&server, &body).await;
    assert_unavailable(&refused, "a batch raising an alert on a full disk");
    let ready = get(&server, "/readyz").await;
    assert_unavailable(&ready, "/readyz on a full disk");

    std::fs::remove_file(&filler).unwrap();
    let stored = post_until_stored(&server, &body).await;
    assert_stored(&stored.body);
    wait_delivered(&slack, &["created d-0", "created d-1"]).await;
    wait_ready(&server).await;
    server.shutdown().await;
    drop(tmpfs);
}

#[test]
fn unhealthy_after_must_be_positive_and_its_line_is_named() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("klaxon.toml");
    std::fs::write(
        &path,
        "[outbox]\npath = \"data\"\nunhealthy_after = \"0s\"\n",
    )
    .unwrap();
    let err = klaxon::config::load(Some(&path)).unwrap_err().to_string();
    assert!(
        err.contains("klaxon.toml:3")
            && err.contains("outbox.unhealthy_after: must be greater than 0"),
        "{err}"
    );
    std::fs::write(&path, "[outbox]\nunhealthy_after = \"2m\"\n").unwrap();
    let config = klaxon::config::load(Some(&path)).unwrap();
    assert_eq!(
        config.serve.server.outbox_unhealthy_after,
        Duration::from_secs(120)
    );
}

/// A Slack-like webhook that breaks the outbox's disk as it accepts its first message, so
/// that klaxon cannot remove what it just delivered; records every message's title.
async fn slack_that_breaks_the_disk(switch: FaultSwitch) -> (String, Arc<Mutex<Vec<String>>>) {
    let titles: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = titles.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            let switch = switch.clone();
            async move {
                let message: Value = serde_json::from_slice(&body).unwrap_or_default();
                let title = message["blocks"][0]["text"]["text"].as_str().unwrap_or("");
                let mut seen = seen.lock().unwrap();
                if seen.is_empty() {
                    switch.fail_writes();
                }
                seen.push(title.split_once(' ').map_or("", |t| t.1).to_owned());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, titles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_delivered_while_the_outbox_cannot_remove_it_is_not_sent_again() {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("created", RULE)]);
    let data = dir.path().join("data");
    let switch = FaultSwitch::new();
    let (url, titles) = slack_that_breaks_the_disk(switch.clone()).await;
    let config = config_from(&toml(dir.path(), &data, &url, ""), dir.path());
    let outbox = Arc::new(Outbox::open_with_backend(&data, switch.backend()).unwrap());
    let server = start_with_outbox(&config, outbox.clone()).await;
    let first = post(&server, &batch(&["c-1"])).await;
    assert_eq!(first.status, 200, "{}", first.body);
    // Delivered; its removal fails: the outbox breaks.
    eventually("the outbox broken by the delivery", || async {
        (!outbox.health().is_healthy()).then_some(())
    })
    .await;
    switch.heal();
    let second = post_until_stored(&server, &batch(&["c-2"])).await;
    assert_stored(&second.body);
    // Per target, notices go out in order: had c-1 been sent again, it would come first.
    eventually("the second notice", || async {
        (titles.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    assert_eq!(
        *titles.lock().unwrap(),
        ["created c-1", "created c-2"],
        "each notice exactly once"
    );
    eventually("klaxon_outbox_pending back to 0", || async {
        (outbox.sizes().ok()?.pending == 0).then_some(())
    })
    .await;
    server.shutdown().await;
}

/// A followed file's lines while the outbox is broken: the chunk is not stored, the
/// position stays where it was, and the same lines are offered again after a backoff
/// until the outbox is back: every line once, none skipped, no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_file_loses_no_line_while_the_outbox_is_broken() {
    let _serial = SERIAL.lock().await;
    let follow = |dir: &Path| {
        format!(
            "[[sources.file]]\npath = \"{}/audit.log\"\nstart_at = \"beginning\"\n",
            dir.display()
        )
    };
    let (slack, dir, switch, outbox, server) = start_on_a_faulty_outbox(follow).await;
    slack.set_mode(Mode::Up);
    switch.fail_writes();
    let ids = ["f-1", "f-2", "f-3", "f-4"];
    let mut lines = String::new();
    for id in ids {
        let mut line = event(id);
        line["kind"] = json!("Event");
        line["apiVersion"] = json!("audit.k8s.io/v1");
        lines.push_str(&format!("{line}\n"));
    }
    std::fs::write(dir.path().join("audit.log"), lines).unwrap();
    eventually("the outbox broken by the follower's write", || async {
        (!outbox.health().is_healthy()).then_some(())
    })
    .await;
    assert!(slack.messages().is_empty());
    switch.heal();
    let titles: Vec<String> = ids.iter().map(|id| format!("created {id}")).collect();
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    wait_delivered(&slack, &titles).await;
    eventually("klaxon_outbox_pending back to 0", || async {
        (outbox.sizes().ok()?.pending == 0).then_some(())
    })
    .await;
    assert_eq!(slack.messages().len(), ids.len(), "each alert exactly once");
    server.shutdown().await;
}
