//! Slack rendering stays within Block Kit limits for any alert, and the sender reports
//! Slack's answers; checked against the local Slack stand-in.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use klaxon::notify::SendError;
use klaxon::notify::slack::{self, SlackSettings};
use klaxon::rules::{Alert, AlertContext, Severity};
use klaxon::secret::Secret;
use support::slack::SlackStandIn;

fn alert(title: &str, text: &str, fields: usize) -> Alert {
    Alert {
        severity: Severity::Critical,
        text: text.to_owned(),
        fields: (0..fields)
            .map(|i| (format!("field {i:04}"), "v".repeat(2500)))
            .collect::<BTreeMap<_, _>>(),
        context: AlertContext {
            cluster: "prod".to_owned(),
            user: "alice <admin> & co".to_owned(),
            verb: "create".to_owned(),
            object: "pods payments/web".to_owned(),
            source_ips: vec!["10.0.0.1".to_owned()],
            ..AlertContext::default()
        },
        ..Alert::new("big", title)
    }
}

fn settings(url: String) -> SlackSettings {
    SlackSettings {
        webhook_url: Secret::new(url),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn oversized_alerts_are_cut_to_slack_limits_and_accepted() {
    let stand_in = SlackStandIn::start().await;
    let client = reqwest::Client::new();
    let huge = alert(&"T".repeat(400), &"x".repeat(10_000), 600);
    let message = slack::message(&huge);
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 50);
    let header = blocks[0]["text"]["text"].as_str().unwrap();
    assert_eq!(header.chars().count(), 150);
    assert!(header.ends_with('…'));

    slack::send(&client, &settings(stand_in.url()), &message)
        .await
        .unwrap();
    let small = alert("Pod created", "short", 3);
    slack::send(&client, &settings(stand_in.url()), &slack::message(&small))
        .await
        .unwrap();
    assert_eq!(stand_in.messages().len(), 2);
    assert!(
        stand_in.rejections().is_empty(),
        "{:?}",
        stand_in.rejections()
    );
}

#[test]
fn mrkdwn_is_escaped_and_fields_are_sections_of_ten() {
    let message = slack::message(&alert("t", "a <b> & c", 25));
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(blocks[1]["text"]["text"], "a &lt;b&gt; &amp; c");
    let field_sections: Vec<usize> = blocks
        .iter()
        .filter_map(|b| b["fields"].as_array().map(Vec::len))
        .collect();
    assert_eq!(field_sections, vec![10, 10, 5]);
    let context = blocks.last().unwrap().to_string();
    assert!(
        context.contains("alice &lt;admin&gt; &amp; co"),
        "{context}"
    );
}

#[tokio::test]
async fn slack_errors_come_back_with_status_and_reason() {
    let stand_in = SlackStandIn::start().await;
    let client = reqwest::Client::new();
    let bad = serde_json::json!({"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]});
    match slack::send(&client, &settings(stand_in.url()), &bad).await {
        Err(SendError::Rejected { status, reason, .. }) => {
            assert_eq!(status, 400);
            assert_eq!(reason, "invalid_blocks");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A port that was just free and is closed again: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = settings(format!("http://{closed}/services/x"));
    assert!(matches!(
        slack::send(&client, &down, &bad).await,
        Err(SendError::Network(_))
    ));
}

#[tokio::test]
async fn a_large_digest_stays_within_50_blocks_with_and_n_more() {
    let stand_in = SlackStandIn::start().await;
    let alerts: Vec<Alert> = (0..60)
        .map(|i| Alert::new("pod_created", &format!("Pod created: ns/p{i}")))
        .collect();
    let notice = klaxon::notify::Notice {
        target: "slack".to_owned(),
        group_key: "pod_created/ns".to_owned(),
        alerts,
    };
    let message = slack::notice_message(&notice);
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 50);
    assert_eq!(
        blocks[0]["text"]["text"],
        "ℹ️ 60 alerts: Pod created: ns/p0 (+59 more)"
    );
    assert!(
        blocks[48].to_string().contains("and 13 more"),
        "{}",
        blocks[48]
    );
    slack::send(&reqwest::Client::new(), &settings(stand_in.url()), &message)
        .await
        .unwrap();
    assert_eq!(stand_in.messages().len(), 1);
}

#[tokio::test]
async fn techniques_are_a_context_element_linking_to_attack_and_slack_accepts_it() {
    let stand_in = SlackStandIn::start().await;
    let mut tagged = alert("Privileged pod created", "short", 2);
    tagged.attack = vec!["T1610".to_owned(), "T1552.007".to_owned()];
    let message = slack::message(&tagged);
    let blocks = message["blocks"].as_array().unwrap();
    let context = blocks.last().unwrap()["elements"].as_array().unwrap();
    assert_eq!(context[0]["text"], "rule *big* · critical");
    assert_eq!(
        context[1]["text"],
        "ATT&amp;CK <https://attack.mitre.org/techniques/T1610/|T1610>, \
         <https://attack.mitre.org/techniques/T1552/007/|T1552.007>"
    );
    assert_eq!(context[1]["type"], "mrkdwn");
    slack::send(&reqwest::Client::new(), &settings(stand_in.url()), &message)
        .await
        .unwrap();
    assert!(
        stand_in.rejections().is_empty(),
        "{:?}",
        stand_in.rejections()
    );

    // No techniques, no element.
    let untagged = slack::message(&alert("Pod created", "short", 2));
    let elements = untagged["blocks"].as_array().unwrap().last().unwrap()["elements"].to_string();
    assert!(!elements.contains("ATT&amp;CK"), "{elements}");

    // A digest names each alert's techniques on its line.
    let notice = klaxon::notify::Notice {
        target: "slack".to_owned(),
        group_key: "g".to_owned(),
        alerts: vec![tagged, alert("Pod created", "short", 0)],
    };
    let digest = slack::notice_message(&notice);
    let lines = digest["blocks"].as_array().unwrap();
    assert!(
        lines[1]["text"]["text"]
            .as_str()
            .unwrap()
            .ends_with("· ATT&amp;CK T1610, T1552.007"),
        "{}",
        lines[1]
    );
    assert!(!lines[2].to_string().contains("ATT&amp;CK"), "{}", lines[2]);
}
