//! Nothing lost under faults, against a sender that behaves like the kube-apiserver's
//! webhook backend (tests/support/apiserver.rs: batches, every failed attempt retried with
//! the apiserver's backoff scaled down, `Retry-After` honoured within an attempt, a batch
//! dropped after 5 attempts). Each scenario streams events that each raise one alert,
//! injects a fault in the middle, and checks that every alert reaches the Slack stand-in
//! and that no batch was dropped. The figures each prints are in docs/RELIABILITY.md.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klaxon::outbox::Outbox;
use klaxon::outbox::testing::FaultSwitch;
use serde_json::{Value, json};
use support::alerts;
use support::apiserver::{ApiserverSender, ApiserverSettings, SendReport};
use support::certs::Ca;
use support::klaxon::{config_from, start_with_outbox};
use support::process::Daemon;
use support::redis::RedisServer;
use support::slack::SlackStandIn;
use support::tmpfs::{Tmpfs, fill};
use support::trickle::trickle;
use tempfile::TempDir;
use tokio::sync::watch;

/// Alert ids (and titles) start with this.
const PREFIX: &str = "rel-";

/// The apiserver's waits at a fifth: attempts after 2, 3, 4.5 and 6.75 s (+ jitter), so a
/// batch survives a fault of about 16 s, as the real one survives about 80 s.
const SCALE: f64 = 0.2;

/// An audit event whose alert is titled `rel-NNNNN`.
fn event(i: usize) -> Value {
    json!({
        "auditID": format!("{PREFIX}{i:05}"),
        "stage": "ResponseComplete",
        "verb": "create",
        "level": "Metadata",
        "requestURI": "/api/v1/namespaces/rel/configmaps",
        "objectRef": {"resource": "configmaps", "namespace": "rel", "apiVersion": "v1"},
        "user": {"username": "alice"},
        "stageTimestamp": "2026-12-03T08:00:00.000000Z",
    })
}

fn events(range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(event).collect()
}

/// The rule: one alert per event, titled with its auditID, after some work (so that a
/// batch takes a little while to evaluate and a kill can land inside one).
const RULE: &str = r#"
let work = 0;
for i in 0..500 { work += i; }
alert(#{ title: event.auditID, dedup_key: event.auditID });
"#;

/// The config of [`setup`], with the outbox in `data`.
fn config_text(dir: &Path, data: &Path, slack: &SlackStandIn) -> String {
    format!(
        "[scripts]\ndirs = [\"{scripts}\"]\n[outbox]\npath = \"{data}\"\n\
         [delivery]\ngroup_wait = \"1s\"\nmax_alerts_per_notice = 45\npoll_interval = \"200ms\"\n\
         [rule_defaults]\nbudget = 100000\n\
         [routing]\ndefault_targets = [\"slack\"]\n\
         [targets.slack]\ntype = \"slack\"\nwebhook_url = \"{url}\"\n",
        scripts = dir.join("scripts").display(),
        data = data.display(),
        url = slack.url()
    )
}

/// A config directory: the rule, the outbox under `data`, Slack as the only target, a
/// short group window, digests of at most 45 alerts (all listed in one message), and a
/// budget no stream reaches (each alert is to be seen on its own).
fn setup(dir: &Path, slack: &SlackStandIn) -> String {
    setup_with_outbox(dir, &dir.join("data"), slack)
}

/// [`setup`] with the outbox in `data`.
fn setup_with_outbox(dir: &Path, data: &Path, slack: &SlackStandIn) -> String {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("each.rhai"), RULE).unwrap();
    let config = dir.join("klaxon.toml");
    std::fs::write(&config, config_text(dir, data, slack)).unwrap();
    config.to_str().unwrap().to_owned()
}

/// Small batches, so that a stream of a few hundred events lasts seconds at the
/// apiserver's throttle (10 batches/s, burst 15).
fn apiserver() -> ApiserverSettings {
    ApiserverSettings {
        max_batch_size: 10,
        ..ApiserverSettings::scaled(SCALE)
    }
}

/// Waits until `done` holds, asking every 20 ms, for at most `limit`.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every one of `expected` reached Slack; returns how many messages carried
/// each id.
async fn wait_for_alerts(slack: &SlackStandIn, expected: &[String]) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = alerts::delivered(&slack.messages(), PREFIX);
        if expected.iter().all(|id| got.contains_key(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} alerts reached Slack in {} messages ({} answered 429, rejected: {:?}); first missing: {:?}",
            got.len(),
            expected.len(),
            slack.messages().len(),
            slack.rate_limited(),
            slack.rejections(),
            expected.iter().find(|id| !got.contains_key(*id)),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alerts::delivered(&slack.messages(), PREFIX)
}

/// Checks that nothing was dropped or lost; returns the ids delivered more than once.
fn assert_nothing_lost(
    report: &SendReport,
    delivered: &BTreeMap<String, usize>,
    expected: &[String],
) -> Vec<String> {
    assert_eq!(
        report.dropped_batches, 0,
        "the apiserver dropped batches: {report:?}"
    );
    assert_eq!(report.delivered_batches, report.batches);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "alerts never delivered: {missing:?}");
    let unexpected: Vec<&String> = delivered
        .keys()
        .filter(|id| !expected.contains(id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "alerts that were never raised: {unexpected:?}"
    );
    delivered
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect()
}

fn figures(scenario: &str, events: usize, report: &SendReport, duplicates: usize) {
    let failed = report.statuses.iter().filter(|s| **s != 200).count();
    eprintln!(
        "figures {scenario}: events {events}, batches {}, attempts {}, requests {}, \
         failed answers {failed}, dropped batches {}, alerts delivered {}, duplicates {duplicates}",
        report.batches, report.attempts, report.requests, report.dropped_batches, events,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_stream_and_restart_five_seconds_later_loses_nothing() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let config = setup(dir.path(), &slack);
    let first = tokio::task::block_in_place(|| Daemon::start(&["--config", &config], &[]));
    let addr = first.addr.clone();
    let sender = ApiserverSender::new(format!("http://{addr}/audit"), apiserver());
    const N: usize = 600;
    let stream = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(events(0..N)).await }
    });
    // In the middle of the stream: a third of the batches answered, others in flight.
    wait_until(Duration::from_secs(30), "a third of the stream", || {
        sender.report().delivered_batches >= N / 10 / 3
    })
    .await;
    first.signal("-KILL");
    drop(first);
    let at_kill = sender.report();
    assert!(
        at_kill.delivered_batches < N / 10,
        "the kill came after the stream"
    );
    // The fault lasts 5 s: the apiserver's attempts meanwhile are refused.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second =
        tokio::task::block_in_place(|| Daemon::start_listening(&["--config", &config], &[], &addr));
    let report = stream.await.unwrap();
    let expected = alerts::expected(PREFIX, N);
    let delivered = wait_for_alerts(&slack, &expected).await;
    second.signal("-TERM");
    let duplicates = assert_nothing_lost(&report, &delivered, &expected);
    assert!(
        report.statuses.contains(&0),
        "no attempt met the dead daemon: the kill was not mid-stream"
    );
    figures("kill -9", N, &report, duplicates.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_mid_stream_two_replicas_lose_nothing() {
    let slack = SlackStandIn::start().await;
    let redis = RedisServer::start();
    let dir = TempDir::new().unwrap();
    let config = setup(dir.path(), &slack);
    let replica = |n: usize| {
        let data = dir.path().join(format!("data-{n}"));
        let envs = [
            ("KLAXON_OUTBOX__PATH", data.to_str().unwrap().to_owned()),
            ("KLAXON_STATE__BACKEND", "redis".to_owned()),
            ("KLAXON_STATE__REDIS_URL", redis.url()),
            ("KLAXON_STATE__TIMEOUT", "500ms".to_owned()),
        ];
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tokio::task::block_in_place(|| Daemon::start(&["--config", &config], &envs))
    };
    let (a, b) = (replica(1), replica(2));
    // Two apiservers, one per replica, each with its own requests' events.
    const N: usize = 600;
    let senders =
        [&a, &b].map(|r| ApiserverSender::new(format!("http://{}/audit", r.addr), apiserver()));
    let streams: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(k, sender)| {
            let sender = sender.clone();
            let mine: Vec<Value> = (0..N).filter(|i| i % 2 == k).map(event).collect();
            tokio::spawn(async move { sender.send(mine).await })
        })
        .collect();
    wait_until(Duration::from_secs(30), "a third of the stream", || {
        senders
            .iter()
            .map(|s| s.report().delivered_batches)
            .sum::<usize>()
            >= N / 10 / 3
    })
    .await;
    let port = redis.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _redis = RedisServer::start_on(port);
    let mut report = SendReport::default();
    for stream in streams {
        let part = stream.await.unwrap();
        report.batches += part.batches;
        report.delivered_batches += part.delivered_batches;
        report.dropped_batches += part.dropped_batches;
        report.attempts += part.attempts;
        report.requests += part.requests;
        report.statuses.extend(part.statuses);
    }
    let expected = alerts::expected(PREFIX, N);
    let delivered = wait_for_alerts(&slack, &expected).await;
    let outage_seen = [&a, &b].iter().any(|r| {
        r.logs()
            .iter()
            .any(|l| l.contains("shared state (redis) unavailable"))
    });
    assert!(
        outage_seen,
        "no replica met the Redis outage: it was not mid-stream"
    );
    let duplicates = assert_nothing_lost(&report, &delivered, &expected);
    // Each event went to one replica only: no alert has a reason to go out twice.
    assert!(
        duplicates.is_empty(),
        "alerts delivered twice: {duplicates:?}"
    );
    figures("redis stopped", N, &report, duplicates.len());
}

/// The value of an unlabelled series on the daemon's `/metrics` (0 when absent).
async fn metric(addr: &str, name: &str) -> f64 {
    support::metrics::scrape(&format!("http://{addr}"), name)
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_stalled_senders_beside_the_stream_lose_nothing() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let config = setup(dir.path(), &slack);
    let daemon = tokio::task::block_in_place(|| Daemon::start(&["--config", &config], &[]));
    let (stop, stopping) = watch::channel(false);
    let addr: std::net::SocketAddr = daemon.addr.parse().unwrap();
    let stalled: Vec<_> = (0..50)
        .map(|_| tokio::spawn(trickle(addr, Duration::from_secs(1), stopping.clone())))
        .collect();
    // klaxon holds all 50 bodies before the stream starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&daemon.addr, "klaxon_request_bodies_reading").await < 50.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled senders never got in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    const N: usize = 600;
    let sender = ApiserverSender::new(format!("http://{}/audit", daemon.addr), apiserver());
    let report = sender.send(events(0..N)).await;
    assert!(metric(&daemon.addr, "klaxon_request_bodies_reading").await >= 50.0);
    stop.send(true).unwrap();
    for trickler in stalled {
        trickler.await.unwrap();
    }
    let expected = alerts::expected(PREFIX, N);
    let delivered = wait_for_alerts(&slack, &expected).await;
    daemon.signal("-TERM");
    let duplicates = assert_nothing_lost(&report, &delivered, &expected);
    assert!(
        duplicates.is_empty(),
        "alerts delivered twice: {duplicates:?}"
    );
    // Not one attempt was refused: the stalled senders held no batch slot.
    assert_eq!(report.attempts, report.batches, "{report:?}");
    figures("50 stalled senders", N, &report, duplicates.len());
}

/// Waits until the stream is a third through (batches answered 200).
async fn a_third_through(sender: &ApiserverSender, events: usize) {
    wait_until(Duration::from_secs(30), "a third of the stream", || {
        sender.report().delivered_batches >= events / 10 / 3
    })
    .await;
}

/// How many answers were 503, and whether each carried an integer `Retry-After`.
fn refusals(report: &SendReport) -> usize {
    let refused = report.statuses.iter().filter(|s| **s == 503).count();
    assert!(
        report
            .retry_after
            .iter()
            .all(|v| v.as_deref().is_some_and(|v| v.parse::<u64>().is_ok())),
        "a 429 or 503 without an integer Retry-After: {:?}",
        report.retry_after
    );
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_disk_full_for_five_seconds_mid_stream_loses_nothing() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let tmpfs = Tmpfs::mount(&data, "16m");
    let config = setup_with_outbox(dir.path(), &data, &slack);
    let daemon = tokio::task::block_in_place(|| Daemon::start(&["--config", &config], &[]));
    const N: usize = 600;
    let sender = ApiserverSender::new(format!("http://{}/audit", daemon.addr), apiserver());
    let stream = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(events(0..N)).await }
    });
    a_third_through(&sender, N).await;
    let filler = data.join("filler");
    fill(&filler);
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::remove_file(&filler).unwrap();
    let report = stream.await.unwrap();
    let expected = alerts::expected(PREFIX, N);
    let delivered = wait_for_alerts(&slack, &expected).await;
    daemon.signal("-TERM");
    let duplicates = assert_nothing_lost(&report, &delivered, &expected);
    let refused = refusals(&report);
    assert!(refused > 0, "no batch met the full disk: {report:?}");
    assert!(
        duplicates.is_empty(),
        "alerts delivered twice: {duplicates:?}"
    );
    figures("disk full 5 s", N, &report, duplicates.len());
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_error_in_the_outbox_mid_stream_is_ridden_out_without_a_restart() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    setup_with_outbox(dir.path(), &data, &slack);
    let config = config_from(&config_text(dir.path(), &data, &slack), dir.path());
    let switch = FaultSwitch::new();
    let outbox = Arc::new(Outbox::open_with_backend(&data, switch.backend()).unwrap());
    let server = start_with_outbox(&config, outbox.clone()).await;
    const N: usize = 600;
    let sender = ApiserverSender::new(format!("{}/audit", server.base), apiserver());
    let stream = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(events(0..N)).await }
    });
    a_third_through(&sender, N).await;
    // Alerts are pending (a group window of 1 s) when the disk starts failing.
    switch.fail_writes();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!outbox.health().is_healthy(), "the fault went unnoticed");
    switch.heal();
    let report = stream.await.unwrap();
    let expected = alerts::expected(PREFIX, N);
    let delivered = wait_for_alerts(&slack, &expected).await;
    assert!(outbox.health().is_healthy());
    let duplicates = assert_nothing_lost(&report, &delivered, &expected);
    assert!(refusals(&report) > 0, "no batch met the fault: {report:?}");
    assert!(
        duplicates.is_empty(),
        "alerts delivered twice: {duplicates:?}"
    );
    figures("I/O error 5 s", N, &report, duplicates.len());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_required_probes_answer_and_the_stream_loses_nothing() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    setup_with_outbox(dir.path(), &data, &slack);
    let ca = Ca::new("reliability-ca");
    let (cert, key) = ca.server(1, &[]).write(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nprobe_listen = \"127.0.0.1:0\"\n\
         [server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n\
         client_auth = \"required\"\n\
         [server.auth]\nclient_cert_subjects = [\"CN=kube-apiserver,O=system:masters\"]\n",
        cert.display(),
        key.display(),
        ca_file.display()
    );
    let text = format!("{tls}{}", config_text(dir.path(), &data, &slack));
    let config = config_from(&text, dir.path());
    let server = support::klaxon::start(&config).await;
    let probe = server.probe.expect("probe_listen is set");
    let url = format!("https://localhost:{}/audit", server.addr.port());
    let client = |identity: Option<reqwest::Identity>| {
        let builder = reqwest::Client::builder()
            .tls_certs_only([ca.root()])
            .resolve("localhost", server.addr);
        match identity {
            Some(identity) => builder.identity(identity),
            None => builder,
        }
        .build()
        .unwrap()
    };
    let identity = ca.client("kube-apiserver", "system:masters").identity();
    let sender = ApiserverSender::with_client(client(Some(identity)), url.clone(), apiserver());
    const N: usize = 200;
    let stream = tokio::spawn({
        let sender = sender.clone();
        async move { sender.send(events(0..N)).await }
    });
    // While it runs: kubelet's probes and Prometheus, with no certificate, get answers...
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = reqwest::get(format!("http://{probe}{path}")).await.unwrap();
        assert_eq!(answer.status(), 200, "{path} on the probe listener");
    }
    // ... and a client without a certificate cannot post.
    let refused = client(None).post(&url).body("{}").send().await;
    assert!(
        refused.is_err() || refused.is_ok_and(|r| r.status() == 401),
        "ingest without a client certificate was taken"
    );
    let report = stream.await.unwrap();
    let expected = alerts::expected(PREFIX, N);
    let delivered = wait_for_alerts(&slack, &expected).await;
    let duplicates = assert_nothing_lost(&report, &delivered, &expected);
    assert!(
        duplicates.is_empty(),
        "alerts delivered twice: {duplicates:?}"
    );
    figures("mTLS required", N, &report, duplicates.len());
    server.shutdown().await;
}
