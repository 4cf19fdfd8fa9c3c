//! Integration tests for `klaxon::audit::decode`: every input shape the apiserver and its
//! logs produce (the webhook's EventList, a JSON array, a single pretty-printed Event,
//! JSON lines), the Falco k8s audit traces in `tests/fixtures/falco`, partial failure
//! (a bad line or item costs only itself and is reported with its position), unknown
//! fields, v1beta1 timestamps, and the `origins` that run parallel to the events.

use std::fs;
use std::path::{Path, PathBuf};

use klaxon::audit::{Decoded, Event, Location, decode};
use serde_json::{Value, json};

const FALCO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/falco");

/// The deliberately malformed Falco trace: `{"kind": 0}`.
const MALFORMED_TRACE: &str = "fal_01_003.json";

fn falco_traces() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(FALCO_DIR)
        .expect("tests/fixtures/falco is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap()
}

fn audit_ids(decoded: &Decoded) -> Vec<&str> {
    decoded.events.iter().map(|e| e.audit_id.as_str()).collect()
}

fn assert_no_errors(decoded: &Decoded) {
    assert!(
        decoded.errors.is_empty(),
        "unexpected errors: {:?}",
        decoded.errors
    );
}

/// A complete audit.k8s.io/v1 EventList item as the apiserver sends it: no kind/apiVersion,
/// microsecond timestamps.
fn pod_create_item() -> Value {
    json!({
        "level": "RequestResponse",
        "auditID": "5f0b1bd4-6a3e-4e8e-9c55-3f1c2a9e7d01",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/payments/pods?fieldManager=kubectl-client-side-apply",
        "verb": "create",
        "user": {
            "username": "alice",
            "uid": "u-1234",
            "groups": ["devs", "system:authenticated"],
            "extra": {"scopes": ["openid", "email"]}
        },
        "impersonatedUser": {"username": "bob", "groups": ["ops"]},
        "sourceIPs": ["10.0.0.7", "192.168.1.1"],
        "userAgent": "kubectl/v1.30.1 (linux/amd64) kubernetes/abcdef",
        "objectRef": {
            "resource": "pods",
            "namespace": "payments",
            "name": "web-1",
            "uid": "0c6f0a9e-1111-2222-3333-444455556666",
            "apiGroup": "",
            "apiVersion": "v1",
            "resourceVersion": "98765",
            "subresource": ""
        },
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "web-1", "namespace": "payments", "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "securityContext": {"privileged": false, "runAsUser": 1000}
                }],
                "terminationGracePeriodSeconds": 30,
                "priority": null
            }
        },
        "responseObject": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "web-1", "uid": "0c6f0a9e-1111-2222-3333-444455556666"}
        },
        "requestReceivedTimestamp": "2024-05-01T10:00:00.123456Z",
        "stageTimestamp": "2024-05-01T10:00:00.234567Z",
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"devs/payments\""
        }
    })
}

/// A second, smaller item: a RequestReceived `get` with no bodies and no response.
fn secret_get_item() -> Value {
    json!({
        "level": "Metadata",
        "auditID": "7d1c0e52-2b4f-4a7e-8f2e-000000000002",
        "stage": "RequestReceived",
        "requestURI": "/api/v1/namespaces/kube-system/secrets/token",
        "verb": "get",
        "user": {"username": "system:serviceaccount:kube-system:default", "groups": []},
        "sourceIPs": ["10.0.0.8"],
        "userAgent": "curl/8.5.0",
        "objectRef": {"resource": "secrets", "namespace": "kube-system", "name": "token", "apiVersion": "v1"},
        "requestReceivedTimestamp": "2024-05-01T10:00:01.000001Z",
        "stageTimestamp": "2024-05-01T10:00:01.000001Z"
    })
}

/// A minimal event line with the given auditID.
fn event_line(audit_id: &str) -> String {
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": "list",
        "requestURI": "/api/v1/pods",
        "stageTimestamp": "2024-05-01T10:00:00.000000Z"
    })
    .to_string()
}

#[test]
fn falco_traces_decode_one_event_per_non_empty_line() {
    let files = falco_traces();
    assert_eq!(
        files.len(),
        47,
        "expected the 47 Falco traces, found {files:?}"
    );

    let mut total_events = 0;
    let mut total_lines = 0;
    let mut saw_malformed = false;
    for path in &files {
        let name = file_name(path);
        let bytes = fs::read(path).unwrap();
        let decoded = decode(&bytes);
        assert_eq!(
            decoded.origins.len(),
            decoded.events.len(),
            "{name}: origins must be parallel to events"
        );

        if name == MALFORMED_TRACE {
            saw_malformed = true;
            assert!(decoded.events.is_empty(), "{name}: {:?}", decoded.events);
            assert_eq!(decoded.errors.len(), 1, "{name}: {:?}", decoded.errors);
            let err = &decoded.errors[0];
            assert_eq!(err.location.line, 1, "{name}: {err}");
            assert_eq!(err.location.item, None, "{name}: {err}");
            assert!(err.reason.contains("invalid type"), "{name}: {err}");
            continue;
        }

        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            decoded.errors.is_empty(),
            "{name}: unexpected errors {:?}",
            decoded.errors
        );
        assert!(!decoded.events.is_empty(), "{name}: no events");
        assert_eq!(decoded.events.len(), lines.len(), "{name}");
        // Each event is the one on its line, not merely the right number of events.
        for (event, line) in decoded.events.iter().zip(&lines) {
            assert_eq!(event.audit_id, line["auditID"].as_str().unwrap(), "{name}");
            assert_eq!(event.verb, line["verb"].as_str().unwrap(), "{name}");
            assert_eq!(event.stage, line["stage"].as_str().unwrap(), "{name}");
        }
        total_events += decoded.events.len();
        total_lines += lines.len();
    }
    assert!(
        saw_malformed,
        "{MALFORMED_TRACE} is missing from the fixtures"
    );
    assert_eq!(total_events, total_lines);
}

#[test]
fn multi_line_falco_trace_reports_line_origins() {
    // The one Falco trace with several events: JSON lines, one event per line.
    let path = Path::new(FALCO_DIR).join("create_configmap_sensitive_values.json");
    let text = fs::read_to_string(path).unwrap();
    let expected: Vec<Location> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| Location::line(i + 1))
        .collect();
    assert!(expected.len() > 1);

    let decoded = decode(text.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(decoded.origins, expected);
}

#[test]
fn apiserver_event_list_decodes_every_item_intact() {
    let items = [pod_create_item(), secret_get_item()];
    let body = format!(
        "{}\n",
        json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "metadata": {},
            "items": items,
        })
    );

    let decoded = decode(body.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(decoded.events.len(), 2);
    assert_eq!(
        decoded.origins,
        vec![Location::item(1, 0), Location::item(1, 1)]
    );

    let (event, item) = (&decoded.events[0], &items[0]);
    // Items carry no kind or apiVersion.
    assert_eq!(event.kind, "");
    assert_eq!(event.api_version, "");
    assert_eq!(event.level, "RequestResponse");
    assert_eq!(event.audit_id, item["auditID"].as_str().unwrap());
    assert_eq!(event.stage, "ResponseComplete");
    assert_eq!(event.request_uri, item["requestURI"].as_str().unwrap());
    assert_eq!(event.verb, "create");
    assert_eq!(event.user.username, "alice");
    assert_eq!(event.user.uid, "u-1234");
    assert_eq!(event.user.groups, ["devs", "system:authenticated"]);
    assert_eq!(event.user.extra["scopes"], ["openid", "email"]);
    let impersonated = event.impersonated_user.as_ref().expect("impersonatedUser");
    assert_eq!(impersonated.username, "bob");
    assert_eq!(impersonated.groups, ["ops"]);
    assert_eq!(event.source_ips, ["10.0.0.7", "192.168.1.1"]);
    assert_eq!(event.user_agent, item["userAgent"].as_str().unwrap());

    let object_ref = event.object_ref.as_ref().expect("objectRef");
    assert_eq!(object_ref.resource, "pods");
    assert_eq!(object_ref.namespace, "payments");
    assert_eq!(object_ref.name, "web-1");
    assert_eq!(object_ref.uid, item["objectRef"]["uid"].as_str().unwrap());
    assert_eq!(object_ref.api_group, "");
    assert_eq!(object_ref.api_version, "v1");
    assert_eq!(object_ref.resource_version, "98765");
    assert_eq!(object_ref.subresource, "");

    let status = event.response_status.as_ref().expect("responseStatus");
    assert_eq!(status.code, 201);

    let request: Value =
        serde_json::from_str(event.request_object.as_ref().expect("requestObject").get()).unwrap();
    assert_eq!(request, item["requestObject"]);
    let response: Value = serde_json::from_str(
        event
            .response_object
            .as_ref()
            .expect("responseObject")
            .get(),
    )
    .unwrap();
    assert_eq!(response, item["responseObject"]);

    assert_eq!(
        event.request_received_timestamp,
        "2024-05-01T10:00:00.123456Z"
    );
    assert_eq!(event.stage_timestamp, "2024-05-01T10:00:00.234567Z");
    assert_eq!(event.time(), "2024-05-01T10:00:00.234567Z");
    assert_eq!(event.annotations.len(), 2);
    assert_eq!(event.annotations["authorization.k8s.io/decision"], "allow");

    // The second item has no bodies and no response status.
    let second = &decoded.events[1];
    assert_eq!(second.audit_id, items[1]["auditID"].as_str().unwrap());
    assert_eq!(second.stage, "RequestReceived");
    assert_eq!(second.verb, "get");
    assert!(second.request_object.is_none());
    assert!(second.response_object.is_none());
    assert!(second.response_status.is_none());
    assert!(second.impersonated_user.is_none());
    assert_eq!(
        second.object_ref.as_ref().map(|r| r.resource.as_str()),
        Some("secrets")
    );
}

#[test]
fn json_array_of_events_decodes_with_item_origins() {
    let input =
        serde_json::to_string_pretty(&json!([pod_create_item(), secret_get_item()])).unwrap();
    let decoded = decode(input.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(
        audit_ids(&decoded),
        [
            pod_create_item()["auditID"].as_str().unwrap(),
            secret_get_item()["auditID"].as_str().unwrap()
        ]
    );
    assert_eq!(
        decoded.origins,
        vec![Location::item(1, 0), Location::item(1, 1)]
    );
}

#[test]
fn single_pretty_printed_event_spanning_many_lines_decodes() {
    let mut event = pod_create_item();
    event["kind"] = json!("Event");
    event["apiVersion"] = json!("audit.k8s.io/v1");
    let input = serde_json::to_string_pretty(&event).unwrap();
    assert!(
        input.lines().count() > 20,
        "the fixture must span many lines"
    );

    let decoded = decode(input.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(decoded.events.len(), 1);
    assert_eq!(decoded.origins, vec![Location::line(1)]);
    let decoded_event = &decoded.events[0];
    assert_eq!(decoded_event.kind, "Event");
    assert_eq!(decoded_event.api_version, "audit.k8s.io/v1");
    assert_eq!(decoded_event.audit_id, event["auditID"].as_str().unwrap());
    assert_eq!(
        decoded_event.object_ref.as_ref().unwrap().name,
        event["objectRef"]["name"].as_str().unwrap()
    );
    let request: Value =
        serde_json::from_str(decoded_event.request_object.as_ref().unwrap().get()).unwrap();
    assert_eq!(request, event["requestObject"]);
}

#[test]
fn json_lines_with_a_bad_line_keep_the_other_events() {
    let input = [
        event_line("a-1"),
        event_line("a-2"),
        "{not json".to_owned(),
        event_line("a-4"),
        event_line("a-5"),
    ]
    .join("\n");

    let decoded = decode(input.as_bytes());
    assert_eq!(audit_ids(&decoded), ["a-1", "a-2", "a-4", "a-5"]);
    assert_eq!(
        decoded.origins,
        vec![
            Location::line(1),
            Location::line(2),
            Location::line(4),
            Location::line(5)
        ]
    );
    assert_eq!(decoded.errors.len(), 1, "{:?}", decoded.errors);
    let err = &decoded.errors[0];
    assert_eq!(err.location.line, 3);
    assert_eq!(err.location.item, None);
    assert!(!err.reason.is_empty());
    assert!(err.to_string().starts_with("line 3"), "{err}");
}

#[test]
fn event_list_with_a_bad_item_keeps_the_other_items() {
    let mut bad = secret_get_item();
    bad["auditID"] = json!("bad-item");
    bad["verb"] = json!(5);
    let list = json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "metadata": {},
        "items": [pod_create_item(), bad, event_line_value("c-3")],
    });

    // Compact, as the apiserver sends it: everything is on line 1.
    let decoded = decode(list.to_string().as_bytes());
    assert_eq!(
        audit_ids(&decoded),
        [pod_create_item()["auditID"].as_str().unwrap(), "c-3"]
    );
    assert_eq!(
        decoded.origins,
        vec![Location::item(1, 0), Location::item(1, 2)]
    );
    assert_eq!(decoded.errors.len(), 1, "{:?}", decoded.errors);
    let err = &decoded.errors[0];
    assert_eq!(err.location.item, Some(1), "{err}");
    assert_eq!(err.location.line, 1, "{err}");
    assert!(err.reason.contains("invalid type"), "{err}");

    // Pretty-printed: the error names the line of the bad field.
    let pretty = serde_json::to_string_pretty(&list).unwrap();
    let bad_line = pretty
        .lines()
        .position(|l| l.trim_start().starts_with("\"verb\": 5"))
        .expect("the bad field is on its own line")
        + 1;
    let decoded = decode(pretty.as_bytes());
    assert_eq!(decoded.events.len(), 2);
    assert_eq!(decoded.errors.len(), 1, "{:?}", decoded.errors);
    assert_eq!(decoded.errors[0].location.item, Some(1));
    assert_eq!(decoded.errors[0].location.line, bad_line);
}

fn event_line_value(audit_id: &str) -> Value {
    serde_json::from_str(&event_line(audit_id)).unwrap()
}

#[test]
fn empty_input_yields_nothing() {
    for input in ["", "\n", "  \n\t\n  ", "\r\n\r\n"] {
        let decoded = decode(input.as_bytes());
        assert!(decoded.events.is_empty(), "{input:?}");
        assert!(decoded.origins.is_empty(), "{input:?}");
        assert!(decoded.errors.is_empty(), "{input:?}: {:?}", decoded.errors);
    }
}

#[test]
fn unknown_fields_are_tolerated() {
    let input = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v2alpha1",
        "auditID": "future-1",
        "verb": "patch",
        "someFutureField": {"nested": [1, 2, 3]},
        "user": {"username": "carol", "someFutureUserField": true},
        "objectRef": {"resource": "deployments", "apiGroup": "apps", "shard": 7},
        "responseStatus": {"code": 200, "details": {"kind": "x"}},
    })
    .to_string();

    let decoded = decode(input.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(decoded.events.len(), 1);
    let event = &decoded.events[0];
    assert_eq!(event.audit_id, "future-1");
    assert_eq!(event.verb, "patch");
    assert_eq!(event.user.username, "carol");
    let object_ref = event.object_ref.as_ref().unwrap();
    assert_eq!(object_ref.resource, "deployments");
    assert_eq!(object_ref.api_group, "apps");
    assert_eq!(event.response_status.as_ref().unwrap().code, 200);
}

#[test]
fn event_time_prefers_stage_then_received_then_v1beta1_timestamp() {
    let time_of = |mut event: Value| -> String {
        event["kind"] = json!("Event");
        event["apiVersion"] = json!("audit.k8s.io/v1");
        let decoded = decode(event.to_string().as_bytes());
        assert_no_errors(&decoded);
        assert_eq!(decoded.events.len(), 1);
        decoded.events[0].time().to_owned()
    };

    // v1beta1 with only its own `timestamp`.
    let v1beta1: Event = {
        let input = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1beta1",
            "auditID": "old-1",
            "timestamp": "2018-10-25T14:09:12Z",
        });
        let decoded = decode(input.to_string().as_bytes());
        assert_no_errors(&decoded);
        decoded.events.into_iter().next().unwrap()
    };
    assert_eq!(v1beta1.timestamp, "2018-10-25T14:09:12Z");
    assert_eq!(v1beta1.time(), "2018-10-25T14:09:12Z");

    assert_eq!(
        time_of(json!({
            "timestamp": "2018-10-25T14:09:12Z",
            "requestReceivedTimestamp": "2018-10-25T14:09:12.572676Z",
        })),
        "2018-10-25T14:09:12.572676Z"
    );
    assert_eq!(
        time_of(json!({
            "timestamp": "2018-10-25T14:09:12Z",
            "requestReceivedTimestamp": "2018-10-25T14:09:12.572676Z",
            "stageTimestamp": "2018-10-25T14:09:12.581541Z",
        })),
        "2018-10-25T14:09:12.581541Z"
    );
    assert_eq!(time_of(json!({"auditID": "no-time"})), "");
}

#[test]
fn origins_follow_lines_and_list_items_in_json_lines() {
    // Line 2 is blank; line 4 is a whole EventList written as one line.
    let list = json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "items": [event_line_value("l4-0"), event_line_value("l4-1")],
    });
    let input = format!(
        "{}\n\n{}\n{}\n{}\n",
        event_line("l1"),
        event_line("l3"),
        list,
        event_line("l5")
    );

    let decoded = decode(input.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(audit_ids(&decoded), ["l1", "l3", "l4-0", "l4-1", "l5"]);
    assert_eq!(
        decoded.origins,
        vec![
            Location::line(1),
            Location::line(3),
            Location::item(4, 0),
            Location::item(4, 1),
            Location::line(5),
        ]
    );
}

#[test]
fn a_cut_or_garbled_first_line_costs_only_itself() {
    for first in [r#"{"kind":"Ev"#, "garbage"] {
        let input = format!("{first}\n{}\n{}\n", event_line("a"), event_line("b"));
        let decoded = decode(input.as_bytes());
        assert_eq!(audit_ids(&decoded), ["a", "b"], "first line {first:?}");
        assert_eq!(decoded.errors.len(), 1, "{:?}", decoded.errors);
        assert_eq!(decoded.errors[0].location.line, 1);
        assert!(decoded.errors[0].reason.starts_with("invalid JSON"));
        assert_eq!(decoded.origins, vec![Location::line(2), Location::line(3)]);
    }
}

#[test]
fn leading_blank_lines_shift_origins() {
    let input = format!("\n\n{}\n", event_line("a"));
    let decoded = decode(input.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(decoded.origins, vec![Location::line(3)]);
    let list = format!(
        "\n{}\n",
        json!({"kind": "EventList", "items": [event_line_value("x")]})
    );
    assert_eq!(decode(list.as_bytes()).origins, vec![Location::item(2, 0)]);
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let input = format!("\u{feff}{}\n", event_line("a"));
    let decoded = decode(input.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(audit_ids(&decoded), ["a"]);
}

#[test]
fn json_that_is_not_an_object_is_refused_without_internal_names() {
    for input in ["null", "5", "\"text\""] {
        let decoded = decode(input.as_bytes());
        assert!(decoded.events.is_empty());
        assert_eq!(decoded.errors.len(), 1);
        let reason = &decoded.errors[0].reason;
        assert!(
            reason.contains("expected an audit EventList"),
            "{input}: {reason}"
        );
        assert!(!reason.contains("Raw"), "{input}: {reason}");
    }
}

#[test]
fn an_event_list_with_one_item_per_line_is_one_document() {
    let input = "{\"kind\":\"EventList\",\"items\":[\n{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"auditID\":\"a\"},\n{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"auditID\":\"b\"}\n]}\n";
    let decoded = decode(input.as_bytes());
    assert_no_errors(&decoded);
    assert_eq!(audit_ids(&decoded), ["a", "b"]);
}

#[test]
fn an_item_with_an_unpaired_surrogate_costs_only_itself() {
    let input = r#"{"kind":"EventList","items":[{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a"},{"auditID":"\ud800"},{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"c"}]}"#;
    let decoded = decode(input.as_bytes());
    assert_eq!(audit_ids(&decoded), ["a", "c"]);
    assert_eq!(decoded.errors.len(), 1);
    assert_eq!(decoded.errors[0].location.item, Some(1));
}
