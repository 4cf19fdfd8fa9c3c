//! End to end over loopback: the webhook server receives an apiserver-shaped EventList,
//! runs the shipped scripts, and delivers to a local Slack stand-in; bad bodies get 4xx.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use klaxon::config::Config;
use klaxon::notify::{ConsoleFormat, DeliveryPolicy, SlackSettings, Target, Targets};
use klaxon::pipeline::PipelineSettings;
use klaxon::rules::ScriptLimits;
use klaxon::secret::Secret;
use klaxon::server::{ServeSettings, ServerSettings};
use metrics_util::debugging::DebuggingRecorder;
use serde_json::{Value, json};
use support::klaxon::start;
use support::metrics::counter;
use support::slack::SlackStandIn;
use tempfile::TempDir;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Shipped scripts, everything to the Slack stand-in, an outbox in a fresh directory.
fn config(slack_url: &str, max_body_bytes: usize, data: &TempDir) -> Config {
    let slack = Target::Slack(SlackSettings {
        webhook_url: Secret::new(slack_url),
        timeout: Duration::from_secs(5),
    });
    Config {
        source: None,
        cluster_name: "test-cluster".to_owned(),
        script_dirs: vec![repo("scripts")],
        limits: ScriptLimits::default(),
        script_settings: Default::default(),
        serve: ServeSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_body_bytes,
            targets: Targets {
                by_name: [
                    ("slack".to_owned(), slack),
                    ("console".to_owned(), Target::Console(ConsoleFormat::Json)),
                ]
                .into(),
                pacing: Default::default(),
            },
            pipeline: PipelineSettings {
                default_targets: vec!["slack".to_owned()],
                ..PipelineSettings::default()
            },
            delivery: DeliveryPolicy::default(),
            drain_timeout: Duration::from_secs(10),
            outbox_path: data.path().to_path_buf(),
            server: ServerSettings::default(),
            state: Default::default(),
            sources: Vec::new(),
        },
    }
}

/// The pod creation of examples/events plus `others` events that must not fire, as the
/// apiserver's batch backend sends them: items without kind/apiVersion.
fn event_list(others: usize) -> Value {
    let text = std::fs::read_to_string(repo("examples/events/pod-created.jsonl")).unwrap();
    let mut pod: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let noise_text =
        std::fs::read_to_string(repo("examples/events/controller-noise.jsonl")).unwrap();
    let noise: Vec<Value> = noise_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut items = Vec::with_capacity(others + 1);
    for i in 0..others {
        let mut event = noise[i % noise.len()].clone();
        event["auditID"] = json!(format!("noise-{i}"));
        items.push(event);
    }
    items.insert(others / 2, pod.take());
    for item in &mut items {
        let map = item.as_object_mut().unwrap();
        map.remove("kind");
        map.remove("apiVersion");
    }
    json!({ "kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items })
}

#[tokio::test]
async fn pod_creation_in_a_400_event_batch_sends_one_slack_message() {
    let slack = SlackStandIn::start().await;
    let data = TempDir::new().unwrap();
    let server = start(&config(&slack.url(), 64 << 20, &data)).await;
    let client = reqwest::Client::new();

    let body = format!("{}\n", event_list(399));
    let reply = client
        .post(format!("{}/audit", server.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["accepted"], 400);
    assert_eq!(reply["alerts"], 1);

    let malformed = client
        .post(format!("{}/audit", server.base))
        .header("content-type", "application/json")
        .body(r#"{"kind":"EventList","items":[{"verb":"create",}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let reason: Value = malformed.json().await.unwrap();
    assert!(
        reason["error"].as_str().unwrap().contains("line 1"),
        "{reason}"
    );

    server.shutdown().await;
    let messages = slack.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(slack.rejections().is_empty(), "{:?}", slack.rejections());
    let message = &messages[0];
    let header = message["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        header.ends_with("Pod created: payments/web-7d4b9c"),
        "{header}"
    );
    assert!(message["text"].as_str().unwrap().contains("Pod created"));
    let context = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "context")
        .expect("a context block")
        .to_string();
    assert!(context.contains("test-cluster"), "{context}");
    assert!(
        context.contains("b61e6ba5-3682-4dd6-b804-69b84b2d451c"),
        "{context}"
    );
}

#[tokio::test]
async fn both_paths_accept_batches_and_healthz_answers() {
    let slack = SlackStandIn::start().await;
    let data = TempDir::new().unwrap();
    let server = start(&config(&slack.url(), 64 << 20, &data)).await;
    let client = reqwest::Client::new();
    for path in ["/", "/audit"] {
        let reply = client
            .post(format!("{}{path}", server.base))
            .body(event_list(3).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "POST {path}");
    }
    let health = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.shutdown().await;
    // The same pod creation twice: the second is a duplicate within the dedup window.
    assert_eq!(slack.messages().len(), 1);
}

#[tokio::test]
async fn bad_bodies_get_4xx_with_a_reason() {
    let slack = SlackStandIn::start().await;
    let data = TempDir::new().unwrap();
    let server = start(&config(&slack.url(), 4096, &data)).await;
    let client = reqwest::Client::new();
    let post = |body: String| {
        client
            .post(format!("{}/audit", server.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let empty = post(String::new()).await.unwrap();
    assert_eq!(empty.status(), 400);
    assert!(empty.text().await.unwrap().contains("empty body"));

    let not_audit = post(r#"{"kind": 0}"#.to_owned()).await.unwrap();
    assert_eq!(not_audit.status(), 400);
    assert!(not_audit.text().await.unwrap().contains("invalid type"));

    let too_large = post(event_list(50).to_string()).await.unwrap();
    assert_eq!(too_large.status(), 413);

    server.shutdown().await;
    assert!(slack.messages().is_empty());
}

#[tokio::test]
async fn a_bad_item_costs_only_itself() {
    let slack = SlackStandIn::start().await;
    let data = TempDir::new().unwrap();
    let server = start(&config(&slack.url(), 64 << 20, &data)).await;
    let mut list = event_list(3);
    list["items"][0]["verb"] = json!(5);
    let reply = reqwest::Client::new()
        .post(format!("{}/audit", server.base))
        .body(list.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["accepted"], 3);
    assert_eq!(reply["alerts"], 1);
    let rejected = reply["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].as_str().unwrap().contains("item 0"),
        "{rejected:?}"
    );
    server.shutdown().await;
    assert_eq!(slack.messages().len(), 1);
}

#[tokio::test]
async fn a_removed_slack_webhook_dead_letters_and_does_not_fail_the_batch() {
    // The test runtime has one thread, so delivery tasks record into this local recorder.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    // A webhook Slack does not know answers 404: the batch is still accepted.
    let gone = format!("{}/removed", SlackStandIn::start().await.url());
    let data = TempDir::new().unwrap();
    let server = start(&config(&gone, 64 << 20, &data)).await;
    let reply = reqwest::Client::new()
        .post(format!("{}/audit", server.base))
        .body(event_list(1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    server.shutdown().await;

    // 404 is permanent: the alert goes to the dead letters at once, not into retries.
    let dead = [("target", "slack"), ("outcome", "dead")];
    let sent = [("target", "slack"), ("outcome", "sent")];
    assert_eq!(
        counter(&snapshotter, "klaxon_notifications_total", &dead),
        1
    );
    assert_eq!(
        counter(&snapshotter, "klaxon_notifications_total", &sent),
        0
    );
    let outbox = klaxon::outbox::Outbox::open(data.path()).unwrap();
    let letters = outbox.dead_letters().unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("HTTP 404"),
        "{}",
        letters[0].reason
    );
}
