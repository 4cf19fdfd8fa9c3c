//! The generic HTTP target against a real receiver on loopback: the `klaxon.v1` payload as
//! docs/PAYLOAD.md documents it, custom headers, auth, templates (strict, fuel-bounded),
//! and how the receiver's answers and network failures become dispositions. The docs'
//! example payload, field tables and example template are checked against the code.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use klaxon::notify::http::{self, HttpAuth, HttpSettings};
use klaxon::notify::template::{DEFAULT_FUEL, Template};
use klaxon::notify::{DeliveryPolicy, Disposition, Notice, PAYLOAD_VERSION, SendError};
use klaxon::rules::{Alert, AlertContext, Severity};
use klaxon::secret::Secret;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use support::receiver::{Answer, Receiver};

const PAYLOAD_MD: &str = include_str!("../../docs/PAYLOAD.md");

/// An alert with every optional field set, so every key of the payload is present.
/// `AlertContext` is spelled out field by field: a new field must be added here (and to
/// docs/PAYLOAD.md) for this file to compile.
fn full_alert() -> Alert {
    Alert {
        rule: "exec-into-pod".to_owned(),
        attack: vec!["T1609".to_owned()],
        severity: Severity::Warning,
        title: "alice exec'd into payments/web-7d9f".to_owned(),
        text: "`kubectl exec` into a running pod in *payments*".to_owned(),
        fields: BTreeMap::from([
            ("command".to_owned(), "sh".to_owned()),
            ("container".to_owned(), "web".to_owned()),
        ]),
        labels: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
        dedup_key: "alice exec'd into payments/web-7d9f".to_owned(),
        group_key: "exec-into-pod/payments".to_owned(),
        targets: vec!["oncall-hook".to_owned()],
        suppressed: 2,
        context: AlertContext {
            cluster: "prod-eu-1".to_owned(),
            event_time: "2025-03-14T09:26:53.589793Z".to_owned(),
            audit_id: "8d1c3f0e-5b7a-4c2e-9f1d-2a6b4e8c0d11".to_owned(),
            stage: "ResponseStarted".to_owned(),
            user: "alice@example.com".to_owned(),
            impersonated_user: "system:serviceaccount:payments:deployer".to_owned(),
            verb: "create".to_owned(),
            object: "pods/exec payments/web-7d9f".to_owned(),
            namespace: "payments".to_owned(),
            source_ips: vec!["10.0.12.7".to_owned()],
            user_agent: "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46".to_owned(),
            response_code: 101,
        },
    }
}

/// An alert with every optional field empty (absent from the payload).
fn bare_alert(title: &str, severity: Severity) -> Alert {
    Alert {
        severity,
        context: AlertContext {
            cluster: "prod-eu-1".to_owned(),
            event_time: "2025-03-14T09:27:02.104512Z".to_owned(),
            audit_id: "f3a9b2c4-0e1d-4f6a-8b7c-5d2e1f0a9b83".to_owned(),
            stage: "ResponseStarted".to_owned(),
            user: "bob@example.com".to_owned(),
            verb: "create".to_owned(),
            object: "pods/exec payments/db-0".to_owned(),
            source_ips: vec!["10.0.12.9".to_owned(), "192.168.4.2".to_owned()],
            response_code: 101,
            ..AlertContext::default()
        },
        ..Alert::new("exec-into-pod", title)
    }
}

/// The notice whose payload is the example in docs/PAYLOAD.md: a digest of a fully
/// populated alert and a bare one.
fn example_notice() -> Notice {
    let mut second = bare_alert("bob exec'd into payments/db-0", Severity::Critical);
    second.dedup_key = "bob exec'd into payments/db-0".to_owned();
    second.group_key = "exec-into-pod/payments".to_owned();
    second.context.namespace = "payments".to_owned();
    Notice {
        target: "oncall-hook".to_owned(),
        group_key: "exec-into-pod/payments".to_owned(),
        alerts: vec![full_alert(), second],
    }
}

fn settings(url: reqwest::Url) -> HttpSettings {
    HttpSettings {
        url,
        headers: HeaderMap::new(),
        auth: HttpAuth::None,
        timeout: Duration::from_secs(5),
        body_template: None,
        content_type: "application/json".to_owned(),
    }
}

fn templated(url: reqwest::Url, source: &str, content_type: &str) -> HttpSettings {
    HttpSettings {
        body_template: Some(Template::compile(source, DEFAULT_FUEL).unwrap()),
        content_type: content_type.to_owned(),
        ..settings(url)
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The fenced block of `lang` that follows `heading` in docs/PAYLOAD.md.
fn doc_block(heading: &str, lang: &str) -> String {
    let section = PAYLOAD_MD
        .split_once(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in PAYLOAD.md"))
        .1;
    let fence = format!("```{lang}\n");
    let start = section.find(&fence).expect("no fenced block") + fence.len();
    let len = section[start..].find("\n```").expect("unclosed block");
    section[start..start + len].to_owned()
}

/// The rows of the field table under `heading`: field name (the first column's code span)
/// → whether its "Optional" column says `yes`.
fn doc_table(heading: &str) -> BTreeMap<String, bool> {
    let section = PAYLOAD_MD
        .split_once(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in PAYLOAD.md"))
        .1;
    section
        .lines()
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            let optional = match cells[3] {
                "yes" => true,
                "no" => false,
                other => panic!("{name}: Optional is `{other}`, not yes or no"),
            };
            (name, optional)
        })
        .collect()
}

/// `(key, absent when empty)` for every key of `full`, `bare` being the same object with
/// every optional field empty.
fn fields(full: &Value, bare: &Value, prefix: &str) -> BTreeMap<String, bool> {
    let present = keys(bare);
    keys(full)
        .into_iter()
        .map(|k| {
            let optional = !present.contains(&k);
            (format!("{prefix}{k}"), optional)
        })
        .collect()
}

fn closed_port_url(path: &str) -> reqwest::Url {
    // A port that was just free and is closed again: connection refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}{path}").parse().unwrap()
}

#[tokio::test]
async fn single_alert_arrives_as_the_documented_json_payload() {
    let receiver = Receiver::start().await;
    let settings = settings(receiver.url("/hooks/klaxon?tenant=t1"));
    let alert = full_alert();
    let notice = Notice::single("oncall-hook", alert.clone());
    http::send(&reqwest::Client::new(), &settings, &notice)
        .await
        .unwrap();

    let requests = receiver.wait_for(1).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/klaxon?tenant=t1");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.header("user-agent"),
        format!("klaxon/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(request.header("x-klaxon-payload-version"), "klaxon.v1");
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(request.text(), http::body(&settings, &notice).unwrap());

    let payload = request.json();
    assert_eq!(payload["version"], PAYLOAD_VERSION);
    assert_eq!(payload["version"], "klaxon.v1");
    assert_eq!(payload["target"], "oncall-hook");
    assert_eq!(payload["group_key"], "exec-into-pod/payments");
    assert_eq!(payload["count"], 1);
    assert_eq!(payload["severity"], "warning");
    assert_eq!(payload["title"], "alice exec'd into payments/web-7d9f");
    let alerts = payload["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    let sent = &alerts[0];
    assert_eq!(sent, &serde_json::to_value(&alert).unwrap());
    assert_eq!(sent["rule"], "exec-into-pod");
    assert_eq!(sent["fields"]["container"], "web");
    assert_eq!(sent["labels"]["team"], "payments");
    assert_eq!(sent["targets"], serde_json::json!(["oncall-hook"]));
    assert_eq!(sent["suppressed"], 2);
    let context = &sent["context"];
    assert_eq!(context["cluster"], "prod-eu-1");
    assert_eq!(context["event_time"], "2025-03-14T09:26:53.589793Z");
    assert_eq!(context["audit_id"], "8d1c3f0e-5b7a-4c2e-9f1d-2a6b4e8c0d11");
    assert_eq!(context["stage"], "ResponseStarted");
    assert_eq!(context["user"], "alice@example.com");
    assert_eq!(
        context["impersonated_user"],
        "system:serviceaccount:payments:deployer"
    );
    assert_eq!(context["verb"], "create");
    assert_eq!(context["object"], "pods/exec payments/web-7d9f");
    assert_eq!(context["namespace"], "payments");
    assert_eq!(context["source_ips"], serde_json::json!(["10.0.12.7"]));
    assert_eq!(
        context["user_agent"],
        "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"
    );
    assert_eq!(context["response_code"], 101);
}

#[tokio::test]
async fn digest_of_three_alerts_carries_them_all_in_order() {
    let receiver = Receiver::start().await;
    let settings = settings(receiver.url("/digest"));
    let notice = Notice {
        target: "oncall-hook".to_owned(),
        group_key: "exec-into-pod/payments".to_owned(),
        alerts: vec![
            bare_alert("first", Severity::Info),
            bare_alert("second", Severity::Critical),
            full_alert(),
        ],
    };
    http::send(&reqwest::Client::new(), &settings, &notice)
        .await
        .unwrap();

    let payload = receiver.wait_for(1).await[0].json();
    assert_eq!(payload["version"], "klaxon.v1");
    assert_eq!(payload["count"], 3);
    assert_eq!(payload["severity"], "critical", "the highest of the alerts");
    assert_eq!(payload["title"], "3 alerts: first (+2 more)");
    let alerts = payload["alerts"].as_array().unwrap();
    let titles: Vec<&str> = alerts
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["first", "second", "alice exec'd into payments/web-7d9f"]
    );
    for (sent, alert) in alerts.iter().zip(&notice.alerts) {
        assert_eq!(sent, &serde_json::to_value(alert).unwrap());
    }
    // Empty optional fields are absent, not empty.
    let bare = keys(&alerts[0]);
    assert_eq!(bare, names(&["rule", "severity", "title", "context"]));
    let bare_context = keys(&alerts[0]["context"]);
    for absent in ["impersonated_user", "namespace", "user_agent"] {
        assert!(
            !bare_context.contains(absent),
            "{absent} in {bare_context:?}"
        );
    }
    assert_eq!(
        alerts[1]["context"]["source_ips"],
        serde_json::json!(["10.0.12.9", "192.168.4.2"])
    );
}

#[tokio::test]
async fn custom_headers_arrive_and_klaxon_keeps_its_content_type() {
    let receiver = Receiver::start().await;
    let mut settings = settings(receiver.url("/h"));
    settings.headers.insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("k-42"),
    );
    settings.headers.append(
        HeaderName::from_static("x-tag"),
        HeaderValue::from_static("a"),
    );
    settings.headers.append(
        HeaderName::from_static("x-tag"),
        HeaderValue::from_static("b"),
    );
    settings.headers.insert(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("text/html"),
    );
    http::send(
        &reqwest::Client::new(),
        &settings,
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap();

    let request = &receiver.wait_for(1).await[0];
    assert_eq!(request.header("x-api-key"), "k-42");
    let tags: Vec<&str> = request
        .headers
        .get_all("x-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(tags, ["a", "b"]);
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("x-klaxon-payload-version"), "klaxon.v1");
}

#[tokio::test]
async fn a_custom_user_agent_replaces_klaxons() {
    let receiver = Receiver::start().await;
    let mut settings = settings(receiver.url("/h"));
    settings.headers.insert(
        HeaderName::from_static("user-agent"),
        HeaderValue::from_static("acme-gateway/1"),
    );
    http::send(
        &reqwest::Client::new(),
        &settings,
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap();
    assert_eq!(
        receiver.wait_for(1).await[0].header("user-agent"),
        "acme-gateway/1"
    );
}

#[tokio::test]
async fn bearer_token_arrives_and_replaces_a_custom_authorization() {
    let receiver = Receiver::start().await;
    let mut settings = settings(receiver.url("/h"));
    settings.auth = HttpAuth::Bearer(Secret::new("tok-123"));
    settings.headers.insert(
        HeaderName::from_static("authorization"),
        HeaderValue::from_static("ApiKey other"),
    );
    http::send(
        &reqwest::Client::new(),
        &settings,
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap();
    // `header` also checks that it is not repeated.
    assert_eq!(
        receiver.wait_for(1).await[0].header("authorization"),
        "Bearer tok-123"
    );
}

#[tokio::test]
async fn custom_authorization_is_sent_when_auth_is_none() {
    let receiver = Receiver::start().await;
    let mut settings = settings(receiver.url("/h"));
    settings.headers.insert(
        HeaderName::from_static("authorization"),
        HeaderValue::from_static("ApiKey k-9"),
    );
    http::send(
        &reqwest::Client::new(),
        &settings,
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap();
    assert_eq!(
        receiver.wait_for(1).await[0].header("authorization"),
        "ApiKey k-9"
    );
}

#[tokio::test]
async fn basic_auth_arrives_base64_encoded() {
    let receiver = Receiver::start().await;
    let mut settings = settings(receiver.url("/h"));
    settings.auth = HttpAuth::Basic {
        username: "alice".to_owned(),
        password: Secret::new("p:ss wörd"),
    };
    http::send(
        &reqwest::Client::new(),
        &settings,
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap();
    // base64("alice:p:ss wörd") of its UTF-8 bytes, computed independently.
    assert_eq!(
        receiver.wait_for(1).await[0].header("authorization"),
        "Basic YWxpY2U6cDpzcyB3w7ZyZA=="
    );
}

#[tokio::test]
async fn template_renders_with_its_content_type_and_no_version_header() {
    let receiver = Receiver::start().await;
    let settings = templated(
        receiver.url("/chat"),
        r#"{"text": "{{ title }} ({{ count }})"}"#,
        "text/plain; charset=utf-8",
    );
    let notice = Notice::single("chat", bare_alert("Pod created", Severity::Info));
    http::send(&reqwest::Client::new(), &settings, &notice)
        .await
        .unwrap();

    let request = &receiver.wait_for(1).await[0];
    assert_eq!(request.text(), r#"{"text": "Pod created (1)"}"#);
    assert_eq!(request.header("content-type"), "text/plain; charset=utf-8");
    assert!(request.headers.get("x-klaxon-payload-version").is_none());
    assert_eq!(
        http::body(&settings, &notice).unwrap(),
        r#"{"text": "Pod created (1)"}"#
    );
}

#[tokio::test]
async fn undefined_template_variable_is_a_permanent_render_error_and_sends_nothing() {
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let notice = Notice::single("chat", bare_alert("Pod created", Severity::Info));
    // A misspelt name, and an optional field the alert leaves absent.
    for source in ["{{ titel }}", "{{ alerts[0].text }}"] {
        let settings = templated(receiver.url("/chat"), source, "text/plain");
        let err = http::send(&client, &settings, &notice).await.unwrap_err();
        match &err {
            SendError::Render(why) => assert!(why.contains("undefined"), "{source}: {why}"),
            other => panic!("{source}: expected a render error, got {other:?}"),
        }
        assert_eq!(err.disposition(), Disposition::Permanent);
        assert!(matches!(
            http::body(&settings, &notice),
            Err(SendError::Render(_))
        ));
    }
    // `send` renders before it connects, so nothing can be in flight.
    assert!(receiver.requests().is_empty());
    // The documented way to read an optional field.
    let settings = templated(
        receiver.url("/chat"),
        "[{{ alerts[0].text | default('none') }}]",
        "text/plain",
    );
    assert_eq!(http::body(&settings, &notice).unwrap(), "[none]");
}

#[tokio::test]
async fn runaway_template_loop_is_stopped_by_fuel() {
    let receiver = Receiver::start().await;
    let settings = templated(
        receiver.url("/chat"),
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
        "text/plain",
    );
    let err = http::send(
        &reqwest::Client::new(),
        &settings,
        &Notice::single("chat", full_alert()),
    )
    .await
    .unwrap_err();
    match &err {
        SendError::Render(why) => assert!(why.contains("fuel"), "{why}"),
        other => panic!("expected a render error, got {other:?}"),
    }
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn bad_request_is_rejected_permanently_with_the_start_of_the_body() {
    let receiver = Receiver::start().await;
    receiver.answer(Answer::new(
        400,
        format!("  invalid payload: {}", "x".repeat(10_000)),
    ));
    let err = http::send(
        &reqwest::Client::new(),
        &settings(receiver.url("/h")),
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap_err();
    match &err {
        SendError::Rejected {
            status,
            reason,
            retry_after,
        } => {
            assert_eq!(*status, 400);
            assert!(reason.starts_with("invalid payload: xxx"), "{reason}");
            assert_eq!(reason.chars().count(), 200);
            assert!(reason.ends_with('…'));
            assert_eq!(*retry_after, None);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert_eq!(receiver.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn unavailable_with_retry_after_is_retried_after_it_then_any_2xx_succeeds() {
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let settings = settings(receiver.url("/h"));
    let notice = Notice::single("h", full_alert());

    receiver.answer(Answer::new(503, "maintenance").retry_after("7"));
    let err = http::send(&client, &settings, &notice).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Rejected { status: 503, reason, .. } if reason == "maintenance"),
        "{err:?}"
    );
    assert_eq!(
        err.disposition(),
        Disposition::Retry {
            after: Some(Duration::from_secs(7))
        }
    );

    // An HTTP-date Retry-After is not understood: plain backoff.
    receiver.answer(Answer::new(429, "slow down").retry_after("Fri, 14 Mar 2025 09:30:00 GMT"));
    let err = http::send(&client, &settings, &notice).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Retry { after: None });

    receiver.answer(Answer::new(204, ""));
    http::send(&client, &settings, &notice).await.unwrap();
    receiver.answer(Answer::new(202, "queued"));
    http::send(&client, &settings, &notice).await.unwrap();
    assert_eq!(receiver.wait_for(4).await.len(), 4);
}

#[tokio::test]
async fn closed_port_is_a_retryable_network_error_that_hides_the_url() {
    let url = closed_port_url("/hooks/SECRET-PATH?token=SECRET-QUERY");
    let err = http::send(
        &reqwest::Client::new(),
        &settings(url),
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap_err();
    match &err {
        SendError::Network(why) => assert!(!why.contains("SECRET"), "{why}"),
        other => panic!("expected a network error, got {other:?}"),
    }
    assert!(!err.to_string().contains("SECRET"));
    assert_eq!(err.disposition(), Disposition::Retry { after: None });
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_as_a_network_error() {
    // Accepts the connection and holds it without ever answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        held_tx.send(socket).await.unwrap();
    });
    let mut settings = settings(format!("http://{addr}/slow").parse().unwrap());
    settings.timeout = Duration::from_millis(300);
    let err = http::send(
        &reqwest::Client::new(),
        &settings,
        &Notice::single("h", full_alert()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SendError::Network(_)), "{err:?}");
    assert_eq!(err.disposition(), Disposition::Retry { after: None });
    // The connection was made: it was the answer that never came.
    assert!(held_rx.recv().await.is_some());
}

#[test]
fn debug_output_shows_no_secrets() {
    let mut settings = settings(
        "https://user:SECRET-PASS@hooks.example.com:8443/T0/SECRET-PATH?key=SECRET-QUERY"
            .parse()
            .unwrap(),
    );
    settings.headers.insert(
        HeaderName::from_static("x-api-key"),
        HeaderValue::from_static("SECRET-HEADER"),
    );
    settings.body_template = Some(Template::compile("{{ title }} SECRET-TPL", 100).unwrap());
    let bearer = format!(
        "{:?}",
        HttpSettings {
            auth: HttpAuth::Bearer(Secret::new("SECRET-TOKEN")),
            ..settings.clone()
        }
    );
    let basic = format!(
        "{:?}",
        HttpSettings {
            auth: HttpAuth::Basic {
                username: "alice".to_owned(),
                password: Secret::new("SECRET-PASSWORD"),
            },
            ..settings
        }
    );
    for shown in [&bearer, &basic] {
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.contains("https://hooks.example.com:8443/…"),
            "{shown}"
        );
        assert!(shown.contains("x-api-key"), "{shown}");
    }
    assert!(basic.contains("alice"), "{basic}");
}

#[test]
fn payload_doc_example_is_a_real_payload() {
    let example: Value = serde_json::from_str(&doc_block("## Example", "json"))
        .expect("the example in PAYLOAD.md is JSON");
    let expected = example_notice().payload();
    assert_eq!(
        example,
        expected,
        "docs/PAYLOAD.md's example drifted; paste:\n{}",
        serde_json::to_string_pretty(&expected).unwrap()
    );
    // The example shows every key: the first alert is fully populated.
    let full = Notice::single("t", full_alert()).payload();
    assert_eq!(keys(&example), keys(&full));
    assert_eq!(keys(&example["alerts"][0]), keys(&full["alerts"][0]));
    assert_eq!(
        keys(&example["alerts"][0]["context"]),
        keys(&full["alerts"][0]["context"])
    );
}

#[test]
fn payload_doc_tables_list_exactly_the_payload_fields_and_which_are_optional() {
    let full = Notice::single("t", full_alert()).payload();
    let bare = Notice::single("t", bare_alert("t", Severity::Info)).payload();
    assert_eq!(
        doc_table("### Top level"),
        fields(&full, &bare, ""),
        "top-level table"
    );
    let (full, bare) = (&full["alerts"][0], &bare["alerts"][0]);
    assert_eq!(
        doc_table("### Each alert"),
        fields(full, bare, ""),
        "alert table"
    );
    assert_eq!(
        doc_table("### Alert context"),
        fields(&full["context"], &bare["context"], "context."),
        "context table"
    );
}

#[tokio::test]
async fn payload_doc_template_escapes_json_and_lists_every_alert() {
    let source = doc_block("### Example template", "jinja");
    let receiver = Receiver::start().await;
    let settings = templated(receiver.url("/chat"), &source, "application/json");
    let mut tricky = bare_alert(r#"quote " backslash \ tab	end"#, Severity::Error);
    tricky.context.user = "line\nbreak".to_owned();
    let notice = Notice {
        target: "chat".to_owned(),
        group_key: "g".to_owned(),
        alerts: vec![tricky, full_alert()],
    };
    http::send(&reqwest::Client::new(), &settings, &notice)
        .await
        .unwrap();

    let body = receiver.wait_for(1).await[0].json();
    assert_eq!(keys(&body), names(&["text"]));
    let text = body["text"].as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], notice.title());
    assert!(
        lines[1].contains(r#"quote " backslash \ tab	end"#),
        "{text}"
    );
    assert!(lines[1].contains("line"), "{text}");
    assert_eq!(
        lines[2],
        "break create pods/exec payments/db-0 in prod-eu-1"
    );
    assert!(
        lines[3].contains("alice exec'd into payments/web-7d9f"),
        "{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");

    // What the docs say it renders for their example notice.
    let rendered = http::body(&settings, &example_notice()).unwrap();
    assert_eq!(
        rendered,
        doc_block("For the example notice above it renders", ""),
        "docs/PAYLOAD.md's rendered example drifted"
    );

    // Its fuel suffices for the largest notice the dispatcher builds.
    let largest = DeliveryPolicy::default().max_alerts_per_notice;
    let big = Notice {
        target: "chat".to_owned(),
        group_key: "g".to_owned(),
        alerts: vec![full_alert(); largest],
    };
    let rendered = http::body(&settings, &big).unwrap();
    let text = serde_json::from_str::<Value>(&rendered).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text.lines().count(), largest + 1);
}

#[test]
fn tojson_escapes_values_for_json_templates() {
    let template = klaxon::notify::template::Template::compile(
        r#"{"summary": {{ title | tojson }}, "n": {{ count }}}"#,
        klaxon::notify::template::DEFAULT_FUEL,
    )
    .unwrap();
    let mut a = alert_for_tojson();
    a.title = "quote \" and\nnewline".to_owned();
    let notice = klaxon::notify::Notice::single("t", a);
    let body = template.render(&notice).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["summary"], "quote \" and\nnewline");
    assert_eq!(parsed["n"], 1);
}

fn alert_for_tojson() -> klaxon::rules::Alert {
    klaxon::rules::Alert::new("r", "")
}
