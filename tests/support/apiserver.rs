//! A sender that behaves like the kube-apiserver's audit webhook backend (k8s.io/apiserver
//! plugin/pkg/audit/buffered + webhook), for the reliability tests:
//!
//! - events are cut into batches of at most `max_batch_size` (400), each sent by its own
//!   task, throttled to `throttle_qps` batches/s with a burst of `throttle_burst` (10, 15);
//! - an attempt is one POST of `{"kind":"EventList","apiVersion":"audit.k8s.io/v1",…}` with
//!   a 30 s timeout; 200–206 is success;
//! - within an attempt, client-go retries a 429 or 5xx that carries an integer
//!   `Retry-After`, up to 10 times, after waiting that many seconds;
//! - every failed attempt (any other status, connection refused, timeout) is retried: 5
//!   attempts, with waits of 10, 15, 22.5 and 33.75 s, each up to +20 % jitter; then the
//!   batch is dropped for good ("Error in audit plugin 'webhook' affecting N audit
//!   events").
//!
//! Every wait and timeout is multiplied by `scale`, so a test covers the apiserver's ~90 s
//! of retries in a few seconds; the counts and the order of events are the apiserver's.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// The apiserver's defaults, with its waits scaled.
#[derive(Debug, Clone)]
pub struct ApiserverSettings {
    /// Events per batch at most (`--audit-webhook-batch-max-size`, 400).
    pub max_batch_size: usize,
    /// Batches per second (`--audit-webhook-batch-throttle-qps`, 10).
    pub throttle_qps: f64,
    /// Burst of batches (`--audit-webhook-batch-throttle-burst`, 15).
    pub throttle_burst: usize,
    /// Attempts per batch (the audit plugin's backoff: 5 steps).
    pub attempts: u32,
    /// First wait between attempts (10 s), multiplied by `factor` each time (1.5).
    pub initial_backoff: Duration,
    /// Growth of the wait between attempts.
    pub factor: f64,
    /// Each wait is lengthened by up to this share, at random (0.2).
    pub jitter: f64,
    /// One attempt's timeout (the webhook client's 30 s).
    pub attempt_timeout: Duration,
    /// client-go's retries of a 429/5xx with `Retry-After`, within one attempt (10).
    pub retry_after_retries: u32,
    /// Every wait and timeout is multiplied by this.
    pub scale: f64,
}

impl Default for ApiserverSettings {
    fn default() -> Self {
        Self {
            max_batch_size: 400,
            throttle_qps: 10.0,
            throttle_burst: 15,
            attempts: 5,
            initial_backoff: Duration::from_secs(10),
            factor: 1.5,
            jitter: 0.2,
            attempt_timeout: Duration::from_secs(30),
            retry_after_retries: 10,
            scale: 1.0,
        }
    }
}

impl ApiserverSettings {
    /// The defaults with every wait and timeout multiplied by `scale`.
    pub fn scaled(scale: f64) -> Self {
        Self {
            scale,
            ..Self::default()
        }
    }

    /// The wait before attempt `attempt + 1` (after `attempt` failures), jitter included.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64() * self.factor.powi(attempt as i32 - 1);
        let jittered = base * (1.0 + self.jitter * rand::random::<f64>());
        Duration::from_secs_f64(jittered * self.scale)
    }

    fn attempt_timeout(&self) -> Duration {
        self.attempt_timeout.mul_f64(self.scale)
    }

    /// The longest a batch can take from its first attempt to being dropped.
    pub fn retry_span(&self) -> Duration {
        let waits: f64 = (1..self.attempts)
            .map(|a| self.initial_backoff.as_secs_f64() * self.factor.powi(a as i32 - 1))
            .sum();
        Duration::from_secs_f64(waits * (1.0 + self.jitter) * self.scale)
    }
}

/// What happened to the batches sent.
#[derive(Debug, Default, Clone)]
pub struct SendReport {
    /// Batches sent (each counted once, however many attempts it took).
    pub batches: usize,
    /// Batches that got a 2xx in the end.
    pub delivered_batches: usize,
    /// Batches dropped after the last failed attempt.
    pub dropped_batches: usize,
    /// Events in the dropped batches (the apiserver's "affecting N audit events").
    pub dropped_events: usize,
    /// Attempts in all (first tries included).
    pub attempts: usize,
    /// Requests in all, client-go's `Retry-After` retries included.
    pub requests: usize,
    /// The status of every answer, in the order received (0 for no answer).
    pub statuses: Vec<u16>,
    /// Every answer's `Retry-After` header on a 429 or 503 (None when missing).
    pub retry_after: Vec<Option<String>>,
    /// Bodies of the successful answers (klaxon's `BatchReply`).
    pub replies: Vec<Value>,
}

/// The apiserver's webhook backend, posting to one URL.
#[derive(Clone)]
pub struct ApiserverSender {
    client: reqwest::Client,
    url: String,
    settings: ApiserverSettings,
    report: Arc<Mutex<SendReport>>,
}

impl ApiserverSender {
    /// A sender posting to `url` with a plain client.
    pub fn new(url: impl Into<String>, settings: ApiserverSettings) -> Self {
        Self::with_client(reqwest::Client::new(), url, settings)
    }

    /// A sender with its own client (TLS, credentials).
    pub fn with_client(
        client: reqwest::Client,
        url: impl Into<String>,
        settings: ApiserverSettings,
    ) -> Self {
        Self {
            client,
            url: url.into(),
            settings,
            report: Arc::default(),
        }
    }

    /// What happened so far.
    pub fn report(&self) -> SendReport {
        self.report.lock().unwrap().clone()
    }

    /// Sends `events` as the buffered backend does: cut into batches, each in its own task
    /// behind the throttle, each retried until delivered or dropped; returns when every
    /// batch is delivered or dropped.
    pub async fn send(&self, events: Vec<Value>) -> SendReport {
        let throttle = Throttle::new(self.settings.throttle_qps, self.settings.throttle_burst);
        let mut tasks = tokio::task::JoinSet::new();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let batch: Vec<Value> = events.by_ref().take(self.settings.max_batch_size).collect();
            throttle.wait(self.settings.scale).await;
            let sender = self.clone();
            tasks.spawn(async move { sender.send_batch(batch).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a batch task panicked");
        }
        self.report()
    }

    /// One batch: up to `attempts` attempts with the backoff between them.
    pub async fn send_batch(&self, batch: Vec<Value>) {
        let body = json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "metadata": {},
            "items": batch,
        })
        .to_string();
        self.report.lock().unwrap().batches += 1;
        for attempt in 1..=self.settings.attempts {
            if self.attempt(&body).await {
                self.report.lock().unwrap().delivered_batches += 1;
                return;
            }
            if attempt < self.settings.attempts {
                tokio::time::sleep(self.settings.backoff(attempt)).await;
            }
        }
        let mut report = self.report.lock().unwrap();
        report.dropped_batches += 1;
        report.dropped_events += batch.len();
    }

    /// One attempt: a POST, repeated on a 429/5xx with an integer `Retry-After` (client-go);
    /// true on 200–206.
    async fn attempt(&self, body: &str) -> bool {
        self.report.lock().unwrap().attempts += 1;
        let deadline = tokio::time::Instant::now() + self.settings.attempt_timeout();
        for _ in 0..=self.settings.retry_after_retries {
            let sent = tokio::time::timeout_at(deadline, self.post(body)).await;
            let Ok(Ok(answer)) = sent else {
                self.record(0, None, None);
                return false;
            };
            let status = answer.status().as_u16();
            let retry_after = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if (200..=206).contains(&status) {
                let reply = answer.json::<Value>().await.unwrap_or(Value::Null);
                self.record(status, None, Some(reply));
                return true;
            }
            self.record(status, retry_after.clone(), None);
            let wait = retry_after.and_then(|v| v.parse::<u64>().ok());
            match wait {
                Some(secs) if status == 429 || status >= 500 => {
                    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
                    if until >= deadline {
                        return false;
                    }
                    tokio::time::sleep_until(until).await;
                }
                _ => return false,
            }
        }
        false
    }

    async fn post(&self, body: &str) -> reqwest::Result<reqwest::Response> {
        self.report.lock().unwrap().requests += 1;
        self.client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned())
            .send()
            .await
    }

    fn record(&self, status: u16, retry_after: Option<String>, reply: Option<Value>) {
        let mut report = self.report.lock().unwrap();
        report.statuses.push(status);
        if status == 429 || status == 503 {
            report.retry_after.push(retry_after);
        }
        if let Some(reply) = reply {
            report.replies.push(reply);
        }
    }
}

/// A token bucket of batches (client-go's flowcontrol rate limiter).
struct Throttle {
    permits: Arc<Semaphore>,
    interval: Duration,
    refill: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Throttle {
    fn new(qps: f64, burst: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(burst)),
            interval: Duration::from_secs_f64(1.0 / qps),
            refill: Mutex::new(None),
        }
    }

    /// Takes a token; the first call starts the refill, one token per interval (scaled),
    /// up to the burst.
    async fn wait(&self, scale: f64) {
        {
            let mut refill = self.refill.lock().unwrap();
            if refill.is_none() {
                let permits = self.permits.clone();
                let burst = permits.available_permits();
                let interval = self.interval.mul_f64(scale).max(Duration::from_millis(1));
                *refill = Some(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(interval);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        if permits.available_permits() < burst {
                            permits.add_permits(1);
                        }
                    }
                }));
            }
        }
        self.permits
            .acquire()
            .await
            .expect("the throttle is never closed")
            .forget();
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        if let Some(refill) = self.refill.lock().unwrap().take() {
            refill.abort();
        }
    }
}
