//! Runtime silences end to end: real servers on loopback, the Slack stand-in, a real
//! `redis-server` for two replicas, and the `klaxon` binary for the CLI. A silence on one
//! namespace holds back exactly its alerts, survives a restart, is honoured by a replica
//! sharing Redis, and lets alerts through again once expired; bad requests are refused
//! naming the field; the admin credential is checked; dry-run applies `--silences FILE`
//! on the event clock; a config-file silence keeps working.

use crate::support;

use std::path::Path;

use serde_json::{Value, json};
use support::klaxon::{Running, base_toml, config_from, scripts, start};
use support::process::klaxon_command;
use support::redis::RedisServer;
use support::slack::SlackStandIn;
use tempfile::TempDir;

/// One alert per event, titled `NAMESPACE AUDITID`.
const RULE: &str =
    r#"alert(#{ title: `${event.objectRef.namespace} ${event.auditID}`, severity: "warning" });"#;

/// The admin token of the configs that set `[server.admin]`.
const ADMIN_TOKEN: &str = "admin-s3cret";

/// A config delivering every alert to the Slack stand-in at once; `extra` is appended.
fn config_text(dir: &Path, slack: &SlackStandIn, extra: &str) -> String {
    format!(
        "{base}[delivery]\ngroup_wait = \"0s\"\ndrain_timeout = \"10s\"\n[rule_defaults]\nbudget = 10000\n\
         [routing]\ndefault_targets = [\"slack\"]\n[targets.slack]\ntype = \"slack\"\nwebhook_url = \"{url}\"\n{extra}",
        base = base_toml(dir),
        url = slack.url(),
    )
}

/// An audit event creating a configmap in `namespace`, at `time`.
fn event(id: &str, namespace: &str, time: &str) -> Value {
    json!({
        "auditID": id, "stage": "ResponseComplete", "verb": "create", "level": "Metadata",
        "requestURI": format!("/api/v1/namespaces/{namespace}/configmaps"),
        "objectRef": {"resource": "configmaps", "namespace": namespace, "apiVersion": "v1"},
        "user": {"username": "alice"},
        "stageTimestamp": time,
    })
}

/// An EventList with one event per `(auditID, namespace)`.
fn batch(events: &[(&str, &str)]) -> String {
    let items: Vec<Value> = events
        .iter()
        .map(|(id, ns)| event(id, ns, "2026-12-03T08:00:00Z"))
        .collect();
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).to_string()
}

/// POSTs a batch; returns how many alerts it raised and how many deliveries it queued.
async fn post(server: &Running, events: &[(&str, &str)]) -> (u64, u64) {
    let (status, reply) = server.post_json(batch(events)).await;
    assert_eq!(status, 200, "{reply}");
    (
        reply["alerts"].as_u64().unwrap(),
        reply["queued"].as_u64().unwrap(),
    )
}

/// A request to the admin API, with the admin token when `token` is given.
fn admin(
    server: &Running,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new().request(method, format!("{}{path}", server.base));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Sends `request`; the status and the JSON answer.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a silence through the API; its JSON.
async fn silence(server: &Running, token: Option<&str>, body: Value) -> Value {
    let request = admin(server, reqwest::Method::POST, "/api/v1/silences", token).json(&body);
    let (status, reply) = send(request).await;
    assert_eq!(status, 201, "{reply}");
    reply
}

async fn list(server: &Running, token: Option<&str>) -> Vec<Value> {
    let request = admin(server, reqwest::Method::GET, "/api/v1/silences", token);
    let (status, reply) = send(request).await;
    assert_eq!(status, 200, "{reply}");
    reply["silences"].as_array().unwrap().clone()
}

fn shop_silence() -> Value {
    json!({
        "matchers": [{"name": "namespace", "op": "=", "value": "shop"}],
        "duration": "1h", "created_by": "alice", "comment": "rollout"
    })
}

/// Every title this file's tests raise (`NAMESPACE AUDITID`).
const TITLES: &[&str] = &[
    "shop a1", "web a2", "shop a3", "shop b1", "shop c1", "shop t1", "shop r1", "web r2",
    "shop r3", "shop r4", "shop f1", "web f2",
];

/// The titles the Slack stand-in's messages carry, sorted.
fn titles(slack: &SlackStandIn) -> Vec<String> {
    let blocks: Vec<String> = slack
        .messages()
        .iter()
        .map(|m| m["blocks"].to_string())
        .collect();
    let mut titles: Vec<String> = TITLES
        .iter()
        .filter(|t| blocks.iter().any(|b| b.contains(*t)))
        .map(|t| (*t).to_owned())
        .collect();
    titles.sort();
    titles
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_silence_holds_back_exactly_its_alerts_survives_a_restart_and_expires() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let config = config_from(&config_text(dir.path(), &slack, ""), dir.path());
    let server = start(&config).await;

    let made = silence(&server, None, shop_silence()).await;
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("s-"), "{made}");
    assert_eq!(made["state"], "active");
    assert_eq!(made["created_by"], "alice");
    assert_eq!(
        made["matchers"][0],
        json!({"name": "namespace", "op": "=", "value": "shop"})
    );

    let (alerts, queued) = post(&server, &[("a1", "shop"), ("a2", "web"), ("a3", "shop")]).await;
    assert_eq!((alerts, queued), (3, 1), "only the web alert is queued");
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains(r#"klaxon_alerts_total{rule="touch",outcome="silenced"}"#),
        "silenced alerts are counted"
    );
    assert!(
        metrics.contains("klaxon_silences_active "),
        "the gauge is set"
    );
    server.shutdown().await;
    assert_eq!(
        titles(&slack),
        vec!["web a2"],
        "shutdown drained everything queued"
    );

    // A new server on the same data directory still holds the silence.
    let server = start(&config).await;
    let kept = list(&server, None).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0]["id"].as_str(), &kept[0]["state"]),
        (Some(id.as_str()), &json!("active"))
    );
    assert_eq!(post(&server, &[("b1", "shop")]).await, (1, 0));

    // Expired through the API: the next shop alert goes out.
    let path = format!("/api/v1/silences/{id}");
    let (status, expired) = send(admin(&server, reqwest::Method::DELETE, &path, None)).await;
    assert_eq!(status, 200, "{expired}");
    assert_eq!(expired["state"], "expired");
    assert_eq!(
        list(&server, None).await[0]["state"],
        "expired",
        "kept for its retention"
    );
    assert_eq!(post(&server, &[("c1", "shop")]).await, (1, 1));
    slack.wait_for(2).await;

    // The history names the silence that held each alert.
    let (status, history) =
        send(admin(&server, reqwest::Method::GET, "/api/v1/alerts", None)).await;
    assert_eq!(status, 200, "{history}");
    let held: Vec<(&str, &str, &Value)> = history["alerts"]
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
        held,
        vec![
            ("shop c1", "admitted", &Value::Null),
            ("shop b1", "silenced", &json!(id)),
            ("shop a3", "silenced", &json!(id)),
            ("web a2", "admitted", &Value::Null),
            ("shop a1", "silenced", &json!(id)),
        ],
        "newest first, kept across the restart"
    );
    server.shutdown().await;
    assert_eq!(titles(&slack), vec!["shop c1", "web a2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silence_naming_a_target_holds_alerts_back_from_that_target_only() {
    let slack = SlackStandIn::start().await;
    let other = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let extra = format!(
        "[targets.other]\ntype = \"slack\"\nwebhook_url = \"{}\"\n[[routes]]\ntargets = [\"slack\", \"other\"]\n",
        other.url()
    );
    let server = start(&config_from(
        &config_text(dir.path(), &slack, &extra),
        dir.path(),
    ))
    .await;
    let body = json!({
        "matchers": [{"name": "target", "op": "=", "value": "slack"}, {"name": "rule", "op": "=~", "value": "to.*"}],
        "duration": "1h", "comment": "slack is noisy"
    });
    silence(&server, None, body).await;
    assert_eq!(
        post(&server, &[("t1", "shop")]).await,
        (1, 1),
        "queued for `other` only"
    );
    server.shutdown().await;
    assert_eq!(titles(&other), vec!["shop t1"]);
    assert!(titles(&slack).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_refuses_bad_requests_naming_the_field_and_checks_the_admin_credential() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let extra = format!(
        "[server.auth]\nbearer_token = \"webhook-token\"\n[server.admin]\nbearer_token = \"{ADMIN_TOKEN}\"\nusername = \"oncall\"\npassword = \"pw\"\n"
    );
    let server = start(&config_from(
        &config_text(dir.path(), &slack, &extra),
        dir.path(),
    ))
    .await;
    let post = |token: Option<&'static str>, body: Value| {
        send(admin(&server, reqwest::Method::POST, "/api/v1/silences", token).json(&body))
    };

    for token in [None, Some("wrong"), Some("webhook-token")] {
        let (status, reply) = post(token, shop_silence()).await;
        assert_eq!(status, 401, "{token:?}: {reply}");
    }
    let token = Some(ADMIN_TOKEN);
    let cases = [
        (
            json!({"matchers": [], "duration": "1h", "comment": "c"}),
            "matchers",
        ),
        (
            json!({"matchers": [{"name": "rule", "op": "==", "value": "x"}], "duration": "1h", "comment": "c"}),
            "matchers[0].op",
        ),
        (
            json!({"matchers": [{"name": "rule", "op": "=~", "value": "(unclosed"}], "duration": "1h", "comment": "c"}),
            "matchers[0]",
        ),
        (
            json!({"matchers": [{"name": "rule", "op": "=", "value": "x"}], "duration": "1h", "comment": " "}),
            "comment",
        ),
        (
            json!({"matchers": [{"name": "rule", "op": "=", "value": "x"}], "duration": "eventually", "comment": "c"}),
            "duration",
        ),
        (
            json!({"matchers": [{"name": "rule", "op": "=", "value": "x"}], "ends_at": "2001-01-01T00:00:00Z", "comment": "c"}),
            "ends_at",
        ),
    ];
    for (body, field) in cases {
        let (status, reply) = post(token, body.clone()).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["field"], field, "{reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("{field}: ")), "{error}");
    }
    let (status, reply) = post(token, shop_silence()).await;
    assert_eq!(status, 201, "{reply}");
    let basic = |password: &str| {
        admin(&server, reqwest::Method::GET, "/api/v1/silences", None)
            .basic_auth("oncall", Some(password))
    };
    assert_eq!(send(basic("pw")).await.0, 200);
    assert_eq!(send(basic("pw2")).await.0, 401);
    let (status, reply) = send(admin(
        &server,
        reqwest::Method::DELETE,
        "/api/v1/silences/s-0000000000000000",
        token,
    ))
    .await;
    assert_eq!(status, 404, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("s-0000000000000000")
    );
    server.shutdown().await;
}

/// The config of replica `name`: its own data directory under `dir`, the shared `redis`.
fn replica(
    dir: &Path,
    slack: &SlackStandIn,
    redis: &RedisServer,
    name: &str,
) -> klaxon::config::Config {
    let state = format!(
        "[state]\nbackend = \"redis\"\nredis_url = \"{}\"\ntimeout = \"2s\"\n",
        redis.url()
    );
    let text = config_text(dir, slack, &state).replace(
        &format!("{}/data", dir.display()),
        &dir.join(name).display().to_string(),
    );
    let config_dir = dir.join(format!("{name}-config"));
    std::fs::create_dir_all(&config_dir).unwrap();
    config_from(&text, &config_dir)
}

/// A real Redis, the Slack stand-in, and two replicas sharing them (their directory too).
async fn two_replicas() -> (RedisServer, SlackStandIn, TempDir, Running, Running) {
    let redis = RedisServer::start();
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let a = start(&replica(dir.path(), &slack, &redis, "a")).await;
    let b = start(&replica(dir.path(), &slack, &redis, "b")).await;
    (redis, slack, dir, a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sharing_redis_both_honour_a_silence_made_on_one() {
    let (_redis, slack, _dir, a, b) = two_replicas().await;

    let made = silence(&a, None, shop_silence()).await;
    // Listing on B reads the shared silences (and refreshes B's copy).
    let on_b = list(&b, None).await;
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0]["id"], made["id"]);
    assert_eq!(post(&b, &[("r1", "shop"), ("r2", "web")]).await, (2, 1));
    assert_eq!(post(&a, &[("r3", "shop")]).await, (1, 0));

    // Expired on B, it lets A's next shop alert through.
    let path = format!("/api/v1/silences/{}", made["id"].as_str().unwrap());
    assert_eq!(
        send(admin(&b, reqwest::Method::DELETE, &path, None))
            .await
            .0,
        200
    );
    assert_eq!(list(&a, None).await[0]["state"], "expired");
    assert_eq!(post(&a, &[("r4", "shop")]).await, (1, 1));
    slack.wait_for(2).await;
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(titles(&slack), vec!["shop r4", "web r2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_silence_still_holds_alerts() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let extra = "[[silences]]\nrules = [\"touch\"]\nends_at = \"2999-01-01T00:00:00Z\"\ncomment = \"maintenance\"\n";
    let server = start(&config_from(
        &config_text(dir.path(), &slack, extra),
        dir.path(),
    ))
    .await;
    assert_eq!(
        post(&server, &[("f1", "shop"), ("f2", "web")]).await,
        (2, 0)
    );
    assert!(
        list(&server, None).await.is_empty(),
        "config silences are not runtime ones"
    );
    server.shutdown().await;
    assert!(titles(&slack).is_empty());
}

/// Runs the `klaxon` binary in `dir` with `args`; its standard output, after asserting it
/// succeeded.
fn klaxon(dir: &Path, args: &[&str]) -> String {
    let output = tokio::task::block_in_place(|| klaxon_command(dir).args(args).output().unwrap());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "klaxon {args:?}: {stdout}{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_adds_lists_and_expires_silences_on_a_running_klaxon() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let extra = format!("[server.admin]\nbearer_token = \"{ADMIN_TOKEN}\"\n");
    let server = start(&config_from(
        &config_text(dir.path(), &slack, &extra),
        dir.path(),
    ))
    .await;
    let config = dir.path().join("klaxon.toml");
    let config = config.to_str().unwrap();
    let url = server.base.clone();

    let added = klaxon(
        dir.path(),
        &[
            "silence",
            "add",
            "--config",
            config,
            "--url",
            &url,
            "--matcher",
            "rule=touch",
            "--matcher",
            "namespace=~shop|cart",
            "--duration",
            "2h",
            "--comment",
            "rollout",
            "--created-by",
            "ci",
        ],
    );
    let id = added.trim().to_owned();
    assert!(id.starts_with("s-"), "{added}");
    assert_eq!(
        post(&server, &[("c1", "cart"), ("c2", "web")]).await,
        (2, 1)
    );

    let listed = klaxon(
        dir.path(),
        &[
            "silence", "list", "--config", config, "--url", &url, "--format", "json",
        ],
    );
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let first = &listed["silences"][0];
    assert_eq!(
        (first["id"].as_str(), first["created_by"].as_str()),
        (Some(id.as_str()), Some("ci"))
    );
    assert_eq!(
        first["matchers"][1],
        json!({"name": "namespace", "op": "=~", "value": "shop|cart"})
    );
    // Without --url: the configured listen address (here from the environment).
    let output = tokio::task::block_in_place(|| {
        klaxon_command(dir.path())
            .env("KLAXON_SERVER__LISTEN", server.addr.to_string())
            .args(["silence", "list", "--config", config])
            .output()
            .unwrap()
    });
    assert!(output.status.success(), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains(&id) && table.contains("active") && table.contains("rollout"),
        "{table}"
    );

    let expired = klaxon(
        dir.path(),
        &["silence", "expire", &id, "--config", config, "--url", &url],
    );
    assert!(expired.contains(&format!("{id} expired")), "{expired}");
    assert_eq!(post(&server, &[("c3", "cart")]).await, (1, 1));

    // Without the admin credential the CLI reports the server's refusal.
    let output = tokio::task::block_in_place(|| {
        klaxon_command(dir.path())
            .args(["silence", "list", "--url", &url])
            .output()
            .unwrap()
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    server.shutdown().await;
}

#[test]
fn dry_run_and_replay_apply_silences_from_a_file_on_the_event_clock() {
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let toml = format!(
        "{}[rule_defaults]\nbudget = 10000\n[routing]\ndefault_targets = [\"console\"]\n[targets.console]\ntype = \"console\"\n",
        base_toml(dir.path())
    );
    std::fs::write(dir.path().join("klaxon.toml"), toml).unwrap();
    let silences = json!({"silences": [{
        "id": "s-rollout", "matchers": [{"name": "namespace", "op": "=", "value": "shop"}],
        "starts_at": "2026-12-03T08:00:00Z", "ends_at": "2026-12-03T09:00:00Z",
        "created_by": "alice", "comment": "rollout", "state": "active"
    }]});
    std::fs::write(dir.path().join("silences.json"), silences.to_string()).unwrap();
    let events = [
        event("d1", "shop", "2026-12-03T07:59:00Z"),
        event("d2", "shop", "2026-12-03T08:30:00Z"),
        event("d3", "web", "2026-12-03T08:31:00Z"),
        event("d4", "shop", "2026-12-03T09:00:00Z"),
    ];
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(dir.path().join("events.jsonl"), lines.join("\n")).unwrap();

    let out = klaxon(
        dir.path(),
        &[
            "dry-run",
            "--config",
            "klaxon.toml",
            "--silences",
            "silences.json",
            "events.jsonl",
        ],
    );
    assert_eq!(out.matches("[silenced by s-rollout]").count(), 1, "{out}");
    let silenced_block = out
        .split("\n\n")
        .find(|block| block.contains("[silenced by s-rollout]"))
        .unwrap();
    assert!(silenced_block.contains("shop d2"), "{silenced_block}");

    // replay: the notices without the silenced alert.
    let replayed = klaxon(
        dir.path(),
        &[
            "replay",
            "--config",
            "klaxon.toml",
            "--silences",
            "silences.json",
            "events.jsonl",
        ],
    );
    let notices: Vec<&str> = replayed
        .lines()
        .filter(|l| l.contains(" console ["))
        .collect();
    assert_eq!(notices.len(), 3, "{replayed}");
    assert!(!replayed.contains("shop d2"), "{replayed}");

    // A bad file is refused, naming the entry and field.
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"silences":[{"id":"s","matchers":[{"name":"rule","op":"=~","value":"("}],"starts_at":"2026-12-03T08:00:00Z","ends_at":"2026-12-03T09:00:00Z"}]}"#,
    )
    .unwrap();
    let output = klaxon_command(dir.path())
        .args([
            "dry-run",
            "--config",
            "klaxon.toml",
            "--silences",
            "bad.json",
            "events.jsonl",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("silences[0].matchers[0]") && stderr.contains("regex"),
        "{stderr}"
    );
}

/// Loads a config of `text` (after the base keys) from a file.
fn load(dir: &Path, text: &str) -> Result<klaxon::config::Config, klaxon::config::ConfigError> {
    let path = dir.join("klaxon.toml");
    std::fs::write(&path, format!("{}{text}", base_toml(dir))).unwrap();
    klaxon::config::load(Some(&path))
}

#[test]
fn admin_settings_and_retention_are_read_and_their_mistakes_named() {
    let dir = TempDir::new().unwrap();
    let defaults = load(dir.path(), "").unwrap();
    assert!(
        defaults.serve.server.admin.is_none(),
        "absent: the webhook's auth"
    );
    assert_eq!(
        defaults.serve.server.silence_retention,
        std::time::Duration::from_secs(5 * 24 * 3600)
    );
    let set = load(
        dir.path(),
        "silence_retention = \"1d\"\n[server.admin]\nusername = \"oncall\"\npassword = \"pw\"\n",
    )
    .unwrap();
    assert_eq!(
        set.serve.server.silence_retention,
        std::time::Duration::from_secs(24 * 3600)
    );
    let admin = set.serve.server.admin.unwrap();
    assert_eq!(
        admin.basic.as_ref().map(|(u, _)| u.as_str()),
        Some("oncall")
    );
    let err = load(dir.path(), "[server.admin]\nusername = \"oncall\"\n").unwrap_err();
    assert!(err.to_string().contains("server.admin.password"), "{err}");
    let err = load(
        dir.path(),
        "[server.admin]\nbearer_token_env = \"KLAXON_TEST_UNSET_ADMIN_TOKEN\"\n",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("server.admin.bearer_token"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reaches_a_tls_server_trusting_its_certificate_chain() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("touch", RULE)]);
    let ca = support::certs::Ca::new("klaxon test CA");
    let pair = ca.server(1, &[]);
    // The chain as cert-manager or an operator writes it: the leaf, then its CA.
    let chain = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&chain, format!("{}{}", pair.cert_pem, ca.pem())).unwrap();
    std::fs::write(&key, &pair.key_pem).unwrap();
    let extra = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        chain.display(),
        key.display()
    );
    let server = start(&config_from(
        &config_text(dir.path(), &slack, &extra),
        dir.path(),
    ))
    .await;
    let config = dir.path().join("klaxon.toml");
    let config = config.to_str().unwrap();
    let url = format!("https://localhost:{}", server.addr.port());

    let added = klaxon(
        dir.path(),
        &[
            "silence",
            "add",
            "--config",
            config,
            "--url",
            &url,
            "-m",
            "namespace=shop",
            "--duration",
            "10m",
            "--comment",
            "tls",
        ],
    );
    let id = added.trim();
    let listed = klaxon(
        dir.path(),
        &[
            "silence", "list", "--config", config, "--url", &url, "--format", "json",
        ],
    );
    assert!(listed.contains(id), "{listed}");

    // A CA that did not sign the server's certificate is not trusted.
    let other = support::certs::Ca::new("someone else");
    let other_pem = dir.path().join("other-ca.pem");
    std::fs::write(&other_pem, other.pem()).unwrap();
    let output = tokio::task::block_in_place(|| {
        klaxon_command(dir.path())
            .args(["silence", "list", "--config", config, "--url", &url, "--ca"])
            .arg(&other_pem)
            .output()
            .unwrap()
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach klaxon"), "{stderr}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_new_silences_are_refused_and_kept_ones_hold_then_an_empty_redis_is_seeded()
{
    let (redis, _slack, _dir, a, b) = two_replicas().await;
    let first = silence(&a, None, shop_silence()).await;
    assert_eq!(list(&b, None).await.len(), 1);

    let port = redis.stop();
    let request = admin(&a, reqwest::Method::POST, "/api/v1/silences", None).json(&shop_silence());
    let (status, reply) = send(request).await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("other replicas"),
        "{reply}"
    );
    assert_eq!(
        post(&b, &[("r3", "shop")]).await,
        (1, 0),
        "the local copy holds"
    );

    // Redis back, empty: the next change seeds it first, so the first silence is kept.
    let _redis = RedisServer::start_on(port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let second = loop {
        let request =
            admin(&b, reqwest::Method::POST, "/api/v1/silences", None).json(&shop_silence());
        let (status, reply) = send(request).await;
        if status == 201 {
            break reply;
        }
        assert_eq!(status, 503, "{reply}");
        assert!(
            std::time::Instant::now() < deadline,
            "redis never came back: {reply}"
        );
    };
    let ids: Vec<Value> = list(&a, None)
        .await
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.contains(&first["id"]) && ids.contains(&second["id"]),
        "{ids:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
