//! Ingest cost of the durable outbox, end to end over loopback: an in-process klaxon with a
//! fresh outbox receives 400-event EventList batches that each raise 0, 1 or 50 alerts,
//! one batch at a time, and the answer latency is measured.
//!
//! `cargo run --release --example ingest_latency [BATCHES]` prints, per case, batches/s and
//! the p50/p90/p99/max answer latency.

use std::time::{Duration, Instant};

use klaxon::config;
use klaxon::rules::Ruleset;
use klaxon::server::Server;
use serde_json::{Value, json};

/// One event: a create in `ns`; the rule fires on those whose auditID starts with "fire".
fn event(i: usize, fires: bool) -> Value {
    json!({
        "level": "Metadata",
        "auditID": format!("{}-{i:06}", if fires { "fire" } else { "quiet" }),
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/payments/configmaps",
        "verb": if fires { "create" } else { "get" },
        "user": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts", "system:authenticated"]},
        "sourceIPs": ["10.0.0.12"],
        "userAgent": "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46",
        "objectRef": {"resource": "configmaps", "namespace": "payments", "name": format!("cm-{i}"), "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-20T10:15:02.123456Z",
        "stageTimestamp": "2026-11-20T10:15:02.131902Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed"}
    })
}

fn batch(seq: usize, alerts: usize) -> String {
    let items: Vec<Value> = (0..400).map(|i| event(seq * 400 + i, i < alerts)).collect();
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
        .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::main]
async fn main() {
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/fire.rhai"),
        r#"if event.verb == "create" { alert(#{ title: event.auditID }); }"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("klaxon.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[scripts]\ndirs = [\"{d}/scripts\"]\n[outbox]\npath = \"{d}/data\"\n[rule_defaults]\nbudget = 1000000\n[delivery]\ngroup_wait = \"1h\"\n[routing]\ndefault_targets = [\"sink\"]\n[targets.sink]\ntype = \"console\"\nformat = \"json\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let config = config::load(Some(&dir.path().join("klaxon.toml"))).unwrap();
    let rules = Ruleset::load(&config.script_dirs, &config.limits, "bench").unwrap();
    let server = Server::bind(&config.serve, rules).await.unwrap();
    let url = format!("http://{}/audit", server.local_addr().unwrap());
    // Never stopped: what is queued stays in the temporary outbox and is not sent.
    tokio::spawn(server.run(std::future::pending()));
    let client = reqwest::Client::new();
    let mut seq = 0;
    for alerts in [0usize, 1, 50] {
        let bodies: Vec<String> = (0..batches)
            .map(|_| {
                seq += 1;
                batch(seq, alerts)
            })
            .collect();
        let mut latencies = Vec::with_capacity(batches);
        let started = Instant::now();
        for body in bodies {
            let t = Instant::now();
            let reply = client.post(&url).body(body).send().await.unwrap();
            assert_eq!(reply.status(), 200);
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed();
        latencies.sort();
        println!(
            "{alerts:>2} alerts/batch: {:>7.1} batches/s ({:>8.0} events/s)  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms",
            batches as f64 / elapsed.as_secs_f64(),
            (batches * 400) as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.9).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
    }
}
