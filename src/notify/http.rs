//! Generic HTTP target: POSTs each notice as the versioned JSON payload (docs/PAYLOAD.md)
//! or as the body a user template renders, with custom headers, auth and a timeout.

use std::fmt;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::template::Template;
use super::{Notice, PAYLOAD_VERSION, SendError};
use crate::secret::Secret;

/// The `User-Agent` of every request: `klaxon/<version>`.
pub const USER_AGENT: &str = concat!("klaxon/", env!("CARGO_PKG_VERSION"));

/// The header naming the payload version; sent with the JSON payload only.
pub const PAYLOAD_VERSION_HEADER: &str = "x-klaxon-payload-version";

/// The content type of the JSON payload, and the default for templates.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Characters of the receiver's error body kept in [`SendError::Rejected`].
const REASON_CHARS: usize = 200;

/// Bytes of the receiver's error body read at most (the reason needs only its start).
const REASON_BYTES: usize = 4096;

/// How the receiver authenticates klaxon.
#[derive(Debug, Clone)]
pub enum HttpAuth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic base64(username:password)` (RFC 7617).
    Basic {
        /// The user name; must not contain `:`.
        username: String,
        /// The password.
        password: Secret,
    },
}

/// A generic HTTP target, ready to use (built by config validation).
#[derive(Clone)]
pub struct HttpSettings {
    /// Where to POST; may embed a credential, so it is never logged whole.
    pub url: reqwest::Url,
    /// Custom headers, validated at load; may carry credentials, so values are never logged.
    pub headers: HeaderMap,
    /// How the receiver authenticates klaxon.
    pub auth: HttpAuth,
    /// Timeout of one POST, from connecting to the end of the answer.
    pub timeout: Duration,
    /// The body template; `None` sends the JSON payload.
    pub body_template: Option<Template>,
    /// The `Content-Type` of the body; `application/json` unless a template says otherwise.
    pub content_type: String,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("HttpSettings")
            .field("url", &redacted_url(&self.url))
            .field("headers", &header_names)
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .field(
                "body_template",
                &self.body_template.as_ref().map(|_| "<template>"),
            )
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// `scheme://host[:port]/…`: the URL without path, query or user info, any of which may
/// hold a token.
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str("/…");
    shown
}

/// The exact body `send` would POST (for `klaxon dry-run --target`).
pub fn body(settings: &HttpSettings, notice: &Notice) -> Result<String, SendError> {
    match &settings.body_template {
        Some(template) => template.render(notice).map_err(SendError::Render),
        None => Ok(notice.payload().to_string()),
    }
}

/// The headers of one request, `Authorization` aside: `User-Agent`, then the custom ones
/// (which may replace it), then the ones klaxon controls (`Content-Type` and, for the JSON
/// payload, the payload version). A custom `Authorization` is kept only without `auth`.
fn request_headers(settings: &HttpSettings) -> Result<HeaderMap, SendError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    for name in settings.headers.keys() {
        headers.remove(name);
        for value in settings.headers.get_all(name) {
            // Custom values may be credentials: keep them out of debug output and HPACK tables.
            let mut value = value.clone();
            value.set_sensitive(true);
            headers.append(name.clone(), value);
        }
    }
    let content_type = HeaderValue::from_str(&settings.content_type).map_err(|_| {
        SendError::Render(format!(
            "content type `{}` is not a valid header value",
            settings.content_type
        ))
    })?;
    headers.insert(header::CONTENT_TYPE, content_type);
    if settings.body_template.is_none() {
        headers.insert(
            HeaderName::from_static(PAYLOAD_VERSION_HEADER),
            HeaderValue::from_static(PAYLOAD_VERSION),
        );
    }
    if !matches!(settings.auth, HttpAuth::None) {
        headers.remove(header::AUTHORIZATION);
    }
    Ok(headers)
}

/// POSTs one notice: the v1 JSON payload (Notice::payload) or the rendered template.
/// Any 2xx answer is success.
pub async fn send(
    client: &reqwest::Client,
    settings: &HttpSettings,
    notice: &Notice,
) -> Result<(), SendError> {
    let body = body(settings, notice)?;
    let request = client
        .post(settings.url.clone())
        .timeout(settings.timeout)
        .headers(request_headers(settings)?)
        .body(body);
    let request = match &settings.auth {
        HttpAuth::None => request,
        HttpAuth::Bearer(token) => request.bearer_auth(token.expose()),
        HttpAuth::Basic { username, password } => {
            request.basic_auth(username, Some(password.expose()))
        }
    };
    let response = request.send().await.map_err(SendError::network)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let reason = reason(response).await;
    Err(SendError::Rejected {
        status: status.as_u16(),
        reason,
        retry_after,
    })
}

/// The start of an error answer's body, read no further than needed.
async fn reason(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < REASON_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(REASON_BYTES);
    let text = String::from_utf8_lossy(&bytes);
    super::truncate(text.trim(), REASON_CHARS)
}
