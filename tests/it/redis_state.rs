//! Two `klaxon serve` processes sharing one real Redis (`state.backend = "redis"`): an
//! event processed by one is skipped by the other, an alert dedup key admitted by one is
//! a duplicate on the other, and with Redis stopped both keep answering 200 and sending
//! (duplicates allowed, counted) until it is back.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::certs::Ca;
use support::process::Daemon;
use support::redis::RedisServer;
use support::slack::SlackStandIn;

/// The shipped example batch with every auditID suffixed by `events` (new events) and
/// every username and namespace by `users` (new alert dedup and group keys: the shipped
/// rules key on the user and the namespace).
fn batch(events: &str, users: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/events/batch.json"
    ))
    .unwrap();
    let mut batch: Value = serde_json::from_str(&text).unwrap();
    for item in batch["items"].as_array_mut().unwrap() {
        let id = format!("{}-{events}", item["auditID"].as_str().unwrap());
        item["auditID"] = id.into();
        let user = format!("{}-{users}", item["user"]["username"].as_str().unwrap());
        item["user"]["username"] = user.into();
        // A namespace per tag too: one notice per tag (the group key is rule + namespace).
        let ns = format!(
            "{}-{users}",
            item["objectRef"]["namespace"].as_str().unwrap()
        );
        item["objectRef"]["namespace"] = ns.into();
    }
    batch.to_string()
}

struct Replica {
    daemon: Daemon,
    _outbox: tempfile::TempDir,
}

impl Replica {
    fn start(redis_url: &str, slack_url: &str) -> Self {
        Self::start_with(redis_url, slack_url, &[])
    }

    /// A replica with `extra` environment overrides.
    fn start_with(redis_url: &str, slack_url: &str, extra: &[(&str, &str)]) -> Self {
        let outbox = tempfile::TempDir::new().unwrap();
        let mut envs = vec![
            ("SLACK_WEBHOOK_URL", slack_url),
            ("KLAXON_OUTBOX__PATH", outbox.path().to_str().unwrap()),
            ("KLAXON_DELIVERY__GROUP_WAIT", "0s"),
            ("KLAXON_STATE__BACKEND", "redis"),
            ("KLAXON_STATE__REDIS_URL", redis_url),
            ("KLAXON_STATE__TIMEOUT", "2s"),
        ];
        envs.extend_from_slice(extra);
        let daemon = tokio::task::block_in_place(|| Daemon::start(&[], &envs));
        Self {
            daemon,
            _outbox: outbox,
        }
    }

    /// POSTs a batch; returns the status and the reply (accepted, duplicates, queued …).
    async fn post(&self, body: &str) -> (u16, Value) {
        let reply = reqwest::Client::new()
            .post(format!("http://{}/audit", self.daemon.addr))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> String {
        reqwest::get(format!("http://{}{path}", self.daemon.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of an unlabelled metric line on /metrics (0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let page = self.get("/metrics").await;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Asks /readyz (each answer pings Redis, which drives the reconnection) until it says
    /// Redis is reachable as `reachable`; fails after 10 s.
    async fn wait_for_redis(&self, reachable: bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let ready: Value = serde_json::from_str(&self.get("/readyz").await).unwrap();
            if ready["state"]["reachable"] == reachable {
                return;
            }
        }
        panic!(
            "redis never became reachable={reachable} for {}",
            self.daemon.addr
        );
    }
}

/// A Redis, the Slack stand-in, and two replicas sharing them.
async fn two_replicas() -> (RedisServer, SlackStandIn, Replica, Replica) {
    let redis = RedisServer::start();
    let slack = SlackStandIn::start().await;
    let a = Replica::start(&redis.url(), &slack.url());
    let b = Replica::start(&redis.url(), &slack.url());
    (redis, slack, a, b)
}

/// Posts `body` to `first`, then to `second`, which must find the events that raised
/// alerts processed and raise nothing (events no rule can match are not claimed: they
/// raise nothing wherever they are evaluated); returns the first reply.
async fn same_batch_to_both(first: &Replica, second: &Replica, body: &str) -> Value {
    let (status, reply) = first.post(body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(count(&reply, "alerts") > 0, "{reply}");
    let (status, again) = second.post(body).await;
    assert_eq!(status, 200, "{again}");
    assert!(count(&again, "duplicates") > 0, "{again}");
    assert_eq!(count(&again, "alerts"), 0, "{again}");
    assert_eq!(count(&again, "queued"), 0, "{again}");
    reply
}

/// A count of a batch reply (absent when 0).
fn count(reply: &Value, key: &str) -> u64 {
    assert!(reply["accepted"].is_u64(), "not a batch reply: {reply}");
    reply[key].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_alert_once() {
    let (_redis, slack, a, b) = two_replicas().await;

    // The same batch to both (an apiserver retry that reached the other replica): the
    // second finds every event processed and queues nothing.
    let first = same_batch_to_both(&a, &b, &batch("same", "x")).await;
    assert!(count(&first, "queued") > 0, "{first}");

    // New events raising the same alerts: evaluated on the other replica, but their dedup
    // keys are inside their windows there too.
    let (status, third) = b.post(&batch("new", "x")).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(count(&third, "duplicates"), 0, "{third}");
    assert!(count(&third, "alerts") > 0, "{third}");
    assert_eq!(count(&third, "queued"), 0, "{third}");

    let queued = count(&first, "queued") as usize;
    let messages = slack.wait_for(queued).await;
    assert_eq!(messages.len(), queued);
    assert_eq!(a.metric("klaxon_state_backend_outages_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_replicas_keep_serving_and_share_again_when_it_is_back() {
    let (redis, _slack, a, b) = two_replicas().await;
    let (status, _) = a.post(&batch("before", "before")).await;
    assert_eq!(status, 200);

    let port = redis.stop();
    // Both answer 200 and both queue the alerts: duplicates rather than silence.
    let body = batch("during", "during");
    for replica in [&a, &b] {
        let (status, reply) = replica.post(&body).await;
        assert_eq!(status, 200, "{reply}");
        assert!(count(&reply, "queued") > 0, "{reply}");
        assert_eq!(count(&reply, "duplicates"), 0, "{reply}");
        // Counted once per outage, and shown on /readyz (which stays ready).
        assert_eq!(
            replica.metric("klaxon_state_backend_outages_total").await,
            1.0
        );
        assert_eq!(replica.metric("klaxon_state_backend_up").await, 0.0);
        let ready: Value = serde_json::from_str(&replica.get("/readyz").await).unwrap();
        assert_eq!(ready["ready"], true, "{ready}");
        assert_eq!(ready["state"]["reachable"], false, "{ready}");
    }

    // Back (empty, on the same port): the replicas share state again.
    let _redis = RedisServer::start_on(port);
    a.wait_for_redis(true).await;
    b.wait_for_redis(true).await;
    let body = batch("after", "after");
    same_batch_to_both(&a, &b, &body).await;
    assert_eq!(b.metric("klaxon_state_backend_up").await, 1.0);
    let logs = b.daemon.logs().join("\n");
    assert_eq!(
        logs.matches("shared state (redis) unavailable").count(),
        1,
        "one warning per outage:\n{logs}"
    );
}

/// Sets `key` to `value` in the test's Redis (as another replica would).
fn redis_set(url: &str, key: &str, value: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .exec(&mut conn)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_another_replica_is_processing_makes_the_apiserver_retry() {
    let redis = RedisServer::start();
    let slack = SlackStandIn::start().await;
    let replica = Replica::start(&redis.url(), &slack.url());
    let body = batch("busy", "busy");
    // The pod creation (pod_created runs on it; only such events are claimed).
    let batch_json: Value = serde_json::from_str(&body).unwrap();
    let created = batch_json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "pods")
        .unwrap();
    let key = format!(
        "klaxon:seen:{}:ResponseComplete",
        created["auditID"].as_str().unwrap()
    );

    // Claimed by a replica that has not stored its batch yet: not success, which would lose
    // the event if that replica failed; 503 makes the apiserver send the batch again.
    redis_set(&redis.url(), &key, "claimed");
    let (status, reply) = replica.post(&body).await;
    assert_eq!(status, 503, "{reply}");
    let reason = reply["error"].as_str().unwrap();
    assert!(
        reason.contains("1 event(s) of this batch are being processed by another replica"),
        "{reason}"
    );

    // That replica stored it: the retry skips that event and processes the others, whose
    // claims the 503 gave back.
    redis_set(&redis.url(), &key, "done");
    let (status, reply) = replica.post(&body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(count(&reply, "duplicates"), 1, "{reply}");
    assert_eq!(count(&reply, "accepted"), 4, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slacks_rate_holds_across_replicas() {
    let (_redis, slack, a, b) = two_replicas().await;
    // Four notices from each replica at once: alone, each would send 3 at once (the burst)
    // and then 1 a second, 6 at once together; the stand-in allows 1 a second, burst 3.
    let mut queued = 0;
    for i in 0..4 {
        for (name, replica) in [("a", &a), ("b", &b)] {
            let (status, reply) = replica
                .post(&batch(&format!("{name}{i}"), &format!("{name}{i}")))
                .await;
            assert_eq!(status, 200, "{reply}");
            queued += count(&reply, "queued");
        }
    }
    assert_eq!(queued, 8);
    let messages = slack.wait_for(8).await;
    assert_eq!(messages.len(), 8);
    assert_eq!(
        slack.rate_limited(),
        0,
        "the replicas together went over Slack's rate"
    );
}

/// An EventList of `n` failed (401) requests from 10.0.0.9, auditIDs `{tag}-0`…
fn failed_requests(tag: &str, n: usize) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                "auditID": format!("{tag}-{i}"), "stage": "ResponseComplete",
                "requestURI": "/api/v1/secrets", "verb": "list",
                "user": {"username": "mallory"}, "sourceIPs": ["10.0.0.9"],
                "responseStatus": {"code": 401},
            })
        })
        .collect();
    serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_over_agrees_across_replicas() {
    let (_redis, slack, a, b) = two_replicas().await;
    // repeated_failed_auth alerts on every 5th failure from one source within 5 minutes:
    // 2 on one replica and 3 on the other make 5.
    let (status, reply) = a.post(&failed_requests("fa", 2)).await;
    assert_eq!((status, count(&reply, "alerts")), (200, 0), "{reply}");
    let (status, reply) = b.post(&failed_requests("fb", 3)).await;
    assert_eq!((status, count(&reply, "alerts")), (200, 1), "{reply}");
    let messages = slack.wait_for(1).await;
    let text = messages[0].to_string();
    assert!(text.contains("5 failed requests from 10.0.0.9"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_budget_is_shared_by_the_replicas() {
    let redis = RedisServer::start();
    let slack = SlackStandIn::start().await;
    let budget = [("KLAXON_RULE_DEFAULTS__BUDGET", "2")];
    let a = Replica::start_with(&redis.url(), &slack.url(), &budget);
    let b = Replica::start_with(&redis.url(), &slack.url(), &budget);
    // Six alerts with different dedup keys, three on each replica: two go out in all, the
    // others wait for the rule's digest.
    let mut queued = 0;
    for i in 0..3 {
        for (name, replica) in [("a", &a), ("b", &b)] {
            let tag = format!("{name}{i}");
            let (status, reply) = replica.post(&batch(&tag, &tag)).await;
            assert_eq!(status, 200, "{reply}");
            assert_eq!(count(&reply, "alerts"), 1, "{reply}");
            queued += count(&reply, "queued");
        }
    }
    assert_eq!(queued, 2, "a budget of 2 across both replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_over_tls_with_a_password() {
    let dir = tempfile::TempDir::new().unwrap();
    let ca = Ca::new("redis-test-ca");
    let (cert, key) = ca.server(7, &[]).write(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let password_file = dir.path().join("redis-password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    let redis = RedisServer::start_tls(&cert, &key, "s3cret-pw");
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let slack = SlackStandIn::start().await;
    let secured = [
        ("KLAXON_STATE__REDIS_CA_FILE", ca_file.to_str().unwrap()),
        (
            "KLAXON_STATE__REDIS_PASSWORD_FILE",
            password_file.to_str().unwrap(),
        ),
    ];
    let a = Replica::start_with(&url, &slack.url(), &secured);
    let b = Replica::start_with(&url, &slack.url(), &secured);
    let body = batch("tls", "tls");
    same_batch_to_both(&a, &b, &body).await;
    assert_eq!(b.metric("klaxon_state_backend_outages_total").await, 0.0);

    // Without the password the server refuses every call: that replica decides alone.
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "nope").unwrap();
    let c = Replica::start_with(
        &url,
        &slack.url(),
        &[
            ("KLAXON_STATE__REDIS_CA_FILE", ca_file.to_str().unwrap()),
            ("KLAXON_STATE__REDIS_PASSWORD_FILE", wrong.to_str().unwrap()),
        ],
    );
    let (status, third) = c.post(&body).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(count(&third, "duplicates"), 0, "{third}");
    assert_eq!(c.metric("klaxon_state_backend_outages_total").await, 1.0);
}
