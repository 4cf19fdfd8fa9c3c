//! A generic HTTP receiver on loopback: records the method, path, headers and body of every
//! request, and answers with a status, body and optional `Retry-After` that a test can
//! change at any time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The HTTP method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// Every header, as received.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// When it arrived (its body read whole).
    pub at: Instant,
}

impl Recorded {
    /// The only value of header `name` as text; panics when absent, repeated or not text.
    pub fn header(&self, name: &str) -> &str {
        let mut values = self.headers.get_all(name).iter();
        let value = values
            .next()
            .unwrap_or_else(|| panic!("no `{name}` header in {:?}", self.headers));
        assert!(values.next().is_none(), "`{name}` repeated");
        value.to_str().unwrap()
    }

    /// The body as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the receiver answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The response body.
    pub body: String,
    /// A `Retry-After` value, sent verbatim.
    pub retry_after: Option<String>,
}

impl Answer {
    /// An answer with `status` and `body` and no `Retry-After`.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            retry_after: None,
        }
    }

    /// The same answer with a `Retry-After` header.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }
}

struct Inner {
    requests: Mutex<Vec<Recorded>>,
    answer: Mutex<Answer>,
    arrived: Notify,
}

/// A running receiver; its server task ends with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver on an ephemeral loopback port, answering 200 `ok`.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner {
            requests: Mutex::new(Vec::new()),
            answer: Mutex::new(Answer::new(200, "ok")),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(record).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, inner }
    }

    /// The URL of `path` (which starts with `/`) on this receiver.
    pub fn url(&self, path: &str) -> reqwest::Url {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }

    /// Answers every later request with `answer`.
    pub fn answer(&self, answer: Answer) {
        *self.inner.answer.lock().unwrap() = answer;
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        loop {
            let arrived = self.inner.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            arrived.await;
        }
    }
}

async fn record(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let answer = inner.answer.lock().unwrap().clone();
    inner.requests.lock().unwrap().push(Recorded {
        method: parts.method,
        path,
        headers: parts.headers,
        body,
        at: Instant::now(),
    });
    inner.arrived.notify_waiters();
    let status = StatusCode::from_u16(answer.status).unwrap();
    let mut response = (status, answer.body).into_response();
    if let Some(value) = answer.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_str(&value).unwrap());
    }
    response
}
