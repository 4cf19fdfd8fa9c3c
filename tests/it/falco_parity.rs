//! Parity of the Falco rule pack (`examples/rules/falco/`) with Falco's own k8s audit tests.
//!
//! The pack ports every rule of Falco's `k8s_audit_rules.yaml` to one Rhai script. This test
//! replays Falco's audit traces (`tests/fixtures/falco/*.json`) through the whole pack and
//! checks the detections Falco's test suite expects (`expected_detections.tsv`), for every
//! row that uses Falco's default rules (an empty 4th column; rows with rule overrides test
//! Falco configurations the pack does not ship). A row naming `Rule=N` passes when that rule
//! fired exactly N times; a "no detection"/"none" row passes when no rule of the pack fired.
//! No script may fail on any trace, and the deliberately malformed trace must decode to a
//! clean error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use klaxon::rules::{Ruleset, ScriptLimits};

/// Rows of `expected_detections.tsv` (by test name) that the pack cannot reproduce, with the
/// Falco semantics that are missing. Every other row must pass, and a row listed here that
/// starts passing fails the test, so the list cannot go stale.
const KNOWN_GAPS: &[(&str, &str)] = &[];

fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn load_pack() -> Ruleset {
    Ruleset::load(
        &[PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/rules/falco"
        ))],
        &ScriptLimits::default(),
        "test",
    )
    .unwrap_or_else(|e| panic!("the Falco pack does not load:\n{e}"))
}

/// What one row expects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// The named rule fires exactly this many times.
    Rule(String, usize),
    /// No rule of the pack fires.
    Nothing,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Rule(rule, n) => write!(f, "{rule}={n}"),
            Expected::Nothing => f.write_str("none"),
        }
    }
}

struct Row {
    test: String,
    trace: String,
    expected: Expected,
}

/// The rows of expected_detections.tsv that use Falco's default rules (empty 4th column).
fn default_rule_rows() -> Vec<Row> {
    let tsv = std::fs::read_to_string(manifest_path(
        "tests/fixtures/falco/expected_detections.tsv",
    ))
    .expect("expected_detections.tsv is readable");
    let mut rows = Vec::new();
    for line in tsv.lines().skip_while(|l| l.starts_with('#')).skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 3, "malformed TSV row: {line:?}");
        if cols.get(3).is_some_and(|c| !c.trim().is_empty()) {
            continue;
        }
        let spec = cols[2].trim();
        let expected = if spec.starts_with("no detection") || spec.starts_with("none") {
            Expected::Nothing
        } else {
            let (rule, count) = spec
                .rsplit_once('=')
                .unwrap_or_else(|| panic!("cannot read expectation {spec:?}"));
            Expected::Rule(
                rule.to_owned(),
                count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad count in {spec:?}")),
            )
        };
        rows.push(Row {
            test: cols[0].to_owned(),
            trace: cols[1].to_owned(),
            expected,
        });
    }
    rows
}

/// Alerts per title (the Falco rule name) raised by the pack on one trace.
struct TraceResult {
    counts: BTreeMap<String, usize>,
    decode_errors: Vec<String>,
    script_errors: Vec<String>,
}

fn run_trace(ruleset: &Ruleset, trace: &str) -> TraceResult {
    let bytes = std::fs::read(manifest_path(&format!("tests/fixtures/falco/{trace}")))
        .unwrap_or_else(|e| panic!("cannot read trace {trace}: {e}"));
    let decoded = klaxon::audit::decode(&bytes);
    let mut counts = BTreeMap::new();
    let mut script_errors = Vec::new();
    for event in decoded.events {
        let evaluation = ruleset.evaluate(Arc::new(event));
        script_errors.extend(evaluation.errors.iter().map(ToString::to_string));
        for alert in evaluation.alerts {
            // falco::output: labelled, and one incident per distinct output.
            assert_eq!(
                alert.labels.get("source").map(String::as_str),
                Some("falco-k8s-audit"),
                "{trace}: {alert:?}"
            );
            assert_eq!(alert.dedup_key, alert.text, "{trace}: {}", alert.title);
            *counts.entry(alert.title).or_insert(0) += 1;
        }
    }
    TraceResult {
        counts,
        decode_errors: decoded.errors.iter().map(ToString::to_string).collect(),
        script_errors,
    }
}

fn describe(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(rule, n)| format!("{rule}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn falco_traces_raise_the_detections_falco_expects() {
    let ruleset = load_pack();
    let rows = default_rule_rows();
    assert!(
        rows.len() >= 40,
        "expected the default-rules rows of expected_detections.tsv, found {}",
        rows.len()
    );

    let mut table = vec![(
        "trace".to_owned(),
        "expected".to_owned(),
        "got".to_owned(),
        "pass".to_owned(),
    )];
    let mut failures = Vec::new();
    for row in &rows {
        let result = run_trace(&ruleset, &row.trace);
        assert!(
            result.script_errors.is_empty(),
            "scripts failed on {}:\n{}",
            row.trace,
            result.script_errors.join("\n")
        );
        let pass = match &row.expected {
            Expected::Rule(rule, n) => result.counts.get(rule).copied().unwrap_or(0) == *n,
            Expected::Nothing => result.counts.is_empty(),
        };
        let gap = KNOWN_GAPS.iter().find(|(test, _)| *test == row.test);
        let verdict = match (pass, gap) {
            (true, None) => "yes",
            (false, Some(_)) => "known gap",
            (true, Some(_)) => {
                failures.push(format!(
                    "{} ({}) now passes: remove it from KNOWN_GAPS",
                    row.test, row.trace
                ));
                "yes (listed as gap!)"
            }
            (false, None) => {
                failures.push(format!(
                    "{} ({}): expected {}, got {}",
                    row.test,
                    row.trace,
                    row.expected,
                    describe(&result.counts)
                ));
                "NO"
            }
        };
        table.push((
            row.trace.clone(),
            row.expected.to_string(),
            describe(&result.counts),
            verdict.to_owned(),
        ));
    }

    let widths = table.iter().fold([0; 3], |w, (a, b, c, _)| {
        [
            w[0].max(a.chars().count()),
            w[1].max(b.chars().count()),
            w[2].max(c.chars().count()),
        ]
    });
    eprintln!("Falco parity ({} rows with default rules):", rows.len());
    for (trace, expected, got, pass) in &table {
        eprintln!(
            "  {trace:<w0$}  {expected:<w1$}  {got:<w2$}  {pass}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }

    for (test, _) in KNOWN_GAPS {
        assert!(
            rows.iter().any(|r| r.test == *test),
            "KNOWN_GAPS names {test}, which is not a default-rules row"
        );
    }
    assert!(
        failures.is_empty(),
        "parity failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn malformed_trace_is_a_clean_decode_error() {
    let ruleset = load_pack();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_trace(&ruleset, "fal_01_003.json")
    }))
    .expect("decoding and evaluating the malformed trace must not panic");
    assert!(
        !result.decode_errors.is_empty(),
        "fal_01_003.json is malformed and must be reported as a decode error"
    );
    assert!(result.counts.is_empty(), "{}", describe(&result.counts));
    assert!(
        result.script_errors.is_empty(),
        "{:?}",
        result.script_errors
    );
}

#[test]
fn every_other_trace_decodes_cleanly_and_no_script_fails() {
    let ruleset = load_pack();
    let dir = manifest_path("tests/fixtures/falco");
    let mut traces: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && n != "fal_01_003.json")
        .collect();
    traces.sort();
    assert!(traces.len() >= 40, "found only {} traces", traces.len());
    for trace in traces {
        let result = run_trace(&ruleset, &trace);
        assert!(
            result.decode_errors.is_empty(),
            "{trace}: {:?}",
            result.decode_errors
        );
        assert!(
            result.script_errors.is_empty(),
            "{trace}:\n{}",
            result.script_errors.join("\n")
        );
    }
}

/// The snake_case file name of a Falco rule: lowercase, every run of other characters
/// becomes one `_` (`Create/Modify Configmap …` → `create_modify_configmap_…`).
fn snake_case(rule: &str) -> String {
    let mut out = String::new();
    for c in rule.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_owned()
}

#[test]
fn every_falco_rule_has_one_script_titled_after_it() {
    let yaml = std::fs::read_to_string(manifest_path("tests/fixtures/falco/k8s_audit_rules.yaml"))
        .expect("k8s_audit_rules.yaml is readable");
    let falco_rules: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("- rule: "))
        .map(str::trim)
        .collect();
    assert_eq!(falco_rules.len(), 48, "Falco's file has 48 rules");

    let ruleset = load_pack();
    let mut pack: Vec<&str> = ruleset.rules().iter().map(|r| r.name()).collect();
    let mut wanted: Vec<String> = falco_rules.iter().map(|r| snake_case(r)).collect();
    pack.sort_unstable();
    wanted.sort();
    assert_eq!(
        pack, wanted,
        "one script per Falco rule, named in snake_case"
    );

    for rule in falco_rules {
        let path = manifest_path(&format!("examples/rules/falco/{}.rhai", snake_case(rule)));
        let text = std::fs::read_to_string(&path).expect("script is readable");
        assert!(
            text.starts_with(&format!("// Falco rule: {rule}\n")),
            "{} must start with its Falco rule name",
            path.display()
        );
        // falco::output(RULE, …) raises the alert titled after the rule, labelled.
        assert!(
            text.contains("falco::output(") && text.contains(&format!("\"{rule}\"")),
            "{} must raise alerts titled {rule:?} with falco::output",
            path.display()
        );
        assert!(
            !text.contains("alert(#{"),
            "{} raises alerts only through falco::output",
            path.display()
        );
    }
}

/// The pack with every rule that is off by default switched on by its setting (the scripts
/// whose `MATCH` names a `setting`), and the names of those scripts.
fn pack_with_disabled_rules_on() -> (Ruleset, Vec<String>) {
    let dir = manifest_path("examples/rules/falco");
    let mut switched: Vec<String> =
        klaxon::rules::ScriptSource::read_dirs(std::slice::from_ref(&dir))
            .expect("pack is readable")
            .into_iter()
            .filter(|s| s.text.contains(&format!("setting: \"falco_{}\"", s.name)))
            .map(|s| s.name)
            .collect();
    switched.sort();
    let mut pack = load_pack();
    pack.set_settings(
        &switched
            .iter()
            .map(|name| (format!("falco_{name}"), serde_json::json!(true)))
            .collect(),
    );
    (pack, switched)
}

#[test]
fn disabled_rules_are_off_only_because_of_their_switch() {
    let (enabled, switched) = pack_with_disabled_rules_on();
    assert_eq!(
        switched,
        [
            "all_k8s_audit_events",
            "create_disallowed_pod",
            "full_k8s_administrative_access",
            "untrusted_node_successfully_joined_the_cluster",
            "untrusted_node_unsuccessfully_tried_to_join_the_cluster",
        ],
        "the rules Falco disables by default"
    );
    let default_pack = load_pack();
    let disabled_titles = [
        "All K8s Audit Events",
        "Create Disallowed Pod",
        "Full K8s Administrative Access",
    ];
    // (trace, rule that fires once enabled)
    let cases = [
        (
            "create_nginx_pod_unprivileged.json",
            "Create Disallowed Pod",
        ),
        (
            "create_kube_system_secret.json",
            "Full K8s Administrative Access",
        ),
        ("create_configmap.json", "All K8s Audit Events"),
        ("exec_pod.json", "Attach/Exec Pod"),
    ];
    for (trace, rule) in cases {
        let on = run_trace(&enabled, trace);
        assert!(
            on.script_errors.is_empty(),
            "{trace}: {:?}",
            on.script_errors
        );
        assert_eq!(
            on.counts.get(rule),
            Some(&1),
            "{trace}: {}",
            describe(&on.counts)
        );
        let off = run_trace(&default_pack, trace);
        for title in disabled_titles {
            assert!(
                !off.counts.contains_key(title),
                "{title} fired by default on {trace}"
            );
        }
    }
    // kevt: the ResponseStarted stage of exec is not an "all events" match.
    assert!(
        !run_trace(&enabled, "exec_pod.json")
            .counts
            .contains_key("All K8s Audit Events")
    );
}

#[test]
fn activity_rules_follow_consider_activity_events() {
    // Falco's K8SAuditDisallowKactivity override sets consider_activity_events to never-true;
    // the pack's equivalent is `falco_consider_activity_events = false` in [scripts.settings].
    let dir = manifest_path("examples/rules/falco");
    let activity: Vec<String> = klaxon::rules::ScriptSource::read_dirs(std::slice::from_ref(&dir))
        .expect("pack is readable")
        .into_iter()
        .filter(|s| s.text.contains("falco::kactivity(event)"))
        .map(|s| s.name)
        .collect();
    assert_eq!(
        activity.len(),
        23,
        "22 K8s activity rules and the Ingress rule: {activity:?}"
    );
    let mut quiet = load_pack();
    quiet.set_settings(
        &[(
            "falco_consider_activity_events".to_owned(),
            serde_json::json!(false),
        )]
        .into(),
    );
    let cases: [(&str, Option<(&str, usize)>); 4] = [
        (
            "create_configmap_sensitive_values.json",
            Some(("Create/Modify Configmap With Private Credentials", 6)),
        ),
        ("create_configmap_no_sensitive_values.json", None),
        (
            "create_nginx_service_nodeport.json",
            Some(("Create NodePort Service", 1)),
        ),
        ("create_nginx_service_nonodeport.json", None),
    ];
    for (trace, expected) in cases {
        let result = run_trace(&quiet, trace);
        assert!(
            result.script_errors.is_empty(),
            "{:?}",
            result.script_errors
        );
        let want: BTreeMap<String, usize> = expected
            .map(|(rule, n)| (rule.to_owned(), n))
            .into_iter()
            .collect();
        assert_eq!(result.counts, want, "{trace}");
    }
    // And the switch is what silences them: on by default.
    assert_eq!(
        run_trace(&load_pack(), "create_configmap.json")
            .counts
            .get("K8s ConfigMap Created"),
        Some(&1)
    );
}

#[test]
fn falco_lists_grow_from_the_config_as_with_append() {
    let with = |name: &str, items: serde_json::Value| {
        let mut pack = load_pack();
        pack.set_settings(&[(name.to_owned(), items)].into());
        pack
    };
    let trace = "some-user_creates_namespace_foo.json";
    let default = run_trace(&load_pack(), trace);
    assert_eq!(
        default.counts.get("Disallowed K8s User"),
        Some(&1),
        "{}",
        describe(&default.counts)
    );
    assert_eq!(default.counts.get("Create Disallowed Namespace"), Some(&1));

    // allowed_k8s_users: the trace's user becomes allowed; the namespace rule still fires.
    let users = run_trace(
        &with("falco_allowed_k8s_users", serde_json::json!(["some-user"])),
        trace,
    );
    assert!(users.script_errors.is_empty(), "{:?}", users.script_errors);
    assert_eq!(users.counts.get("Disallowed K8s User"), None);
    assert_eq!(users.counts.get("Create Disallowed Namespace"), Some(&1));
    // A nested list (vertical_pod_autoscaler_users inside allowed_k8s_users) grows too.
    let nested = run_trace(
        &with(
            "falco_vertical_pod_autoscaler_users",
            serde_json::json!(["some-user"]),
        ),
        trace,
    );
    assert_eq!(nested.counts.get("Disallowed K8s User"), None);
    // allowed_namespaces: `foo` becomes allowed.
    let namespaces = run_trace(
        &with("falco_allowed_namespaces", serde_json::json!(["foo"])),
        trace,
    );
    assert_eq!(namespaces.counts.get("Create Disallowed Namespace"), None);
    assert_eq!(namespaces.counts.get("Disallowed K8s User"), Some(&1));

    // A setting of the wrong shape is a script error naming it, not a silent miss.
    let wrong = run_trace(
        &with("falco_allowed_k8s_users", serde_json::json!("some-user")),
        trace,
    );
    assert!(
        wrong
            .script_errors
            .iter()
            .any(|e| e.contains("falco_allowed_k8s_users must be an array")),
        "{:?}",
        wrong.script_errors
    );
}

/// Disallowed K8s User allows the managed-cluster principals (not a Falco list) unless
/// `falco_allow_managed_k8s_users = false`; both of its lists grow from settings.
#[test]
fn managed_cluster_principals_are_allowed_and_configurable() {
    let with = |settings: &[(&str, serde_json::Value)]| {
        let mut pack = load_pack();
        pack.set_settings(
            &settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        );
        pack
    };
    let fired = |pack: &Ruleset, user: &str| {
        let ev = Ev {
            user,
            verb: "get",
            code: 200,
            ..Ev::default()
        };
        ev.counts(pack)
            .get("Disallowed K8s User")
            .copied()
            .unwrap_or(0)
    };
    let default = load_pack();
    for user in [
        "eks:network-policy-controller",
        "aksService",
        "masterclient",
    ] {
        assert_eq!(fired(&default, user), 0, "{user}");
    }
    assert_eq!(fired(&default, "eksadmin"), 1, "a prefix, not a substring");

    let falco_only = with(&[("falco_allow_managed_k8s_users", serde_json::json!(false))]);
    assert_eq!(fired(&falco_only, "eks:network-policy-controller"), 1);
    assert_eq!(fired(&falco_only, "aksService"), 1);
    assert_eq!(
        fired(&falco_only, "eks:node-manager"),
        0,
        "Falco's own EKS list"
    );

    let grown = with(&[
        ("falco_managed_k8s_users", serde_json::json!(["gke-robot"])),
        (
            "falco_allowed_k8s_user_prefixes",
            serde_json::json!(["ci:"]),
        ),
    ]);
    assert_eq!(fired(&grown, "gke-robot"), 0);
    assert_eq!(fired(&grown, "ci:deployer"), 0);
    assert_eq!(fired(&grown, "eks:network-policy-controller"), 0);
    assert_eq!(fired(&grown, "bob"), 1);
}

/// A v1 audit event for the synthetic cases below.
struct Ev<'a> {
    stage: &'a str,
    verb: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    name: &'a str,
    user: &'a str,
    code: i64,
    uri: &'a str,
    request: serde_json::Value,
}

impl Default for Ev<'_> {
    fn default() -> Self {
        Self {
            stage: "ResponseComplete",
            verb: "create",
            resource: "pods",
            subresource: "",
            namespace: "default",
            name: "",
            user: "alice",
            code: 201,
            uri: "/api/v1/namespaces/default/pods",
            request: serde_json::Value::Null,
        }
    }
}

impl Ev<'_> {
    fn counts(&self, ruleset: &Ruleset) -> BTreeMap<String, usize> {
        let json = serde_json::json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "RequestResponse",
            "auditID": "synthetic",
            "stage": self.stage,
            "requestURI": self.uri,
            "verb": self.verb,
            "user": {"username": self.user, "groups": ["system:authenticated"]},
            "sourceIPs": ["10.0.0.1"],
            "objectRef": {
                "resource": self.resource,
                "subresource": self.subresource,
                "namespace": self.namespace,
                "name": self.name,
            },
            "responseStatus": {"code": self.code, "reason": if self.code >= 400 { "AlreadyExists" } else { "" }},
            "requestObject": self.request,
            "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
            "requestReceivedTimestamp": "2026-01-01T00:00:00.000000Z",
            "stageTimestamp": "2026-01-01T00:00:00.100000Z",
        });
        let decoded = klaxon::audit::decode(json.to_string().as_bytes());
        assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        let mut counts = BTreeMap::new();
        for event in decoded.events {
            let evaluation = ruleset.evaluate(Arc::new(event));
            assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
            for alert in evaluation.alerts {
                *counts.entry(alert.title).or_insert(0) += 1;
            }
        }
        counts
    }
}

fn pod(spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"kind": "Pod", "metadata": {"generateName": "web-"}, "spec": spec})
}

/// Branches the traces never reach (and the disabled rules, switched on) run without a
/// script error and decide as Falco's conditions do.
#[test]
fn synthetic_events_exercise_every_rule_body() {
    use serde_json::json;
    let (pack, _) = pack_with_disabled_rules_on();
    let rules = json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
    let binding = json!({"roleRef": {"kind": "Role", "name": "reader"},
        "subjects": [{"kind": "User", "name": "bob"}]});
    let cases: Vec<(&str, Ev, &str, usize)> = vec![
        (
            "port-forward, any stage",
            Ev {
                stage: "ResponseStarted",
                subresource: "portforward",
                name: "web",
                code: 101,
                ..Ev::default()
            },
            "port-forward",
            1,
        ),
        (
            "exec over WebSocket (verb get)",
            Ev {
                stage: "ResponseStarted",
                verb: "get",
                subresource: "exec",
                name: "web",
                code: 101,
                uri: "/api/v1/namespaces/default/pods/web/exec?command=sh&command=-c&container=app",
                ..Ev::default()
            },
            "Attach/Exec Pod",
            1,
        ),
        (
            "exec, ResponseComplete is not kevt_started",
            Ev {
                subresource: "exec",
                name: "web",
                code: 101,
                ..Ev::default()
            },
            "Attach/Exec Pod",
            0,
        ),
        (
            "ephemeral container",
            Ev {
                verb: "patch",
                subresource: "ephemeralcontainers",
                name: "web",
                code: 200,
                request: json!({"ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}),
                ..Ev::default()
            },
            "EphemeralContainers Created",
            1,
        ),
        (
            "hostPID pod",
            Ev {
                request: pod(
                    json!({"hostPID": true, "containers": [{"name": "a", "image": "nginx"}]}),
                ),
                ..Ev::default()
            },
            "Create HostPid Pod",
            1,
        ),
        (
            "hostIPC pod",
            Ev {
                request: pod(
                    json!({"hostIPC": true, "containers": [{"name": "a", "image": "nginx"}]}),
                ),
                ..Ev::default()
            },
            "Create HostIPC Pod",
            1,
        ),
        (
            "hostNetwork pod of a trusted image",
            Ev {
                request: pod(
                    json!({"hostNetwork": true, "containers": [{"name": "a", "image": "gke.gcr.io/kube-proxy:v1.30@sha256:abc"}]}),
                ),
                ..Ev::default()
            },
            "Create HostNetwork Pod",
            0,
        ),
        (
            "privileged trusted image",
            Ev {
                request: pod(
                    json!({"containers": [{"name": "a", "image": "docker.io/calico/node:v3.1", "securityContext": {"privileged": true}}]}),
                ),
                ..Ev::default()
            },
            "Create Privileged Pod",
            0,
        ),
        (
            "privileged init container, trusted main image",
            Ev {
                request: pod(
                    json!({"initContainers": [{"name": "i", "image": "busybox", "securityContext": {"privileged": true}}], "containers": [{"name": "a", "image": "calico/node"}]}),
                ),
                ..Ev::default()
            },
            "Create Privileged Pod",
            0,
        ),
        (
            "privileged, one untrusted image",
            Ev {
                request: pod(
                    json!({"containers": [{"name": "a", "image": "calico/node", "securityContext": {"privileged": true}}, {"name": "b", "image": "registry:5000/app:1"}]}),
                ),
                ..Ev::default()
            },
            "Create Privileged Pod",
            1,
        ),
        (
            "hostPath below a sensitive path is not an exact match",
            Ev {
                request: pod(
                    json!({"containers": [{"name": "a", "image": "nginx"}], "volumes": [{"name": "v", "hostPath": {"path": "/etc/app"}}]}),
                ),
                ..Ev::default()
            },
            "Create Sensitive Mount Pod",
            0,
        ),
        (
            "docker socket mount",
            Ev {
                request: pod(
                    json!({"containers": [{"name": "a", "image": "nginx"}], "volumes": [{"name": "v", "hostPath": {"path": "/var/run/docker.sock"}}]}),
                ),
                ..Ev::default()
            },
            "Create Sensitive Mount Pod",
            1,
        ),
        (
            "trusted pod in kube-system",
            Ev {
                namespace: "kube-system",
                request: pod(
                    json!({"containers": [{"name": "a", "image": "registry.k8s.io/metrics-server-amd64:v0.3"}]}),
                ),
                ..Ev::default()
            },
            "Pod Created in Kube Namespace",
            0,
        ),
        (
            "anonymous health check",
            Ev {
                user: "system:anonymous",
                verb: "get",
                resource: "",
                namespace: "",
                code: 200,
                uri: "/healthz?verbose",
                ..Ev::default()
            },
            "Anonymous Request Allowed",
            0,
        ),
        (
            "EKS user",
            Ev {
                user: "eks:node-manager",
                ..Ev::default()
            },
            "Disallowed K8s User",
            0,
        ),
        (
            "VPA user (nested list)",
            Ev {
                user: "vpa-updater",
                ..Ev::default()
            },
            "Disallowed K8s User",
            0,
        ),
        (
            "system user",
            Ev {
                user: "system:serviceaccount:ns:sa",
                ..Ev::default()
            },
            "Disallowed K8s User",
            0,
        ),
        (
            "full admin user",
            Ev {
                user: "kubernetes-admin@cluster.local",
                ..Ev::default()
            },
            "Full K8s Administrative Access",
            1,
        ),
        (
            "ingress without tls",
            Ev {
                resource: "ingresses",
                name: "web",
                request: json!({"spec": {"rules": []}}),
                ..Ev::default()
            },
            "Ingress Object without TLS Certificate Created",
            1,
        ),
        (
            "ingress with tls",
            Ev {
                resource: "ingresses",
                name: "web",
                request: json!({"spec": {"tls": [{"secretName": "c"}]}}),
                ..Ev::default()
            },
            "Ingress Object without TLS Certificate Created",
            0,
        ),
        (
            "secret read",
            Ev {
                verb: "get",
                resource: "secrets",
                name: "s",
                code: 200,
                ..Ev::default()
            },
            "K8s Secret Get Successfully",
            1,
        ),
        (
            "secret read denied",
            Ev {
                verb: "get",
                resource: "secrets",
                name: "s",
                code: 403,
                ..Ev::default()
            },
            "K8s Secret Get Unsuccessfully Tried",
            1,
        ),
        (
            "node joined",
            Ev {
                resource: "nodes",
                namespace: "",
                name: "n1",
                ..Ev::default()
            },
            "Untrusted Node Successfully Joined the Cluster",
            1,
        ),
        (
            "a request proxied to a node is not a node joined",
            Ev {
                resource: "nodes",
                subresource: "proxy",
                namespace: "",
                name: "n1",
                code: 200,
                uri: "/api/v1/nodes/n1/proxy/configz",
                ..Ev::default()
            },
            "Untrusted Node Successfully Joined the Cluster",
            0,
        ),
        (
            "node failed to join",
            Ev {
                resource: "nodes",
                namespace: "",
                name: "n1",
                code: 409,
                ..Ev::default()
            },
            "Untrusted Node Unsuccessfully Tried to Join the Cluster",
            1,
        ),
        (
            "role created",
            Ev {
                resource: "roles",
                name: "reader",
                request: rules.clone(),
                ..Ev::default()
            },
            "K8s Role Created",
            1,
        ),
        (
            "role deleted",
            Ev {
                verb: "delete",
                resource: "roles",
                name: "reader",
                code: 200,
                ..Ev::default()
            },
            "K8s Role Deleted",
            1,
        ),
        (
            "rolebinding created",
            Ev {
                resource: "rolebindings",
                name: "b",
                request: binding.clone(),
                ..Ev::default()
            },
            "K8s RoleBinding Created",
            1,
        ),
        (
            "rolebinding deleted",
            Ev {
                verb: "delete",
                resource: "rolebindings",
                name: "b",
                code: 200,
                ..Ev::default()
            },
            "K8s RoleBinding Deleted",
            1,
        ),
        (
            "system role patched",
            Ev {
                verb: "patch",
                resource: "roles",
                name: "system:controller",
                code: 200,
                request: rules.clone(),
                ..Ev::default()
            },
            "System ClusterRole Modified/Deleted",
            1,
        ),
        (
            "system:coredns patched",
            Ev {
                verb: "patch",
                resource: "clusterroles",
                namespace: "",
                name: "system:coredns",
                code: 200,
                ..Ev::default()
            },
            "System ClusterRole Modified/Deleted",
            0,
        ),
        (
            "configmap updated with a password",
            Ev {
                verb: "update",
                resource: "configmaps",
                name: "c",
                code: 200,
                request: json!({"metadata": {"name": "c"}, "data": {"db": "password=hunter2"}}),
                ..Ev::default()
            },
            "Create/Modify Configmap With Private Credentials",
            1,
        ),
        (
            "system user deletes a namespace",
            Ev {
                verb: "delete",
                resource: "namespaces",
                namespace: "",
                name: "x",
                code: 200,
                user: "system:serviceaccount:kube-system:namespace-controller",
                ..Ev::default()
            },
            "K8s Namespace Deleted",
            0,
        ),
    ];
    for (what, ev, rule, want) in cases {
        let counts = ev.counts(&pack);
        assert_eq!(
            counts.get(rule).copied().unwrap_or(0),
            want,
            "{what}: {rule} (got {})",
            describe(&counts)
        );
    }
}

/// docs/FALCO_PARITY.md holds the parity table between two markers; it must be exactly the
/// table this test recomputes by running the pack on the traces (as
/// `falco_traces_raise_the_detections_falco_expects` does). Run with `KLAXON_BLESS=1` to
/// rewrite the table in the doc.
#[test]
fn falco_parity_doc_table_matches_the_pack() {
    const START: &str = "<!-- parity-table:start (generated by tests/it/falco_parity.rs) -->";
    const END: &str = "<!-- parity-table:end -->";
    let cell = |s: &str| s.replace('|', "\\|");
    let ruleset = load_pack();
    let mut table = String::from("| trace | expected | got | pass |\n| --- | --- | --- | --- |\n");
    for row in default_rule_rows() {
        let result = run_trace(&ruleset, &row.trace);
        let pass = match &row.expected {
            Expected::Rule(rule, n) => result.counts.get(rule).copied().unwrap_or(0) == *n,
            Expected::Nothing => result.counts.is_empty(),
        } && result.script_errors.is_empty();
        let gap = KNOWN_GAPS.iter().any(|(test, _)| *test == row.test);
        let verdict = match (pass, gap) {
            (true, false) => "yes",
            (false, true) => "known gap",
            (true, true) => "yes (listed as gap!)",
            (false, false) => "NO",
        };
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            cell(&row.trace),
            cell(&row.expected.to_string()),
            cell(&describe(&result.counts)),
            verdict
        ));
    }

    let path = manifest_path("docs/FALCO_PARITY.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
        panic!(
            "{} must hold the parity table between the lines\n{START}\nand\n{END}",
            path.display()
        );
    };
    assert!(start < end, "{START} must come before {END}");
    let body = &doc[start + START.len()..end];
    if body.trim() == table.trim() {
        return;
    }
    if std::env::var_os("KLAXON_BLESS").is_some() {
        let updated = format!("{}{START}\n{table}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated).expect("docs/FALCO_PARITY.md is writable");
        return;
    }
    let documented: Vec<&str> = body.trim().lines().collect();
    let computed: Vec<&str> = table.trim().lines().collect();
    let mut diff = Vec::new();
    for line in &documented {
        if !computed.contains(line) {
            diff.push(format!("- {line}   (in the doc, not produced by the pack)"));
        }
    }
    for line in &computed {
        if !documented.contains(line) {
            diff.push(format!(
                "+ {line}   (produced by the pack, missing from the doc)"
            ));
        }
    }
    if diff.is_empty() {
        diff.push("(same rows, different order)".to_owned());
    }
    panic!(
        "the parity table in {} is out of date (rerun with KLAXON_BLESS=1 to rewrite it):\n{}\n\nthe table is now:\n{table}",
        path.display(),
        diff.join("\n")
    );
}

#[test]
fn a_disabled_rule_is_switched_on_from_the_config() {
    let dir = manifest_path("examples/rules/falco");
    let mut pack = Ruleset::load(&[dir], &ScriptLimits::default(), "test").unwrap();
    let event = || {
        let line = r#"{"auditID":"s","stage":"ResponseComplete","level":"Metadata","requestURI":"/api","verb":"get","objectRef":{"resource":"pods"}}"#;
        std::sync::Arc::new(klaxon::audit::decode(line.as_bytes()).events.remove(0))
    };
    let fired = |pack: &Ruleset| {
        pack.evaluate(event())
            .alerts
            .iter()
            .filter(|a| a.title == "All K8s Audit Events")
            .count()
    };
    assert_eq!(fired(&pack), 0);
    let settings = [(
        "falco_all_k8s_audit_events".to_owned(),
        serde_json::json!(true),
    )]
    .into();
    pack.set_settings(&settings);
    assert_eq!(fired(&pack), 1);
}
