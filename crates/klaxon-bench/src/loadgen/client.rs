//! The HTTP side of the load generator: where batches go (URL, TLS trust, client
//! certificate, credentials, protocol) and how one batch is POSTed and classified.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::LoadgenError;
use super::stats::Outcome;

/// Credentials sent with every batch.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// None.
    #[default]
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic base64(USER:PASSWORD)`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

/// The HTTP version to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one connection per concurrent batch.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge on `http://`, ALPN `h2` on `https://`), one connection.
    Http2,
}

/// A client certificate and its private key (PEM files) for mTLS.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
}

/// Everything needed to reach the endpoint.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where batches are POSTed.
    pub url: reqwest::Url,
    /// Trust only this CA bundle (PEM) instead of the built-in roots.
    pub ca: Option<PathBuf>,
    /// Client certificate for mTLS.
    pub client_cert: Option<ClientCert>,
    /// Credentials.
    pub auth: Auth,
    /// HTTP version.
    pub protocol: Protocol,
    /// Longest wait for one batch's answer.
    pub timeout: Duration,
}

impl ClientOptions {
    /// Plain defaults for `url`: no TLS settings or credentials, HTTP/1.1, 30 s timeout.
    pub fn new(url: reqwest::Url) -> Self {
        Self {
            url,
            ca: None,
            client_cert: None,
            auth: Auth::None,
            protocol: Protocol::Http1,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The endpoint and the client that reaches it; cheap to clone.
#[derive(Debug, Clone)]
pub struct Target {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl Target {
    /// Builds the client of `options`, reading its PEM files.
    pub fn new(options: &ClientOptions) -> Result<Self, LoadgenError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("klaxon-bench/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(options.timeout)
            .default_headers(auth_headers(&options.auth)?);
        builder = match options.protocol {
            Protocol::Http1 => builder.http1_only(),
            Protocol::Http2 => builder.http2_prior_knowledge(),
        };
        if let Some(ca) = &options.ca {
            let pem = read(ca)?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                LoadgenError::Certificate {
                    path: ca.clone(),
                    source,
                }
            })?;
            if roots.is_empty() {
                return Err(LoadgenError::NoCertificate { path: ca.clone() });
            }
            builder = builder.tls_certs_only(roots);
        }
        if let Some(pair) = &options.client_cert {
            builder = builder.identity(identity(pair)?);
        }
        let client = builder.build().map_err(LoadgenError::Client)?;
        Ok(Self::with_client(client, options.url.clone()))
    }

    /// A target reached with an existing client.
    pub fn with_client(client: reqwest::Client, url: reqwest::Url) -> Self {
        Self { client, url }
    }

    /// Where batches go.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// POSTs one body and waits for the whole answer.
    pub async fn send(&self, body: Vec<u8>) -> Outcome {
        let request = self
            .client
            .post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                // Read the answer to the end so the connection can be reused.
                let _ = response.bytes().await;
                if status.is_success() {
                    Outcome::Accepted(status.as_u16())
                } else {
                    Outcome::Rejected(status.as_u16())
                }
            }
            Err(err) if err.is_connect() => Outcome::Connect,
            Err(err) if err.is_timeout() => Outcome::Timeout,
            Err(_) => Outcome::Transport,
        }
    }
}

fn auth_headers(auth: &Auth) -> Result<HeaderMap, LoadgenError> {
    let value = match auth {
        Auth::None => return Ok(HeaderMap::new()),
        Auth::Bearer(token) => format!("Bearer {token}"),
        Auth::Basic { username, password } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        ),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| LoadgenError::Credentials)?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Ok(headers)
}

fn identity(pair: &ClientCert) -> Result<reqwest::Identity, LoadgenError> {
    let mut pem = read(&pair.cert)?;
    if !pem.ends_with(b"\n") {
        pem.push(b'\n');
    }
    pem.extend(read(&pair.key)?);
    reqwest::Identity::from_pem(&pem).map_err(|source| LoadgenError::Identity {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, LoadgenError> {
    std::fs::read(path).map_err(|source| LoadgenError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use tempfile::TempDir;

    use klaxon::rules::Ruleset;
    use klaxon::server::Server;

    use super::*;
    use crate::loadgen::{Load, Report, Stop, run, test_generator};

    /// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
    struct Pki {
        dir: TempDir,
    }

    impl Pki {
        fn new() -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "test CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            let dir = TempDir::new().unwrap();
            std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
            let sign = |sans: Vec<String>, usage, name: &str| {
                let mut params = CertificateParams::new(sans).unwrap();
                params.extended_key_usages = vec![usage];
                let key = KeyPair::generate().unwrap();
                let cert = params.signed_by(&key, &ca).unwrap();
                std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
                std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())
                    .unwrap();
            };
            sign(
                vec!["127.0.0.1".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
                "server",
            );
            sign(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "client");
            Self { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    /// klaxon on 127.0.0.1:0 with TLS, required client certificates, a bearer token
    /// `s3cret` and basic `apiserver:pa55`; returns its `https://…/audit` URL.
    async fn start_klaxon(pki: &Pki) -> reqwest::Url {
        let d = pki.dir.path().display();
        std::fs::create_dir_all(pki.path("scripts")).unwrap();
        std::fs::write(pki.path("scripts/noop.rhai"), "let x = event.verb;").unwrap();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[server.tls]
cert_file = "{d}/server.crt"
key_file = "{d}/server.key"
client_ca_file = "{d}/ca.crt"
client_auth = "required"
[server.auth]
bearer_token = "s3cret"
basic_username = "apiserver"
basic_password = "pa55"
[scripts]
dirs = ["{d}/scripts"]
[outbox]
path = "{d}/data"
[routing]
default_targets = ["console"]
"#
        );
        std::fs::write(pki.path("klaxon.toml"), toml).unwrap();
        let config = klaxon::config::load(Some(&pki.path("klaxon.toml"))).unwrap();
        let rules = Ruleset::load(&config.script_dirs, &config.limits, "test").unwrap();
        let server = Server::bind(&config.serve, rules).await.unwrap();
        let url = format!("https://{}/audit", server.local_addr().unwrap());
        tokio::spawn(server.run(std::future::pending()));
        url.parse().unwrap()
    }

    fn options(pki: &Pki, url: &reqwest::Url, auth: Auth) -> ClientOptions {
        let mut options = ClientOptions::new(url.clone());
        options.ca = Some(pki.path("ca.crt"));
        options.client_cert = Some(ClientCert {
            cert: pki.path("client.crt"),
            key: pki.path("client.key"),
        });
        options.auth = auth;
        options
    }

    async fn two_batches(options: &ClientOptions) -> Report {
        let target = Target::new(options).unwrap();
        let load = Load::Closed {
            concurrency: 1,
            stop: Stop::Batches(2),
        };
        run(&target, Arc::new(test_generator(1, 20)), load)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mtls_bearer_and_basic_reach_a_klaxon_that_requires_them() {
        let pki = Pki::new();
        let url = start_klaxon(&pki).await;
        let bearer = Auth::Bearer("s3cret".into());
        let basic = Auth::Basic {
            username: "apiserver".into(),
            password: "pa55".into(),
        };
        for auth in [bearer.clone(), basic] {
            let report = two_batches(&options(&pki, &url, auth)).await;
            assert_eq!(
                (report.accepted_batches, report.failures),
                (2, 0),
                "{report}"
            );
        }
        let mut h2 = options(&pki, &url, bearer.clone());
        h2.protocol = Protocol::Http2;
        let report = two_batches(&h2).await;
        assert_eq!(report.accepted_batches, 2, "{report}");

        let wrong = two_batches(&options(&pki, &url, Auth::Bearer("wrong".into()))).await;
        assert_eq!(wrong.failures_by_kind.get("401"), Some(&2), "{wrong}");
        let mut no_cert = options(&pki, &url, bearer);
        no_cert.client_cert = None;
        let refused = two_batches(&no_cert).await;
        assert_eq!(
            (refused.accepted_batches, refused.failures),
            (0, 2),
            "{refused}"
        );
    }

    #[test]
    fn unreadable_or_invalid_pem_files_are_reported() {
        let dir = TempDir::new().unwrap();
        let url: reqwest::Url = "https://127.0.0.1:1/audit".parse().unwrap();
        let mut options = ClientOptions::new(url);
        options.ca = Some(dir.path().join("missing.crt"));
        assert!(matches!(
            Target::new(&options),
            Err(LoadgenError::Read { .. })
        ));
        std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
        options.ca = Some(dir.path().join("junk.pem"));
        let err = Target::new(&options).unwrap_err();
        assert!(matches!(err, LoadgenError::NoCertificate { .. }), "{err}");
        options.ca = None;
        options.client_cert = Some(ClientCert {
            cert: dir.path().join("junk.pem"),
            key: dir.path().join("junk.pem"),
        });
        let err = Target::new(&options).unwrap_err();
        assert!(matches!(err, LoadgenError::Identity { .. }), "{err}");
        options.client_cert = None;
        options.auth = Auth::Bearer("line\nbreak".into());
        assert!(matches!(
            Target::new(&options),
            Err(LoadgenError::Credentials)
        ));
    }
}
