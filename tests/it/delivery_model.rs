//! Prediction and delivery agree: the same event streams go through the event-clock replay
//! that `klaxon replay` and `dry-run` run (the library `Replay`, fed as the CLI feeds it,
//! and `klaxon replay` itself for its printed schedule) and through a running server that
//! receives them as webhook batches at the matching wall-clock offsets and delivers to
//! real receivers on loopback (a generic HTTP receiver, the Slack stand-in). Both must give
//! the same notices — target, group key, alerts in order, byte for byte the same payload —
//! in the same order, at the same times relative to the first notice.
//!
//! Streams: a burst of one group, many groups interleaved, more alerts of one group than
//! `max_alerts_per_notice`, and a Slack target paced to Slack's 1 per second (burst 3)
//! with alerts arriving while notices wait for their slot.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin_cmd;
use klaxon::clock::parse_time_ms;
use klaxon::config::Config;
use klaxon::pipeline::{Replay, TimedNotice};
use klaxon::rules::Ruleset;
use serde_json::{Value, json};
use support::klaxon::{base_toml, config_from, scripts, start};
use support::receiver::Receiver;
use support::slack::SlackStandIn;
use tempfile::TempDir;

/// How far a notice's time after the first notice may differ between the server and the
/// prediction. The prediction is exact on the event clock; the server adds latencies of its
/// own to each notice: the batch's evaluation and outbox fsync before its entries are
/// stamped (a few ms, tens on a loaded machine), the delivery task's wake-up and outbox
/// read (`spawn_blocking`, ms rounding of its timer), the POST over loopback and, for the
/// batches after the first, how late the test's own POST left. Each is well under 50 ms
/// here, even with other builds running; two of them (the first notice's and this one's)
/// enter each difference. 150 ms is three times that, and still less than half of the
/// smallest gap between the times that differ in these streams (300 ms or more), so a
/// notice predicted at the wrong time cannot pass.
const TOLERANCE_MS: i64 = 150;

/// The group window of every stream.
const GROUP_WAIT: &str = "400ms";

/// Where the events' clock starts (the replay's time; the server uses its wall clock).
const BASE: &str = "2026-11-20T10:00:00Z";

/// One alert per event, titled by its namespace and auditID; its group key is the
/// default, `touch/NAMESPACE`.
const RULE: &str =
    r#"alert(#{ title: `${event.objectRef.namespace} ${event.auditID}`, severity: "warning" });"#;

/// Webhook batches: when each is posted (ms after the first) and its events, one per
/// namespace listed.
type Stream = [(u64, &'static [&'static str])];

/// Where the server delivers in a stream.
enum Sink {
    /// An `http` target named `hook` (unpaced).
    Hook(Receiver),
    /// A `slack` target named `slack`, with Slack's default pacing.
    Slack(SlackStandIn),
}

impl Sink {
    /// The target's config section.
    fn target_toml(&self) -> String {
        match self {
            Sink::Hook(receiver) => format!(
                "[targets.hook]\ntype = \"http\"\nurl = \"{}\"\n",
                receiver.url("/hook")
            ),
            Sink::Slack(slack) => format!(
                "[targets.slack]\ntype = \"slack\"\nwebhook_url = \"{}\"\n",
                slack.url()
            ),
        }
    }

    fn target(&self) -> &'static str {
        match self {
            Sink::Hook(_) => "hook",
            Sink::Slack(_) => "slack",
        }
    }

    /// Waits (bounded) until `n` notices arrived; each with its arrival time and body.
    async fn wait_for(&self, n: usize) -> Vec<(Instant, Value)> {
        let wait = async {
            match self {
                Sink::Hook(receiver) => receiver
                    .wait_for(n)
                    .await
                    .into_iter()
                    .map(|r| (r.at, r.json()))
                    .collect(),
                Sink::Slack(slack) => {
                    let messages = slack.wait_for(n).await;
                    slack.arrivals().into_iter().zip(messages).collect()
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), wait)
            .await
            .unwrap_or_else(|_| panic!("{n} notices did not arrive within 15 s"))
    }

    /// Notices received so far.
    fn received(&self) -> usize {
        match self {
            Sink::Hook(receiver) => receiver.requests().len(),
            Sink::Slack(slack) => slack.messages().len(),
        }
    }
}

/// The config of a stream: everything routed to `sink`'s target, `delivery` appended to
/// `[delivery]`.
fn config_text(dir: &Path, sink: &Sink, delivery: &str) -> String {
    format!(
        r#"
cluster_name = "parity"
{base}
[delivery]
group_wait = "{GROUP_WAIT}"
drain_timeout = "10s"
{delivery}
[rule_defaults]
budget = 10000
[routing]
default_targets = ["{target}"]
{target_toml}"#,
        base = base_toml(dir),
        target = sink.target(),
        target_toml = sink.target_toml(),
    )
}

/// Each batch of `stream` as an EventList body: auditIDs `e-000`… in stream order,
/// `stageTimestamp` the batch's offset after [`BASE`].
fn bodies(stream: &Stream) -> Vec<(u64, String)> {
    let mut n = 0;
    stream
        .iter()
        .map(|(offset, namespaces)| {
            let items: Vec<Value> = namespaces
                .iter()
                .map(|ns| {
                    n += 1;
                    json!({
                        "auditID": format!("e-{:03}", n - 1),
                        "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api",
                        "verb": "create",
                        "objectRef": {"resource": "configmaps", "namespace": ns},
                        "user": {"username": "alice"},
                        "stageTimestamp": format!(
                            "2026-11-20T10:00:{:02}.{:03}Z",
                            offset / 1000,
                            offset % 1000
                        )
                    })
                })
                .collect();
            let body =
                json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items});
            (*offset, body.to_string())
        })
        .collect()
}

/// What the replay predicts, fed as `klaxon replay` feeds it: every event at its time.
fn predict(config: &Config, stream: &Stream) -> Vec<TimedNotice> {
    let mut rules =
        Ruleset::load(&config.script_dirs, &config.limits, &config.cluster_name).unwrap();
    rules.set_settings(&config.script_settings);
    let mut replay = Replay::new(
        config.serve.pipeline.clone(),
        Arc::new(config.serve.targets.clone()),
        config.serve.delivery.max_alerts_per_notice,
    );
    let mut notices = Vec::new();
    for (_, body) in bodies(stream) {
        for event in klaxon::audit::decode(body.as_bytes()).events {
            let at = parse_time_ms(event.time()).unwrap();
            let evaluation = rules.evaluate_at(Arc::new(event), at);
            assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
            replay.push(evaluation.alerts, at);
            notices.extend(replay.take_notices());
        }
    }
    notices.extend(replay.finish().0);
    notices
}

/// `klaxon replay`'s schedule for `stream`: its notice lines (time, target, severity, title).
fn cli_schedule(dir: &Path, stream: &Stream) -> Vec<String> {
    let lines: Vec<String> = bodies(stream).into_iter().map(|(_, body)| body).collect();
    std::fs::write(dir.join("events.jsonl"), lines.join("\n")).unwrap();
    let output = cargo_bin_cmd!("klaxon")
        .current_dir(dir)
        .args(["--config", "klaxon.toml", "replay", "events.jsonl"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .take_while(|line| !line.starts_with("summary:"))
        .map(str::to_owned)
        .collect()
}

/// The line `klaxon replay` prints for `timed`.
fn schedule_line(timed: &TimedNotice) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(timed.at_ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let notice = &timed.notice;
    format!(
        "{at} {} [{}] {}",
        notice.target,
        notice.severity(),
        notice.title()
    )
}

/// Posts `stream` to a running server at its offsets; what `sink` received once it holds
/// as many notices as predicted (and nothing more after the server drained).
async fn serve(config: &Config, stream: &Stream, sink: &Sink, n: usize) -> Vec<(Instant, Value)> {
    let server = start(config).await;
    let start = tokio::time::Instant::now();
    for (offset, body) in bodies(stream) {
        tokio::time::sleep_until(start + Duration::from_millis(offset)).await;
        assert_eq!(server.post(body).await, 200);
    }
    let received = sink.wait_for(n).await;
    // Draining sends whatever is left, ignoring group windows: a notice the prediction
    // lacks would show up now.
    server.shutdown().await;
    assert_eq!(sink.received(), n, "the server sent more than predicted");
    received
}

/// (group key, alert titles) of each notice, for messages.
fn shape(predicted: &[TimedNotice]) -> Vec<(String, Vec<String>)> {
    predicted
        .iter()
        .map(|t| {
            let titles = t.notice.alerts.iter().map(|a| a.title.clone()).collect();
            (t.notice.group_key.clone(), titles)
        })
        .collect()
}

/// A notice as the streams expect it: (group key, alerts, ms after the first notice).
type Expected<'a> = &'a [(&'a str, usize, i64)];

/// Runs `stream` both ways and checks that they agree, and that the prediction is
/// `expected`: the model's semantics, spelt out per stream.
async fn parity(sink: Sink, delivery: &str, stream: &Stream, expected: Expected<'_>) {
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let config = config_from(&config_text(dir.path(), &sink, delivery), dir.path());
    let predicted = predict(&config, stream);
    let first_ms = predicted[0].at_ms;
    assert!(first_ms >= parse_time_ms(BASE).unwrap());

    // `klaxon replay` prints this schedule.
    let schedule: Vec<String> = predicted.iter().map(schedule_line).collect();
    assert_eq!(cli_schedule(dir.path(), stream), schedule);

    let received = serve(&config, stream, &sink, predicted.len()).await;
    let target = &config.serve.targets.by_name[sink.target()];
    let first_arrival = received[0].0;
    for (i, (timed, (arrival, body))) in predicted.iter().zip(&received).enumerate() {
        let payload = klaxon::notify::payload(target, &timed.notice).unwrap();
        let payload: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            body,
            &payload,
            "notice {i} differs; predicted: {:#?}",
            shape(&predicted)
        );
        let predicted_ms = timed.at_ms - first_ms;
        let served_ms = i64::try_from(arrival.duration_since(first_arrival).as_millis()).unwrap();
        assert!(
            (served_ms - predicted_ms).abs() <= TOLERANCE_MS,
            "notice {i} ({}) arrived {served_ms} ms after the first, predicted {predicted_ms} ms",
            timed.notice.group_key
        );
    }
    let got: Vec<(String, usize, i64)> = predicted
        .iter()
        .map(|t| {
            let n = t.notice.alerts.len();
            (t.notice.group_key.clone(), n, t.at_ms - first_ms)
        })
        .collect();
    let expected: Vec<(String, usize, i64)> = expected
        .iter()
        .map(|(ns, n, ms)| (format!("touch/{ns}"), *n, *ms))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_group_goes_as_one_notice_when_its_window_ends() {
    let a5: &[&str] = &["a"; 5];
    let stream: &Stream = &[(0, a5), (100, a5), (200, a5), (600, &["a", "a"])];
    // The window opened by the first alert takes the whole burst; the two alerts after
    // the notice open a window of their own.
    let expected = [("a", 15, 0), ("a", 2, 600)];
    parity(Sink::Hook(Receiver::start().await), "", stream, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_go_in_order_of_their_oldest_alert() {
    let stream: &Stream = &[
        (0, &["a", "b"]),
        (100, &["c", "a"]),
        (200, &["d", "b", "e"]),
        (300, &["a"]),
        (650, &["b", "c"]),
    ];
    let expected = [
        ("a", 3, 0),
        ("b", 2, 0),
        ("c", 1, 100),
        ("d", 1, 200),
        ("e", 1, 200),
        ("b", 1, 650),
        ("c", 1, 650),
    ];
    parity(Sink::Hook(Receiver::start().await), "", stream, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_alerts_than_fit_in_a_notice_go_as_several_when_the_window_ends() {
    let stream: &Stream = &[(0, &["a"; 10]), (200, &["a"; 3])];
    // Nothing goes before the window ends, however full the group; the third notice
    // takes two alerts of the later batch, whose last alert then waits for its own window.
    let expected = [("a", 4, 0), ("a", 4, 0), ("a", 4, 0), ("a", 1, 200)];
    let delivery = "max_alerts_per_notice = 4";
    parity(
        Sink::Hook(Receiver::start().await),
        delivery,
        stream,
        &expected,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_slack_target_sends_a_burst_then_one_per_second() {
    let stream: &Stream = &[
        (0, &["n0", "n1", "n2", "n3", "n4"]),
        // While n3 waits for its slot, before n4's notice is composed: joins it.
        (700, &["n4"]),
        // After n4's notice was composed (as n3 went out): a notice of its own.
        (1_600, &["n4"]),
    ];
    // Slack's pacing, 1 per second with a burst of 3.
    let expected = [
        ("n0", 1, 0),
        ("n1", 1, 0),
        ("n2", 1, 0),
        ("n3", 1, 1_000),
        ("n4", 2, 2_000),
        ("n4", 1, 3_000),
    ];
    parity(
        Sink::Slack(SlackStandIn::start().await),
        "",
        stream,
        &expected,
    )
    .await;
}
