//! What is an audit event, and the cloud envelopes around them (tests/fixtures/aks,
//! tests/fixtures/eks: authored from the providers' documented formats, see their READMEs).
//!
//! Covers: objects that are not audit events (any JSON object, a manifest, a core Event, a
//! bad timestamp) refused with a reason naming what is missing; every AKS and EKS shape
//! decoding to exactly the audit events it carries, with other logs skipped; broken envelopes
//! reported with the envelope and field named while the rest still decodes; gzip and its
//! limits; and the webhook answering Firehose in its own form, behind its access key.

use std::io::Write as _;

use base64::Engine as _;
use klaxon::audit::{Decoded, Location, decode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ids(decoded: &Decoded) -> Vec<&str> {
    decoded.events.iter().map(|e| e.audit_id.as_str()).collect()
}

fn reasons(decoded: &Decoded) -> Vec<&str> {
    decoded.errors.iter().map(|e| e.reason.as_str()).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The auditIDs of the JSON strings at `pointer` in each item of `list`, read as plain JSON
/// (not by klaxon), keeping those `keep` accepts.
fn inner_ids(list: &Value, pointer: &str, keep: impl Fn(&Value) -> bool) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|item| keep(item))
        .map(|item| {
            let inner: Value =
                serde_json::from_str(item.pointer(pointer).unwrap().as_str().unwrap()).unwrap();
            inner["auditID"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn assert_clean(decoded: &Decoded) {
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
}

// ---------------------------------------------------------------------------------------
// What is not an audit event
// ---------------------------------------------------------------------------------------

#[test]
fn objects_that_are_not_audit_events_are_refused_with_what_is_missing() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let core_event = json!({"apiVersion": "v1", "kind": "Event", "reason": "Scheduled",
        "involvedObject": {"kind": "Pod", "name": "web-1"}, "message": "Successfully assigned"});
    let cases = [
        (
            json!({"foo": 1}),
            "not an audit event: no kind Event with apiVersion audit.k8s.io/v1 or v1beta1, and missing auditID, stage, verb, requestURI, level",
        ),
        (
            deployment,
            "not an audit event: kind `Deployment` apiVersion `apps/v1` (expected kind Event, apiVersion audit.k8s.io/v1 or v1beta1)",
        ),
        (
            core_event,
            "not an audit event: kind Event with apiVersion `v1` (a Kubernetes Event, not audit.k8s.io/v1 or v1beta1)",
        ),
        (
            json!({"kind": "Event", "auditID": "a", "stage": "ResponseComplete"}),
            "not an audit event: no kind Event with apiVersion audit.k8s.io/v1 or v1beta1, and missing verb, requestURI, level",
        ),
        (
            json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a",
            "stageTimestamp": "2024-05-01 10:00:00"}),
            "stageTimestamp: `2024-05-01 10:00:00` is not an RFC 3339 time (e.g. 2024-05-01T10:00:00.123456Z)",
        ),
        (
            json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a",
            "requestReceivedTimestamp": 1714557600}),
            "requestReceivedTimestamp: invalid type: integer `1714557600`, expected a string",
        ),
    ];
    for (input, reason) in cases {
        for text in [input.to_string(), format!("{input}\n{input}\n")] {
            let decoded = decode(text.as_bytes());
            assert!(decoded.events.is_empty(), "{text}");
            assert!(!decoded.errors.is_empty(), "{text}");
            for (i, err) in decoded.errors.iter().enumerate() {
                assert_eq!(err.reason, reason, "{text}");
                assert_eq!(err.location.line, i + 1, "{text}");
            }
        }
    }
}

#[test]
fn in_a_list_only_the_items_that_are_not_audit_events_are_refused() {
    let body = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [
        {"auditID": "a", "stage": "ResponseComplete", "verb": "get", "requestURI": "/api", "level": "Metadata"},
        {"metadata": {"name": "not-an-event"}},
        {"auditID": "c", "stage": "ResponseComplete", "verb": "get", "requestURI": "/api", "level": "Metadata"},
    ]});
    let decoded = decode(body.to_string().as_bytes());
    assert_eq!(ids(&decoded), ["a", "c"]);
    assert_eq!(decoded.errors.len(), 1);
    assert_eq!(decoded.errors[0].location, Location::item(1, 1));
    assert!(
        decoded.errors[0]
            .reason
            .ends_with("missing auditID, stage, verb, requestURI, level")
    );
}

// ---------------------------------------------------------------------------------------
// AKS
// ---------------------------------------------------------------------------------------

fn aks_records() -> Value {
    serde_json::from_slice::<Value>(&fixture("aks/event-hub-message.json")).unwrap()["records"]
        .clone()
}

fn is_aks_audit(record: &Value) -> bool {
    let category = record["category"].as_str().unwrap();
    category == "kube-audit" || category == "kube-audit-admin"
}

#[test]
fn an_aks_event_hub_message_gives_its_audit_records_and_skips_other_categories() {
    let decoded = decode(&fixture("aks/event-hub-message.json"));
    assert_clean(&decoded);
    let expected = inner_ids(&aks_records(), "/properties/log", is_aks_audit);
    assert_eq!(expected.len(), 3);
    assert_eq!(ids(&decoded), expected);
    assert_eq!(decoded.skipped, 1, "the kube-apiserver record");
    assert_eq!(
        decoded.origins,
        [
            Location::item(1, 0),
            Location::item(1, 1),
            Location::item(1, 3)
        ]
    );
    let create = &decoded.events[0];
    assert_eq!(create.verb, "create");
    assert_eq!(create.user.username, "alice@contoso.com");
    assert!(create.request_object.is_some());
}

#[test]
fn an_aks_storage_blob_has_one_record_per_line() {
    let decoded = decode(&fixture("aks/storage-blob-PT1H.json"));
    assert_clean(&decoded);
    assert_eq!(
        ids(&decoded),
        inner_ids(&aks_records(), "/properties/log", is_aks_audit)
    );
    assert_eq!(
        decoded.origins,
        [Location::line(1), Location::line(2), Location::line(4)]
    );
    assert_eq!(decoded.skipped, 1);
}

#[test]
fn a_broken_aks_record_is_named_and_costs_only_itself() {
    let mut records = aks_records();
    records[0]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("log");
    records[1]["properties"]["log"] = json!("{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}");
    records[3] = json!("kube-audit");
    let body = json!({ "records": records }).to_string();
    let decoded = decode(body.as_bytes());
    assert!(decoded.events.is_empty());
    assert_eq!(decoded.skipped, 1);
    assert_eq!(
        reasons(&decoded),
        [
            "AKS diagnostic record: records[0]: properties: missing field `log`",
            "AKS diagnostic record: records[1].properties.log: not an audit event: kind `Pod` apiVersion `v1` (expected kind Event, apiVersion audit.k8s.io/v1 or v1beta1)",
            "AKS diagnostic record: records[3]: expected an object",
        ]
    );
    let items: Vec<Option<usize>> = decoded.errors.iter().map(|e| e.location.item).collect();
    assert_eq!(items, [Some(0), Some(1), Some(3)]);
}

/// The bodies docs/SOURCES.md's forwarder configs send: Vector's http sink with the text
/// codec and newline framing (one Event Hub message per line), and Fluent Bit's http output
/// in json_lines after lifting the kafka input's parsed `payload` (the records beside
/// Fluent Bit's own keys).
#[test]
fn the_bodies_of_the_documented_aks_forwarders_decode() {
    let message = aks_records();
    let one_line = json!({ "records": message }).to_string();
    let expected = inner_ids(&message, "/properties/log", is_aks_audit);
    let vector = format!("{one_line}\n{one_line}\n");
    let decoded = decode(vector.as_bytes());
    assert_clean(&decoded);
    assert_eq!(ids(&decoded), [expected.clone(), expected.clone()].concat());
    assert_eq!(decoded.skipped, 2);

    let fluent_bit_line = json!({
        "records": message, "topic": "aks-audit", "partition": 0, "offset": 4711,
        "key": null, "error": null,
    })
    .to_string();
    let decoded = decode(format!("{fluent_bit_line}\n{fluent_bit_line}\n").as_bytes());
    assert_clean(&decoded);
    assert_eq!(ids(&decoded), [expected.clone(), expected].concat());
}

// ---------------------------------------------------------------------------------------
// EKS through CloudWatch Logs
// ---------------------------------------------------------------------------------------

fn subscription() -> Value {
    serde_json::from_slice(&fixture("eks/subscription-data-message.json")).unwrap()
}

fn subscription_ids() -> Vec<String> {
    inner_ids(&subscription()["logEvents"], "/message", |_| true)
}

#[test]
fn aws_logs_filter_log_events_output_gives_the_audit_stream_and_skips_others() {
    let text = fixture("eks/filter-log-events.json");
    let events = serde_json::from_slice::<Value>(&text).unwrap()["events"].clone();
    let expected = inner_ids(&events, "/message", |e| {
        e["logStreamName"]
            .as_str()
            .unwrap()
            .starts_with("kube-apiserver-audit-")
    });
    let decoded = decode(&text);
    assert_clean(&decoded);
    assert_eq!(ids(&decoded), expected);
    assert_eq!(decoded.skipped, 1, "the authenticator stream's event");
    assert_eq!(
        decoded.origins,
        [Location::item(1, 0), Location::item(1, 2)]
    );
    assert_eq!(
        decoded.events[0].object_ref.as_ref().unwrap().subresource,
        "exec"
    );
}

#[test]
fn aws_logs_get_log_events_output_decodes() {
    let decoded = decode(&fixture("eks/get-log-events.json"));
    assert_clean(&decoded);
    assert_eq!(ids(&decoded), subscription_ids());
}

#[test]
fn a_subscription_message_decodes_plain_and_gzipped_and_a_control_message_is_skipped() {
    let plain = decode(&fixture("eks/subscription-data-message.json"));
    assert_clean(&plain);
    assert_eq!(ids(&plain), subscription_ids());
    let gzipped = decode(&fixture("eks/subscription-data-message.json.gz"));
    assert_clean(&gzipped);
    assert_eq!(ids(&gzipped), subscription_ids());

    let control = decode(&fixture("eks/subscription-control-message.json"));
    assert_clean(&control);
    assert!(control.events.is_empty());
    assert_eq!(control.skipped, 1);

    let mut other_stream = subscription();
    other_stream["logStream"] = json!("kube-apiserver-8f7e6d5c4b3a");
    let decoded = decode(other_stream.to_string().as_bytes());
    assert_clean(&decoded);
    assert!(decoded.events.is_empty());
    assert_eq!(decoded.skipped, 2);

    let mut unknown = subscription();
    unknown["messageType"] = json!("DATA");
    let decoded = decode(unknown.to_string().as_bytes());
    assert_eq!(
        reasons(&decoded),
        [
            "CloudWatch Logs subscription message: messageType: `DATA` is neither DATA_MESSAGE nor CONTROL_MESSAGE"
        ]
    );
}

#[test]
fn a_bad_log_event_costs_only_itself() {
    let mut message = subscription();
    message["logEvents"][0]["message"] = json!(
        "{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"stageTimestamp\":\"soon\"}"
    );
    message["logEvents"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "3", "timestamp": 1}));
    let decoded = decode(message.to_string().as_bytes());
    assert_eq!(ids(&decoded), &subscription_ids()[1..]);
    assert_eq!(
        reasons(&decoded),
        [
            "CloudWatch Logs subscription message: logEvents[0].message: stageTimestamp: `soon` is not an RFC 3339 time (e.g. 2024-05-01T10:00:00.123456Z)",
            "CloudWatch Logs subscription message: logEvents[2]: missing field `message`",
        ]
    );
}

#[test]
fn a_lambda_awslogs_event_decodes() {
    let decoded = decode(&fixture("eks/lambda-awslogs-event.json"));
    assert_clean(&decoded);
    assert_eq!(ids(&decoded), subscription_ids());
}

#[test]
fn a_firehose_delivery_decodes_each_record_and_names_a_broken_one() {
    let text = fixture("eks/firehose-delivery.json");
    let decoded = decode(&text);
    assert_clean(&decoded);
    assert_eq!(ids(&decoded), subscription_ids());
    assert_eq!(
        decoded.origins,
        [Location::item(1, 0), Location::item(1, 0)]
    );
    assert_eq!(decoded.skipped, 1, "the control message of record 1");
    // Firehose's Content-Encoding: gzip compresses the whole body.
    let gzipped = decode(&gzip(&text));
    assert_clean(&gzipped);
    assert_eq!(ids(&gzipped), subscription_ids());

    let mut delivery: Value = serde_json::from_slice(&text).unwrap();
    delivery["records"][1]["data"] = json!("not base64!");
    delivery["records"]
        .as_array_mut()
        .unwrap()
        .push(json!({"data": base64(b"\x1f\x8bnot gzip")}));
    delivery["records"]
        .as_array_mut()
        .unwrap()
        .push(json!({"data": base64(b"{\"kind\":\"Secret\"}")}));
    let decoded = decode(delivery.to_string().as_bytes());
    assert_eq!(ids(&decoded), subscription_ids());
    let reasons = reasons(&decoded);
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].starts_with("Firehose delivery: records[1].data: not base64: "),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].starts_with("Firehose delivery: records[2].data: gzip: "),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2]
            .starts_with("Firehose delivery: records[3].data: not an audit event: kind `Secret`"),
        "{}",
        reasons[2]
    );
}

// ---------------------------------------------------------------------------------------
// GKE through Cloud Logging
// ---------------------------------------------------------------------------------------

fn gke_entries() -> Value {
    serde_json::from_slice(&fixture("gke/gcloud_logging_read.json")).unwrap()
}

/// The auditIDs (operation ids) of the fixture's entries of service `k8s.io`.
fn gke_ids() -> Vec<String> {
    gke_entries()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protoPayload"]["serviceName"] == "k8s.io")
        .map(|e| e["operation"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn gke_log_entries_decode_alone_in_an_export_array_and_in_a_sink_file() {
    let decoded = decode(&fixture("gke/gcloud_logging_read.json"));
    assert_clean(&decoded);
    assert_eq!(ids(&decoded), gke_ids());
    assert_eq!(decoded.skipped, 1, "the container.googleapis.com entry");
    assert!(decoded.events.iter().all(|e| e.cluster == "prod-eu-1"));
    let origins: Vec<Option<usize>> = decoded.origins.iter().map(|o| o.item).collect();
    assert_eq!(origins, [Some(0), Some(1), Some(2)]);

    let sink = decode(&fixture("gke/storage_sink_S0.json"));
    assert_clean(&sink);
    assert_eq!(sink.events.len(), 3);
    assert_eq!(sink.skipped, 1);

    let one = decode(&fixture("gke/exec_last.json"));
    assert_clean(&one);
    assert_eq!(
        one.events[0].object_ref.as_ref().unwrap().subresource,
        "exec"
    );
}

#[test]
fn a_pubsub_push_carries_one_gke_entry_and_a_broken_one_is_named() {
    let push = fixture("gke/pubsub_push.json");
    let decoded = decode(&push);
    assert_clean(&decoded);
    assert_eq!(decoded.events.len(), 1);
    assert_eq!(decoded.events[0].cluster, "prod-eu-1");

    let mut entry: Value = serde_json::from_slice(&fixture("gke/exec_last.json")).unwrap();
    entry["protoPayload"]["methodName"] = json!("pods.exec");
    let mut body: Value = serde_json::from_slice(&push).unwrap();
    body["message"]["data"] = json!(base64(entry.to_string().as_bytes()));
    let decoded = decode(body.to_string().as_bytes());
    assert!(decoded.events.is_empty());
    let reasons = reasons(&decoded);
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].starts_with(
            "Pub/Sub push: message.data: GKE LogEntry: protoPayload.methodName: `pods.exec`"
        ),
        "{}",
        reasons[0]
    );
}

#[test]
fn the_cluster_an_envelope_names_is_the_events_cluster() {
    let eks = decode(&fixture("eks/firehose-delivery.json"));
    assert!(
        eks.events.iter().all(|e| e.cluster == "prod-eu"),
        "from /aws/eks/prod-eu/cluster"
    );
    let aks = decode(&fixture("aks/event-hub-message.json"));
    assert!(
        aks.events.iter().all(|e| e.cluster == "PROD-WEU"),
        "from the resourceId"
    );
    // Without a log group or resource ID, the configured cluster_name is used.
    let logs_api = decode(&fixture("eks/filter-log-events.json"));
    assert!(logs_api.events.iter().all(|e| e.cluster.is_empty()));
    let apiserver = decode(&fixture("falco/create_secret.json"));
    assert!(apiserver.events.iter().all(|e| e.cluster.is_empty()));
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[test]
fn gzip_that_inflates_past_the_limit_is_one_error() {
    let zeros = vec![b' '; 300 << 20];
    let bomb = gzip(&zeros);
    assert!(bomb.len() < 1 << 20);
    let decoded = decode(&bomb);
    assert!(decoded.events.is_empty());
    assert_eq!(
        reasons(&decoded),
        ["gzip: inflates past 256 MiB, the most one input may inflate to"]
    );
}

#[test]
fn envelopes_nested_too_deep_are_one_error() {
    let mut body = subscription().to_string();
    for _ in 0..8 {
        body = json!({"awslogs": {"data": base64(body.as_bytes())}}).to_string();
    }
    let decoded = decode(body.as_bytes());
    assert!(decoded.events.is_empty());
    assert_eq!(decoded.errors.len(), 1);
    assert!(
        decoded.errors[0]
            .reason
            .ends_with("envelopes nested more than 6 deep"),
        "{:?}",
        decoded.errors
    );
}

// ---------------------------------------------------------------------------------------
// The webhook
// ---------------------------------------------------------------------------------------

const EXEC_SCRIPT: &str = r#"
if event.verb == "create" && event.objectRef.subresource == "exec" {
    alert(#{ title: `exec into ${event.objectRef.namespace}/${event.objectRef.name}`, severity: "critical", dedup_key: event.auditID });
}
"#;

async fn firehose_server(
    dir: &TempDir,
    slack: &support::slack::SlackStandIn,
) -> support::klaxon::Running {
    support::klaxon::scripts(dir.path(), &[("exec", EXEC_SCRIPT)]);
    let toml = format!(
        "{}[server.auth]\nfirehose_access_key = \"fh-secret\"\n[targets.slack]\ntype = \"slack\"\nwebhook_url = \"{}\"\n[routing]\ndefault_targets = [\"slack\"]\n",
        support::klaxon::base_toml(dir.path()),
        slack.url()
    );
    let config = support::klaxon::config_from(&toml, dir.path());
    support::klaxon::start(&config).await
}

async fn post_firehose(
    server: &support::klaxon::Running,
    key: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/audit", server.base))
        .header("content-type", "application/json")
        .header("x-amz-firehose-protocol-version", "1.0")
        .header(
            "x-amz-firehose-request-id",
            "ed4acda5-034f-9f42-bba1-f29aea6d7d8f",
        )
        .header("x-amz-firehose-access-key", key)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_webhook_answers_firehose_in_its_form_behind_its_access_key() {
    let dir = TempDir::new().unwrap();
    let slack = support::slack::SlackStandIn::start().await;
    let server = firehose_server(&dir, &slack).await;
    let before = klaxon::clock::wall_clock_ms();

    let (status, reply) =
        post_firehose(&server, "fh-secret", fixture("eks/firehose-delivery.json")).await;
    assert_eq!(status, 200, "{reply}");
    let keys: Vec<&String> = reply.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["requestId", "timestamp"], "{reply}");
    assert_eq!(reply["requestId"], "ed4acda5-034f-9f42-bba1-f29aea6d7d8f");
    assert!(reply["timestamp"].as_i64().unwrap() >= before);
    let messages = slack.wait_for(1).await;
    let text = messages[0].to_string();
    assert!(
        text.contains("exec into payments/web-7d9c6b5f4-x2k8p"),
        "{text}"
    );

    let (status, reply) =
        post_firehose(&server, "wrong", fixture("eks/firehose-delivery.json")).await;
    assert_eq!(status, 401);
    assert_eq!(reply["requestId"], "ed4acda5-034f-9f42-bba1-f29aea6d7d8f");
    assert_eq!(reply["errorMessage"], "authentication required");

    let (status, reply) = post_firehose(
        &server,
        "fh-secret",
        br#"{"requestId":"x","timestamp":1,"records":[{"data":"!"}]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let message = reply["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("Firehose delivery: records[0].data: not base64"),
        "{message}"
    );
    server.shutdown().await;
    assert_eq!(slack.messages().len(), 1, "the exec once, nothing else");
}

#[tokio::test]
async fn a_pubsub_push_gets_in_with_its_token_and_its_alert_names_the_gke_cluster() {
    let dir = TempDir::new().unwrap();
    let slack = support::slack::SlackStandIn::start().await;
    support::klaxon::scripts(dir.path(), &[("exec", EXEC_SCRIPT)]);
    let toml = format!(
        "{}[server.auth]\nbearer_token = \"apiserver-token\"\npush_token = \"p%sh t0ken\"\n[targets.slack]\ntype = \"slack\"\nwebhook_url = \"{}\"\n[routing]\ndefault_targets = [\"slack\"]\n",
        support::klaxon::base_toml(dir.path()),
        slack.url()
    );
    let server = support::klaxon::start(&support::klaxon::config_from(&toml, dir.path())).await;
    let push = |query: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/audit{query}", server.base))
            .header("content-type", "application/json")
            .body(fixture("gke/pubsub_push.json"))
            .send()
    };
    assert_eq!(push("").await.unwrap().status(), 401);
    assert_eq!(push("?token=p%25sh%20t0kem").await.unwrap().status(), 401);
    let response = push("?token=p%25sh%20t0ken").await.unwrap();
    assert_eq!(response.status(), 200, "Pub/Sub acknowledges a 2xx");
    let messages = slack.wait_for(1).await;
    let text = messages[0].to_string();
    assert!(text.contains("cluster prod-eu-1"), "{text}");
    assert!(
        text.contains("exec into payments/api-7d9f6c5b8-x2kqp"),
        "{text}"
    );
    server.shutdown().await;
    assert_eq!(slack.messages().len(), 1);
}

#[tokio::test]
async fn the_webhook_refuses_a_body_without_audit_events_and_lists_those_it_left_out() {
    let dir = TempDir::new().unwrap();
    support::klaxon::scripts(dir.path(), &[("exec", EXEC_SCRIPT)]);
    let config = support::klaxon::config_from(&support::klaxon::base_toml(dir.path()), dir.path());
    let server = support::klaxon::start(&config).await;

    let (status, reply) = server.post_json(r#"{"foo":1}"#).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["error"],
        "cannot decode body: line 1: not an audit event: no kind Event with apiVersion audit.k8s.io/v1 or v1beta1, and missing auditID, stage, verb, requestURI, level"
    );

    let (status, reply) = server
        .post_json(fixture("aks/event-hub-message.json"))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 3);
    assert_eq!(reply["skipped"], 1);
    assert_eq!(reply["alerts"], 1);

    let mixed = json!({"kind": "EventList", "items": [
        {"auditID": "ok-1", "stage": "ResponseComplete", "verb": "get", "requestURI": "/api", "level": "Metadata"},
        {"apiVersion": "v1", "kind": "ConfigMap"},
    ]});
    let (status, reply) = server.post_json(mixed.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 1);
    assert_eq!(
        reply["rejected"],
        json!([
            "line 1 item 1: not an audit event: kind `ConfigMap` apiVersion `v1` (expected kind Event, apiVersion audit.k8s.io/v1 or v1beta1)"
        ])
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// dry-run, replay, test
// ---------------------------------------------------------------------------------------

/// `klaxon` in `dir` with the exec script, a clean environment.
fn klaxon_with_exec_script(dir: &TempDir) -> assert_cmd::Command {
    support::klaxon::scripts(dir.path(), &[("exec", EXEC_SCRIPT)]);
    let mut cmd = support::process::klaxon_command(dir.path());
    cmd.args(["--scripts", "scripts"]);
    cmd
}

#[test]
fn dry_run_and_replay_count_what_is_not_an_audit_event_as_malformed_and_fail() {
    let dir = TempDir::new().unwrap();
    let manifest =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
    std::fs::write(
        dir.path().join("mixed.jsonl"),
        format!("{{\"foo\":1}}\n{}\n{manifest}\n", subscription()),
    )
    .unwrap();
    for command in ["dry-run", "replay"] {
        let out = klaxon_with_exec_script(&dir)
            .args([command, "mixed.jsonl"])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stderr.contains("error: mixed.jsonl:1: not an audit event: no kind Event with apiVersion audit.k8s.io/v1 or v1beta1, and missing auditID, stage, verb, requestURI, level"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains(
                "error: mixed.jsonl:3: not an audit event: kind `Deployment` apiVersion `apps/v1`"
            ),
            "{command}: {stderr}"
        );
        let summary = format!("{stdout}{stderr}");
        assert!(
            summary.contains("summary: 2 events, 1 rule, 1 alert, 0 script errors, 2 malformed"),
            "{command}: {summary}"
        );
    }
}

#[test]
fn dry_run_reads_every_cloud_shape_and_passes() {
    let dir = TempDir::new().unwrap();
    for (file, events, skipped) in [
        ("aks/event-hub-message.json", 3, 1),
        ("aks/storage-blob-PT1H.json", 3, 1),
        ("eks/filter-log-events.json", 2, 1),
        ("eks/get-log-events.json", 2, 0),
        ("eks/subscription-data-message.json", 2, 0),
        ("eks/subscription-data-message.json.gz", 2, 0),
        ("eks/lambda-awslogs-event.json", 2, 0),
        ("eks/firehose-delivery.json", 2, 1),
    ] {
        let path = format!("{FIXTURES}/{file}");
        let out = klaxon_with_exec_script(&dir)
            .args(["dry-run", &path])
            .assert()
            .success()
            .get_output()
            .clone();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let skipped = match skipped {
            0 => String::new(),
            n => format!(", {n} skipped (records of other logs)"),
        };
        let summary = format!(
            "summary: {events} events, 1 rule, 1 alert, 0 script errors, 0 malformed{skipped}\n"
        );
        assert!(stdout.contains(&summary), "{file}: {stdout}");
    }
}

#[test]
fn a_test_case_whose_event_is_not_an_audit_event_fails_with_the_reason() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/exec.test.toml"),
        r#"
[[case]]
name = "a pod manifest is no event"
event = '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"}}'
[[case.expect]]
rule = "exec"
count = 0
"#,
    )
    .unwrap();
    klaxon_with_exec_script(&dir)
        .arg("test")
        .assert()
        .code(1)
        .stdout(predicates::str::contains(
            "inline event: line 1: not an audit event: kind `Pod` apiVersion `v1`",
        ));
}

/// docs/SOURCES.md's example of what is refused is what `klaxon dry-run -` prints, with the
/// shipped scripts.
#[test]
fn the_refusals_docs_sources_shows_are_what_dry_run_prints() {
    let doc = include_str!("../../docs/SOURCES.md");
    let block = doc
        .split("```\n$ printf '")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/SOURCES.md shows a dry-run of refused input");
    let (input, shown) = block.split_once("' | klaxon dry-run -\n").unwrap();
    let input = input.replace("\\n", "\n");
    let out = assert_cmd::cargo::cargo_bin_cmd!("klaxon")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .args(["dry-run", "-"])
        .write_stdin(input)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    for line in shown.lines() {
        assert!(
            printed.lines().any(|l| l == line),
            "`{line}` not printed:\n{printed}"
        );
    }
}
