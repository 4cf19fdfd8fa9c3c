//! The `[scripts.settings]` the shipped rules read, each shown to change what they raise:
//! `cluster_networks` and `trusted_principals` (docs/SCRIPTING.md), and the rules' own
//! lists (`trusted_workload_principals`, `trusted_pod_images`). Each test takes an attack of
//! examples/events/attacks.jsonl, checks the rule meant for it fires without the setting,
//! then sets it (or gives the event the principal the setting names) and checks the change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use klaxon::audit::decode;
use klaxon::clock::parse_time_ms;
use klaxon::rules::{Alert, Ruleset, ScriptLimits, Severity};
use serde_json::{Value, json};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shipped rules with `settings` under `[scripts.settings]`.
fn shipped_rules(settings: Value) -> Ruleset {
    let mut rules = Ruleset::load(&[repo("scripts")], &ScriptLimits::default(), "test")
        .unwrap_or_else(|e| panic!("scripts/ does not load:\n{e}"));
    let settings: BTreeMap<String, Value> = serde_json::from_value(settings).unwrap();
    rules.set_settings(&settings);
    rules
}

/// The event of attacks.jsonl with this auditID, as JSON to change.
fn attack(audit_id: &str) -> Value {
    let text = std::fs::read_to_string(repo("examples/events/attacks.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["auditID"] == audit_id)
        .unwrap_or_else(|| panic!("attacks.jsonl has no event {audit_id}"))
}

/// The alerts of `rule` on `event`.
fn alerts_of(rules: &Ruleset, rule: &str, event: &Value) -> Vec<Alert> {
    let decoded = decode(event.to_string().as_bytes());
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let event = decoded.events.into_iter().next().expect("one event");
    let now = parse_time_ms(event.time()).unwrap();
    let evaluation = rules.evaluate_at(Arc::new(event), now);
    assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
    evaluation
        .alerts
        .into_iter()
        .filter(|a| a.rule == rule)
        .collect()
}

/// `event` done by `user` instead.
fn by(mut event: Value, user: &str) -> Value {
    event["user"]["username"] = json!(user);
    event
}

const OUTSIDE: &str = "attack-system_principal_outside_networks-kubelet-cert";

#[test]
fn cluster_networks_replaces_the_private_ranges() {
    let rule = "system_principal_outside_networks";
    let event = attack(OUTSIDE);
    let mut inside_private = event.clone();
    inside_private["sourceIPs"] = json!(["10.0.1.5"]);
    let defaults = shipped_rules(json!({}));
    assert_eq!(alerts_of(&defaults, rule, &event).len(), 1);
    assert!(alerts_of(&defaults, rule, &inside_private).is_empty());

    // Nodes on public addresses: their network is the cluster's, and 10/8 no longer is.
    let public_nodes = shipped_rules(json!({ "cluster_networks": ["203.0.113.0/24"] }));
    assert!(alerts_of(&public_nodes, rule, &event).is_empty());
    let fired = alerts_of(&public_nodes, rule, &inside_private);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].fields["source"], "10.0.1.5");
}

#[test]
fn with_cluster_networks_set_a_components_own_client_from_outside_alerts_too() {
    let rule = "system_principal_outside_networks";
    // A kubelet's own request from a public egress address (EKS without private endpoint
    // access, AKS without a private API server): expected while the networks are unknown.
    let mut kubelet = attack(OUTSIDE);
    kubelet["sourceIPs"] = json!(["52.18.7.9"]);
    kubelet["userAgent"] = json!("kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46");
    assert!(alerts_of(&shipped_rules(json!({})), rule, &kubelet).is_empty());

    let declared = shipped_rules(json!({ "cluster_networks": ["10.0.0.0/16"] }));
    let fired = alerts_of(&declared, rule, &kubelet);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].severity, Severity::Critical);
    assert_eq!(fired[0].fields["networks"], "cluster_networks");
    // Once the egress address is declared one of the cluster's, it is quiet again.
    let with_egress = shipped_rules(json!({ "cluster_networks": ["10.0.0.0/16", "52.18.7.9"] }));
    assert!(alerts_of(&with_egress, rule, &kubelet).is_empty());
}

#[test]
fn trusted_principals_quiets_a_system_principal_from_outside() {
    let rule = "system_principal_outside_networks";
    let event = attack(OUTSIDE);
    let trusting = shipped_rules(json!({ "trusted_principals": ["system:node:worker-*"] }));
    assert!(alerts_of(&trusting, rule, &event).is_empty());
    let other_node = by(event, "system:node:edge-1");
    assert_eq!(alerts_of(&trusting, rule, &other_node).len(), 1);
}

#[test]
fn trusted_principals_quiets_the_configuration_change_rules() {
    let defaults = shipped_rules(json!({}));
    let trusting =
        shipped_rules(json!({ "trusted_principals": ["system:serviceaccount:argocd:*"] }));
    let gitops = "system:serviceaccount:argocd:argocd-application-controller";
    for (rule, audit_id) in [
        (
            "admission_webhook_changed",
            "attack-admission_webhook_changed-url",
        ),
        (
            "cluster_admin_binding",
            "attack-cluster_admin_binding-created",
        ),
        (
            "rbac_escalation_grant",
            "attack-rbac_escalation_grant-clusterrole",
        ),
    ] {
        let event = by(attack(audit_id), gitops);
        assert!(
            !alerts_of(&defaults, rule, &event).is_empty(),
            "{rule} fires on {audit_id} by {gitops} while nobody is trusted"
        );
        let quiet = alerts_of(&trusting, rule, &event);
        assert!(quiet.is_empty(), "{rule} on {audit_id}: {quiet:?}");
    }
}

#[test]
fn a_trusted_principal_writing_a_persistent_workload_alerts_only_at_error() {
    let rule = "persistent_workload";
    let event = by(
        attack("attack-persistent_workload-daemonset"),
        "ci-deployer",
    );
    let loud = alerts_of(&shipped_rules(json!({})), rule, &event);
    assert!(!loud.is_empty(), "fires while nobody is trusted");
    let trusting = shipped_rules(json!({ "trusted_principals": ["ci-deployer"] }));
    let left = alerts_of(&trusting, rule, &event);
    assert!(
        left.iter().all(|a| a.severity >= Severity::Error),
        "{left:?}"
    );
    assert_eq!(
        left.is_empty(),
        loud.iter().all(|a| a.severity < Severity::Error),
        "quiet exactly when the workload is less than an error: {loud:?} → {left:?}"
    );
}

#[test]
fn trusted_workload_principals_quiets_the_pod_risk_rules() {
    let trusting = shipped_rules(json!({ "trusted_workload_principals": ["platform-bot"] }));
    let defaults = shipped_rules(json!({}));
    for (rule, audit_id) in [
        (
            "dangerous_capabilities",
            "attack-dangerous_capabilities-sys-admin",
        ),
        ("risky_pod_settings", "attack-risky_pod_settings-hostpath"),
    ] {
        let event = by(attack(audit_id), "platform-bot");
        assert!(!alerts_of(&defaults, rule, &event).is_empty(), "{rule}");
        let quiet = alerts_of(&trusting, rule, &event);
        assert!(quiet.is_empty(), "{rule}: {quiet:?}");
    }
}

#[test]
fn trusted_pod_images_quiets_the_containers_of_those_images() {
    let rule = "dangerous_capabilities";
    let event = attack("attack-dangerous_capabilities-sys-admin");
    let image = event["requestObject"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("the attack names an image")
        .to_owned();
    // The repository: the image without its tag (the attack's image has no digest).
    let repository = image
        .rsplit_once(':')
        .map_or(image.as_str(), |(r, _)| r)
        .to_owned();
    assert!(
        !repository.contains('@') && !repository.is_empty(),
        "{image}"
    );
    assert!(!alerts_of(&shipped_rules(json!({})), rule, &event).is_empty());
    let trusting = shipped_rules(json!({ "trusted_pod_images": [repository] }));
    let quiet = alerts_of(&trusting, rule, &event);
    assert!(quiet.is_empty(), "{image}: {quiet:?}");
}
