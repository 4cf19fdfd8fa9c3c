//! Crash safety with a real child process: alerts are in the outbox before the apiserver
//! gets 200, survive `kill -9`, and are delivered after a restart on the same data
//! directory — each once (nothing was delivered before the kill, so nothing repeats).

mod support;

use serde_json::{Value, json};
use support::process::Daemon;
use support::slack::SlackStandIn;
use tempfile::TempDir;

fn batch(n: usize) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "auditID": format!("crash-{i:03}"),
                "stage": "ResponseComplete",
                "verb": "create",
                "objectRef": {"resource": "secrets", "namespace": format!("ns{i}")},
                "user": {"username": "mallory"},
            })
        })
        .collect();
    json!({"kind": "EventList", "items": items}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_alerts_survive_kill_dash_nine_and_are_delivered_after_restart() {
    let slack = SlackStandIn::start().await;
    let dir = TempDir::new().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("each.rhai"),
        r#"alert(#{ title: event.auditID });"#,
    )
    .unwrap();
    let config = dir.path().join("klaxon.toml");
    std::fs::write(
        &config,
        format!(
            "[scripts]\ndirs = [\"{scripts}\"]\n[outbox]\npath = \"{data}\"\n[routing]\ndefault_targets = [\"slack\"]\n[targets.slack]\ntype = \"slack\"\nwebhook_url = \"{url}\"\n\n",
            scripts = scripts.display(),
            data = dir.path().join("data").display(),
            url = slack.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();

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
