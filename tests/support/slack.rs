//! A local stand-in for a Slack incoming webhook that behaves like Slack: it checks the
//! content type and Block Kit limits, answers `ok` (200) or `invalid_blocks` (400), and
//! records every accepted message.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::Notify;

/// The path of the stand-in's webhook, shaped like Slack's.
pub const WEBHOOK_PATH: &str = "/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX";

#[derive(Default)]
struct Inner {
    accepted: Mutex<Vec<Value>>,
    rejected: Mutex<Vec<String>>,
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
        let inner = Arc::new(Inner::default());
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

    /// Reasons for messages refused so far.
    pub fn rejections(&self) -> Vec<String> {
        self.inner.rejected.lock().unwrap().clone()
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

async fn webhook(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let verdict = check(&headers, &body);
    let answer = match verdict {
        Ok(message) => {
            inner.accepted.lock().unwrap().push(message);
            (StatusCode::OK, "ok")
        }
        Err((status, error, why)) => {
            inner
                .rejected
                .lock()
                .unwrap()
                .push(format!("{error}: {why}"));
            (status, error)
        }
    };
    inner.changed.notify_waiters();
    answer
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
