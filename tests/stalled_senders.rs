//! Slow and stalled senders cannot starve the apiserver: a body is read before its batch
//! takes an admission slot, under a deadline (408) and a shared byte budget (429).
//!
//! Covers: 50 (and 200) connections trickling a byte a second while normal EventList
//! batches are all answered 200 (latencies printed, with a baseline, not asserted); a trickling body past
//! `body_read_timeout` answered 408 with a reason and counted; a body that fills the byte
//! budget making the next one 429 with an integer Retry-After, and the budget coming back
//! once that body is done.
//!
//! The servers run in-process; the gauges `klaxon_request_bodies_reading` and
//! `klaxon_request_body_bytes_reading` on `/metrics` tell when the server holds the
//! stalled bodies. They are process-wide, so the tests of this file take turns
//! ([`GAUGES`]).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::klaxon::{Running, config_from, scripts, start};
use support::trickle::{headers, trickle};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Held by each test for its whole run: the gauges count the bodies of every server in
/// the process.
static GAUGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Stalled connections in the starvation test.
const STALLED: usize = 50;
/// Normal batches sent beside them.
const BATCHES: usize = 20;
/// Longest any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn toml(dir: &Path, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"
{server_extra}
[scripts]
dirs = ["{dir}/scripts"]
[outbox]
path = "{dir}/data"
[delivery]
group_wait = "1h"
drain_timeout = "0s"
[routing]
default_targets = ["sink"]
[targets.sink]
type = "console"
format = "json"
"#,
        dir = dir.display()
    )
}

const FIRE: &str = r#"if event.verb == "create" { alert(#{ title: event.auditID }); }"#;

/// An EventList of `n` create events with auditIDs `{prefix}-…`, as the apiserver sends it.
fn batch(prefix: &str, n: usize) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "auditID": format!("{prefix}-{i:04}"),
                "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api",
                "verb": "create",
                "objectRef": {"resource": "configmaps", "namespace": "ns"},
            })
        })
        .collect();
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
        .to_string()
}

fn addr_of(server: &Running) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// The value of gauge or counter `series` (name plus labels, as rendered) on `/metrics`.
async fn metric(server: &Running, series: &str) -> f64 {
    support::metrics::scrape(&server.base, series)
        .await
        .unwrap_or(0.0)
}

/// Waits (polling `/metrics`, bounded by [`PATIENCE`]) until `series` is at least `floor`.
async fn wait_for_metric(server: &Running, series: &str, floor: f64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        let value = metric(server, series).await;
        if value >= floor {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stayed at {value}, below {floor}, for {PATIENCE:?}"
        );
    }
}

/// Sends [`BATCHES`] batches one after the other; asserts each is answered 200 with all its
/// events accepted, and returns their latencies.
async fn send_batches(server: &Running, prefix: &str) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(BATCHES);
    for i in 0..BATCHES {
        let started = Instant::now();
        let (status, reply) = server.post_json(batch(&format!("{prefix}-{i}"), 50)).await;
        latencies.push(started.elapsed());
        assert_eq!(status, 200, "batch {i}: {reply}");
        assert_eq!(reply["accepted"], 50, "batch {i}: {reply}");
    }
    latencies
}

fn summary(latencies: &mut [Duration]) -> String {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(latencies[0]),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    )
}

/// `stalled` connections trickle a byte a second while [`BATCHES`] normal batches are sent
/// one after the other: each is answered 200. Prints the latencies, with a baseline.
async fn normal_batches_beside(stalled_count: usize) {
    let _turn = GAUGES.lock().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config = config_from(&toml(dir.path(), ""), dir.path());
    let server = start(&config).await;
    let addr = addr_of(&server);
    let mut baseline = send_batches(&server, "baseline").await;

    let (stop, stopping) = watch::channel(false);
    let mut stalled = JoinSet::new();
    for _ in 0..stalled_count {
        stalled.spawn(trickle(addr, Duration::from_secs(1), stopping.clone()));
    }
    // The server holds every stalled body before the first normal batch goes out.
    let reading = stalled_count as f64;
    wait_for_metric(&server, "klaxon_request_bodies_reading", reading).await;
    let mut beside = send_batches(&server, "beside").await;
    // ... and still holds them once the last one was answered.
    assert!(metric(&server, "klaxon_request_bodies_reading").await >= reading);
    let held = metric(&server, "klaxon_request_body_bytes_reading").await;
    eprintln!("{stalled_count} stalled senders hold {held} bytes of the byte budget");

    eprintln!(
        "{BATCHES} batches of 50 events, no stalled sender: {}",
        summary(&mut baseline)
    );
    eprintln!(
        "{BATCHES} batches of 50 events beside {stalled_count} stalled senders: {}",
        summary(&mut beside)
    );
    stop.send(true).unwrap();
    while let Some(answer) = stalled.join_next().await {
        let answer = answer.unwrap();
        assert!(answer.is_empty(), "a stalled sender was answered: {answer}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_stalled_senders_do_not_delay_normal_batches() {
    normal_batches_beside(STALLED).await;
}

/// More stalled senders than batch slots (2 cores + 16 queued) and than any count-based
/// bound of bodies would be sized for: the byte budget still leaves room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_stalled_senders_do_not_delay_normal_batches() {
    normal_batches_beside(4 * STALLED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_not_whole_by_the_read_timeout_gets_408() {
    let _turn = GAUGES.lock().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config = config_from(&toml(dir.path(), "body_read_timeout = \"1s\""), dir.path());
    assert_eq!(
        config.serve.server.body_read_timeout,
        Duration::from_secs(1)
    );
    let server = start(&config).await;
    let (_stop, stopping) = watch::channel(false);
    let started = Instant::now();
    let answer = trickle(addr_of(&server), Duration::from_millis(200), stopping).await;
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "answer: {answer:?}");
    assert!(
        waited >= Duration::from_secs(1),
        "answered after {waited:?}"
    );
    eprintln!("trickling body answered 408 after {waited:?} (body_read_timeout = 1s)");
    assert!(metric(&server, "klaxon_batches_total{status=\"408\"}").await >= 1.0);
    // The server keeps serving.
    let (status, reply) = server.post_json(batch("after-408", 3)).await;
    assert_eq!(status, 200, "{reply}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_408_answer_carries_a_json_reason() {
    let _turn = GAUGES.lock().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config = config_from(&toml(dir.path(), "body_read_timeout = \"1s\""), dir.path());
    let server = start(&config).await;
    let mut stream = TcpStream::connect(addr_of(&server)).await.unwrap();
    stream.write_all(headers(100).as_bytes()).await.unwrap();
    stream.write_all(b"{\"kind\":").await.unwrap();
    // The server answers and closes the connection: read to the end.
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .expect("no answer within PATIENCE")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let reason: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert!(
        reason["error"]
            .as_str()
            .unwrap()
            .contains("did not arrive within 1s"),
        "{reason}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_byte_budget_gets_429_with_retry_after_until_it_comes_back() {
    let _turn = GAUGES.lock().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config = config_from(
        &toml(
            dir.path(),
            "max_body_bytes = 65536\nbody_buffer_bytes = 65536\nretry_after_secs = 2",
        ),
        dir.path(),
    );
    assert_eq!(config.serve.server.body_buffer_bytes, 65536);
    let server = start(&config).await;
    // A client sends 60,000 of its 65,536 bytes and stalls: its buffer holds the budget.
    let mut hog = TcpStream::connect(addr_of(&server)).await.unwrap();
    hog.write_all(headers(65536).as_bytes()).await.unwrap();
    hog.write_all(&vec![b' '; 60_000]).await.unwrap();
    wait_for_metric(&server, "klaxon_request_body_bytes_reading", 60_000.0).await;

    // 100 events are about 12 KiB: more than the budget has left.
    let body = batch("squeezed", 100);
    assert!(body.len() > 65536 - 60_000 && body.len() < 65536);
    let response = reqwest::Client::new()
        .post(format!("{}/audit", server.base))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response.headers()["retry-after"].to_str().unwrap(),
        "2",
        "an integer Retry-After"
    );

    // The hog finishes its body (not JSON: 400); its bytes go back to the budget.
    hog.write_all(&vec![b' '; 5536]).await.unwrap();
    let mut answer = vec![0u8; 12];
    hog.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 400");
    let (status, reply) = server.post_json(body).await;
    assert_eq!(status, 200, "{reply}");
    server.shutdown().await;
}
