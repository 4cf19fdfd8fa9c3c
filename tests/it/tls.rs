//! The webhook's connection layer over real loopback sockets: TLS with HTTP/1.1 and HTTP/2
//! chosen by ALPN, client certificates (required and optional), certificate reload, plain
//! HTTP/1.1 and h2c, the slow-client guards, and graceful shutdown.
//!
//! The tests run on Tokio's current-thread runtime; the shutdown test relies on it (see there).

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::Version;
use axum::routing::get;
use axum::{Extension, Json, Router};
use klaxon::server::listen::{self, Acceptor, ConnectionSettings, Peer, ServeError};
use klaxon::server::tls::{self, ClientAuth, ReloadStatus, TlsError, TlsSettings};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use support::certs::{Ca, Pair};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

/// Bound on anything a test waits for; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(10);
/// A short header-read (and handshake) timeout, so slow clients are cut quickly.
const SHORT: Duration = Duration::from_millis(300);

/// Echoes what the connection layer told the handler.
async fn echo(
    Extension(peer): Extension<Peer>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    version: Version,
) -> Json<Value> {
    Json(json!({
        "subject": peer.client_subject,
        "cn": peer.client_cn,
        "version": format!("{version:?}"),
        "connect_info_is_peer": addr == peer.addr,
        "loopback": peer.addr.ip().is_loopback(),
    }))
}

fn echo_app() -> Router {
    Router::new().route("/", get(echo))
}

/// A CA, a server certificate, a client certificate from the CA and one from another CA.
struct Pki {
    ca: Ca,
    dir: TempDir,
    server: Pair,
    client: Pair,
    stranger: Pair,
}

impl Pki {
    fn new() -> Self {
        let ca = Ca::new("klaxon test CA");
        let other_ca = Ca::new("some other CA");
        let dir = TempDir::new().unwrap();
        let server = ca.server(1, &[]);
        server.write(dir.path());
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        let client = ca.client("kube-apiserver", "system:masters");
        let stranger = other_ca.client("kube-apiserver", "system:masters");
        Self {
            ca,
            dir,
            server,
            client,
            stranger,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tls(&self, client_auth: ClientAuth) -> TlsSettings {
        TlsSettings {
            cert_file: self.path("tls.crt"),
            key_file: self.path("tls.key"),
            client_ca_file: Some(self.path("ca.crt")),
            client_auth,
            handshake_timeout: SHORT,
        }
    }
}

fn settings(tls: Option<TlsSettings>) -> ConnectionSettings {
    ConnectionSettings {
        tls,
        header_read_timeout: SHORT,
        shutdown_timeout: PATIENCE,
    }
}

/// A server on an ephemeral loopback port.
struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Starts `app` with `listen::serve`.
    async fn start(settings: ConnectionSettings, app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(listen::serve(listener, app, settings, async {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    /// Starts `app` through an `Acceptor`, returning its certificate reload status too.
    async fn start_reloading(
        settings: ConnectionSettings,
        app: Router,
    ) -> (Self, watch::Receiver<ReloadStatus>) {
        let acceptor = Acceptor::new(settings).unwrap();
        let reloads = acceptor.tls().expect("TLS is configured").reloads();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            acceptor
                .serve(listener, app, async {
                    let _ = stopped.await;
                })
                .await;
            Ok(())
        });
        (Self { addr, stop, task }, reloads)
    }

    fn https(&self) -> String {
        format!("https://localhost:{}/", self.addr.port())
    }

    fn http(&self) -> String {
        format!("http://127.0.0.1:{}/", self.addr.port())
    }

    /// Shuts the server down and checks that `serve` returns cleanly.
    async fn stop(self) {
        let _ = self.stop.send(());
        let served = tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve panicked");
        assert!(served.is_ok(), "serve failed: {served:?}");
    }
}

/// A client that trusts only `ca`, resolves `localhost` to the server, and reports TLS info.
fn client(ca: &Ca, identity: Option<&Pair>, server: &Running) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .tls_certs_only([ca.root()])
        .resolve("localhost", server.addr)
        .tls_info(true)
        .timeout(PATIENCE);
    match identity {
        Some(pair) => builder.identity(pair.identity()),
        None => builder,
    }
}

/// GETs `url` and returns the response version and the echoed JSON; panics on failure.
async fn get_echo(client: &reqwest::Client, url: &str) -> (Version, Value) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let version = response.version();
    (version, response.json().await.unwrap())
}

/// The certificate the server presented on a fresh connection.
async fn served_certificate(ca: &Ca, server: &Running) -> Vec<u8> {
    let client = client(ca, None, server).build().unwrap();
    let response = client.get(server.https()).send().await.unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls_info was asked for");
    info.peer_certificate().expect("a certificate").to_vec()
}

async fn wait_for_reload(
    reloads: &mut watch::Receiver<ReloadStatus>,
    done: impl FnMut(&ReloadStatus) -> bool,
) -> ReloadStatus {
    *tokio::time::timeout(PATIENCE, reloads.wait_for(done))
        .await
        .expect("no reload happened")
        .unwrap()
}

#[tokio::test]
async fn tls_serves_http2_and_http1_as_negotiated_by_alpn() {
    let pki = Pki::new();
    let server = Running::start(settings(Some(pki.tls(ClientAuth::None))), echo_app()).await;

    let h2 = client(&pki.ca, None, &server).build().unwrap();
    let (version, body) = get_echo(&h2, &server.https()).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(body["version"], "HTTP/2.0");
    assert_eq!(body["subject"], Value::Null);
    assert_eq!(body["connect_info_is_peer"], true);
    assert_eq!(body["loopback"], true);

    let h1 = client(&pki.ca, None, &server).http1_only().build().unwrap();
    let (version, body) = get_echo(&h1, &server.https()).await;
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(body["version"], "HTTP/1.1");

    server.stop().await;
}

#[tokio::test]
async fn required_client_certificates_admit_the_ca_client_and_pass_its_subject() {
    let pki = Pki::new();
    let server = Running::start(settings(Some(pki.tls(ClientAuth::Required))), echo_app()).await;

    for http1 in [false, true] {
        let mut builder = client(&pki.ca, Some(&pki.client), &server);
        if http1 {
            builder = builder.http1_only();
        }
        let (_, body) = get_echo(&builder.build().unwrap(), &server.https()).await;
        assert_eq!(body["subject"], "CN=kube-apiserver,O=system:masters");
        assert_eq!(body["cn"], "kube-apiserver");
    }

    server.stop().await;
}

#[tokio::test]
async fn required_client_certificates_refuse_no_certificate_and_a_foreign_one() {
    let pki = Pki::new();
    let server = Running::start(settings(Some(pki.tls(ClientAuth::Required))), echo_app()).await;

    let anonymous = client(&pki.ca, None, &server).build().unwrap();
    let refused = anonymous.get(server.https()).send().await;
    assert!(
        refused.is_err(),
        "no client certificate was let in: {refused:?}"
    );

    let stranger = client(&pki.ca, Some(&pki.stranger), &server)
        .build()
        .unwrap();
    let refused = stranger.get(server.https()).send().await;
    assert!(
        refused.is_err(),
        "a certificate of another CA was let in: {refused:?}"
    );

    // The refusals did not hurt the accept loop.
    let good = client(&pki.ca, Some(&pki.client), &server).build().unwrap();
    let (_, body) = get_echo(&good, &server.https()).await;
    assert_eq!(body["cn"], "kube-apiserver");

    server.stop().await;
}

#[tokio::test]
async fn optional_client_certificates_admit_anonymous_clients_but_verify_presented_ones() {
    let pki = Pki::new();
    let server = Running::start(settings(Some(pki.tls(ClientAuth::Optional))), echo_app()).await;

    let anonymous = client(&pki.ca, None, &server).build().unwrap();
    let (_, body) = get_echo(&anonymous, &server.https()).await;
    assert_eq!(body["subject"], Value::Null);
    assert_eq!(body["cn"], Value::Null);

    let known = client(&pki.ca, Some(&pki.client), &server).build().unwrap();
    let (_, body) = get_echo(&known, &server.https()).await;
    assert_eq!(body["subject"], "CN=kube-apiserver,O=system:masters");

    let stranger = client(&pki.ca, Some(&pki.stranger), &server)
        .build()
        .unwrap();
    let refused = stranger.get(server.https()).send().await;
    assert!(
        refused.is_err(),
        "an unverifiable certificate was let in: {refused:?}"
    );

    server.stop().await;
}

#[tokio::test]
async fn a_rewritten_certificate_is_served_to_new_connections_and_a_broken_one_is_not() {
    let pki = Pki::new();
    let (server, mut reloads) =
        Running::start_reloading(settings(Some(pki.tls(ClientAuth::None))), echo_app()).await;
    assert_eq!(served_certificate(&pki.ca, &server).await, pki.server.der);

    // A half-written certificate file: the reload fails and the old certificate stays.
    std::fs::write(pki.path("tls.crt"), "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    let status = wait_for_reload(&mut reloads, |s| s.failures >= 1).await;
    assert_eq!(status.generation, 0);
    assert_eq!(served_certificate(&pki.ca, &server).await, pki.server.der);

    // A new certificate (another serial and SAN) and key: new connections get it.
    let renewed = pki.ca.server(2, &["klaxon.example"]);
    assert_ne!(renewed.der, pki.server.der);
    renewed.write(pki.dir.path());
    wait_for_reload(&mut reloads, |s| s.generation >= 1).await;
    assert_eq!(served_certificate(&pki.ca, &server).await, renewed.der);

    server.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;

    let pki = Pki::new();
    // Like a mounted Secret: tls.crt -> ..data/tls.crt, ..data -> ..v1.
    let mount = TempDir::new().unwrap();
    let version = |name: &str, pair: &Pair| {
        let dir = mount.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        pair.write(&dir);
    };
    version("..v1", &pki.server);
    symlink("..v1", mount.path().join("..data")).unwrap();
    symlink("..data/tls.crt", mount.path().join("tls.crt")).unwrap();
    symlink("..data/tls.key", mount.path().join("tls.key")).unwrap();
    let tls = TlsSettings {
        cert_file: mount.path().join("tls.crt"),
        key_file: mount.path().join("tls.key"),
        ..pki.tls(ClientAuth::None)
    };
    let (server, mut reloads) = Running::start_reloading(settings(Some(tls)), echo_app()).await;
    assert_eq!(served_certificate(&pki.ca, &server).await, pki.server.der);

    let renewed = pki.ca.server(3, &[]);
    version("..v2", &renewed);
    symlink("..v2", mount.path().join("..data_tmp")).unwrap();
    std::fs::rename(mount.path().join("..data_tmp"), mount.path().join("..data")).unwrap();
    wait_for_reload(&mut reloads, |s| s.generation >= 1).await;
    assert_eq!(served_certificate(&pki.ca, &server).await, renewed.der);

    server.stop().await;
}

#[tokio::test]
async fn a_plain_listener_serves_http1_and_h2c() {
    let server = Running::start(settings(None), echo_app()).await;

    let (version, body) = get_echo(&reqwest::Client::new(), &server.http()).await;
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(body["subject"], Value::Null);
    assert_eq!(body["connect_info_is_peer"], true);

    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let (version, body) = get_echo(&h2c, &server.http()).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(body["version"], "HTTP/2.0");

    server.stop().await;
}

/// Reads until the peer closes; `Err` if it has not within `PATIENCE`. A TLS peer that
/// drops the connection without close_notify counts as closed.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, String> {
    let mut received = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await {
        Ok(Ok(_)) => Ok(received),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::UnexpectedEof => Ok(received),
        Ok(Err(err)) => Err(format!("read failed instead of ending: {err}")),
        Err(_) => Err("the server kept the connection open".to_owned()),
    }
}

#[tokio::test]
async fn a_slow_loris_is_disconnected_while_normal_requests_are_served() {
    let server = Running::start(settings(None), echo_app()).await;

    let started = Instant::now();
    let mut loris = TcpStream::connect(server.addr).await.unwrap();
    loris.write_all(b"GET / HT").await.unwrap();

    let (version, _) = get_echo(&reqwest::Client::new(), &server.http()).await;
    assert_eq!(version, Version::HTTP_11);

    let received = read_until_closed(&mut loris).await.unwrap();
    assert!(
        started.elapsed() >= SHORT,
        "closed before the header read timeout"
    );
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
        "unexpected answer: {}",
        String::from_utf8_lossy(&received)
    );

    server.stop().await;
}

#[tokio::test]
async fn silent_clients_are_disconnected_on_plain_and_tls_listeners() {
    let pki = Pki::new();
    let plain = Running::start(settings(None), echo_app()).await;
    let tls = Running::start(settings(Some(pki.tls(ClientAuth::None))), echo_app()).await;

    for server in [&plain, &tls] {
        let started = Instant::now();
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let received = read_until_closed(&mut silent).await.unwrap();
        assert!(received.is_empty());
        assert!(started.elapsed() >= SHORT, "closed before the timeout");
    }

    plain.stop().await;
    tls.stop().await;
}

/// A TLS connection made by hand, offering `alpn`.
async fn tls_connect(
    ca: &Ca,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca.der()))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn slow_clients_after_the_tls_handshake_are_disconnected() {
    let pki = Pki::new();
    let server = Running::start(settings(Some(pki.tls(ClientAuth::None))), echo_app()).await;

    // HTTP/1.1 by ALPN, half a request line.
    let mut loris = tls_connect(&pki.ca, server.addr, &[b"http/1.1"]).await;
    assert_eq!(loris.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    loris.write_all(b"GET / HT").await.unwrap();
    loris.flush().await.unwrap();
    let started = Instant::now();
    let received = read_until_closed(&mut loris).await.unwrap();
    assert!(
        started.elapsed() >= SHORT / 2,
        "closed before the header read timeout"
    );
    assert!(received.is_empty() || received.starts_with(b"HTTP/1.1 408"));

    // No ALPN at all and then silence: the protocol cannot even be told.
    let mut silent = tls_connect(&pki.ca, server.addr, &[]).await;
    assert_eq!(silent.get_ref().1.alpn_protocol(), None);
    let received = read_until_closed(&mut silent).await.unwrap();
    assert!(received.is_empty());

    // A well-behaved client meanwhile.
    let good = client(&pki.ca, None, &server).build().unwrap();
    let (version, _) = get_echo(&good, &server.https()).await;
    assert_eq!(version, Version::HTTP_2);

    server.stop().await;
}

/// An app whose `/slow` tells `started` and then waits for `release` (forever if `None`).
fn slow_app(started: Arc<Notify>, release: Option<Arc<Notify>>) -> Router {
    Router::new().route(
        "/slow",
        get(move || {
            let started = started.clone();
            let release = release.clone();
            async move {
                started.notify_one();
                match release {
                    Some(release) => release.notified().await,
                    None => std::future::pending().await,
                }
                "done"
            }
        }),
    )
}

/// Starts a plain server whose shutdown future reports when it has been polled to completion.
async fn start_with_observed_shutdown(
    app: Router,
    shutdown_timeout: Duration,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    oneshot::Receiver<()>,
    JoinHandle<Result<(), ServeError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (began_tx, began) = oneshot::channel::<()>();
    let settings = ConnectionSettings {
        shutdown_timeout,
        ..settings(None)
    };
    let task = tokio::spawn(listen::serve(listener, app, settings, async move {
        let _ = stopped.await;
        let _ = began_tx.send(());
    }));
    (addr, stop, began, task)
}

async fn in_flight_request_survives_shutdown(client: reqwest::Client) {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let app = slow_app(started.clone(), Some(release.clone()));
    let (addr, stop, began, task) = start_with_observed_shutdown(app, PATIENCE).await;

    let request = tokio::spawn(
        client
            .get(format!("http://127.0.0.1:{}/slow", addr.port()))
            .send(),
    );
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the request never reached the handler");

    stop.send(()).unwrap();
    began.await.unwrap();
    // On the current-thread runtime the accept loop has dropped the listener before this
    // task runs again (it does so in the same poll that completed the shutdown future).
    let refused = TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted during shutdown"
    );
    assert!(
        !task.is_finished(),
        "serve returned with a request in flight"
    );

    release.notify_one();
    let response = tokio::time::timeout(PATIENCE, request)
        .await
        .expect("the in-flight request never completed")
        .unwrap()
        .expect("the in-flight request failed");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");

    let served = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("serve did not return after the last request")
        .unwrap();
    assert!(served.is_ok());
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_http1_request_in_flight_and_refuses_new_connections() {
    in_flight_request_survives_shutdown(reqwest::Client::new()).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_http2_request_in_flight_and_refuses_new_connections() {
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    in_flight_request_survives_shutdown(h2c).await;
}

#[tokio::test]
async fn shutdown_drops_requests_that_outlast_the_shutdown_timeout() {
    let started = Arc::new(Notify::new());
    let app = slow_app(started.clone(), None);
    let (addr, stop, _began, task) = start_with_observed_shutdown(app, SHORT).await;

    let request = tokio::spawn(
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/slow", addr.port()))
            .send(),
    );
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the request never reached the handler");

    let stopping = Instant::now();
    stop.send(()).unwrap();
    let served = tokio::time::timeout(PATIENCE, task)
        .await
        .expect("serve did not give up on the stuck request")
        .unwrap();
    assert!(served.is_ok());
    assert!(
        stopping.elapsed() >= SHORT,
        "gave up before the shutdown timeout"
    );
    let outcome = tokio::time::timeout(PATIENCE, request)
        .await
        .unwrap()
        .unwrap();
    assert!(
        outcome.is_err(),
        "the stuck request got an answer: {outcome:?}"
    );
}

fn expect_err(settings: &TlsSettings) -> TlsError {
    match tls::check(settings) {
        Ok(()) => panic!("check accepted {settings:?}"),
        Err(err) => err,
    }
}

fn mentions(err: &TlsError, path: &Path) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "{text:?} does not name {}",
        path.display()
    );
}

#[test]
fn check_accepts_good_files_and_names_the_file_and_problem_of_bad_ones() {
    let pki = Pki::new();
    let good = pki.tls(ClientAuth::Required);
    tls::check(&good).unwrap();

    let missing = TlsSettings {
        cert_file: pki.path("nope.crt"),
        ..good.clone()
    };
    let err = expect_err(&missing);
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    mentions(&err, &missing.cert_file);

    std::fs::write(pki.path("other.key"), &pki.client.key_pem).unwrap();
    let mismatched = TlsSettings {
        key_file: pki.path("other.key"),
        ..good.clone()
    };
    let err = expect_err(&mismatched);
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    mentions(&err, &mismatched.key_file);

    std::fs::write(pki.path("garbage.crt"), "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    let garbage = TlsSettings {
        cert_file: pki.path("garbage.crt"),
        ..good.clone()
    };
    let err = expect_err(&garbage);
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
    mentions(&err, &garbage.cert_file);

    std::fs::write(pki.path("empty.pem"), "").unwrap();
    let no_ca = TlsSettings {
        client_ca_file: Some(pki.path("empty.pem")),
        ..good.clone()
    };
    let err = expect_err(&no_ca);
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    mentions(&err, &pki.path("empty.pem"));

    let unset_ca = TlsSettings {
        client_ca_file: None,
        ..good.clone()
    };
    assert!(matches!(
        expect_err(&unset_ca),
        TlsError::MissingClientCa {
            mode: ClientAuth::Required
        }
    ));
    // Without client certificates the CA bundle is not needed.
    tls::check(&TlsSettings {
        client_auth: ClientAuth::None,
        ..unset_ca
    })
    .unwrap();

    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "no-san");
    let no_san = pki.ca.sign(&params);
    let dir = TempDir::new().unwrap();
    let (cert_file, key_file) = no_san.write(dir.path());
    let err = expect_err(&TlsSettings {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        ..good.clone()
    });
    assert!(matches!(err, TlsError::NoSubjectAltName { .. }), "{err:?}");
    mentions(&err, &cert_file);

    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    pki.ca.sign(&params).write(dir.path());
    let err = expect_err(&TlsSettings {
        cert_file,
        key_file,
        ..good
    });
    assert!(matches!(err, TlsError::NotValidNow { .. }), "{err:?}");
}

#[test]
fn server_config_offers_h2_then_http1() {
    let pki = Pki::new();
    let config = tls::server_config(&pki.tls(ClientAuth::Optional)).unwrap();
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn certificate_subjects_are_rfc4514_strings() {
    let pki = Pki::new();
    let subject = tls::certificate_subject(&pki.client.der).unwrap();
    assert_eq!(subject.rfc4514, "CN=kube-apiserver,O=system:masters");
    assert_eq!(subject.common_name.as_deref(), Some("kube-apiserver"));

    let odd = pki.ca.client(" a,b+c ", "#x");
    let subject = tls::certificate_subject(&odd.der).unwrap();
    assert_eq!(subject.rfc4514, r"CN=\ a\,b\+c\ ,O=\#x");
    assert_eq!(subject.common_name.as_deref(), Some(" a,b+c "));

    assert!(tls::certificate_subject(b"not a certificate").is_none());
}
