//! Authentication of the apiserver: what its webhook kubeconfig can send — a bearer token,
//! basic username and password, or a client certificate whose subject is allowed — and of
//! Amazon Data Firehose, which sends its access key in `X-Amz-Firehose-Access-Key`, and of
//! Pub/Sub push subscriptions, which can send a token only in the endpoint's query
//! (`?token=…`; their other option, a Google-signed OIDC token, needs Google's keys).
//!
//! Secrets are compared in constant time and never logged.

use subtle::ConstantTimeEq;

use crate::secret::Secret;

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
    /// `X-Amz-Firehose-Access-Key: KEY` (Amazon Data Firehose's HTTP endpoint delivery).
    pub firehose_access_key: Option<Secret>,
    /// `?token=TOKEN` in the URL (a Pub/Sub push subscription's endpoint).
    pub push_token: Option<Secret>,
}

impl AuthSettings {
    /// Whether any method is configured (else the webhook is open).
    pub fn is_enabled(&self) -> bool {
        self.bearer_token.is_some()
            || self.basic.is_some()
            || !self.client_cert_subjects.is_empty()
            || self.firehose_access_key.is_some()
            || self.push_token.is_some()
    }
}

/// What a request presents: its headers' credentials and its connection's client certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a [u8]>,
    /// The `X-Amz-Firehose-Access-Key` header.
    pub firehose_access_key: Option<&'a [u8]>,
    /// The client certificate's subject and common name.
    pub client_subject: Option<(&'a str, Option<&'a str>)>,
    /// The `token` parameter of the URL's query, decoded.
    pub query_token: Option<&'a [u8]>,
}

/// Equal in constant time (for equal lengths; the length itself may leak).
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// Why a request was refused (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials at all.
    Missing,
    /// Credentials that do not match.
    Wrong,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Wrong => "wrong",
        }
    }
}

impl AuthSettings {
    /// Checks a request's credentials.
    pub fn check(&self, given: Credentials<'_>) -> Result<(), Refusal> {
        let Credentials {
            authorization,
            firehose_access_key,
            client_subject,
            query_token,
        } = given;
        if !self.is_enabled() {
            return Ok(());
        }
        if let (Some(token), Some(expected)) = (query_token, &self.push_token)
            && secret_eq(token, expected.expose().as_bytes())
        {
            return Ok(());
        }
        if let (Some(key), Some(expected)) = (firehose_access_key, &self.firehose_access_key) {
            return if secret_eq(key, expected.expose().as_bytes()) {
                Ok(())
            } else {
                Err(Refusal::Wrong)
            };
        }
        if let Some((subject, cn)) = client_subject
            && self.client_cert_subjects.iter().any(|allowed| {
                allowed == subject || cn.is_some_and(|cn| *allowed == format!("CN={cn}"))
            })
        {
            return Ok(());
        }
        let Some(header) = authorization else {
            let nothing =
                client_subject.is_none() && query_token.is_none() && firehose_access_key.is_none();
            return Err(match nothing {
                true => Refusal::Missing,
                false => Refusal::Wrong,
            });
        };
        if let (Some(token), Some(expected)) = (header.strip_prefix(b"Bearer "), &self.bearer_token)
            && secret_eq(token.trim_ascii(), expected.expose().as_bytes())
        {
            return Ok(());
        }
        if let (Some(encoded), Some((user, password))) =
            (header.strip_prefix(b"Basic "), &self.basic)
            && basic_matches(encoded.trim_ascii(), user, password)
        {
            return Ok(());
        }
        Err(Refusal::Wrong)
    }

    /// `WWW-Authenticate` challenges for the configured schemes.
    pub fn challenges(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.bearer_token.is_some() {
            out.push(r#"Bearer realm="klaxon""#);
        }
        if self.basic.is_some() {
            out.push(r#"Basic realm="klaxon", charset="UTF-8""#);
        }
        if out.is_empty() {
            // Only client certificates are accepted: say so in the challenge's realm.
            out.push(r#"Bearer realm="klaxon (client certificate required)""#);
        }
        out
    }
}

fn basic_matches(encoded: &[u8], user: &str, password: &Secret) -> bool {
    use base64::Engine as _;
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    let (given_user, given_password) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared, whatever the first gives, so timing does not tell which was wrong.
    let user_ok = secret_eq(given_user, user.as_bytes());
    let password_ok = secret_eq(given_password, password.expose().as_bytes());
    user_ok & password_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn settings() -> AuthSettings {
        AuthSettings {
            bearer_token: Some(Secret::new("t0ken")),
            basic: Some(("apiserver".to_owned(), Secret::new("pa:ss"))),
            client_cert_subjects: vec!["CN=kube-apiserver".to_owned()],
            firehose_access_key: Some(Secret::new("fh-key")),
            push_token: Some(Secret::new("push-t")),
        }
    }

    fn header(authorization: &[u8]) -> Credentials<'_> {
        Credentials {
            authorization: Some(authorization),
            ..Credentials::default()
        }
    }

    fn subject<'a>(subject: &'a str, cn: &'a str) -> Credentials<'a> {
        Credentials {
            client_subject: Some((subject, Some(cn))),
            ..Credentials::default()
        }
    }

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn each_method_lets_in_and_wrong_or_missing_credentials_do_not() {
        let s = settings();
        assert_eq!(s.check(header(b"Bearer t0ken")), Ok(()));
        assert_eq!(s.check(header(&basic("apiserver", "pa:ss"))), Ok(()));
        assert_eq!(
            s.check(subject("CN=kube-apiserver,O=x", "kube-apiserver")),
            Ok(())
        );
        assert_eq!(s.check(header(b"Bearer t0ke")), Err(Refusal::Wrong));
        assert_eq!(
            s.check(header(&basic("apiserver", "pa:s"))),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            s.check(header(&basic("other", "pa:ss"))),
            Err(Refusal::Wrong)
        );
        assert_eq!(s.check(header(b"Basic !!!")), Err(Refusal::Wrong));
        assert_eq!(s.check(Credentials::default()), Err(Refusal::Missing));
        assert_eq!(
            s.check(subject("CN=mallory", "mallory")),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            AuthSettings::default().check(Credentials::default()),
            Ok(())
        );
    }

    #[test]
    fn the_firehose_access_key_lets_in_only_when_it_matches() {
        let s = settings();
        let firehose = |key: &'static [u8]| Credentials {
            firehose_access_key: Some(key),
            ..Credentials::default()
        };
        assert_eq!(s.check(firehose(b"fh-key")), Ok(()));
        assert_eq!(s.check(firehose(b"fh-kez")), Err(Refusal::Wrong));
        // The bearer token is not a Firehose key, nor the other way round.
        assert_eq!(s.check(firehose(b"t0ken")), Err(Refusal::Wrong));
        assert_eq!(s.check(header(b"Bearer fh-key")), Err(Refusal::Wrong));
        let unset = AuthSettings {
            firehose_access_key: None,
            ..settings()
        };
        assert_eq!(unset.check(firehose(b"fh-key")), Err(Refusal::Wrong));
    }

    #[test]
    fn the_push_token_in_the_query_lets_in_only_when_it_matches() {
        let s = settings();
        let query = |token: &'static [u8]| Credentials {
            query_token: Some(token),
            ..Credentials::default()
        };
        assert_eq!(s.check(query(b"push-t")), Ok(()));
        assert_eq!(s.check(query(b"push-u")), Err(Refusal::Wrong));
        assert_eq!(s.check(query(b"t0ken")), Err(Refusal::Wrong));
        let unset = AuthSettings {
            push_token: None,
            ..settings()
        };
        assert_eq!(unset.check(query(b"push-t")), Err(Refusal::Wrong));
    }
}
