//! `klaxon serve` as a new user runs it: the real binary with the shipped config and
//! scripts, SLACK_WEBHOOK_URL pointing at the local Slack stand-in, a batch POSTed over
//! loopback, then SIGTERM: the notice reaches "Slack" and the process exits 0.

use crate::support;

use support::process::Daemon;
use support::slack::SlackStandIn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_sends_pod_created_to_slack_and_stops_on_sigterm() {
    let slack = SlackStandIn::start().await;
    let data = tempfile::TempDir::new().unwrap();
    let data_path = data.path().to_str().unwrap();
    let url = slack.url();
    let mut daemon = tokio::task::block_in_place(|| {
        Daemon::start(
            &[],
            &[
                ("SLACK_WEBHOOK_URL", url.as_str()),
                ("KLAXON_OUTBOX__PATH", data_path),
                ("KLAXON_DELIVERY__GROUP_WAIT", "0s"),
            ],
        )
    });

    let batch = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/events/batch.json"
    ))
    .unwrap();
    let reply = reqwest::Client::new()
        .post(format!("http://{}/audit", daemon.addr))
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

    daemon.signal("-TERM");
    let status = tokio::task::block_in_place(|| daemon.child.wait()).unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(slack.messages().len(), 1);
}
