//! Crash safety with a real child process: alerts are in the outbox before the apiserver
//! gets 200, survive `kill -9`, and are delivered after a restart on the same data
//! directory — each once (nothing was delivered before the kill, so nothing repeats).

use crate::support;

use serde_json::{Value, json};
use support::process::Daemon;
use support::slack::SlackStandIn;
use tempfile::TempDir;

fn batch(n: usize) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "auditID": format!("crash-{i:03}"),
                "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api",
                "verb": "create",
                "objectRef": {"resource": "secrets", "namespace": format!("ns{i}")},
                "user": {"username": "mallory"},
            })
        })
        .collect();
    json!({"kind": "EventList", "items": items}).to_string()
}

/// Writes the rule `each` and a config (outbox in `dir/data`, Slack the only target, then
/// `extra`); returns the config's path.
fn config_file(dir: &std::path::Path, slack: &SlackStandIn, rule: &str, extra: &str) -> String {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("each.rhai"), rule).unwrap();
    let config = dir.join("klaxon.toml");
    std::fs::write(
        &config,
        format!(
            "[scripts]\ndirs = [\"{scripts}\"]\n[outbox]\npath = \"{data}\"\n[routing]\ndefault_targets = [\"slack\"]\n[targets.slack]\ntype = \"slack\"\nwebhook_url = \"{url}\"\n{extra}",
            scripts = scripts.display(),
            data = dir.join("data").display(),
            url = slack.url()
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_alerts_survive_kill_dash_nine_and_are_delivered_after_restart() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let config = config_file(
        dir.path(),
        &slack,
        r#"alert(#{ title: event.auditID });"#,
        "",
    );

    // First life: a long group window, so nothing is sent before the kill.
    let first = tokio::task::block_in_place(|| {
        Daemon::start(
            &["--config", &config],
            &[("KLAXON_DELIVERY__GROUP_WAIT", "1h")],
        )
    });
    let reply = reqwest::Client::new()
        .post(format!("http://{}/audit", first.addr))
        .body(batch(5))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    first.signal("-KILL");
    drop(first);
    assert!(slack.messages().is_empty());

    // Second life on the same data directory: everything goes out.
    let second = tokio::task::block_in_place(|| {
        Daemon::start(
            &["--config", &config],
            &[("KLAXON_DELIVERY__GROUP_WAIT", "0s")],
        )
    });
    let messages = slack.wait_for(5).await;
    second.signal("-TERM");
    drop(second);
    let mut titles: Vec<String> = messages
        .iter()
        .map(|m| m["blocks"][0]["text"]["text"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    titles.dedup();
    assert_eq!(titles.len(), 5, "each alert exactly once: {titles:?}");
    assert_eq!(slack.messages().len(), 5);
}

/// The apiserver's retry of a batch klaxon stored just before it was killed (the answer
/// never arrived) comes to the restarted process: its events are remembered with the
/// batch in the outbox, so the retry raises nothing and every alert goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_batch_stored_before_kill_dash_nine_raises_nothing_after_restart() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let config = config_file(
        dir.path(),
        &slack,
        r#"alert(#{ title: event.auditID, dedup_key: event.auditID });"#,
        "[delivery]\ngroup_wait = \"0s\"\n",
    );
    let post = |addr: String| async move {
        let reply = reqwest::Client::new()
            .post(format!("http://{addr}/audit"))
            .body(batch(3))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        reply.json::<Value>().await.unwrap()
    };

    let first = tokio::task::block_in_place(|| Daemon::start(&["--config", &config], &[]));
    assert_eq!(post(first.addr.clone()).await["queued"], 3);
    slack.wait_for(3).await;
    // Killed once the outbox has removed what Slack accepted (a kill in between would send
    // those again: delivery is at least once, tested above).
    wait_for_empty_outbox(&first.addr).await;
    first.signal("-KILL");
    drop(first);

    let second = tokio::task::block_in_place(|| Daemon::start(&["--config", &config], &[]));
    let retry = post(second.addr.clone()).await;
    assert_eq!(retry["duplicates"], 3, "{retry}");
    assert_eq!(retry["queued"], 0, "{retry}");
    // A new event after the retry: once it is in Slack, a second copy of the first three
    // would have been sent before it (a target's notices go out in order).
    let fresh = reqwest::Client::new()
        .post(format!("http://{}/audit", second.addr))
        .body(
            json!({"kind": "EventList", "items": [{
                "auditID": "crash-new", "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api", "verb": "create",
                "objectRef": {"resource": "secrets", "namespace": "ns"},
            }]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    let messages = slack.wait_for(4).await;
    second.signal("-TERM");
    let titles: Vec<&str> = messages
        .iter()
        .map(|m| m["blocks"][0]["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 4, "{titles:?}");
    assert!(titles[3].ends_with("crash-new"), "{titles:?}");
}

/// Asks `/readyz` (which reads the outbox) until nothing is pending; fails after 20 s.
async fn wait_for_empty_outbox(addr: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready: Value = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["outbox"]["pending"] == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox never emptied: {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
