//! The probe listener (`server.probe_listen`): with `[server.tls] client_auth = "required"`,
//! `/healthz`, `/readyz` and `/metrics` answer over plain HTTP on their own port without a
//! certificate (kubelet, Prometheus), while ingest stays behind the client certificate on
//! the TLS listener and does not exist on the probe port.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::certs::Ca;
use support::klaxon::{config_from, scripts, start};
use tempfile::TempDir;

const PATIENCE: Duration = Duration::from_secs(20);

fn toml(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
probe_listen = "127.0.0.1:0"
shutdown_timeout = "5s"
[server.tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{ca}"
client_auth = "required"
[server.auth]
client_cert_subjects = ["CN=kube-apiserver,O=system:masters"]
[scripts]
dirs = ["{dir}/scripts"]
[outbox]
path = "{dir}/data"
[delivery]
group_wait = "1h"
drain_timeout = "0s"
[routing]
default_targets = ["sink"]
[targets.sink]
type = "console"
format = "json"
"#,
        dir = dir.display(),
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
    )
}

fn one_event() -> String {
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": [{
        "auditID": "probe-test-1",
        "stage": "ResponseComplete", "level": "Metadata", "requestURI": "/api",
        "verb": "create",
        "objectRef": {"resource": "configmaps", "namespace": "ns"},
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_without_a_certificate_and_ingest_still_needs_one() {
    let dir = TempDir::new().unwrap();
    scripts(dir.path(), &[("quiet", "")]);
    let ca = Ca::new("probe-test-ca");
    let (cert, key) = ca.server(1, &[]).write(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let config = config_from(&toml(dir.path(), &cert, &key, &ca_file), dir.path());
    let server = start(&config).await;
    let probe = server.probe.expect("probe_listen is set");
    assert_ne!(probe, server.addr);

    // Plain HTTP on the probe port, no certificate: probes and metrics answer.
    let plain = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = plain
            .get(format!("http://{probe}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} on the probe listener");
    }
    // Nothing else is there: no ingest, no reload.
    for path in ["/audit", "/", "/-/reload"] {
        let response = plain
            .post(format!("http://{probe}{path}"))
            .header("content-type", "application/json")
            .body(one_event())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "POST {path} on the probe listener");
    }

    // The TLS listener refuses a client without a certificate...
    let https = format!("https://localhost:{}/audit", server.addr.port());
    let anonymous = reqwest::Client::builder()
        .tls_certs_only([ca.root()])
        .resolve("localhost", server.addr)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let refused = anonymous.post(&https).body(one_event()).send().await;
    match refused {
        Err(_) => {}
        Ok(response) => assert_eq!(response.status(), 401, "ingest without a certificate"),
    }
    // ... and takes the batch from one with the apiserver's certificate.
    let apiserver = ca.client("kube-apiserver", "system:masters");
    let trusted = reqwest::Client::builder()
        .tls_certs_only([ca.root()])
        .resolve("localhost", server.addr)
        .identity(apiserver.identity())
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let response = trusted
        .post(&https)
        .header("content-type", "application/json")
        .body(one_event())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["accepted"], 1, "{reply}");

    // One shutdown stops both listeners.
    server.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(probe).await.is_err(),
        "the probe listener is closed after shutdown"
    );
}
