//! Integration tests for what scripts see on `event`: every accessor listed in
//! `klaxon::rules::EVENT_ACCESSORS` (checked against a table that must cover the list
//! exactly), the sub-accessors of `user`, `impersonatedUser`, `objectRef` and
//! `responseStatus`, `?.` / `??` navigation of `requestObject` / `responseObject`, and the
//! helper functions (pod, RBAC and text helpers). Expressions are evaluated through
//! `Ruleset::eval_expression` on Falco k8s audit traces from `tests/fixtures/falco` (expected
//! values are read from the same JSON with serde_json), on small hand-written events where no
//! trace has the field, and on the empty event `{}`, whose accessors all read as zero values.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Arc;

use klaxon::audit::{Event, decode};
use klaxon::rules::{EVENT_ACCESSORS, Ruleset, ScriptLimits};
use rhai::Dynamic;
use serde_json::{Value, json};

const FALCO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/falco");
const PRIVILEGED_POD: &str = "create_nginx_pod_privileged.json";

fn ruleset() -> Ruleset {
    Ruleset::compile(vec![], &ScriptLimits::default(), "test").expect("empty ruleset compiles")
}

/// A one-event Falco trace, decoded by klaxon and, separately, as plain JSON.
fn falco(name: &str) -> (Arc<Event>, Value) {
    let text = fs::read_to_string(format!("{FALCO_DIR}/{name}")).unwrap();
    let json: Value = serde_json::from_str(text.trim()).unwrap();
    (event_from(&text), json)
}

/// Decodes `text` with klaxon's decoder, which must find exactly one event; a fragment
/// that is not an audit event by itself is given the audit identity first (with it, any
/// fields make an event).
fn event_from(text: &str) -> Arc<Event> {
    let text = match decode(text.as_bytes()).errors.is_empty() {
        true => text.to_owned(),
        false => {
            let rest = text.trim_start().strip_prefix('{').expect("an object");
            let comma = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!(r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1"{comma}{rest}"#)
        }
    };
    let decoded = decode(text.as_bytes());
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    assert_eq!(decoded.events.len(), 1);
    Arc::new(decoded.events.into_iter().next().unwrap())
}

fn eval(rules: &Ruleset, event: &Arc<Event>, expr: &str) -> Dynamic {
    rules
        .eval_expression(event.clone(), expr)
        .unwrap_or_else(|e| panic!("`{expr}` failed: {e}"))
}

/// Evaluates `expr` and converts the result to JSON (`()` becomes `null`).
fn eval_json(rules: &Ruleset, event: &Arc<Event>, expr: &str) -> Value {
    let value = eval(rules, event, expr);
    rhai::serde::from_dynamic(&value)
        .unwrap_or_else(|e| panic!("`{expr}` gave {value:?}, not JSON-like: {e}"))
}

fn type_of(rules: &Ruleset, event: &Arc<Event>, expr: &str) -> String {
    eval(rules, event, &format!("type_of({expr})"))
        .into_string()
        .unwrap()
}

/// What an accessor should give for a given event JSON.
enum Expected {
    /// A plain value (string, array, map, integer, or `()` as `null`).
    Value(Value),
    /// A typed record: its Rhai type name and the value of each of its fields.
    Record(&'static str, Vec<(&'static str, Value)>),
}

fn string_at(json: &Value, key: &str) -> Value {
    json!(json.get(key).and_then(Value::as_str).unwrap_or(""))
}

fn or_default(json: Option<&Value>, default: Value) -> Value {
    json.filter(|v| !v.is_null()).cloned().unwrap_or(default)
}

fn user_record(user: Option<&Value>) -> Expected {
    let user = user.cloned().unwrap_or(json!({}));
    Expected::Record(
        "User",
        vec![
            ("username", string_at(&user, "username")),
            ("uid", string_at(&user, "uid")),
            ("groups", or_default(user.get("groups"), json!([]))),
            ("extra", or_default(user.get("extra"), json!({}))),
        ],
    )
}

/// The expected value of every `event` accessor, derived from the event's JSON with the
/// documented zero values for absent fields.
fn expected_accessors(event: &Value) -> BTreeMap<&'static str, Expected> {
    use Expected::{Record, Value as V};
    let object_ref = event.get("objectRef").cloned().unwrap_or(json!({}));
    let status = event.get("responseStatus").cloned().unwrap_or(json!({}));
    let mut table = BTreeMap::new();
    for key in [
        "kind",
        "apiVersion",
        "level",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "userAgent",
        "requestReceivedTimestamp",
        "stageTimestamp",
    ] {
        table.insert(key, V(string_at(event, key)));
    }
    table.insert(
        "sourceIPs",
        V(or_default(event.get("sourceIPs"), json!([]))),
    );
    table.insert(
        "annotations",
        V(or_default(event.get("annotations"), json!({}))),
    );
    table.insert(
        "requestObject",
        V(or_default(event.get("requestObject"), Value::Null)),
    );
    table.insert(
        "responseObject",
        V(or_default(event.get("responseObject"), Value::Null)),
    );
    table.insert("user", user_record(event.get("user")));
    table.insert(
        "impersonatedUser",
        user_record(event.get("impersonatedUser")),
    );
    table.insert(
        "objectRef",
        Record(
            "ObjectRef",
            [
                "resource",
                "namespace",
                "name",
                "subresource",
                "apiGroup",
                "apiVersion",
                "uid",
                "resourceVersion",
            ]
            .into_iter()
            .map(|k| (k, string_at(&object_ref, k)))
            .collect(),
        ),
    );
    table.insert(
        "responseStatus",
        Record(
            "ResponseStatus",
            vec![
                ("code", or_default(status.get("code"), json!(0))),
                ("status", string_at(&status, "status")),
                ("reason", string_at(&status, "reason")),
                ("message", string_at(&status, "message")),
            ],
        ),
    );
    table
}

/// Whether a value of Rhai type `actual` (with JSON form `value`) fits the type that
/// `EVENT_ACCESSORS` declares.
fn fits_declared_type(declared: &str, actual: &str, value: Option<&Value>) -> bool {
    let all = |f: fn(&Value) -> bool| match value {
        Some(Value::Array(items)) => items.iter().all(f),
        Some(Value::Object(fields)) => fields.values().all(f),
        _ => false,
    };
    match declared {
        "string" => actual == "string",
        "array of strings" => actual == "array" && all(Value::is_string),
        "map of strings" => actual == "map" && all(Value::is_string),
        "map or ()" => actual == "map" || actual == "()",
        record => actual == record,
    }
}

/// Checks every accessor of `EVENT_ACCESSORS` on `event` against the values in `json`.
fn check_every_accessor(rules: &Ruleset, event: &Arc<Event>, json: &Value) {
    let table = expected_accessors(json);
    let covered: BTreeSet<&str> = table.keys().copied().collect();
    let listed: BTreeSet<&str> = EVENT_ACCESSORS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        covered, listed,
        "the expectation table must cover EVENT_ACCESSORS exactly"
    );

    for (name, declared) in EVENT_ACCESSORS {
        let expr = format!("event.{name}");
        let actual_type = type_of(rules, event, &expr);
        match &table[name] {
            Expected::Value(expected) => {
                let actual = eval_json(rules, event, &expr);
                assert_eq!(&actual, expected, "`{expr}`");
                assert!(
                    fits_declared_type(declared, &actual_type, Some(&actual)),
                    "`{expr}` is a {actual_type} ({actual}), declared {declared}"
                );
            }
            Expected::Record(type_name, fields) => {
                assert_eq!(&actual_type, type_name, "`{expr}`");
                assert!(fits_declared_type(declared, &actual_type, None), "`{expr}`");
                for (field, expected) in fields {
                    let expr = format!("event.{name}.{field}");
                    assert_eq!(&eval_json(rules, event, &expr), expected, "`{expr}`");
                }
            }
        }
    }
}

/// A v1 event with every accessor's field set, each to a distinct value.
fn full_event() -> Value {
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "audit-id-1",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/ns-a/pods/pod-a/exec?command=sh",
        "verb": "create",
        "user": {
            "username": "alice",
            "uid": "uid-alice",
            "groups": ["devs", "system:authenticated"],
            "extra": {"scopes": ["openid", "email"], "tenant": ["t1"]}
        },
        "impersonatedUser": {
            "username": "system:serviceaccount:ns-a:builder",
            "uid": "uid-builder",
            "groups": ["system:serviceaccounts"],
            "extra": {"reason": ["ci"]}
        },
        "sourceIPs": ["10.0.0.1", "10.0.0.2"],
        "userAgent": "kubectl/v1.30.1",
        "objectRef": {
            "resource": "pods",
            "namespace": "ns-a",
            "name": "pod-a",
            "subresource": "exec",
            "apiGroup": "core.example",
            "apiVersion": "v1",
            "uid": "uid-pod-a",
            "resourceVersion": "42"
        },
        "responseStatus": {
            "code": 403,
            "status": "Failure",
            "reason": "Forbidden",
            "message": "pods \"pod-a\" is forbidden"
        },
        "requestObject": {"kind": "PodExecOptions", "command": ["sh"], "stdin": true},
        "responseObject": {"kind": "Status", "code": 403, "metadata": {"name": "resp-name"}},
        "requestReceivedTimestamp": "2024-05-01T10:00:00.000001Z",
        "stageTimestamp": "2024-05-01T10:00:00.000002Z",
        "annotations": {"authorization.k8s.io/decision": "forbid", "note": "n"}
    })
}

#[test]
fn every_accessor_on_the_privileged_pod_trace() {
    let rules = ruleset();
    let (event, json) = falco(PRIVILEGED_POD);
    check_every_accessor(&rules, &event, &json);

    // Spot checks that the derived table read what was meant.
    assert_eq!(eval_json(&rules, &event, "event.verb"), json!("create"));
    assert_eq!(eval_json(&rules, &event, "event.responseStatus.code"), 201);
    assert_eq!(
        eval_json(&rules, &event, "event.objectRef.resource"),
        json!("pods")
    );
}

#[test]
fn every_accessor_on_an_event_with_every_field_set() {
    // The Falco trace leaves several fields out (impersonatedUser, user.extra, the
    // objectRef's name and subresource, the status' reason...): here each has its own value.
    let rules = ruleset();
    let json = full_event();
    let event = event_from(&json.to_string());
    check_every_accessor(&rules, &event, &json);

    assert_eq!(
        eval_json(&rules, &event, "event.impersonatedUser.username"),
        json!("system:serviceaccount:ns-a:builder")
    );
    assert_eq!(
        eval_json(&rules, &event, "event.user.extra.scopes"),
        json!(["openid", "email"])
    );
    assert_eq!(
        eval_json(&rules, &event, "event.objectRef.subresource"),
        json!("exec")
    );
    assert_eq!(
        eval_json(&rules, &event, "event.responseStatus.reason"),
        json!("Forbidden")
    );
}

#[test]
fn request_and_response_objects_navigate_with_elvis() {
    let rules = ruleset();
    let (event, json) = falco(PRIVILEGED_POD);

    let privileged = json
        .pointer("/requestObject/spec/containers/0/securityContext/privileged")
        .unwrap();
    assert_eq!(privileged, &json!(true));
    assert_eq!(
        &eval_json(
            &rules,
            &event,
            "event.requestObject?.spec?.containers[0]?.securityContext?.privileged"
        ),
        privileged
    );

    let name = json.pointer("/responseObject/metadata/name").unwrap();
    assert_eq!(
        &eval_json(&rules, &event, "event.responseObject?.metadata?.name"),
        name
    );
    assert_eq!(
        &eval_json(&rules, &event, "event.responseObject.metadata.name"),
        name
    );
    // A missing key along the way reads as ().
    assert_eq!(
        eval_json(
            &rules,
            &event,
            "event.requestObject?.spec?.nope?.deeper ?? \"none\""
        ),
        json!("none")
    );
}

#[test]
fn empty_event_reads_as_zero_values() {
    let rules = ruleset();
    // The least an audit event can be: its identity, nothing else.
    let identity = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1"});
    let event = event_from(&identity.to_string());
    check_every_accessor(&rules, &event, &identity);

    // The same zero values, spelled out.
    assert_eq!(eval_json(&rules, &event, "event.kind"), json!("Event"));
    assert_eq!(
        eval_json(&rules, &event, "event.apiVersion"),
        json!("audit.k8s.io/v1")
    );
    for name in [
        "level",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "userAgent",
        "requestReceivedTimestamp",
        "stageTimestamp",
        "user.username",
        "user.uid",
        "impersonatedUser.username",
        "impersonatedUser.uid",
        "objectRef.resource",
        "objectRef.namespace",
        "objectRef.name",
        "objectRef.subresource",
        "objectRef.apiGroup",
        "objectRef.apiVersion",
        "objectRef.uid",
        "objectRef.resourceVersion",
        "responseStatus.status",
        "responseStatus.reason",
        "responseStatus.message",
    ] {
        assert_eq!(
            eval_json(&rules, &event, &format!("event.{name}")),
            json!(""),
            "event.{name}"
        );
    }
    assert_eq!(eval_json(&rules, &event, "event.responseStatus.code"), 0);
    for name in [
        "sourceIPs",
        "user.groups",
        "impersonatedUser.groups",
        "containers()",
        "images()",
        "host_path_mounts()",
        "role_rules()",
        "subjects()",
    ] {
        assert_eq!(
            eval_json(&rules, &event, &format!("event.{name}")),
            json!([]),
            "event.{name}"
        );
    }
    for name in [
        "annotations",
        "user.extra",
        "impersonatedUser.extra",
        "role_ref()",
    ] {
        assert_eq!(
            eval_json(&rules, &event, &format!("event.{name}")),
            json!({}),
            "event.{name}"
        );
    }
    for name in ["requestObject", "responseObject"] {
        assert_eq!(
            type_of(&rules, &event, &format!("event.{name}")),
            "()",
            "event.{name}"
        );
    }
    for name in [
        "privileged()",
        "host_network()",
        "host_pid()",
        "host_ipc()",
        "user.is_system()",
        "impersonatedUser.is_system()",
    ] {
        assert_eq!(
            eval_json(&rules, &event, &format!("event.{name}")),
            json!(false),
            "event.{name}"
        );
    }
    assert_eq!(eval_json(&rules, &event, "event.object_name()"), json!(""));
    assert_eq!(
        eval_json(&rules, &event, "event.requestObject?.spec ?? \"none\""),
        json!("none")
    );
    // A typical guard runs through without throwing.
    assert_eq!(
        eval_json(
            &rules,
            &event,
            "event.verb == \"create\" && event.objectRef.resource == \"pods\" \
             && event.responseStatus.code >= 400 && event.user.groups.contains(\"x\")"
        ),
        json!(false)
    );
}

/// The pod spec of a Falco pod-creation trace: its request body's `spec`.
fn pod_spec(json: &Value) -> &Value {
    json.pointer("/requestObject/spec")
        .expect("a pod creation with a request body")
}

/// Checks the pod helpers against the trace's own pod spec.
fn check_pod_helpers(rules: &Ruleset, event: &Arc<Event>, json: &Value) {
    let spec = pod_spec(json);
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(
        eval_json(rules, event, "event.containers()"),
        json!(containers)
    );
    let images: Vec<&Value> = containers.iter().map(|c| &c["image"]).collect();
    assert_eq!(eval_json(rules, event, "event.images()"), json!(images));
    let privileged = containers
        .iter()
        .any(|c| c.pointer("/securityContext/privileged") == Some(&json!(true)));
    assert_eq!(
        eval_json(rules, event, "event.privileged()"),
        json!(privileged)
    );
    for (helper, key) in [
        ("host_network", "hostNetwork"),
        ("host_pid", "hostPID"),
        ("host_ipc", "hostIPC"),
    ] {
        let flag = spec.get(key).and_then(Value::as_bool).unwrap_or(false);
        assert_eq!(
            eval_json(rules, event, &format!("event.{helper}()")),
            json!(flag),
            "{helper}"
        );
    }
    let mounts: Vec<&Value> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/hostPath/path"))
        .collect();
    assert_eq!(
        eval_json(rules, event, "event.host_path_mounts()"),
        json!(mounts)
    );
}

#[test]
fn pod_helpers_on_falco_pod_traces() {
    let rules = ruleset();
    let helper = |name: &str, expr: &str| {
        let (event, json) = falco(name);
        check_pod_helpers(&rules, &event, &json);
        eval_json(&rules, &event, expr)
    };

    // What each trace is named for.
    assert_eq!(helper(PRIVILEGED_POD, "event.privileged()"), json!(true));
    assert_eq!(
        helper("create_nginx_pod_unprivileged.json", "event.privileged()"),
        json!(false)
    );
    assert_eq!(
        helper(
            "create_nginx_pod_privileged_2nd_container.json",
            "event.privileged()"
        ),
        json!(true)
    );
    assert_eq!(
        helper(
            "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
            "event.privileged()"
        ),
        json!(true)
    );
    assert_eq!(
        helper(
            "create_nginx_pod_privileged_2nd_container.json",
            "event.images()"
        ),
        json!(["nginx", "mysql:latest"])
    );
    assert_eq!(
        helper("create_nginx_pod_hostnetwork.json", "event.host_network()"),
        json!(true)
    );
    assert_eq!(
        helper(
            "create_nginx_pod_nohostnetwork.json",
            "event.host_network()"
        ),
        json!(false)
    );
    assert_eq!(
        helper(
            "create_nginx_pod_sensitive_mount.json",
            "event.host_path_mounts()"
        ),
        json!(["/etc"])
    );
    assert_eq!(
        helper(PRIVILEGED_POD, "event.host_path_mounts()"),
        json!([])
    );
}

#[test]
fn pod_helpers_reach_workload_templates_and_every_container_kind() {
    let rules = ruleset();
    let pod_spec = json!({
        "hostPID": true,
        "containers": [{"name": "app", "image": "app:1"}],
        "initContainers": [{"name": "init", "image": "init:1", "securityContext": {"privileged": true}}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox:1"}],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}]
    });
    let deployment = json!({
        "verb": "create",
        "objectRef": {"resource": "deployments", "apiGroup": "apps"},
        "requestObject": {"kind": "Deployment", "spec": {"template": {"spec": pod_spec}}}
    });
    let cron_job = json!({
        "verb": "create",
        "objectRef": {"resource": "cronjobs", "apiGroup": "batch"},
        "requestObject": {
            "kind": "CronJob",
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "hostIPC": true,
                "containers": [{"name": "job", "image": "job:1"}]
            }}}}}
        }
    });

    let event = event_from(&deployment.to_string());
    assert_eq!(
        eval_json(&rules, &event, "event.images()"),
        json!(["app:1", "init:1", "busybox:1"])
    );
    assert_eq!(
        eval_json(&rules, &event, "event.containers().map(|c| c.name)"),
        json!(["app", "init", "debug"])
    );
    assert_eq!(eval_json(&rules, &event, "event.privileged()"), json!(true));
    assert_eq!(eval_json(&rules, &event, "event.host_pid()"), json!(true));
    assert_eq!(eval_json(&rules, &event, "event.host_ipc()"), json!(false));
    assert_eq!(
        eval_json(&rules, &event, "event.host_path_mounts()"),
        json!(["/"])
    );

    let event = event_from(&cron_job.to_string());
    assert_eq!(
        eval_json(&rules, &event, "event.images()"),
        json!(["job:1"])
    );
    assert_eq!(eval_json(&rules, &event, "event.host_ipc()"), json!(true));
    assert_eq!(eval_json(&rules, &event, "event.host_pid()"), json!(false));
    assert_eq!(
        eval_json(&rules, &event, "event.privileged()"),
        json!(false)
    );
}

#[test]
fn rbac_helpers_on_falco_role_and_binding_traces() {
    let rules = ruleset();

    let mut role_traces: Vec<String> = fs::read_dir(FALCO_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("create_cluster_role_") && n.ends_with(".json"))
        .collect();
    role_traces.sort();
    assert!(
        role_traces.len() >= 4,
        "create_cluster_role_*.json: {role_traces:?}"
    );
    for name in &role_traces {
        let (event, json) = falco(name);
        let role_rules = json.pointer("/requestObject/rules").unwrap();
        assert!(!role_rules.as_array().unwrap().is_empty(), "{name}");
        assert_eq!(
            &eval_json(&rules, &event, "event.role_rules()"),
            role_rules,
            "{name}"
        );
        assert_eq!(
            eval_json(&rules, &event, "event.subjects()"),
            json!([]),
            "{name}"
        );
        assert_eq!(
            eval_json(&rules, &event, "event.role_ref()"),
            json!({}),
            "{name}"
        );
    }
    let (event, _) = falco("create_cluster_role_wildcard_verbs.json");
    assert_eq!(
        eval_json(
            &rules,
            &event,
            "event.role_rules().some(|r| r.verbs.contains(\"*\"))"
        ),
        json!(true)
    );

    for name in [
        "attach_cluster_admin_role.json",
        "create_clusterrolebinding.json",
    ] {
        let (event, json) = falco(name);
        assert_eq!(
            &eval_json(&rules, &event, "event.subjects()"),
            json.pointer("/requestObject/subjects").unwrap(),
            "{name}"
        );
        assert_eq!(
            &eval_json(&rules, &event, "event.role_ref()"),
            json.pointer("/requestObject/roleRef").unwrap(),
            "{name}"
        );
        assert_eq!(
            &eval_json(&rules, &event, "event.role_ref().name"),
            json.pointer("/requestObject/roleRef/name").unwrap(),
            "{name}"
        );
        assert_eq!(
            eval_json(&rules, &event, "event.role_rules()"),
            json!([]),
            "{name}"
        );
    }
    let (event, _) = falco("attach_cluster_admin_role.json");
    assert_eq!(
        eval_json(&rules, &event, "event.role_ref().name"),
        json!("cluster-admin")
    );
    assert_eq!(
        eval_json(&rules, &event, "event.subjects()[0].kind"),
        json!("User")
    );

    // A pod has no rules, subjects or roleRef.
    let (event, _) = falco(PRIVILEGED_POD);
    assert_eq!(eval_json(&rules, &event, "event.role_rules()"), json!([]));
    assert_eq!(eval_json(&rules, &event, "event.subjects()"), json!([]));
    assert_eq!(eval_json(&rules, &event, "event.role_ref()"), json!({}));
}

#[test]
fn object_name_falls_back_from_object_ref_to_bodies() {
    let rules = ruleset();

    // Create: objectRef has no name; the response body has the generated one.
    let (event, json) = falco(PRIVILEGED_POD);
    assert!(json.pointer("/objectRef/name").is_none());
    let response_name = json.pointer("/responseObject/metadata/name").unwrap();
    assert_eq!(
        &eval_json(&rules, &event, "event.object_name()"),
        response_name
    );

    // Exec: objectRef names the pod.
    let (event, json) = falco("exec_pod.json");
    assert_eq!(
        &eval_json(&rules, &event, "event.object_name()"),
        json.pointer("/objectRef/name").unwrap()
    );

    // Only a request body: its name, else its generateName.
    let event =
        event_from(&json!({"requestObject": {"metadata": {"name": "req-name"}}}).to_string());
    assert_eq!(
        eval_json(&rules, &event, "event.object_name()"),
        json!("req-name")
    );
    let event =
        event_from(&json!({"requestObject": {"metadata": {"generateName": "web-"}}}).to_string());
    assert_eq!(
        eval_json(&rules, &event, "event.object_name()"),
        json!("web-")
    );
}

#[test]
fn user_helpers() {
    let rules = ruleset();

    // A service account is a system user; a person and system:anonymous are not.
    let (event, json) = falco(PRIVILEGED_POD);
    let username = json.pointer("/user/username").unwrap().as_str().unwrap();
    assert!(username.starts_with("system:serviceaccount:"), "{username}");
    assert_eq!(
        eval_json(&rules, &event, "event.user.is_system()"),
        json!(true)
    );
    assert_eq!(
        eval_json(&rules, &event, "is_system_user(event.user.username)"),
        json!(true)
    );
    assert_eq!(
        eval_json(&rules, &event, "event.impersonatedUser.is_system()"),
        json!(false)
    );

    let (event, json) = falco("create_clusterrolebinding.json");
    assert_eq!(
        json.pointer("/user/username"),
        Some(&json!("minikube-user"))
    );
    assert_eq!(
        eval_json(&rules, &event, "event.user.is_system()"),
        json!(false)
    );

    let (event, json) = falco("anonymous_creates_namespace_foo.json");
    assert_eq!(
        json.pointer("/user/username"),
        Some(&json!("system:anonymous"))
    );
    assert_eq!(
        eval_json(&rules, &event, "event.user.is_system()"),
        json!(false)
    );

    let event = event_from(&full_event().to_string());
    assert_eq!(
        eval_json(&rules, &event, "event.impersonatedUser.is_system()"),
        json!(true)
    );
    assert_eq!(
        eval_json(&rules, &event, "event.user.is_system()"),
        json!(false)
    );

    for (name, expected) in [
        ("system:node:worker-1", true),
        ("system:kube-scheduler", true),
        ("system:anonymous", false),
        ("alice", false),
        ("", false),
        ("systemic", false),
    ] {
        assert_eq!(
            eval_json(&rules, &event, &format!("is_system_user({name:?})")),
            json!(expected),
            "is_system_user({name:?})"
        );
    }
}

#[test]
fn text_helpers() {
    let rules = ruleset();
    let (event, _) = falco(PRIVILEGED_POD);
    let cases = [
        // glob(text, pattern)
        ("glob(event.objectRef.namespace, \"def*\")", true),
        ("glob(\"kube-system\", \"kube-*\")", true),
        ("glob(\"kube-system\", \"k?be-syst?m\")", true),
        ("glob(\"kube-system\", \"*\")", true),
        ("glob(\"default\", \"kube-*\")", false),
        // Text first, pattern second: the pattern's `*` is not matched literally.
        ("glob(\"kube-*\", \"kube-system\")", false),
        ("glob(\"ac\", \"a?c\")", false),
        // glob_any(text, patterns)
        (
            "glob_any(event.user.username, [\"alice\", \"system:serviceaccount:kube-system:*\"])",
            true,
        ),
        ("glob_any(\"alice\", [\"bob\", \"a*e\"])", true),
        ("glob_any(\"alice\", [\"bob\", \"carol\"])", false),
        ("glob_any(\"alice\", [])", false),
        // starts_with_any(text, prefixes)
        (
            "starts_with_any(event.requestURI, [\"/apis/\", \"/api/v1/namespaces/\"])",
            true,
        ),
        (
            "starts_with_any(event.requestURI, [\"/apis/\", \"/healthz\"])",
            false,
        ),
        ("starts_with_any(\"kube-system\", [\"kube-\"])", true),
        ("starts_with_any(\"kube-system\", [])", false),
    ];
    for (expr, expected) in cases {
        assert_eq!(eval_json(&rules, &event, expr), json!(expected), "`{expr}`");
    }
}

#[test]
fn timestamps_read_their_own_field_without_fallback() {
    let rules = ruleset();
    let v1beta1 = event_from(
        r#"{"timestamp":"2018-10-25T14:09:12Z","requestReceivedTimestamp":"2018-10-25T14:09:12.5Z"}"#,
    );
    assert_eq!(
        eval(&rules, &v1beta1, "event.stageTimestamp")
            .into_string()
            .unwrap(),
        ""
    );
    assert_eq!(
        eval(&rules, &v1beta1, "event.requestReceivedTimestamp")
            .into_string()
            .unwrap(),
        "2018-10-25T14:09:12.5Z"
    );
    // klaxon's own event time (used on alerts) does fall back.
    assert_eq!(v1beta1.time(), "2018-10-25T14:09:12.5Z");
}

#[test]
fn a_request_object_nested_too_deep_reads_as_unit_without_crashing() {
    let rules = ruleset();
    let bomb = format!(
        r#"{{"auditID":"x","requestObject":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let event = event_from(&bomb);
    assert!(eval(&rules, &event, "event.requestObject").is_unit());
    assert_eq!(
        eval(&rules, &event, "event.containers().len()")
            .as_int()
            .unwrap(),
        0
    );
}

#[test]
fn a_kubectl_debug_patch_with_only_ephemeral_containers_is_a_pod_spec() {
    let rules = ruleset();
    let event = event_from(
        r#"{"auditID":"d","objectRef":{"resource":"pods","subresource":"ephemeralcontainers"},
            "requestObject":{"spec":{"ephemeralContainers":[
                {"name":"debugger","image":"busybox:1.36","securityContext":{"privileged":true}}]}}}"#,
    );
    assert_eq!(
        eval_json(&rules, &event, "event.images()"),
        json!(["busybox:1.36"])
    );
    assert_eq!(eval_json(&rules, &event, "event.privileged()"), json!(true));
}

#[test]
fn uri_params_decode_the_query_of_the_request_uri() {
    let rules = ruleset();
    let (exec, _) = falco("exec_pod.json");
    assert_eq!(
        eval_json(&rules, &exec, r#"event.uri_param("command")"#),
        "bash"
    );
    assert_eq!(eval_json(&rules, &exec, r#"event.uri_param("absent")"#), "");
    assert_eq!(
        eval_json(&rules, &exec, "event.uri_params()"),
        serde_json::json!({
            "command": ["bash"], "container": ["nginx1", "nginx1"],
            "stdin": ["true"], "stdout": ["true"], "tty": ["true"],
        })
    );
    // Percent- and `+`-escapes decode, repeated names keep their order, no query reads empty.
    let encoded = event_from(
        r#"{"auditID":"u","requestURI":"/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=echo+a%26b%3Dc&container=app#frag"}"#,
    );
    assert_eq!(
        eval_json(&rules, &encoded, "event.uri_params()"),
        serde_json::json!({"command": ["sh", "-c", "echo a&b=c"], "container": ["app"]})
    );
    assert_eq!(
        eval_json(&rules, &encoded, r#"event.uri_param("container")"#),
        "app"
    );
    let bare = event_from(r#"{"auditID":"b","requestURI":"/healthz"}"#);
    assert_eq!(
        eval_json(&rules, &bare, "event.uri_params()"),
        serde_json::json!({})
    );
    assert_eq!(eval_json(&rules, &bare, r#"event.uri_param("x")"#), "");
}

#[test]
fn images_of_reads_one_container_list_and_rejects_unknown_lists() {
    let rules = ruleset();
    let pod = event_from(
        r#"{"auditID":"p","requestObject":{"kind":"Pod","spec":{
            "initContainers":[{"name":"i","image":"busybox:1"}],
            "containers":[{"name":"a","image":"nginx"},{"name":"b","image":"mysql:latest"}],
            "ephemeralContainers":[{"name":"d","image":"debug@sha256:ab"}]}}}"#,
    );
    for (list, images) in [
        ("containers", serde_json::json!(["nginx", "mysql:latest"])),
        ("initContainers", serde_json::json!(["busybox:1"])),
        (
            "ephemeralContainers",
            serde_json::json!(["debug@sha256:ab"]),
        ),
    ] {
        assert_eq!(
            eval_json(&rules, &pod, &format!("event.images_of(\"{list}\")")),
            images,
            "{list}"
        );
    }
    assert_eq!(
        eval_json(&rules, &pod, "event.images()"),
        serde_json::json!(["nginx", "mysql:latest", "busybox:1", "debug@sha256:ab"])
    );
    let err = rules
        .eval_expression(pod.clone(), r#"event.images_of("container")"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown container list `container`"), "{err}");
    assert_eq!(
        eval_json(
            &rules,
            &pod,
            "event.images_of(\"containers\").map(|i| i.image_repository())"
        ),
        serde_json::json!(["nginx", "mysql"])
    );
}

#[test]
fn role_rule_values_flatten_one_field_over_all_rules() {
    let rules = ruleset();
    let (event, json) = falco("create_cluster_role_pod_exec.json");
    let role_rules = json
        .pointer("/requestObject/rules")
        .unwrap()
        .as_array()
        .unwrap();
    for field in [
        "apiGroups",
        "resources",
        "verbs",
        "resourceNames",
        "nonResourceURLs",
    ] {
        let expected: Vec<Value> = role_rules
            .iter()
            .filter_map(|r| r.get(field).and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();
        assert_eq!(
            eval_json(
                &rules,
                &event,
                &format!("event.role_rule_values(\"{field}\")")
            ),
            Value::Array(expected),
            "{field}"
        );
    }
    assert_eq!(
        eval(
            &rules,
            &event,
            r#""pods/exec" in event.role_rule_values("resources")"#
        )
        .as_bool(),
        Ok(true)
    );
    let err = rules
        .eval_expression(event.clone(), r#"event.role_rule_values("verb")"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown rule field `verb`"), "{err}");
}

#[test]
fn to_json_gives_the_whole_event() {
    let rules = ruleset();
    let (event, json) = falco(PRIVILEGED_POD);
    let text = eval(&rules, &event, "event.to_json()")
        .into_string()
        .unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    for key in [
        "/auditID",
        "/verb",
        "/user",
        "/objectRef",
        "/requestObject",
        "/responseStatus/code",
    ] {
        assert_eq!(back.pointer(key), json.pointer(key), "{key}");
    }
}

#[test]
fn a_misspelt_accessor_fails_naming_the_script_type() {
    // docs/SCRIPTING.md quotes this message; the types are named as scripts know them.
    let rules = ruleset();
    let (event, _) = falco(PRIVILEGED_POD);
    for (expr, type_name) in [
        ("event.namespace", "Event"),
        ("event.user.namespace", "User"),
        ("event.objectRef.verb", "ObjectRef"),
        ("event.responseStatus.name", "ResponseStatus"),
    ] {
        let err = rules
            .eval_expression(event.clone(), expr)
            .expect_err(expr)
            .to_string();
        assert!(
            err.contains(&format!(
                "a getter is not registered for type '{type_name}'"
            )),
            "{expr}: {err}"
        );
    }
}
