//! Production ingest over loopback: bad input answered with the right status and a reason
//! while the daemon keeps serving; the same batch twice raises one alert; overload gets
//! 429 with Retry-After and every accepted batch is evaluated; hot reload of scripts,
//! including a broken edit; basic and bearer authentication without secrets in the logs;
//! SIGTERM during traffic loses nothing accepted.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use support::klaxon::{config_from, scripts, start, start_with_reload};
use support::process::Daemon;
use support::slack::SlackStandIn;
use tempfile::TempDir;

/// A console-only config for `dir`; `extra` is appended.
fn toml(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[scripts]
dirs = ["{dir}/scripts"]
[outbox]
path = "{dir}/data"
[delivery]
group_wait = "1h"
# Shutdown leaves everything in the outbox, where the tests count it.
drain_timeout = "0s"
[rule_defaults]
budget = 1000000
[routing]
default_targets = ["sink"]
[targets.sink]
type = "console"
format = "json"
{extra}
"#,
        dir = dir.display()
    )
}

/// `n` create events with auditIDs `{prefix}-0000`…, as an EventList.
fn events(prefix: &str, n: usize) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "auditID": format!("{prefix}-{i:04}"),
                "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api",
                "verb": "create",
                "objectRef": {"resource": "configmaps", "namespace": "ns"},
            })
        })
        .collect();
    json!({"kind": "EventList", "items": items}).to_string()
}

const FIRE: &str = r#"if event.verb == "create" { alert(#{ title: `v1 ${event.auditID}` }); }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_status_and_a_reason_and_the_daemon_keeps_serving() {
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config = config_from(
        &toml(dir.path(), "").replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_body_bytes = 16777216",
        ),
        dir.path(),
    );
    let server = start(&config).await;
    let deep = |field: &str| {
        format!(
            r#"{{"kind":"EventList","items":[{{"auditID":"x","stage":"ResponseComplete","verb":"get","requestURI":"/api","level":"Request","{field}":{}1{}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        )
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "truncated JSON",
            br#"{"kind":"EventList","items":[{"auditID":"a""#.to_vec(),
            400,
            "EOF",
        ),
        (
            "wrong types",
            br#"{"kind":"EventList","items":[{"auditID":5}]}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            "not JSON",
            b"hello, klaxon".to_vec(),
            400,
            "expected an audit EventList",
        ),
        (
            "invalid UTF-8",
            b"{\"auditID\":\"\xff\xfe\"}".to_vec(),
            400,
            "invalid",
        ),
        (
            "JSON bomb",
            format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            400,
            "not an audit event: an array, not an object",
        ),
        ("empty body", Vec::new(), 400, "empty body"),
    ];
    for (what, body, status, reason) in cases {
        let (got, reply) = server.post_json(body).await;
        assert_eq!(got, status, "{what}: {reply}");
        assert!(reply.to_string().contains(reason), "{what}: {reply}");
    }
    // A bomb inside requestObject is kept raw, one in an unknown field is skipped: the
    // envelope is fine and the event is taken; reading such a requestObject gives ().
    for field in ["requestObject", "someUnknownField"] {
        let (status, reply) = server.post_json(deep(field)).await;
        assert_eq!(
            (status, reply["accepted"].as_u64()),
            (200, Some(1)),
            "{reply}"
        );
    }
    // 100 MiB over the 16 MiB limit: refused with 413 from the announced length, before the
    // body is read (a raw client, so the answer is read even while the body is unsent).
    assert_eq!(too_large_status(&server.base).await, 413);
    // 10,000 items in one EventList are all taken.
    let (status, reply) = server.post_json(events("big", 10_000)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 10_000);
    assert_eq!(reply["alerts"], 10_000);
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_twice_raises_one_alert() {
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config = config_from(&toml(dir.path(), ""), dir.path());
    let server = start(&config).await;
    let batch = events("retry", 3);
    let (status, first) = server.post_json(batch.clone()).await;
    assert_eq!((status, first["alerts"].as_u64()), (200, Some(3)));
    let (status, second) = server.post_json(batch).await;
    assert_eq!(status, 200);
    assert_eq!(second["duplicates"], 3);
    assert_eq!(second["alerts"], 0);
    assert_eq!(second["queued"], 0);
    server.shutdown().await;
    let outbox = klaxon::outbox::Outbox::open(&config.serve.outbox_path).unwrap();
    assert_eq!(outbox.all_pending().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_429_with_retry_after_and_every_accepted_batch_is_evaluated() {
    let dir = TempDir::new().unwrap();
    // A deliberately slow script, so batches pile up.
    scripts(
        dir.path(),
        &[(
            "slow",
            r#"let n = 0; while n < 2000 { n += 1; } alert(#{ title: event.auditID });"#,
        )],
    );
    // The script's wall-clock limit is raised out of the way: on a loaded machine a
    // descheduled run can pass the default 100 ms, and this test counts every alert.
    let config = config_from(
        &toml(dir.path(), "")
            .replace(
                "listen = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:0\"\nmax_concurrent_batches = 1\nmax_queued_batches = 1\nretry_after_secs = 2",
            )
            .replace("[outbox]\n", "[scripts.limits]\nmax_run_time = \"30s\"\n[outbox]\n"),
        dir.path(),
    );
    let server = Arc::new(start(&config).await);
    let accepted_alerts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for b in 0..12 {
        let server = server.clone();
        let accepted_alerts = accepted_alerts.clone();
        tasks.push(tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("{}/audit", server.base))
                .body(events(&format!("b{b:02}"), 200))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let reply: Value = response.json().await.unwrap();
            if status == 200 {
                accepted_alerts
                    .fetch_add(reply["alerts"].as_u64().unwrap() as usize, Ordering::SeqCst);
            }
            (status, retry_after)
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert!(!refused.is_empty(), "{statuses:?}");
    assert!(ok >= 2, "{statuses:?}");
    assert_eq!(ok + refused.len(), 12, "{statuses:?}");
    assert!(
        refused.iter().all(|(_, r)| r.as_deref() == Some("2")),
        "{refused:?}"
    );
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    Arc::try_unwrap(server).ok().unwrap().shutdown().await;
    // Every batch that got 200 was evaluated and stored: 200 alerts each.
    assert_eq!(accepted_alerts.load(Ordering::SeqCst), ok * 200);
    let outbox = klaxon::outbox::Outbox::open(&config.serve.outbox_path).unwrap();
    assert_eq!(outbox.all_pending().unwrap().len(), ok * 200);
}

/// Waits until `/readyz` reports a reload newer than `after_ms`; returns its JSON.
async fn next_reload(server: &support::klaxon::Running, after_ms: i64) -> Value {
    loop {
        let (_, body) = server.get("/readyz").await;
        let ready: Value = serde_json::from_str(&body).unwrap();
        if ready["last_reload"]["at_ms"]
            .as_i64()
            .is_some_and(|t| t > after_ms)
        {
            return ready;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_script_reloads_it_and_a_broken_edit_keeps_the_running_set() {
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config_path = dir.path().join("klaxon.toml");
    let config = config_from(&toml(dir.path(), ""), dir.path());
    let server = start_with_reload(&config, &config_path).await;
    let (_, before) = server.post_json(events("a", 1)).await;
    assert_eq!(before["alerts"], 1);

    // A new version that raises two alerts per event.
    let started = std::time::Instant::now();
    let v2 =
        r#"alert(#{ title: `v2 ${event.auditID}` }); alert(#{ title: `v2b ${event.auditID}` });"#;
    std::fs::write(dir.path().join("scripts/fire.rhai"), v2).unwrap();
    let ready = next_reload(&server, 0).await;
    let reload_latency = started.elapsed();
    eprintln!("reload took {reload_latency:?} after the edit");
    assert_eq!(ready["last_reload"]["ok"], true, "{ready}");
    let (status, after) = server.post_json(events("b", 1)).await;
    assert_eq!((status, after["alerts"].as_u64()), (200, Some(2)));

    // A broken edit: the running scripts stay, /readyz and /metrics say it failed.
    let at = ready["last_reload"]["at_ms"].as_i64().unwrap();
    std::fs::write(dir.path().join("scripts/fire.rhai"), "alert(#{ title: ").unwrap();
    let failed = next_reload(&server, at).await;
    assert_eq!(failed["ready"], true, "{failed}");
    assert_eq!(failed["last_reload"]["ok"], false, "{failed}");
    let errors = failed["last_reload"]["errors"].to_string();
    assert!(errors.contains("fire.rhai:1:"), "{errors}");
    let (status, still) = server.post_json(events("c", 1)).await;
    assert_eq!((status, still["alerts"].as_u64()), (200, Some(2)));
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains("klaxon_reload_success 0"), "{metrics}");
    assert!(
        metrics.contains(r#"klaxon_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );

    // POST /-/reload after a fix.
    std::fs::write(dir.path().join("scripts/fire.rhai"), FIRE).unwrap();
    let fixed = reqwest::Client::new()
        .post(format!("{}/-/reload", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(fixed.status(), 200);
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("klaxon_rule_evaluation_seconds_bucket"),
        "{metrics}"
    );
    server.shutdown().await;
}

/// Writes `source` as `fire.rhai` into a new timestamped directory of `scripts` and points
/// `..data` at it the way the kubelet updates a mounted ConfigMap: a `..data_tmp` symlink
/// renamed over `..data` (`fire.rhai` itself is a symlink into `..data`).
fn configmap_update(scripts: &Path, version: &str, source: &str) {
    let versioned = scripts.join(format!("..2026_11_27_{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("fire.rhai"), source).unwrap();
    let tmp = scripts.join("..data_tmp");
    std::os::unix::fs::symlink(versioned.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, scripts.join("..data")).unwrap();
    let link = scripts.join("fire.rhai");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/fire.rhai", &link).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_of_the_scripts_reloads_them() {
    let dir = TempDir::new().unwrap();
    let scripts_dir = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts_dir).unwrap();
    configmap_update(&scripts_dir, "01", FIRE);
    let config_path = dir.path().join("klaxon.toml");
    let config = config_from(&toml(dir.path(), ""), dir.path());
    let server = start_with_reload(&config, &config_path).await;
    let (_, before) = server.post_json(events("cm-a", 1)).await;
    assert_eq!(before["alerts"], 1, "{before}");

    let v2 =
        r#"alert(#{ title: `v2 ${event.auditID}` }); alert(#{ title: `v2b ${event.auditID}` });"#;
    configmap_update(&scripts_dir, "02", v2);
    let ready = next_reload(&server, 0).await;
    assert_eq!(ready["last_reload"]["ok"], true, "{ready}");
    assert_eq!(ready["rules"], 1, "{ready}");
    let (status, after) = server.post_json(events("cm-b", 1)).await;
    assert_eq!(
        (status, after["alerts"].as_u64()),
        (200, Some(2)),
        "{after}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_bearer_auth_let_in_the_right_credentials_and_log_no_secret() {
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    std::fs::write(dir.path().join("token"), "tok-7f3a9c2e\n").unwrap();
    let config = dir.path().join("klaxon.toml");
    std::fs::write(
        &config,
        toml(
            dir.path(),
            "[server.auth]\nbearer_token_file = \"TOKEN\"\nbasic_username = \"kube-apiserver\"\nbasic_password = \"pw-51c0ffee\"\n",
        )
        .replace("TOKEN", &dir.path().join("token").display().to_string()),
    )
    .unwrap();
    let daemon = tokio::task::block_in_place(|| {
        Daemon::start(
            &["--config", config.to_str().unwrap()],
            &[("RUST_LOG", "debug")],
        )
    });
    let url = format!("http://{}/audit", daemon.addr);
    let client = reqwest::Client::new();
    let post = |auth: Option<(&str, &str)>, bearer: Option<&str>| {
        let mut request = client.post(&url).body(events("auth", 1));
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        post(None, Some("tok-7f3a9c2e")).await.unwrap().status(),
        200
    );
    assert_eq!(
        post(Some(("kube-apiserver", "pw-51c0ffee")), None)
            .await
            .unwrap()
            .status(),
        200
    );
    for (auth, bearer) in [
        (None, None),
        (None, Some("tok-wrong-000")),
        (Some(("kube-apiserver", "pw-wrong-000")), None),
        (Some(("mallory", "pw-51c0ffee")), None),
    ] {
        let response = post(auth, bearer).await.unwrap();
        assert_eq!(response.status(), 401);
        let challenges: Vec<&str> = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic")),
            "{challenges:?}"
        );
    }
    // Probes stay open.
    let ready = client
        .get(format!("http://{}/readyz", daemon.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    daemon.signal("-TERM");
    let mut daemon = daemon;
    let status = tokio::task::block_in_place(|| daemon.child.wait()).unwrap();
    assert!(status.success());
    let logs = daemon.logs().join("\n");
    assert!(logs.contains("authentication failed"), "{logs}");
    assert!(logs.contains("127.0.0.1"), "source address logged: {logs}");
    for secret in [
        "tok-7f3a9c2e",
        "pw-51c0ffee",
        "tok-wrong-000",
        "pw-wrong-000",
    ] {
        assert!(!logs.contains(secret), "secret {secret} in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_traffic_exits_0_and_loses_nothing_accepted() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let config = dir.path().join("klaxon.toml");
    std::fs::write(
        &config,
        toml(
            dir.path(),
            &format!(
                "[targets.slack]\ntype = \"slack\"\nwebhook_url = \"{}\"\n",
                slack.url()
            ),
        )
        .replace(
            "default_targets = [\"sink\"]",
            "default_targets = [\"slack\"]",
        ),
    )
    .unwrap();
    let mut daemon =
        tokio::task::block_in_place(|| Daemon::start(&["--config", config.to_str().unwrap()], &[]));
    let url = format!("http://{}/audit", daemon.addr);
    let accepted = Arc::new(AtomicUsize::new(0));
    let sender = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for b in 0..1000 {
                let Ok(response) = client
                    .post(&url)
                    .body(events(&format!("t{b:03}"), 5))
                    .send()
                    .await
                else {
                    return;
                };
                if response.status() == 200 {
                    accepted.fetch_add(5, Ordering::SeqCst);
                }
            }
        })
    };
    // Stop in the middle of the traffic.
    while accepted.load(Ordering::SeqCst) < 50 {
        tokio::task::yield_now().await;
    }
    daemon.signal("-TERM");
    let status = tokio::task::block_in_place(|| daemon.child.wait()).unwrap();
    assert!(status.success(), "{status:?}");
    let _ = sender.await;
    let accepted = accepted.load(Ordering::SeqCst);
    // What was not sent before exit (group window of an hour) is in the outbox.
    let outbox = klaxon::outbox::Outbox::open(&dir.path().join("data")).unwrap();
    let pending = outbox.all_pending().unwrap().len();
    let sent: usize = slack.messages().len();
    assert!(accepted >= 50);
    assert_eq!(
        pending + alerts_in(&slack.messages()),
        accepted,
        "sent notices: {sent}"
    );
}

/// Alerts carried by Slack messages (digests count all their alerts).
fn alerts_in(messages: &[Value]) -> usize {
    messages
        .iter()
        .map(|m| {
            let header = m["blocks"][0]["text"]["text"].as_str().unwrap_or("");
            let words: Vec<&str> = header.split_whitespace().collect();
            match words.get(2) {
                Some(&"alerts:") => words[1].parse().unwrap(),
                _ => 1,
            }
        })
        .sum()
}

/// Announces a 100 MiB body (`Content-Length`), sends a little of it, and returns the
/// status of the answer: over a raw connection, so the answer is read while the rest of
/// the body is unsent, as the server must answer from the announced length.
async fn too_large_status(base: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /audit HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{{\"items\": [",
        100u64 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("an answer before the body is sent")
            .unwrap();
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {status_line}"))
}

/// Peak resident memory of a process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_under_the_stated_bound_under_overload() {
    let dir = TempDir::new().unwrap();
    // Like most audit traffic, these events raise no alert (alerts add ~2 KiB each).
    scripts(
        dir.path(),
        &[(
            "quiet",
            r#"if event.verb == "delete" { alert(#{ title: "x" }); }"#,
        )],
    );
    let config = dir.path().join("klaxon.toml");
    // Stated bound above the idle daemon: (64 × max_concurrent + max_queued) × max_body_bytes
    // (a queued batch holds its body; an evaluated one also its decoded events, which for
    // small Metadata events take up to ~40 times their JSON size at peak, plus allocator
    // slack) + 32 MiB (outbox cache, connection buffers): here 162 MiB.
    std::fs::write(
        &config,
        toml(dir.path(), "").replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_body_bytes = 2097152\nmax_concurrent_batches = 1\nmax_queued_batches = 1",
        ),
    )
    .unwrap();
    let daemon =
        tokio::task::block_in_place(|| Daemon::start(&["--config", config.to_str().unwrap()], &[]));
    let pid = daemon.child.id();
    let idle = peak_rss_kib(pid);
    let url = format!("http://{}/audit", daemon.addr);
    // Batches of about 1.9 MiB, 40 at once, three rounds.
    let body = Arc::new(events("mem", 12_000));
    assert!(
        body.len() < 2 << 20 && body.len() > (3 << 20) / 2,
        "{}",
        body.len()
    );
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (url, body) = (url.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                reqwest::Client::new()
                    .post(url)
                    .body((*body).clone())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }));
        }
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
    }
    let peak = peak_rss_kib(pid);
    eprintln!("idle peak RSS {idle} KiB, peak under overload {peak} KiB");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let bound_kib = (64 + 1) * 2048 + 32 * 1024;
    assert!(peak - idle < bound_kib, "grew by {} KiB", peak - idle);
    let health = reqwest::get(format!("http://{}/healthz", daemon.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klaxon_over_mtls_lets_in_only_the_allowed_client_certificate_subject() {
    use support::certs::Ca;
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("fire", FIRE)]);
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server(1, &[]).write(dir.path());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let extra = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nclient_auth = \"required\"\n[server.auth]\nclient_cert_subjects = [\"CN=kube-apiserver\"]\n",
        cert.display(),
        key.display(),
        ca_file.display()
    );
    let config = config_from(&toml(dir.path(), &extra), dir.path());
    let server = start(&config).await;
    let url = server.base.replace("http://127.0.0.1", "https://localhost") + "/audit";
    let client = |name: &str| {
        reqwest::Client::builder()
            .add_root_certificate(ca.root())
            .identity(ca.client(name, "system:masters").identity())
            .build()
            .unwrap()
    };
    let allowed = client("kube-apiserver")
        .post(&url)
        .body(events("tls", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.version(), reqwest::Version::HTTP_2);
    let other = client("mallory")
        .post(&url)
        .body(events("tls", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);
    let no_cert = reqwest::Client::builder()
        .add_root_certificate(ca.root())
        .build()
        .unwrap()
        .post(&url)
        .body(events("tls", 1))
        .send()
        .await;
    assert!(
        no_cert.is_err(),
        "the handshake refuses a client without a certificate"
    );
    server.shutdown().await;
}
