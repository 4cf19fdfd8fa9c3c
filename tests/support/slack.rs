//! A local stand-in for a Slack incoming webhook that behaves like Slack: it checks the
//! content type and Block Kit limits (400 `invalid_blocks`), allows about one message per
//! second with a burst of 3 (429 with `Retry-After` and `{"ok":false,"error":"rate_limited"}`),
//! can be made unavailable (503) or removed (404 `no_service`, 410 `channel_is_archived`),
//! and records every accepted message.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::Notify;

/// The path of the stand-in's webhook, shaped like Slack's.
pub const WEBHOOK_PATH: &str = "/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX";

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like Slack on a good day.
    Up,
    /// 503 for the next `n` requests, then up again.
    Unavailable(usize),
    /// 404 `no_service`: the webhook was removed.
    Removed,
    /// 410 `channel_is_archived`.
    Archived,
}

/// Slack's per-webhook limit: about 1 per second, bursts of 3 (a little slack for jitter).
struct Bucket {
    tokens: f64,
    at: Instant,
}

const RATE_PER_SEC: f64 = 1.0;
const BURST: f64 = 3.0;
const GRACE: f64 = 0.1;

struct Inner {
    requests: Mutex<usize>,
    accepted: Mutex<Vec<Value>>,
    /// When each accepted message arrived; pushed before the message.
    accepted_at: Mutex<Vec<Instant>>,
    rejected: Mutex<Vec<String>>,
    rate_limited: Mutex<usize>,
    mode: Mutex<Mode>,
    bucket: Mutex<Bucket>,
    changed: Notify,
}

/// A running stand-in; dropped with the test's runtime.
#[derive(Clone)]
pub struct SlackStandIn {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl SlackStandIn {
    /// Starts the stand-in on an ephemeral loopback port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            requests: Mutex::default(),
            accepted: Mutex::default(),
            accepted_at: Mutex::default(),
            rejected: Mutex::default(),
            rate_limited: Mutex::default(),
            mode: Mutex::new(Mode::Up),
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                at: Instant::now(),
            }),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route(WEBHOOK_PATH, post(webhook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, inner }
    }

    /// The webhook URL to configure klaxon with.
    pub fn url(&self) -> String {
        format!("http://{}{WEBHOOK_PATH}", self.addr)
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<Value> {
        self.inner.accepted.lock().unwrap().clone()
    }

    /// When each accepted message arrived, in the order of [`SlackStandIn::messages`].
    pub fn arrivals(&self) -> Vec<Instant> {
        self.inner.accepted_at.lock().unwrap().clone()
    }

    /// Reasons for messages refused so far (not counting rate limiting and outages).
    pub fn rejections(&self) -> Vec<String> {
        self.inner.rejected.lock().unwrap().clone()
    }

    /// How many 429s it answered.
    pub fn rate_limited(&self) -> usize {
        *self.inner.rate_limited.lock().unwrap()
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// Waits until at least `n` requests arrived, whatever the answer.
    pub async fn wait_for_requests(&self, n: usize) {
        loop {
            let notified = self.inner.changed.notified();
            if *self.inner.requests.lock().unwrap() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Waits until at least `n` messages were accepted.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        loop {
            let notified = self.inner.changed.notified();
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            notified.await;
        }
    }
}

async fn webhook(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let answer = answer(&inner, &headers, &body);
    inner.changed.notify_waiters();
    answer
}

fn answer(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Response {
    *inner.requests.lock().unwrap() += 1;
    {
        let mut mode = inner.mode.lock().unwrap();
        match *mode {
            Mode::Up => {}
            Mode::Unavailable(n) => {
                *mode = if n <= 1 {
                    Mode::Up
                } else {
                    Mode::Unavailable(n - 1)
                };
                return (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").into_response();
            }
            Mode::Removed => return (StatusCode::NOT_FOUND, "no_service").into_response(),
            Mode::Archived => return (StatusCode::GONE, "channel_is_archived").into_response(),
        }
    }
    if !take_token(&inner.bucket) {
        *inner.rate_limited.lock().unwrap() += 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1"), ("content-type", "application/json")],
            r#"{"ok":false,"error":"rate_limited"}"#,
        )
            .into_response();
    }
    match check(headers, body) {
        Ok(message) => {
            inner.accepted_at.lock().unwrap().push(Instant::now());
            inner.accepted.lock().unwrap().push(message);
            (StatusCode::OK, "ok").into_response()
        }
        Err((status, error, why)) => {
            inner
                .rejected
                .lock()
                .unwrap()
                .push(format!("{error}: {why}"));
            (status, error).into_response()
        }
    }
}

/// Takes one token from Slack's bucket, refilled at its rate; false when empty.
fn take_token(bucket: &Mutex<Bucket>) -> bool {
    let mut b = bucket.lock().unwrap();
    let now = Instant::now();
    let refill = now.duration_since(b.at).as_secs_f64() * RATE_PER_SEC;
    b.tokens = (b.tokens + refill).min(BURST);
    b.at = now;
    if b.tokens + GRACE >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

type Refusal = (StatusCode, &'static str, String);

/// Slack's checks on an incoming-webhook message.
fn check(headers: &HeaderMap, body: &[u8]) -> Result<Value, Refusal> {
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "content type".into(),
        ));
    }
    let message: Value = serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, "invalid_payload", e.to_string()))?;
    let has_text = message["text"].as_str().is_some_and(|t| !t.is_empty());
    let blocks = message["blocks"].as_array();
    if !has_text && blocks.is_none() {
        return Err((StatusCode::BAD_REQUEST, "no_text", String::new()));
    }
    if let Some(blocks) = blocks {
        check_blocks(blocks).map_err(|why| (StatusCode::BAD_REQUEST, "invalid_blocks", why))?;
    }
    Ok(message)
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

fn check_text(obj: &Value, max: usize, what: &str) -> Result<(), String> {
    let kind = obj["type"].as_str().unwrap_or("");
    if kind != "plain_text" && kind != "mrkdwn" {
        return Err(format!("{what}: bad text type {kind:?}"));
    }
    let n = chars(&obj["text"]);
    if n == 0 || n > max {
        return Err(format!("{what}: text length {n} not in 1..={max}"));
    }
    Ok(())
}

fn check_blocks(blocks: &[Value]) -> Result<(), String> {
    if blocks.len() > 50 {
        return Err(format!("{} blocks > 50", blocks.len()));
    }
    for (i, block) in blocks.iter().enumerate() {
        let what = format!("blocks[{i}]");
        match block["type"].as_str() {
            Some("header") => {
                if block["text"]["type"] != "plain_text" {
                    return Err(format!("{what}: header text must be plain_text"));
                }
                check_text(&block["text"], 150, &what)?;
            }
            Some("section") => {
                let text = &block["text"];
                let fields = block["fields"].as_array();
                if text.is_null() && fields.is_none() {
                    return Err(format!("{what}: section needs text or fields"));
                }
                if !text.is_null() {
                    check_text(text, 3000, &what)?;
                }
                if let Some(fields) = fields {
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(format!("{what}: {} fields", fields.len()));
                    }
                    for f in fields {
                        check_text(f, 2000, &what)?;
                    }
                }
            }
            Some("context") => {
                let elements = block["elements"].as_array().cloned().unwrap_or_default();
                if elements.is_empty() || elements.len() > 10 {
                    return Err(format!("{what}: {} context elements", elements.len()));
                }
                for e in &elements {
                    check_text(e, 3000, &what)?;
                }
            }
            Some("divider") => {}
            other => return Err(format!("{what}: unknown block type {other:?}")),
        }
    }
    Ok(())
}
