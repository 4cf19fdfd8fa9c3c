//! The rule index (`const MATCH` declarations) skips only scripts that would raise nothing:
//! evaluating with the index gives exactly the alerts and errors of running every script,
//! over every fixture and a generated corpus of 100,000 varied events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use klaxon::audit::{Event, decode};
use klaxon::rules::{Evaluation, Ruleset, ScriptLimits, Selection};
use serde_json::{Value, json};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

const PACKS: [&str; 2] = ["scripts", "examples/rules/falco"];

/// The shipped scripts and the Falco pack, with `settings`.
fn all_rules(settings: &Settings) -> Ruleset {
    let dirs: Vec<PathBuf> = PACKS.iter().map(|d| repo(d)).collect();
    // The wall-clock limit is raised out of the way: the test compares two evaluations, and
    // on a loaded machine a descheduled run passing the default 100 ms in one of them
    // would read as a difference the index made.
    let limits = ScriptLimits {
        max_run_time: std::time::Duration::from_secs(30),
        ..ScriptLimits::default()
    };
    let mut rules = Ruleset::load(&dirs, &limits, "test").unwrap();
    rules.set_settings(settings);
    rules
}

type Settings = std::collections::BTreeMap<String, Value>;

/// Settings that switch on the Falco rules that are off by default.
fn disabled_rules_on() -> Settings {
    [
        "falco_all_k8s_audit_events",
        "falco_create_disallowed_pod",
        "falco_full_k8s_administrative_access",
        "falco_untrusted_node_successfully_joined_the_cluster",
        "falco_untrusted_node_unsuccessfully_tried_to_join_the_cluster",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), json!(true)))
    .collect()
}

/// What must be equal: alerts (with everything in them) and errors, in order.
fn outcome(eval: &Evaluation) -> (Vec<String>, Vec<String>) {
    (
        eval.alerts
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect(),
        eval.errors.iter().map(ToString::to_string).collect(),
    )
}

/// Runs `events` through two rule sets with their own state, one indexed and one running
/// every script, on the event clock; returns (events, rules run indexed, rules run in all,
/// alerts).
fn compare(
    events: impl IntoIterator<Item = Event>,
    label: &str,
    settings: &Settings,
) -> (usize, usize, usize, usize) {
    let indexed = all_rules(settings);
    let every = all_rules(settings);
    let (mut n, mut ran_indexed, mut ran_every, mut alerts) = (0, 0, 0, 0);
    for event in events {
        let now = klaxon::clock::parse_time_ms(event.time()).unwrap_or(0);
        let event = Arc::new(event);
        let a = indexed.evaluate_selected(event.clone(), now, Selection::Indexed);
        let b = every.evaluate_selected(event.clone(), now, Selection::Every);
        assert_eq!(
            outcome(&a),
            outcome(&b),
            "{label}: event {n} ({}) differs with the index",
            event.audit_id
        );
        n += 1;
        ran_indexed += a.runs.len();
        ran_every += b.runs.len();
        alerts += a.alerts.len();
    }
    (n, ran_indexed, ran_every, alerts)
}

#[test]
fn every_shipped_and_falco_script_declares_what_it_matches() {
    let rules = all_rules(&Settings::new());
    let undeclared: Vec<&str> = rules
        .rules()
        .iter()
        .filter(|r| r.filters().is_none())
        .map(|r| r.name())
        .collect();
    assert!(undeclared.is_empty(), "no MATCH: {undeclared:?}");
    assert_eq!(rules.rules().len(), 16 + 48);
}

#[test]
fn the_index_changes_nothing_on_every_fixture() {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["tests/fixtures/falco", "examples/events"] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.to_string_lossy().into_owned();
            if name.ends_with(".json") || name.ends_with(".jsonl") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut events = Vec::new();
    for file in &files {
        events.extend(decode(&std::fs::read(file).unwrap()).events);
    }
    // With the rules that are off by default switched on, and with the defaults (the index
    // then never runs them).
    let (n, indexed, every, alerts) = compare(events.clone(), "fixtures", &disabled_rules_on());
    eprintln!(
        "{} files, {n} events: {indexed} script runs with the index, {every} without; {alerts} alerts",
        files.len()
    );
    assert!(n > 60 && alerts > 40, "{n} events, {alerts} alerts");
    assert!(indexed * 5 < every, "{indexed} vs {every}");
    let (_, indexed_off, _, alerts_off) = compare(events, "fixtures, defaults", &Settings::new());
    assert!(
        alerts_off > 40 && alerts_off < alerts,
        "{alerts_off} vs {alerts}"
    );
    assert!(indexed_off < indexed, "{indexed_off} vs {indexed}");
}

#[test]
fn the_index_changes_nothing_on_100000_generated_events() {
    let mut corpus = Corpus::new(0x6b6c_6178_6f6e);
    let mut totals = (0, 0, 0, 0);
    for chunk in 0..100 {
        let lines: Vec<String> = (0..1000).map(|_| corpus.event().to_string()).collect();
        let decoded = decode(lines.join("\n").as_bytes());
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let (n, i, e, a) = compare(
            decoded.events,
            &format!("chunk {chunk}"),
            &disabled_rules_on(),
        );
        totals = (totals.0 + n, totals.1 + i, totals.2 + e, totals.3 + a);
    }
    let (n, indexed, every, alerts) = totals;
    eprintln!("{n} events: {indexed} script runs with the index, {every} without; {alerts} alerts");
    assert_eq!(n, 100_000);
    // The corpus reaches the rules: plenty of alerts, from many rules.
    assert!(alerts > 10_000, "{alerts} alerts");
}

#[test]
fn a_bad_declaration_fails_the_load_naming_the_script() {
    let dir = tempfile::TempDir::new().unwrap();
    for (name, text, message) in [
        (
            "typo",
            "const MATCH = #{ verbs: \"get\" }; alert(#{ title: \"x\" });",
            "unknown key `verbs`",
        ),
        (
            "not_a_map",
            "const MATCH = \"pods\"; alert(#{ title: \"x\" });",
            "MATCH must be a map",
        ),
        (
            "computed",
            "const MATCH = #{ verb: event.verb }; let x = 1;",
            "MATCH must be a top-level constant map of literals",
        ),
        (
            "empty_alternatives",
            "const MATCH = []; alert(#{ title: \"x\" });",
            "or an array of maps",
        ),
        (
            "bad_alternative",
            "const MATCH = [#{ verb: \"get\" }, #{ groups: \"x\" }]; let x = 1;",
            "unknown key `groups`",
        ),
        (
            "bad_switch",
            "const MATCH = #{ setting: true }; let x = 1;",
            "`setting` takes a string",
        ),
    ] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("{name}.rhai")), text).unwrap();
        let err = Ruleset::load(&[sub], &ScriptLimits::default(), "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{name}.rhai")), "{err}");
        assert!(err.contains(message), "{name}: {err}");
    }
}

/// A deterministic generator of varied audit events, reaching every rule's branches.
struct Corpus {
    state: u64,
    clock_ms: i64,
    serial: u64,
}

impl Corpus {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            clock_ms: 1_795_000_000_000,
            serial: 0,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn event(&mut self) -> Value {
        self.serial += 1;
        self.clock_ms += (self.next() % 200) as i64;
        let stage = self.pick(&[
            "ResponseComplete",
            "ResponseComplete",
            "ResponseComplete",
            "ResponseStarted",
            "RequestReceived",
            "Panic",
        ]);
        let verb = self.pick(&[
            "get",
            "list",
            "watch",
            "create",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ]);
        let resource = self.pick(&[
            "pods",
            "pods",
            "deployments",
            "daemonsets",
            "cronjobs",
            "secrets",
            "configmaps",
            "services",
            "namespaces",
            "serviceaccounts",
            "roles",
            "clusterroles",
            "rolebindings",
            "clusterrolebindings",
            "nodes",
            "ingresses",
            "leases",
            "",
        ]);
        let subresource = if self.chance(70) {
            ""
        } else {
            self.pick(&[
                "exec",
                "attach",
                "portforward",
                "ephemeralcontainers",
                "status",
                "log",
            ])
        };
        let namespace = self.pick(&["default", "kube-system", "kube-public", "payments", ""]);
        let user = self.pick(&[
            "alice",
            "admin",
            "minikube-user",
            "kubernetes-admin",
            "some-user",
            "system:anonymous",
            "system:node:n1",
            "system:serviceaccount:kube-system:replicaset-controller",
            "system:kube-controller-manager",
            "",
        ]);
        let name = self.pick(&["web", "coredns", "foo", "evil-sa", "system:node", "n1", ""]);
        let code: Option<i64> = match self.next() % 10 {
            0 => None,
            1 => Some(101),
            2 => Some(401),
            3 => Some(403),
            4 => Some(404),
            5 => Some(201),
            _ => Some(200),
        };
        let uri = self.uri(resource, namespace, name, subresource);
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": format!("gen-{}", self.serial),
            "stage": stage,
            "requestURI": uri,
            "verb": verb,
            "user": {"username": user, "groups": self.groups(user)},
            "sourceIPs": [self.pick(&["10.0.0.1", "10.0.0.2", "192.168.1.7"])],
            "userAgent": self.pick(&["kubectl/v1.31.2", "kube-controller-manager/v1.31.2", "curl/8"]),
            "objectRef": {
                "resource": resource, "namespace": namespace, "name": name,
                "subresource": subresource, "apiVersion": "v1",
            },
            "stageTimestamp": time(self.clock_ms),
            "requestReceivedTimestamp": time(self.clock_ms - 3),
        });
        if let Some(code) = code {
            event["responseStatus"] = json!({"metadata": {}, "code": code});
        }
        if self.chance(80) {
            event["annotations"] = json!({
                "authorization.k8s.io/decision": self.pick(&["allow", "forbid"]),
                "authorization.k8s.io/reason": "",
            });
        }
        if self.chance(85) {
            event["requestObject"] = self.body(resource, name);
        }
        if self.chance(40) {
            event["responseObject"] = json!({"metadata": {"name": format!("{name}-resp")}});
        }
        event
    }

    fn groups(&mut self, user: &str) -> Value {
        if user.is_empty() || self.chance(5) {
            json!(["system:unauthenticated"])
        } else {
            json!(["system:authenticated"])
        }
    }

    fn uri(&mut self, resource: &str, namespace: &str, name: &str, sub: &str) -> String {
        if resource.is_empty() {
            return self
                .pick(&[
                    "/healthz",
                    "/livez?verbose",
                    "/readyz",
                    "/version",
                    "/metrics",
                    "/api",
                ])
                .to_owned();
        }
        let mut uri = format!("/api/v1/namespaces/{namespace}/{resource}/{name}");
        if !sub.is_empty() {
            uri.push('/');
            uri.push_str(sub);
        }
        if self.chance(50) {
            uri.push_str(self.pick(&[
                "?command=sh&command=-c&command=id&container=app&tty=true",
                "?command=bash&stdin=true",
                "?container=app&stdout=true",
                "?command=echo+a%26b",
                "?watch=true",
            ]));
        }
        uri
    }

    fn body(&mut self, resource: &str, name: &str) -> Value {
        match resource {
            "pods" => json!({"kind": "Pod", "metadata": {"name": name}, "spec": self.pod_spec()}),
            "deployments" | "daemonsets" => json!({
                "kind": "Deployment",
                "spec": {"template": {"spec": self.pod_spec()}},
            }),
            "cronjobs" => json!({
                "kind": "CronJob",
                "spec": {"jobTemplate": {"spec": {"template": {"spec": self.pod_spec()}}}},
            }),
            "roles" | "clusterroles" => json!({
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": [{
                    "apiGroups": [""],
                    "resources": [self.pick(&["pods", "pods/exec", "*", "secrets"])],
                    "verbs": [self.pick(&["get", "*", "create", "list"]), self.pick(&["watch", "delete"])],
                }],
            }),
            "rolebindings" | "clusterrolebindings" => json!({
                "kind": "ClusterRoleBinding",
                "roleRef": {"kind": "ClusterRole", "name": self.pick(&["cluster-admin", "view"])},
                "subjects": [{"kind": "User", "name": self.pick(&["bob", "system:anonymous"])}],
            }),
            "configmaps" => json!({
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"config": self.pick(&["password=hunter2", "mode=fast", "aws_access_key_id=AK"])},
            }),
            "services" => json!({
                "kind": "Service",
                "spec": {"type": self.pick(&["NodePort", "ClusterIP"]), "ports": [{"port": 80}]},
            }),
            "ingresses" => {
                if self.chance(50) {
                    json!({"kind": "Ingress", "spec": {"tls": [{"hosts": ["a"]}]}})
                } else {
                    json!({"kind": "Ingress", "spec": {"rules": []}})
                }
            }
            "secrets" => {
                json!({"kind": "Secret", "type": self.pick(&["Opaque", "kubernetes.io/service-account-token"])})
            }
            _ => json!({"metadata": {"name": name}}),
        }
    }

    fn pod_spec(&mut self) -> Value {
        let image = |c: &mut Self| {
            c.pick(&[
                "nginx",
                "nginx:1.25",
                "docker.io/calico/node:v3",
                "registry.k8s.io/kube-proxy@sha256:ab",
                "evil.example/miner:1",
            ])
        };
        let mut spec = json!({
            "containers": [{
                "name": "a",
                "image": image(self),
                "securityContext": {"privileged": self.chance(30)},
            }],
            "hostNetwork": self.chance(20),
            "hostPID": self.chance(20),
            "hostIPC": self.chance(20),
            "volumes": [{"name": "v", "hostPath": {"path": self.pick(&["/proc", "/etc", "/data", "/var/run/docker.sock"])}}],
        });
        if self.chance(30) {
            spec["initContainers"] = json!([{"name": "i", "image": image(self), "securityContext": {"privileged": true}}]);
        }
        if self.chance(10) {
            spec["ephemeralContainers"] = json!([{"name": "d", "image": image(self)}]);
        }
        spec
    }
}

fn time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
