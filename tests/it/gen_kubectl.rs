//! The kubeconfigs of `klaxon gen apiserver-config` load and authenticate in a real
//! client-go: kubectl (Debian's kubernetes-client) posts an EventList with them to a running
//! klaxon over TLS.
//!
//! For each credential (bearer token, basic, client certificate): klaxon serves TLS with
//! generated certificates and all three methods configured; `klaxon gen apiserver-config
//! --out-dir DIR --url https://127.0.0.1:PORT/audit --ca CA …` writes the kubeconfig, and
//! `kubectl --kubeconfig DIR/audit-webhook.yaml create --raw PATH -f batch.json` must exit 0
//! with klaxon's reply counting the event. PATH is the path of the kubeconfig's server URL:
//! `create --raw` replaces the URL's path with its argument, while the apiserver posts to
//! the server URL as it is, so the test posts where the apiserver would and checks kubectl's
//! own log of the URL it posted to. The same kubeconfig with a wrong credential makes
//! kubectl fail.
//!
//! kubectl is required: without it the test fails with an install hint ($KUBECTL names
//! another binary).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};
use support::certs::{Ca, Pair};
use support::klaxon::{Running, config_from, scripts, start};
use tempfile::TempDir;

const KUBECTL_INSTALL: &str = "install Debian's kubernetes-client (apt-get install kubernetes-client) or set $KUBECTL; ./test.sh installs every tool the tests need";

const TOKEN: &str = "s3cret-t0ken_for:klaxon";
const USERNAME: &str = "kube-apiserver";
const PASSWORD: &str = "pa55:word with spaces";

/// The certificates of one test: a CA, klaxon's server certificate, the apiserver's client
/// certificate, and a client certificate of a foreign CA, all as files.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
}

impl Pki {
    fn write(dir: &Path) -> Self {
        let ca = Ca::new("klaxon-test-ca");
        let foreign = Ca::new("foreign-ca");
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let pair = |name: &str, pair: Pair| {
            let sub = dir.join(name);
            std::fs::create_dir_all(&sub).unwrap();
            pair.write(&sub)
        };
        Self {
            ca: ca_file,
            server: pair("server", ca.server(1, &[])),
            client: pair("client", ca.client("kube-apiserver", "system:masters")),
            stranger: pair(
                "stranger",
                foreign.client("kube-apiserver", "system:masters"),
            ),
        }
    }
}

fn toml(dir: &Path, pki: &Pki) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"
[server.tls]
cert_file = "{cert}"
key_file = "{key}"
client_ca_file = "{ca}"
client_auth = "optional"
[server.auth]
bearer_token = "{TOKEN}"
basic_username = "{USERNAME}"
basic_password = "{PASSWORD}"
client_cert_subjects = ["CN=kube-apiserver"]
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
        cert = pki.server.0.display(),
        key = pki.server.1.display(),
        ca = pki.ca.display(),
    )
}

/// An EventList with one event, as the apiserver's batch backend sends it.
fn batch(audit_id: &str) -> String {
    json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "metadata": {},
        "items": [{
            "level": "Metadata",
            "auditID": audit_id,
            "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/ns/configmaps",
            "verb": "create",
            "user": {"username": "alice"},
            "objectRef": {"resource": "configmaps", "namespace": "ns", "name": "x"},
            "responseStatus": {"code": 201},
        }],
    })
    .to_string()
}

/// `klaxon --config DIR/klaxon.toml gen apiserver-config ARGS --out-dir OUT`, expected to
/// succeed; returns the kubeconfig it wrote.
async fn generate(dir: &Path, out: &Path, args: &[&str]) -> PathBuf {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_klaxon"));
    cmd.current_dir(dir).env_remove("RUST_LOG");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KLAXON_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--config")
        .arg(dir.join("klaxon.toml"))
        .args(["gen", "apiserver-config", "--out-dir"])
        .arg(out)
        .args(args);
    let output = cmd.output().await.unwrap();
    assert!(
        output.status.success(),
        "gen {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.join("audit-webhook.yaml")
}

/// kubectl with `args`, never reading a kubeconfig other than the one named.
async fn kubectl(args: &[&str]) -> Output {
    let bin = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(args)
        .env("KUBECONFIG", "/dev/null")
        .env("HOME", "/nonexistent");
    match cmd.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "`{}` is not installed; {KUBECTL_INSTALL}",
                bin.to_string_lossy()
            )
        }
        Err(e) => panic!("cannot run kubectl: {e}"),
    }
}

/// The kubeconfig's server URL, as client-go reads it.
async fn server_url(kubeconfig: &Path) -> String {
    let output = kubectl(&[
        "config",
        "view",
        "-o",
        "json",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();
    view["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `kubectl --kubeconfig KUBECONFIG create --raw PATH -f BATCH -v=6`, PATH being the path
/// of the kubeconfig's server URL.
async fn post_with(kubeconfig: &Path, batch_file: &Path) -> (Output, String) {
    let url = server_url(kubeconfig).await;
    let path = url::Url::parse(&url).unwrap().path().to_owned();
    let output = kubectl(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "create",
        "--raw",
        &path,
        "-f",
        batch_file.to_str().unwrap(),
        "-v=6",
    ])
    .await;
    (output, url)
}

/// Posts one event with `kubeconfig` and asserts kubectl succeeded, posted to the server URL
/// itself, and klaxon accepted the event.
async fn assert_accepted(dir: &Path, kubeconfig: &Path, audit_id: &str) {
    let batch_file = dir.join(format!("{audit_id}.json"));
    std::fs::write(&batch_file, batch(audit_id)).unwrap();
    let (output, url) = post_with(kubeconfig, &batch_file).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubectl failed with {}:\n{stderr}",
        kubeconfig.display()
    );
    let posted = stderr
        .lines()
        .find(|l| l.contains("POST") && l.contains(&url) && l.contains("200"))
        .unwrap_or_else(|| panic!("kubectl did not log a POST to {url} answered 200:\n{stderr}"));
    eprintln!("kubectl: {posted}");
    let reply: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(reply["accepted"], 1, "{reply}");
    assert_eq!(reply["queued"], 1, "{reply}");
}

/// Posts with `kubeconfig` after `edit`ing it, and asserts kubectl failed.
async fn assert_refused(dir: &Path, kubeconfig: &Path, edit: impl Fn(String) -> String) {
    let wrong = kubeconfig.with_file_name("wrong-credential.yaml");
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&wrong, edited).unwrap();
    let batch_file = dir.join("refused.json");
    std::fs::write(&batch_file, batch("refused")).unwrap();
    let (output, _) = post_with(&wrong, &batch_file).await;
    assert!(
        !output.status.success(),
        "kubectl succeeded with a wrong credential:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "kubectl with a wrong credential: {}",
        stderr.lines().last().unwrap_or_default()
    );
}

struct Setup {
    dir: TempDir,
    pki: Pki,
    server: Running,
    url: String,
}

async fn setup() -> Setup {
    let dir = TempDir::new().unwrap();
    let pki = Pki::write(dir.path());
    scripts(
        dir.path(),
        &[("fire", r#"alert(#{ title: event.auditID });"#)],
    );
    let config = config_from(&toml(dir.path(), &pki), dir.path());
    let server = start(&config).await;
    let url = format!("https://127.0.0.1:{}/audit", server.addr.port());
    Setup {
        dir,
        pki,
        server,
        url,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_kubeconfig_loads_and_authenticates_in_kubectl() {
    let s = setup().await;
    let out = s.dir.path().join("token");
    let ca = s.pki.ca.to_str().unwrap();
    let kubeconfig = generate(
        s.dir.path(),
        &out,
        &["--url", &s.url, "--ca", ca, "--token"],
    )
    .await;
    assert_accepted(s.dir.path(), &kubeconfig, "token-1").await;
    assert_refused(s.dir.path(), &kubeconfig, |k| {
        k.replace(TOKEN, "not-the-token")
    })
    .await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_kubeconfig_loads_and_authenticates_in_kubectl() {
    let s = setup().await;
    let out = s.dir.path().join("basic");
    let ca = s.pki.ca.to_str().unwrap();
    let kubeconfig = generate(
        s.dir.path(),
        &out,
        &["--url", &s.url, "--ca", ca, "--basic"],
    )
    .await;
    assert_accepted(s.dir.path(), &kubeconfig, "basic-1").await;
    assert_refused(s.dir.path(), &kubeconfig, |k| {
        k.replace(PASSWORD, "wrong password")
    })
    .await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_kubeconfig_loads_and_authenticates_in_kubectl() {
    let s = setup().await;
    let out = s.dir.path().join("cert");
    let ca = s.pki.ca.to_str().unwrap();
    let (cert, key) = (
        s.pki.client.0.to_str().unwrap(),
        s.pki.client.1.to_str().unwrap(),
    );
    let kubeconfig = generate(
        s.dir.path(),
        &out,
        &[
            "--url",
            &s.url,
            "--ca",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
        ],
    )
    .await;
    assert_accepted(s.dir.path(), &kubeconfig, "cert-1").await;
    let (foreign_cert, foreign_key) = (
        s.pki.stranger.0.to_str().unwrap().to_owned(),
        s.pki.stranger.1.to_str().unwrap().to_owned(),
    );
    assert_refused(s.dir.path(), &kubeconfig, |k| {
        k.replace(cert, &foreign_cert).replace(key, &foreign_key)
    })
    .await;
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_with_the_wrong_ca_is_refused_by_kubectl() {
    let s = setup().await;
    let out = s.dir.path().join("wrong-ca");
    let foreign_ca = s.dir.path().join("foreign-ca.crt");
    std::fs::write(&foreign_ca, Ca::new("not-klaxons-ca").pem()).unwrap();
    let kubeconfig = generate(
        s.dir.path(),
        &out,
        &[
            "--url",
            &s.url,
            "--ca",
            foreign_ca.to_str().unwrap(),
            "--token",
        ],
    )
    .await;
    let batch_file = s.dir.path().join("wrong-ca.json");
    std::fs::write(&batch_file, batch("wrong-ca")).unwrap();
    let (output, _) = post_with(&kubeconfig, &batch_file).await;
    assert!(!output.status.success(), "klaxon's certificate was trusted");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    s.server.shutdown().await;
}
