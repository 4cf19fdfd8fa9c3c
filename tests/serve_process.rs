//! `klaxon serve` as a new user runs it: the real binary with the shipped config and
//! scripts, SLACK_WEBHOOK_URL pointing at the local Slack stand-in, a batch POSTed over
//! loopback, then SIGTERM: the notice reaches "Slack" and the process exits 0.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::slack::SlackStandIn;

/// Reads the child's JSON log lines until the "listening" line and returns its address.
fn listening_address(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        let Ok(log) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(addr) = log["fields"]["listen"].as_str() {
            let addr = addr.to_owned();
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return addr;
        }
    }
    panic!("klaxon exited before listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_sends_pod_created_to_slack_and_stops_on_sigterm() {
    let slack = SlackStandIn::start().await;
    let data = tempfile::TempDir::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_klaxon"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .env("SLACK_WEBHOOK_URL", slack.url())
        .env("KLAXON_OUTBOX__PATH", data.path())
        .env("KLAXON_DELIVERY__GROUP_WAIT", "0s")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("klaxon starts");
    let addr = tokio::task::block_in_place(|| listening_address(&mut child));

    let batch = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/events/batch.json"
    ))
    .unwrap();
    let reply = reqwest::Client::new()
        .post(format!("http://{addr}/audit"))
        .header("content-type", "application/json")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let messages = slack.wait_for(1).await;
    let header = messages[0]["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        header.ends_with("Pod created: shop/api-5f6c8d9b7-x2kqz"),
        "{header}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(slack.messages().len(), 1);
}
