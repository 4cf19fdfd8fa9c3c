//! Authentication of the apiserver: what its webhook kubeconfig can send — a bearer token,
//! basic username and password, or a client certificate whose subject is allowed.
//!
//! Secrets are compared in constant time and never logged.

use subtle::ConstantTimeEq;

use crate::notify::Secret;

/// `[server.auth]`, validated. With nothing configured, every request is let in.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// `Authorization: Bearer TOKEN`.
    pub bearer_token: Option<Secret>,
    /// `Authorization: Basic base64(USER:PASSWORD)`.
    pub basic: Option<(String, Secret)>,
    /// Client certificate subjects let in (`CN=kube-apiserver` or the full RFC 4514
    /// subject); needs `[server.tls]` with client certificates.
    pub client_cert_subjects: Vec<String>,
}

impl AuthSettings {
    /// Whether any method is configured (else the webhook is open).
    pub fn is_enabled(&self) -> bool {
        self.bearer_token.is_some() || self.basic.is_some() || !self.client_cert_subjects.is_empty()
    }
}

/// Equal in constant time (for equal lengths; the length itself may leak).
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}
