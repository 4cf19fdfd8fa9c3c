//! The address, capability and trust helpers in scripts, on events: `ip_in_cidr`,
//! `ip_in_any`, `is_private_ip` on `sourceIPs`; `event.capabilities_added()` on Pods,
//! workload templates and CronJobs; and the settings `cluster_networks` and
//! `trusted_principals` through `in_cluster_networks`, `event.from_cluster_networks()` and
//! `is_trusted_principal`, read by rules compiled from script text and set from a config
//! file, whose bad values fail the load naming their line.

use std::path::PathBuf;
use std::sync::Arc;

use klaxon::audit::{Event, decode};
use klaxon::rules::{Evaluation, Ruleset, ScriptLimits, ScriptSource};
use serde_json::{Value, json};

fn rules_with(script: &str) -> Ruleset {
    let source = ScriptSource {
        name: "net".into(),
        path: PathBuf::from("net.rhai"),
        text: script.into(),
    };
    Ruleset::compile(vec![source], &ScriptLimits::default(), "test").expect("compiles")
}

/// One audit event from `fields` (the audit identity added).
fn event(fields: Value) -> Arc<Event> {
    let mut object = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": "a1", "stage": "ResponseComplete", "verb": "get", "requestURI": "/api"});
    object
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let mut decoded = decode(object.to_string().as_bytes());
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    Arc::new(decoded.events.remove(0))
}

fn from(ips: &[&str]) -> Arc<Event> {
    event(json!({"sourceIPs": ips, "user": {"username": "system:node:worker-1"}}))
}

/// The titles the rule raised on `event`; a script error fails the test.
fn titles(rules: &Ruleset, event: Arc<Event>) -> Vec<String> {
    let eval = rules.evaluate(event);
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    eval.alerts.into_iter().map(|a| a.title).collect()
}

/// The first script error of the rule on `event`.
fn error(rules: &Ruleset, event: Arc<Event>) -> String {
    let Evaluation { errors, alerts, .. } = rules.evaluate(event);
    assert!(alerts.is_empty(), "{alerts:?}");
    errors
        .first()
        .map(|e| e.message.clone())
        .expect("the script failed")
}

/// The rule raises one alert titled with the value of `expr`.
fn rule_showing(expr: &str) -> Ruleset {
    rules_with(&format!("alert(#{{ title: `${{{expr}}}` }});"))
}

#[test]
fn a_rule_classifies_the_source_address() {
    let rules = rules_with(
        r#"
        let ip = event.sourceIPs[0];
        let kind = if ip.ip_in_cidr("10.0.0.0/8") { "pods" }
            else if ip_in_any(ip, ["192.168.0.0/16", "fd00::/8"]) { "nodes" }
            else if is_private_ip(ip) { "private" }
            else { "public" };
        alert(#{ title: kind });
        "#,
    );
    for (ip, kind) in [
        ("10.244.1.7", "pods"),
        ("::ffff:10.244.1.7", "pods"),
        ("192.168.4.2", "nodes"),
        ("fd00::42", "nodes"),
        ("172.20.0.5", "private"),
        ("100.64.3.3", "private"),
        ("169.254.169.254", "private"),
        ("fe80::1", "private"),
        ("::1", "private"),
        ("203.0.113.50", "public"),
        ("2001:db8::1", "public"),
        ("not-an-ip", "public"),
    ] {
        assert_eq!(titles(&rules, from(&[ip])), [kind], "{ip}");
    }
}

#[test]
fn a_bad_network_in_a_script_is_an_error_naming_it() {
    let single = rules_with(
        r#"if event.sourceIPs[0].ip_in_cidr("10.0.0.0/33") { alert(#{ title: "x" }); }"#,
    );
    let err = error(&single, from(&["10.0.0.1"]));
    assert!(
        err.contains("ip_in_cidr") && err.contains("`10.0.0.0/33`"),
        "{err}"
    );
    let listed = rules_with(
        r#"if ip_in_any(event.sourceIPs[0], ["10.0.0.0/8", "10.0.0/8"]) { alert(#{ title: "x" }); }"#,
    );
    let err = error(&listed, from(&["10.0.0.1"]));
    assert!(
        err.contains("ip_in_any") && err.contains("`10.0.0/8`"),
        "{err}"
    );
    let typed = rules_with(
        r#"if ip_in_any(event.sourceIPs[0], ["10.0.0.0/8", 10]) { alert(#{ title: "x" }); }"#,
    );
    let err = error(&typed, from(&["10.0.0.1"]));
    assert!(err.contains("must be strings"), "{err}");
}

fn pod_event(kind: &str, spec: Value) -> Arc<Event> {
    let (resource, object) = match kind {
        "Pod" => ("pods", json!({"kind": "Pod", "spec": spec})),
        "CronJob" => (
            "cronjobs",
            json!({"kind": "CronJob", "spec": {"schedule": "* * * * *",
                "jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
        ),
        other => (
            "deployments",
            json!({"kind": other, "spec": {"template": {"spec": spec}}}),
        ),
    };
    event(json!({"verb": "create", "level": "Request",
        "objectRef": {"resource": resource, "namespace": "ns"}, "requestObject": object}))
}

#[test]
fn capabilities_added_by_every_container_normalised_and_deduplicated() {
    let rules = rule_showing("event.capabilities_added()");
    let spec = json!({
        "containers": [
            {"name": "a", "image": "x", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "cap_sys_admin"], "drop": ["ALL"]}}},
            {"name": "b", "image": "x"},
            {"name": "c", "image": "x", "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "CAP_BPF"]}}},
        ],
        "initContainers": [
            {"name": "i", "image": "x", "securityContext": {"capabilities": {"add": ["sys_ptrace", "net_admin"]}}},
        ],
        "ephemeralContainers": [
            {"name": "e", "image": "x", "securityContext": {"capabilities": {"add": ["all"]}}},
        ],
    });
    let expected = r#"["NET_ADMIN", "SYS_ADMIN", "BPF", "SYS_PTRACE", "ALL"]"#;
    for kind in ["Pod", "Deployment", "DaemonSet", "CronJob"] {
        assert_eq!(
            titles(&rules, pod_event(kind, spec.clone())),
            [expected],
            "{kind}"
        );
    }
    // Nothing added, no pod spec, or odd values: nothing reported, nothing fails.
    let odd = json!({"containers": [
        {"name": "a", "image": "x", "securityContext": {"capabilities": {"add": "SYS_ADMIN"}}},
        {"name": "b", "image": "x", "securityContext": {"capabilities": {"add": [7, null, ""]}}},
        {"name": "c", "image": "x", "securityContext": {"privileged": true}},
    ]});
    assert_eq!(titles(&rules, pod_event("Pod", odd)), ["[]"]);
    assert_eq!(titles(&rules, from(&["10.0.0.1"])), ["[]"]);
    // A rule reading them.
    let dangerous = rules_with(
        r#"let caps = event.capabilities_added().filter(|c| c in ["ALL", "SYS_ADMIN", "BPF"]);
           if caps.len() > 0 { alert(#{ title: `dangerous: ${caps}` }); }"#,
    );
    let pod = |caps: Value| {
        pod_event(
            "Pod",
            json!({"containers": [{"name": "a", "image": "x",
                "securityContext": {"capabilities": {"add": caps}}}]}),
        )
    };
    assert_eq!(
        titles(&dangerous, pod(json!(["CAP_SYS_ADMIN", "CHOWN"]))),
        [r#"dangerous: ["SYS_ADMIN"]"#]
    );
    assert_eq!(
        titles(&dangerous, pod(json!(["ALL"]))),
        [r#"dangerous: ["ALL"]"#]
    );
    assert!(titles(&dangerous, pod(json!(["NET_BIND_SERVICE"]))).is_empty());
}

/// Rules with `settings` (as `[scripts.settings]` gives them).
fn with_settings(mut rules: Ruleset, settings: Value) -> Ruleset {
    let settings = serde_json::from_value(settings).unwrap();
    rules.set_settings(&settings);
    rules
}

const OUTSIDE: &str = r#"
let user = event.user.username;
if is_system_user(user) && !event.from_cluster_networks() && !is_trusted_principal(user) {
    alert(#{ title: `${user} outside` });
}
"#;

#[test]
fn the_cluster_networks_default_to_the_private_ranges() {
    let rules = rules_with(OUTSIDE);
    assert!(titles(&rules, from(&["10.0.0.5"])).is_empty());
    assert!(titles(&rules, from(&["fd00::5", "192.168.1.1"])).is_empty());
    assert_eq!(
        titles(&rules, from(&["203.0.113.7"])),
        ["system:node:worker-1 outside"]
    );
    // A forged X-Forwarded-For in front of the real, outside, address does not hide it.
    assert_eq!(
        titles(&rules, from(&["10.0.0.5", "203.0.113.7"])),
        ["system:node:worker-1 outside"]
    );
    // No source address: not known to be inside.
    assert_eq!(titles(&rules, from(&[])), ["system:node:worker-1 outside"]);
    let single = rule_showing("in_cluster_networks(event.sourceIPs[0])");
    assert_eq!(titles(&single, from(&["172.16.0.1"])), ["true"]);
    assert_eq!(titles(&single, from(&["8.8.8.8"])), ["false"]);
}

#[test]
fn the_cluster_networks_setting_replaces_the_private_ranges() {
    let rules = with_settings(
        rules_with(OUTSIDE),
        json!({"cluster_networks": ["10.0.0.0/16", "203.0.113.0/24", "2001:db8:10::/48"]}),
    );
    assert!(titles(&rules, from(&["10.0.9.9"])).is_empty());
    assert!(titles(&rules, from(&["203.0.113.7"])).is_empty());
    assert!(titles(&rules, from(&["2001:db8:10::1"])).is_empty());
    // Private, but not the cluster's.
    assert_eq!(
        titles(&rules, from(&["10.1.0.1"])),
        ["system:node:worker-1 outside"]
    );
    assert_eq!(
        titles(&rules, from(&["192.168.0.1"])),
        ["system:node:worker-1 outside"]
    );
}

#[test]
fn trusted_principals_are_names_or_globs_from_the_settings() {
    let rule = rule_showing("is_trusted_principal(event.user.username)");
    let by = |user: &str| event(json!({"user": {"username": user}}));
    assert_eq!(
        titles(&rule, by("ci-deployer")),
        ["false"],
        "nobody when unset"
    );
    let rule = with_settings(
        rule,
        json!({"trusted_principals": ["ci-deployer", "system:serviceaccount:argocd:*"]}),
    );
    for (user, trusted) in [
        ("ci-deployer", "true"),
        ("ci-deployer-2", "false"),
        (
            "system:serviceaccount:argocd:argocd-application-controller",
            "true",
        ),
        ("system:serviceaccount:default:argocd", "false"),
        ("", "false"),
    ] {
        assert_eq!(titles(&rule, by(user)), [trusted], "{user}");
    }
    // And in the rule above: a trusted node outside raises nothing.
    let outside = with_settings(
        rules_with(OUTSIDE),
        json!({"trusted_principals": ["system:node:*"]}),
    );
    assert!(titles(&outside, from(&["203.0.113.7"])).is_empty());
}

#[test]
fn wrongly_typed_settings_reaching_a_script_are_errors_naming_them() {
    let rules = with_settings(
        rules_with(OUTSIDE),
        json!({"cluster_networks": "10.0.0.0/8"}),
    );
    let err = error(&rules, from(&["10.0.0.1"]));
    assert!(
        err.contains("setting cluster_networks must be an array of strings"),
        "{err}"
    );
    let rules = with_settings(
        rules_with(OUTSIDE),
        json!({"cluster_networks": ["10.0.0.0/8", "10.0.0.0/99"]}),
    );
    let err = error(&rules, from(&["203.0.113.7"]));
    assert!(
        err.contains("cluster_networks") && err.contains("`10.0.0.0/99`"),
        "{err}"
    );
    let rules = with_settings(
        rule_showing("is_trusted_principal(event.user.username)"),
        json!({"trusted_principals": [1]}),
    );
    let err = error(&rules, from(&["10.0.0.1"]));
    assert!(err.contains("setting trusted_principals"), "{err}");
}

#[test]
fn the_config_refuses_bad_network_settings_with_their_line() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("klaxon.toml");
    let config = "[targets.console]\ntype = \"console\"\n\n[routing]\ndefault_targets = [\"console\"]\n\n\
        [scripts.settings]\ncluster_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\ntrusted_principals = \"ci\"\n";
    std::fs::write(&path, config).unwrap();
    let err = klaxon::config::load(Some(&path))
        .expect_err("bad settings")
        .to_string();
    let file = path.display();
    assert!(
        err.contains(&format!(
            "{file}:8: scripts.settings.cluster_networks: `10.0.0.0/33`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:9: scripts.settings.trusted_principals: must be an array of strings"
        )),
        "{err}"
    );
    let good = config
        .replace("\"10.0.0.0/33\"", "\"fd00::/8\"")
        .replace("= \"ci\"", "= [\"ci\"]");
    std::fs::write(&path, good).unwrap();
    let loaded = klaxon::config::load(Some(&path)).expect("good settings load");
    assert_eq!(
        loaded.script_settings["cluster_networks"],
        json!(["10.0.0.0/8", "fd00::/8"])
    );
}
