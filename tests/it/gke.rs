//! GKE's Kubernetes audit log entries (Cloud Logging `LogEntry`s with an AuditLog
//! `protoPayload` of service `k8s.io`), mapped by `klaxon::audit::event_from_gke_log_entry`
//! and run through real rules: the shipped `scripts/` and a script compiled here. The
//! alerts name the cluster of the entry's `resource.labels.cluster_name`, not the
//! configured one. The three ways entries reach a user (`gcloud logging read
//! --format=json`, a Cloud Storage sink file, a Pub/Sub push body) each map entry by entry.
//!
//! Fixtures: tests/fixtures/gke, authored from Google's documentation (its README.md cites
//! the pages: LogEntry, AuditLog, GKE audit logging, Cloud Storage sinks, Pub/Sub push).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use klaxon::audit::{Event, event_from_gke_log_entry};
use klaxon::rules::{Alert, Ruleset, ScriptLimits, ScriptSource};
use serde_json::Value;
use serde_json::value::RawValue;

/// The cluster klaxon's config names; GKE events name their own.
const CONFIGURED_CLUSTER: &str = "configured-cluster";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gke")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mapped(json: &str) -> Arc<Event> {
    Arc::new(
        event_from_gke_log_entry(json)
            .expect("the entry maps")
            .expect("the entry is a Kubernetes audit entry"),
    )
}

/// The shipped rules, as `klaxon serve` loads them.
fn shipped_rules() -> Ruleset {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"));
    Ruleset::load(&[dir], &ScriptLimits::default(), CONFIGURED_CLUSTER)
        .unwrap_or_else(|e| panic!("scripts/ does not load:\n{e}"))
}

fn alerts_of<'a>(alerts: &'a [Alert], rule: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| a.rule == rule).collect()
}

#[test]
fn exec_rule_fires_once_when_the_gke_exec_opens_and_names_its_cluster() {
    let rules = shipped_rules();
    let started = rules.evaluate(mapped(&fixture("exec_first.json")));
    assert!(started.errors.is_empty(), "{:?}", started.errors);
    let exec = alerts_of(&started.alerts, "exec_or_attach");
    assert_eq!(
        exec.len(),
        1,
        "the first entry opens the session: {:?}",
        started.alerts
    );
    let done = rules.evaluate(mapped(&fixture("exec_last.json")));
    assert!(
        alerts_of(&done.alerts, "exec_or_attach").is_empty(),
        "the last entry of the same session: {:?}",
        done.alerts
    );
    let alert = exec[0];
    assert_eq!(
        alert.title,
        "bob@acme.example exec'd into pod payments/api-7d9f6c5b8-x2kqp"
    );
    assert_eq!(alert.context.cluster, "prod-eu-1");
    assert_eq!(
        alert.context.audit_id,
        "c3d9e5a1-2b7f-4c6e-8d0a-9f1e3b5c7d24"
    );
    assert_eq!(alert.context.stage, "ResponseStarted");
    assert_eq!(alert.context.source_ips, ["198.51.100.7"]);
    assert_eq!(
        alert.context.object,
        "pods/exec payments/api-7d9f6c5b8-x2kqp"
    );
    assert_eq!(alert.context.event_time, "2026-11-30T10:02:11.904512Z");
}

#[test]
fn pod_created_rule_reads_the_mapped_request_and_response() {
    let eval = shipped_rules().evaluate(mapped(&fixture("pod_create.json")));
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    let created = alerts_of(&eval.alerts, "pod_created");
    assert_eq!(created.len(), 1, "{:?}", eval.alerts);
    assert_eq!(created[0].title, "Pod created: default/nginx");
    assert_eq!(created[0].fields["images"], "nginx:1.27");
    assert_eq!(created[0].fields["result"], "201");
    assert_eq!(created[0].context.cluster, "prod-eu-1");
    assert_eq!(created[0].context.user, "alice@acme.example");
}

/// A script compiled from a string sees the mapped status, annotations and objectRef; an
/// event without a cluster of its own keeps the configured one.
#[test]
fn a_script_sees_the_denied_secret_read() {
    let script = r#"
        if event.objectRef.resource == "secrets" && event.verb == "get"
                && event.responseStatus.code == 403
                && event.annotations["authorization.k8s.io/decision"] == "forbid" {
            alert(#{ title: `denied: ${event.user.username} ${event.requestURI}`, severity: "warning" });
        }
    "#;
    let source = ScriptSource {
        name: "secret_denied".to_owned(),
        path: PathBuf::from("scripts/secret_denied.rhai"),
        text: script.to_owned(),
    };
    let rules = Ruleset::compile(vec![source], &ScriptLimits::default(), CONFIGURED_CLUSTER)
        .expect("the script compiles");
    let eval = rules.evaluate(mapped(&fixture("secret_get_denied.json")));
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    assert_eq!(eval.alerts.len(), 1, "{:?}", eval.alerts);
    assert_eq!(
        eval.alerts[0].title,
        "denied: mallory@acme.example /api/v1/namespaces/payments/secrets/db-password"
    );
    assert_eq!(eval.alerts[0].context.cluster, "prod-eu-1");
    assert_eq!(eval.alerts[0].context.response_code, 403);

    let mut native = (*mapped(&fixture("secret_get_denied.json"))).clone();
    native.cluster.clear();
    let eval = rules.evaluate(Arc::new(native));
    assert_eq!(eval.alerts.len(), 1, "{:?}", eval.alerts);
    assert_eq!(eval.alerts[0].context.cluster, CONFIGURED_CLUSTER);
}

/// What the mapping makes of each entry: `(auditID, stage, verb object)` or `skipped`.
fn summary(entry: &str) -> String {
    match event_from_gke_log_entry(entry) {
        Ok(Some(e)) => format!(
            "{} {} {} {}",
            e.audit_id,
            e.stage,
            e.verb,
            e.object_display()
        ),
        Ok(None) => "skipped".to_owned(),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn gcloud_logging_read_export_maps_entry_by_entry() {
    let text = fixture("gcloud_logging_read.json");
    let entries: Vec<&RawValue> = serde_json::from_str(&text).expect("a JSON array");
    let got: Vec<String> = entries.iter().map(|e| summary(e.get())).collect();
    assert_eq!(
        got,
        [
            "a41c7e93-6d2b-4f0a-8e5c-3b9d1f7a2c58 ResponseComplete get secrets payments/db-password",
            "5e8a2f70-1c3d-4b9e-a6f2-7d0b4c8e1f36 ResponseComplete update clusterrolebindings ops-admins",
            "7f1b3c2e-9a4d-4e8b-b6a1-2c5d8e9f0a11 ResponseComplete create pods default/nginx",
            "skipped",
        ]
    );
}

#[test]
fn storage_sink_file_maps_line_by_line_and_keeps_both_exec_entries() {
    let text = fixture("storage_sink_S0.json");
    let got: Vec<String> = text.lines().map(summary).collect();
    let exec = "c3d9e5a1-2b7f-4c6e-8d0a-9f1e3b5c7d24";
    assert_eq!(
        got,
        [
            format!("{exec} ResponseStarted create pods/exec payments/api-7d9f6c5b8-x2kqp"),
            format!("{exec} ResponseComplete create pods/exec payments/api-7d9f6c5b8-x2kqp"),
            "5e8a2f70-1c3d-4b9e-a6f2-7d0b4c8e1f36 ResponseComplete update clusterrolebindings ops-admins".to_owned(),
            "skipped".to_owned(),
        ]
    );
}

#[test]
fn pubsub_push_body_carries_one_entry_in_base64() {
    let body: Value = serde_json::from_str(&fixture("pubsub_push.json")).expect("JSON");
    assert_eq!(
        body["subscription"],
        "projects/acme-prod/subscriptions/klaxon-gke-audit"
    );
    let data = body["message"]["data"].as_str().expect("message.data");
    let entry = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    let entry = String::from_utf8(entry).expect("UTF-8");
    let pushed = mapped(&entry);
    let direct = mapped(&fixture("exec_last.json"));
    assert_eq!(
        serde_json::to_value(&*pushed).unwrap(),
        serde_json::to_value(&*direct).unwrap()
    );
    assert_eq!(pushed.cluster, "prod-eu-1");
    let eval = shipped_rules().evaluate(pushed);
    assert_eq!(
        alerts_of(&eval.alerts, "exec_or_attach").len(),
        1,
        "{:?}",
        eval.alerts
    );
}
