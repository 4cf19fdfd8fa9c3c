//! The web console at `/ui/`: its headers and authentication, the playground's answer (the
//! same payload bytes as `klaxon dry-run --target NAME`), the dead-letter API, and the
//! pages in a real headless Chromium (tests/support/browser.rs): the playground shows the
//! alert and the Slack payload of an example event, hostile event strings render as text
//! (in the playground and on the alerts page), an alert appears on the alerts page and a
//! silence made from it there holds back the next one, the targets page retries a dead
//! letter, and the rules page counts the shipped rules. The browser tests write the
//! screenshots of docs/img/.

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use fantoccini::Locator;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::browser::Browser;
use crate::support::klaxon::{Running, config_from, scripts, start};
use crate::support::slack::{Mode, SlackStandIn};

/// A rule that copies event strings (user, object name) into its alert.
const ECHO_RULE: &str = r#"
const MATCH = #{ verb: "create", resource: "pods" };
alert(#{
    title: `Pod created: ${event.objectRef.namespace}/${event.object_name()}`,
    severity: "warning",
    text: `by ${event.user.username}`,
    fields: #{ user: event.user.username, pod: event.object_name() },
});
"#;

/// Slack (at `slack_url`), an HTTP target and an email target, every alert to each.
fn toml(dir: &Path, slack_url: &str, extra: &str) -> String {
    format!(
        r#"
cluster_name = "test"
[server]
listen = "127.0.0.1:0"
{extra}
[scripts]
dirs = ["{dir}/scripts"]
[outbox]
path = "{dir}/data"
[delivery]
group_wait = "0s"
retry_base = "100ms"
retry_cap = "400ms"
poll_interval = "100ms"
[routing]
default_targets = ["slack", "siem", "mail"]
[targets.slack]
type = "slack"
webhook_url = "{slack_url}"
[targets.siem]
type = "http"
url = "http://127.0.0.1:9/ingest"
[targets.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = 9
security = "none"
from = "klaxon <klaxon@example.com>"
to = ["oncall@example.com"]
"#,
        dir = dir.display()
    )
}

/// A server with the echo rule; Slack is a stand-in that refuses everything with 404
/// (`no_service`), so nothing posted to the webhook is delivered.
async fn server(extra: &str) -> (TempDir, Running, SlackStandIn) {
    let slack = SlackStandIn::start().await;
    slack.set_mode(Mode::Removed);
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("pod_created", ECHO_RULE)]);
    let config = config_from(&toml(dir.path(), &slack.url(), extra), dir.path());
    let running = start(&config).await;
    (dir, running, slack)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/events")
        .join(name)
}

fn screenshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/img")
        .join(name)
}

/// A mail without what differs from one rendering to the next: its Date header and its
/// MIME boundaries (random).
fn comparable_mail(text: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\n");
    while let Some(start) = out.find("boundary=\"") {
        let from = start + "boundary=\"".len();
        let end = from + out[from..].find('"').unwrap();
        let boundary = out[from..end].to_owned();
        out = out
            .replace(&boundary, "BOUNDARY")
            .replacen("boundary=\"", "boundary=«", 1);
    }
    out
}

/// POSTs `body` to `path` with `headers` (JSON unless they say otherwise); the status and
/// the JSON answer.
async fn post(base: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_owned());
    if !headers.iter().any(|(name, _)| *name == "content-type") {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_playground(base: &str, body: String) -> (u16, Value) {
    post(base, "/api/v1/playground", &[], &body).await
}

/// The JSON answer to `GET path`.
async fn get_json(server: &Running, path: &str) -> Value {
    let (status, body) = server.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The items of the array `answer[list]` whose value at the JSON `pointer` is `value`.
fn items<'a>(answer: &'a Value, list: &str, pointer: &str, value: &str) -> Vec<&'a Value> {
    answer[list]
        .as_array()
        .unwrap_or_else(|| panic!("no array {list} in {answer}"))
        .iter()
        .filter(|item| item.pointer(pointer).and_then(Value::as_str) == Some(value))
        .collect()
}

fn payloads<'a>(answer: &'a Value, target: &str) -> Vec<&'a str> {
    let found = items(answer, "targets", "/name", target);
    assert_eq!(found.len(), 1, "target {target} in {answer}");
    found[0]["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_page_and_the_api_carry_a_content_security_policy_and_nosniff() {
    let (_dir, server, _slack) = server("").await;
    let client = reqwest::Client::new();
    for path in ["/ui/", "/ui/console.js", "/ui/console.css", "/api/v1/rules"] {
        let response = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    let page = client
        .get(format!("{}/ui/", server.base))
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    // No inline script: the only script is the page's own file.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains(r#"<script src="console.js" defer></script>"#));
    let (status, _) = server.get("/ui").await;
    assert_eq!(status, 200, "/ui redirects to /ui/");
    server.shutdown().await;
}

#[tokio::test]
async fn the_console_needs_the_webhooks_credentials() {
    let (_dir, server, _slack) = server("[server.auth]\nbearer_token = \"s3cret\"").await;
    let client = reqwest::Client::new();
    for path in ["/ui/", "/ui/console.js", "/api/v1/rules", "/api/v1/targets"] {
        let url = format!("{}{path}", server.base);
        let refused = client.get(&url).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let allowed = client.get(&url).bearer_auth("s3cret").send().await.unwrap();
        assert_eq!(allowed.status(), 200, "{path}");
    }
    let (status, _) = post(&server.base, "/api/v1/dead-letters/purge", &[], "{}").await;
    assert_eq!(status, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn with_an_admin_credential_the_console_takes_it_and_not_the_webhooks() {
    let extra = "[server.auth]\nbearer_token = \"webhook\"\n\
        [server.admin]\nusername = \"oncall\"\npassword = \"pw\"";
    let (_dir, server, _slack) = server(extra).await;
    let client = reqwest::Client::new();
    for path in [
        "/ui/",
        "/api/v1/rules",
        "/api/v1/alerts",
        "/api/v1/silences",
    ] {
        let url = format!("{}{path}", server.base);
        let webhook = client
            .get(&url)
            .bearer_auth("webhook")
            .send()
            .await
            .unwrap();
        assert_eq!(webhook.status(), 401, "{path}");
        let challenge = webhook.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Basic"),
            "{path}: the browser asks for a login"
        );
        let admin = client
            .get(&url)
            .basic_auth("oncall", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn posts_must_be_json_and_not_cross_site() {
    let (_dir, server, _slack) = server("").await;
    let purge = "/api/v1/dead-letters/purge";
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(post(&server.base, purge, &form, "all=1").await.0, 415);
    let cross_site = [("sec-fetch-site", "cross-site")];
    assert_eq!(post(&server.base, purge, &cross_site, "{}").await.0, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn the_playground_answers_with_the_bytes_dry_run_prints() {
    let (dir, server, _slack) = server("").await;
    let file = example("pod-created.jsonl");
    let body = std::fs::read_to_string(&file).unwrap();
    let (status, answer) = post_playground(&server.base, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], 1);
    let alerts = answer["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{answer}");
    assert_eq!(
        alerts[0]["alert"]["title"],
        "Pod created: payments/web-7d4b9c"
    );
    assert_eq!(alerts[0]["outcome"], "admitted");
    assert_eq!(alerts[0]["destinations"], json!(["slack", "siem", "mail"]));
    let config = dir.path().join("klaxon.toml");
    for target in ["slack", "siem", "mail"] {
        let output = cargo_bin_cmd!("klaxon")
            .args(["--config", config.to_str().unwrap(), "dry-run"])
            .args(["--target", target])
            .arg(&file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let printed = String::from_utf8(output.stdout).unwrap();
        let shown = payloads(&answer, target);
        assert_eq!(shown.len(), 1, "{target}: {answer}");
        if target == "mail" {
            assert_eq!(
                comparable_mail(shown[0]),
                comparable_mail(printed.trim_end())
            );
            assert!(shown[0].contains("Subject:"), "{}", shown[0]);
        } else {
            assert_eq!(format!("{}\n", shown[0]), printed, "{target}");
        }
    }
    // Nothing was stored or sent: the playground leaves no trace.
    let targets = get_json(&server, "/api/v1/targets").await;
    assert_eq!(targets["pending_total"], 0);
    assert_eq!(targets["dead_letters_total"], 0);
    server.shutdown().await;
}

#[tokio::test]
async fn the_playground_names_what_it_cannot_decode() {
    let (_dir, server, _slack) = server("").await;
    let (status, answer) = post_playground(&server.base, "{\"kind\": ".to_owned()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("no audit event in the input"),
        "{answer}"
    );
    let mut lines = std::fs::read_to_string(example("pod-created.jsonl")).unwrap();
    lines.push_str("{\"not\": \"an event\"}\n");
    let (status, answer) = post_playground(&server.base, lines).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], 1);
    assert_eq!(answer["rejected"].as_array().unwrap().len(), 1, "{answer}");
    server.shutdown().await;
}

/// Posts the creation of pod `web-N` to the webhook (a new title: no dedup); the refusing
/// Slack makes its notice a dead letter. Returns once the outbox holds `dead` Slack dead
/// letters, Slack having seen `requests` requests.
async fn dead_letter(
    server: &Running,
    slack: &SlackStandIn,
    n: usize,
    requests: usize,
    dead: usize,
) {
    let event = pod_event("payments", &format!("web-{n}"));
    assert_eq!(server.post(event.to_string()).await, 200);
    slack.wait_for_requests(requests).await;
    // The 404 is in; the outbox update follows within moments.
    while slack_dead_letters(server).await != dead {
        tokio::task::yield_now().await;
    }
}

/// The example pod creation, of pod `namespace/name`, with an auditID of its own.
fn pod_event(namespace: &str, name: &str) -> Value {
    let line = std::fs::read_to_string(example("pod-created.jsonl")).unwrap();
    let mut event: Value = serde_json::from_str(line.trim()).unwrap();
    event["auditID"] = json!(format!("console-test-{namespace}-{name}"));
    event["objectRef"]["namespace"] = json!(namespace);
    event["objectRef"]["name"] = json!(name);
    for object in ["requestObject", "responseObject"] {
        event[object]["metadata"]["namespace"] = json!(namespace);
        event[object]["metadata"]["name"] = json!(name);
    }
    event
}

async fn slack_dead_letters(server: &Running) -> usize {
    let targets = get_json(server, "/api/v1/targets").await;
    items(&targets, "dead_letters", "/entry/target", "slack").len()
}

#[tokio::test]
async fn dead_letters_are_retried_and_purged_through_the_api() {
    let (_dir, server, slack) = server("").await;
    dead_letter(&server, &slack, 1, 1, 1).await;
    let retry = "/api/v1/dead-letters/retry";
    assert_eq!(post(&server.base, retry, &[], "{}").await.0, 400);
    // Slack is back: the retried letter is delivered.
    slack.set_mode(Mode::Up);
    let targets = get_json(&server, "/api/v1/targets").await;
    let id = items(&targets, "dead_letters", "/entry/target", "slack")[0]["entry"]["id"].clone();
    let ids = json!({ "ids": [id] }).to_string();
    let (_, retried) = post(&server.base, retry, &[], &ids).await;
    assert_eq!(retried, json!({ "moved": 1, "requested": 1 }));
    let delivered = slack.wait_for(1).await;
    assert!(delivered[0].to_string().contains("payments/web-1"));
    // Refused again: a second dead letter, which purge deletes, and only it (the HTTP and
    // email targets' entries, unreachable, stay pending).
    slack.set_mode(Mode::Removed);
    dead_letter(&server, &slack, 2, 3, 1).await;
    let (_, purged) = post(&server.base, "/api/v1/dead-letters/purge", &[], "{}").await;
    assert_eq!(purged, json!({ "purged": 1 }));
    assert_eq!(slack_dead_letters(&server).await, 0);
    let after = get_json(&server, "/api/v1/targets").await;
    assert_eq!(after["dead_letters_total"], 0, "{after}");
    assert!(after["pending_total"].as_u64().unwrap() >= 2, "{after}");
    server.shutdown().await;
}

// ---- In a real browser -------------------------------------------------------------------

#[tokio::test]
async fn browser_the_playground_shows_the_alert_and_the_slack_payload_of_an_example() {
    let (_dir, server, _slack) = server("").await;
    let browser = Browser::start().await;
    browser
        .open(&format!("{}/ui/#playground", server.base))
        .await;
    browser
        .element("#example option[value='pod-created.jsonl']")
        .await;
    browser
        .client
        .find(Locator::Css("#example"))
        .await
        .unwrap()
        .select_by_value("pod-created.jsonl")
        .await
        .unwrap();
    browser.click("#run").await;
    let title = browser.text_of("#result .alert-title").await;
    assert_eq!(title, "Pod created: payments/web-7d4b9c");
    assert_eq!(
        browser.text_of("#summary").await,
        "1 event, 1 alert.",
        "summary"
    );
    // The Slack payload shown is the API's, byte for byte.
    let body = std::fs::read_to_string(example("pod-created.jsonl")).unwrap();
    let (_, answer) = post_playground(&server.base, body).await;
    let shown = browser
        .client
        .find(Locator::Css(".target[data-target='slack'] pre.payload"))
        .await
        .unwrap()
        .prop("textContent")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown, payloads(&answer, "slack")[0]);
    assert!(
        shown.contains("Pod created: payments/web-7d4b9c"),
        "{shown}"
    );
    browser
        .client
        .execute(
            "document.getElementById('summary').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    let size = browser
        .screenshot(&screenshot("console-playground.png"))
        .await;
    assert!(size > 1000, "{size} bytes");
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn browser_hostile_event_strings_render_as_text() {
    let (_dir, server, _slack) = server("").await;
    let script = "<script>window.__pwned = 2</script>";
    let image = "<img src=x onerror=\"window.__pwned = 1\">";
    let mut event: Value = serde_json::from_str(
        std::fs::read_to_string(example("pod-created.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    event["user"]["username"] = json!(image);
    event["objectRef"]["name"] = json!(script);
    event["responseObject"]["metadata"]["name"] = json!(script);
    event["requestObject"]["metadata"]["name"] = json!(script);
    let browser = Browser::start().await;
    browser
        .open(&format!("{}/ui/#playground", server.base))
        .await;
    // Pasted, as a user would.
    browser
        .element("#event")
        .await
        .send_keys(&event.to_string())
        .await
        .unwrap();
    browser.click("#run").await;
    let title = browser.text_of("#result .alert-title").await;
    assert_eq!(title, format!("Pod created: payments/{script}"));
    let fields = browser.text_of("#result .alert-fields").await;
    assert!(fields.contains(image), "{fields}");
    let payload = browser
        .text_of(".target[data-target='slack'] pre.payload")
        .await;
    assert!(payload.contains("window.__pwned"), "{payload}");
    // Nothing was injected: no element came from the strings, no script ran.
    assert_eq!(browser.count("#result script").await, 0);
    assert_eq!(browser.count("#result img").await, 0);
    assert_eq!(
        browser.count("script").await,
        1,
        "the page's own script only"
    );
    let pwned = browser
        .client
        .execute("return window.__pwned === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!(true));

    // The same event through the webhook: the alerts page and its details show it as text.
    assert_eq!(server.post(event.to_string()).await, 200);
    browser.open(&format!("{}/ui/#alerts", server.base)).await;
    let list = browser.text_of("#alert-list table").await;
    assert!(list.contains(script) && list.contains(image), "{list}");
    browser.click("#alert-list tr.clickable").await;
    let details = browser.text_of("#details").await;
    assert!(
        details.contains(script) && details.contains(image),
        "{details}"
    );
    assert_eq!(browser.count("#main script").await, 0);
    assert_eq!(browser.count("#main img").await, 0);
    let pwned = browser
        .client
        .execute("return window.__pwned === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!(true));
    browser.close().await;
    server.shutdown().await;
}

/// The value of the form control `css`.
async fn value_of(browser: &Browser, css: &str) -> String {
    let element = browser.element(css).await;
    element.prop("value").await.unwrap().unwrap_or_default()
}

#[tokio::test]
async fn browser_an_alert_appears_and_a_silence_made_from_it_holds_back_the_next() {
    let (_dir, server, slack) = server("").await;
    slack.set_mode(Mode::Up);
    let web1 = pod_event("payments", "web-1");
    assert_eq!(server.post(web1.to_string()).await, 200);
    slack.wait_for(1).await;

    // The alert appears; its details offer to silence alerts like it.
    let browser = Browser::start().await;
    browser.open(&format!("{}/ui/#alerts", server.base)).await;
    let row = browser
        .client
        .wait()
        .for_element(Locator::XPath(
            "//div[@id='alert-list']//tr[td[4][text()='Pod created: payments/web-1']]",
        ))
        .await
        .unwrap();
    let chart = browser.text_of("#chart").await;
    assert!(chart.contains("pod_created"), "{chart}");
    row.click().await.unwrap();
    let details = browser.text_of("#details").await;
    for shown in [
        "admitted",
        "payments/web-1",
        "slack, siem, mail",
        "console-test-payments-web-1",
    ] {
        assert!(details.contains(shown), "{shown}: {details}");
    }
    let size = browser.screenshot(&screenshot("console-alerts.png")).await;
    assert!(size > 1000, "{size} bytes");

    // "Silence alerts like this": the silences page, its matchers prefilled.
    browser.click("#silence-like").await;
    browser.element("#silence-form").await;
    let names = browser
        .client
        .find_all(Locator::Css("#matchers .m-name"))
        .await
        .unwrap();
    let mut prefilled = Vec::new();
    for (i, _) in names.iter().enumerate() {
        let row = format!("#matchers .matcher:nth-child({})", i + 1);
        prefilled.push((
            value_of(&browser, &format!("{row} .m-name")).await,
            value_of(&browser, &format!("{row} .m-op")).await,
            value_of(&browser, &format!("{row} .m-value")).await,
        ));
    }
    let expected = |n: &str, v: &str| (n.to_owned(), "=".to_owned(), v.to_owned());
    assert_eq!(
        prefilled,
        [
            expected("rule", "pod_created"),
            expected("namespace", "payments")
        ]
    );
    browser
        .element("#silence-form input[name='comment']")
        .await
        .send_keys("rollout of payments")
        .await
        .unwrap();
    browser.click("#silence-form button[type='submit']").await;
    let created = browser.text_of("#silence-status p").await;
    let id = created
        .strip_prefix("Created ")
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let listed = browser.text_of("#silence-list table").await;
    assert!(
        listed.contains(&id) && listed.contains("active"),
        "{listed}"
    );
    assert!(
        listed.contains("rule=pod_created, namespace=payments"),
        "{listed}"
    );
    let size = browser
        .screenshot(&screenshot("console-silences.png"))
        .await;
    assert!(size > 1000, "{size} bytes");

    // The next alert like it is held back; one from another namespace is not.
    for (namespace, name) in [("payments", "web-2"), ("shop", "web-3")] {
        let event = pod_event(namespace, name);
        assert_eq!(server.post(event.to_string()).await, 200);
    }
    let history = get_json(&server, "/api/v1/alerts").await;
    let fates: Vec<(&str, &str, &Value)> = history["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["title"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
                &a["silenced_by"],
            )
        })
        .collect();
    assert_eq!(
        fates,
        [
            ("Pod created: shop/web-3", "admitted", &Value::Null),
            ("Pod created: payments/web-2", "silenced", &json!(id)),
            ("Pod created: payments/web-1", "admitted", &Value::Null),
        ]
    );
    let sent: Vec<String> = slack
        .wait_for(2)
        .await
        .iter()
        .map(|m| m["blocks"].to_string())
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].contains("payments/web-1") && sent[1].contains("shop/web-3"),
        "{sent:?}"
    );

    // The alerts page shows the silenced one and names its silence.
    browser.open(&format!("{}/ui/#alerts", server.base)).await;
    browser
        .client
        .wait()
        .for_element(Locator::XPath(
            "//div[@id='alert-list']//tr[td[4][text()='Pod created: payments/web-2']]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let details = browser.text_of("#details").await;
    assert!(
        details.contains("silenced") && details.contains(&id),
        "{details}"
    );
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn browser_the_targets_page_retries_a_dead_letter() {
    let (_dir, server, slack) = server("").await;
    dead_letter(&server, &slack, 1, 1, 1).await;
    // Still failing (503), so the retried entry stays pending, in backoff.
    slack.set_mode(Mode::Unavailable(usize::MAX));
    let browser = Browser::start().await;
    browser.open(&format!("{}/ui/#targets", server.base)).await;
    let dead = browser.text_of("#dead-table").await;
    assert!(dead.contains("Pod created: payments/web-1"), "{dead}");
    assert!(dead.contains("no_service"), "{dead}");
    let overview = browser.text_of("#targets-table").await;
    assert!(overview.contains("slack"), "{overview}");
    let size = browser.screenshot(&screenshot("console-targets.png")).await;
    assert!(size > 1000, "{size} bytes");
    let row = browser
        .client
        .find(Locator::XPath(
            "//table[@id='dead-table']//tr[td[2][text()='slack']]//button[contains(@class,'retry')]",
        ))
        .await
        .unwrap();
    row.click().await.unwrap();
    // The page reloads: the letter is pending again, and no longer dead.
    browser
        .client
        .wait()
        .for_element(Locator::XPath(
            "//table[@id='pending-table']//tr[td[2][text()='slack']]",
        ))
        .await
        .unwrap();
    let dead = browser.text_of("#dead-table").await;
    assert!(!dead.contains("no_service"), "{dead}");
    let targets = get_json(&server, "/api/v1/targets").await;
    assert_eq!(
        items(&targets, "pending", "/target", "slack").len(),
        1,
        "{targets}"
    );
    browser.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn browser_the_rules_page_shows_the_counts_and_cost_of_the_shipped_rules() {
    // The shipped rules, having seen a healthy cluster's traffic and the attacks corpus
    // (their alerts go to the console target): the rules page has counts to show.
    let dir = TempDir::new().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let config = config_from(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[scripts]\ndirs = [\"{}\"]\n[outbox]\npath = \"{}/data\"\n",
            shipped.display(),
            dir.path().display()
        ),
        dir.path(),
    );
    let server = start(&config).await;
    for file in ["normal-cluster.jsonl", "attacks.jsonl"] {
        let body = std::fs::read_to_string(example(file)).unwrap();
        assert_eq!(server.post(body).await, 200, "{file}");
    }
    let browser = Browser::start().await;
    browser.open(&format!("{}/ui/#rules", server.base)).await;
    let rules = browser.text_of("#rules-table").await;
    assert!(rules.contains("pod_created"), "{rules}");
    let listed = get_json(&server, "/api/v1/rules").await;
    let pod_created = items(&listed, "rules", "/name", "pod_created")[0];
    // The healthy traffic creates two pods: pod_created ran on them and raised its alerts.
    assert!(
        pod_created["alerts"].as_u64().unwrap() >= 2,
        "{pod_created}"
    );
    assert!(pod_created["runs"].as_u64().unwrap() >= 2, "{pod_created}");
    assert!(
        pod_created["mean_micros"].as_f64().unwrap() > 0.0,
        "{pod_created}"
    );
    let size = browser.screenshot(&screenshot("console-rules.png")).await;
    assert!(size > 1000, "{size} bytes");
    browser.close().await;
    server.shutdown().await;
}
