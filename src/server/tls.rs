//! TLS for the webhook: the rustls server configuration built from `[server.tls]` (certificate
//! chain and key files, ALPN h2 and http/1.1, optional or required client certificates checked
//! against a CA bundle), reloading of the certificate when its files change, and reading the
//! subject of a client certificate.
//!
//! Owns the certificate reloader: a `ResolvesServerCert` holding the current certificate in an
//! `ArcSwap`, refreshed by a background thread woken by `notify` (the directories of the
//! certificate and key files, which also catches Kubernetes swapping its `..data` symlink) and
//! by a poll every few seconds. Calls rustls (aws-lc-rs provider), rustls-pki-types for PEM,
//! x509-parser for subjects and validity, and `notify`. Used by `server::listen` and
//! `klaxon check`.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use x509_parser::asn1_rs::ToDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::x509::AttributeTypeAndValue;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are asked for.
    #[default]
    None,
    /// A certificate is verified if presented; clients without one still connect.
    Optional,
    /// Clients without a certificate signed by the CA are refused in the handshake.
    Required,
}

/// `[server.tls]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle that client certificates must chain to; required unless `client_auth` is none.
    pub client_ca_file: Option<PathBuf>,
    /// Whether client certificates are asked for and required.
    pub client_auth: ClientAuth,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
}

/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// How often the certificate files are re-read even without a file-system event.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Why TLS could not be set up, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("{path}: invalid PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file that should hold certificates holds none.
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) found")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate could not be parsed as X.509.
    #[error("{path}: certificate {index} is not valid X.509: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Position in the file, from 1.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The private key is of a kind or shape the TLS library cannot use.
    #[error("{path}: unusable private key: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate.
    #[error("{key} does not match the certificate in {cert}: {source}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The server certificate is expired or not yet valid (reported by `check`).
    #[error("{path}: the certificate is not valid now (valid from {not_before} until {not_after})")]
    NotValidNow {
        /// The file.
        path: PathBuf,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The server certificate has no subjectAltName, which the apiserver (Go) requires
    /// (reported by `check`).
    #[error(
        "{path}: the certificate has no subjectAltName; the apiserver ignores the common name, add a DNS or IP SAN"
    )]
    NoSubjectAltName {
        /// The file.
        path: PathBuf,
    },
    /// Client certificates are asked for but no CA bundle is configured.
    #[error("server.tls.client_auth is {mode:?} but server.tls.client_ca_file is not set")]
    MissingClientCa {
        /// The configured mode.
        mode: ClientAuth,
    },
    /// The CA bundle holds no usable CA certificate.
    #[error("{path}: no usable CA certificate: {reason}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TLS library refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// What certificate reloading has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Certificates installed after the first one (bumped only when a changed pair of files
    /// was read, parsed and found consistent).
    pub generation: u64,
    /// Reload attempts that failed; the previous certificate stayed in use each time.
    pub failures: u64,
}

/// The subject of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSubject {
    /// RFC 4514 string, most specific attribute first: `CN=kube-apiserver,O=system:masters`.
    pub rfc4514: String,
    /// The common name; of several, the last encoded, as Go (and so Kubernetes) reads it.
    pub common_name: Option<String>,
}

/// A loaded TLS server configuration whose certificate follows its files.
///
/// Reloading runs as long as the configuration (or this handle) is alive.
pub struct ServerTls {
    config: Arc<ServerConfig>,
    resolver: Arc<CertResolver>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks every file, builds the rustls configuration, and starts watching the
    /// certificate and key files for changes.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        let (config, resolver) = build(settings)?;
        if let Err(err) = validity(&settings.cert_file, resolver.current.load().cert.first()) {
            tracing::warn!(error = %err, "serving a certificate the apiserver will refuse");
        }
        start_watching(&resolver);
        Ok(Self { config, resolver })
    }

    /// The rustls configuration to accept connections with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The reload status, to wait for a reload (`wait_for`) instead of sleeping.
    pub fn reloads(&self) -> watch::Receiver<ReloadStatus> {
        self.resolver.status.subscribe()
    }

    /// The certificate chain (DER, leaf first) being served now.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.resolver.current.load().cert.clone()
    }

    /// Re-reads the files now (as a SIGHUP would); `Ok(true)` when a new certificate was
    /// installed, `Ok(false)` when the files are unchanged; on error the old one stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.resolver.refresh(Trigger::Forced)
    }
}

/// Builds the rustls configuration for `settings`, certificate reloading included.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    ServerTls::load(settings).map(|tls| tls.config())
}

/// Reads and parses every file `settings` names, as `klaxon check` does: also refuses a
/// server certificate that is expired, not yet valid or has no subjectAltName.
pub fn check(settings: &TlsSettings) -> Result<(), TlsError> {
    let (_config, resolver) = build(settings)?;
    let current = resolver.current.load();
    validity(&settings.cert_file, current.cert.first())?;
    for (index, der) in current.cert.iter().enumerate().skip(1) {
        parse_cert(&settings.cert_file, index, der)?;
    }
    Ok(())
}

/// The subject of a DER certificate; `None` if it is not X.509.
pub fn certificate_subject(der: &[u8]) -> Option<CertSubject> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .last()
        .and_then(|cn| attribute_string(cn).map(str::to_owned));
    Some(CertSubject {
        rfc4514: rfc4514(subject),
        common_name,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn build(settings: &TlsSettings) -> Result<(Arc<ServerConfig>, Arc<CertResolver>), TlsError> {
    let provider = provider();
    let verifier = match (settings.client_auth, &settings.client_ca_file) {
        (ClientAuth::None, _) => None,
        (mode, None) => return Err(TlsError::MissingClientCa { mode }),
        (mode, Some(ca_file)) => {
            let roots = Arc::new(client_roots(ca_file)?);
            let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let builder = if mode == ClientAuth::Optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(builder.build().map_err(|e| TlsError::ClientCa {
                path: ca_file.clone(),
                reason: e.to_string(),
            })?)
        }
    };
    let resolver = Arc::new(CertResolver::load(
        &settings.cert_file,
        &settings.key_file,
        provider.clone(),
    )?);
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), resolver))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    match err {
        pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = read(path)?;
    let mut roots = RootCertStore::empty();
    for (index, der) in certificates(path, &pem)?.into_iter().enumerate() {
        roots.add(der).map_err(|e| TlsError::ClientCa {
            path: path.to_owned(),
            reason: format!("certificate {}: {e}", index + 1),
        })?;
    }
    Ok(roots)
}

/// Parses a certificate and key pair and checks that they belong together.
fn certified_key(
    cert_file: &Path,
    cert_pem: &[u8],
    key_file: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert_file, cert_pem)?;
    parse_cert(cert_file, 0, &chain[0])?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: key_file.to_owned(),
        },
        other => pem_error(key_file, other),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key {
            path: key_file.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(source) => Err(TlsError::KeyMismatch {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
            source,
        }),
    }
}

fn parse_cert<'a>(
    path: &Path,
    index: usize,
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, TlsError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| TlsError::Certificate {
            path: path.to_owned(),
            index: index + 1,
            reason: e.to_string(),
        })
}

/// Whether the leaf is valid now and carries a subjectAltName.
fn validity(path: &Path, leaf: Option<&CertificateDer<'_>>) -> Result<(), TlsError> {
    let Some(leaf) = leaf else {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    };
    let cert = parse_cert(path, 0, leaf)?;
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(TlsError::NotValidNow {
            path: path.to_owned(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    let has_san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| !san.value.general_names.is_empty());
    if !has_san {
        return Err(TlsError::NoSubjectAltName {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// RFC 4514: RDNs in reverse order of the encoding, `,` between them, `+` inside one.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(attribute_rfc4514)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

/// The short names RFC 4514 defines (and Go's `pkix.Name` prints).
fn attribute_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.17" => "POSTALCODE",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

fn attribute_string<'a>(attr: &AttributeTypeAndValue<'a>) -> Option<&'a str> {
    attr.as_str().ok()
}

fn attribute_rfc4514(attr: &AttributeTypeAndValue<'_>) -> String {
    let oid = attr.attr_type().to_id_string();
    match (attribute_name(&oid), attribute_string(attr)) {
        (Some(name), Some(value)) => format!("{name}={}", escape_rfc4514(value)),
        (name, _) => {
            // Unknown types and non-string values: the dotted OID (or name) and `#` hex of
            // the value's DER, as RFC 4514 section 2.4 says.
            let der = attr.attr_value().to_der_vec().unwrap_or_default();
            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}=#{hex}", name.unwrap_or(&oid))
        }
    }
}

fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Why a reload is attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A file-system event or the poll: skipped when the files are as last attempted.
    Changed,
    /// Asked for: skipped only when the files are as last installed.
    Forced,
}

/// Fingerprints of the files (not cryptographic: only to notice a change).
#[derive(Debug, Default)]
struct Seen {
    attempted: Option<u64>,
    installed: Option<u64>,
    /// The last failure, logged once rather than at every poll.
    last_error: Option<String>,
}

/// Serves the current certificate; the reload thread replaces it.
struct CertResolver {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<Seen>,
    status: watch::Sender<ReloadStatus>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    cert_pem.hash(&mut hasher);
    key_pem.hash(&mut hasher);
    hasher.finish()
}

impl CertResolver {
    fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let cert_pem = read(cert_file)?;
        let key_pem = read(key_file)?;
        let key = certified_key(cert_file, &cert_pem, key_file, &key_pem, &provider)?;
        let print = fingerprint(&cert_pem, &key_pem);
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(Seen {
                attempted: Some(print),
                installed: Some(print),
                last_error: None,
            }),
            status: watch::Sender::new(ReloadStatus::default()),
        })
    }

    /// Re-reads the files and installs them if they changed and make a consistent pair;
    /// otherwise keeps the current certificate.
    fn refresh(&self, trigger: Trigger) -> Result<bool, TlsError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let read_both = read(&self.cert_file).and_then(|c| Ok((c, read(&self.key_file)?)));
        let (cert_pem, key_pem) = match read_both {
            Ok(pair) => pair,
            Err(err) => {
                self.failed(&mut seen, &err);
                return Err(err);
            }
        };
        let print = fingerprint(&cert_pem, &key_pem);
        if seen.installed == Some(print)
            || (trigger == Trigger::Changed && seen.attempted == Some(print))
        {
            seen.attempted = Some(print);
            return Ok(false);
        }
        seen.attempted = Some(print);
        match certified_key(
            &self.cert_file,
            &cert_pem,
            &self.key_file,
            &key_pem,
            &self.provider,
        ) {
            Ok(key) => {
                let subject = key
                    .cert
                    .first()
                    .and_then(|leaf| certificate_subject(leaf))
                    .map(|s| s.rfc4514)
                    .unwrap_or_default();
                self.current.store(Arc::new(key));
                seen.installed = Some(print);
                seen.last_error = None;
                self.status.send_modify(|s| s.generation += 1);
                tracing::info!(
                    cert_file = %self.cert_file.display(),
                    subject = %subject,
                    "reloaded the TLS certificate"
                );
                Ok(true)
            }
            Err(err) => {
                self.failed(&mut seen, &err);
                Err(err)
            }
        }
    }

    fn failed(&self, seen: &mut Seen, err: &TlsError) {
        let message = err.to_string();
        if seen.last_error.as_ref() == Some(&message) {
            tracing::debug!(error = %message, "TLS certificate still unreadable");
        } else {
            tracing::error!(
                error = %message,
                "cannot reload the TLS certificate; still serving the previous one"
            );
            seen.last_error = Some(message);
        }
        self.status.send_modify(|s| s.failures += 1);
    }
}

/// The directories to watch: Kubernetes replaces the files by swapping a symlink in them.
fn watched_dirs(resolver: &CertResolver) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [&resolver.cert_file, &resolver.key_file]
        .into_iter()
        .map(|file| match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.dedup();
    dirs
}

/// Starts the reload thread: woken by changes in the files' directories and every
/// [`POLL_INTERVAL`]; it ends once the resolver is dropped.
fn start_watching(resolver: &Arc<CertResolver>) {
    let weak = Arc::downgrade(resolver);
    super::filewatch::watch_dirs(
        "tls-reload",
        &watched_dirs(resolver),
        |_| true,
        POLL_INTERVAL,
        move |_| {
            let Some(resolver) = weak.upgrade() else {
                return ControlFlow::Break(());
            };
            // Errors are logged and counted by `refresh`.
            let _ = resolver.refresh(Trigger::Changed);
            ControlFlow::Continue(())
        },
    );
}
