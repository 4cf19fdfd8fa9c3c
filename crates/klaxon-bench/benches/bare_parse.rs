//! The bare-parse reference server: an axum handler on POST /audit that parses the body
//! into klaxon's own `EventList`, checks one condition per event (verb `create`) and
//! answers 200 — no scripts, no pipeline, no outbox. What klaxon's ingest costs beyond
//! this is the cost of its scripts, dedup and durable outbox.
//!
//! - `cargo bench --bench bare_parse -- --serve 127.0.0.1:9100` serves until killed, on one
//!   thread, for `klaxon-bench ingest --url http://127.0.0.1:9100/audit` (pin the two to
//!   different cores with `taskset -c 0` / `taskset -c 1`).
//! - `cargo bench --bench bare_parse` serves itself on a loopback port (one thread) and
//!   drives it with the load generator (its writes from the repository's
//!   tests/fixtures/falco) for 3 s, closed loop, from another thread, then prints the
//!   summary line.
//! - Without `--bench` (as `cargo test --benches` runs it) it sends a few batches only, as
//!   a check that the bench works.
//!
//! Other arguments (cargo passes `--bench`) are ignored.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::post;
use klaxon::audit::EventList;
use klaxon_bench::loadgen::{
    self, ClientOptions, Generator, Load, Stop, Target, Traces, default_traces_dir,
};

/// The self-contained measurement's length.
const MEASURE: Duration = Duration::from_secs(3);
/// Closed-loop senders in the self-contained measurement.
const CONCURRENCY: usize = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match serve_address(&args) {
        Some(addr) => serve_until_killed(&addr),
        None => measure(stop_for(&args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bare_parse: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `--serve ADDR` or `--serve=ADDR`.
fn serve_address(args: &[String]) -> Option<String> {
    args.iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.as_str() {
            "--serve" => args.get(i + 1).cloned(),
            _ => arg.strip_prefix("--serve=").map(str::to_owned),
        })
}

/// 3 s under `cargo bench` (which passes `--bench`), a few batches otherwise.
fn stop_for(args: &[String]) -> Stop {
    if args.iter().any(|a| a == "--bench") {
        Stop::Duration(MEASURE)
    } else {
        Stop::Batches(4)
    }
}

/// Parses the batch into klaxon's types and counts its creates.
async fn audit(body: Bytes) -> (StatusCode, String) {
    match serde_json::from_slice::<EventList>(&body) {
        Ok(list) => {
            let items = list.items.unwrap_or_default();
            let creates = items.iter().filter(|e| e.verb == "create").count();
            let reply = format!(r#"{{"accepted":{},"creates":{}}}"#, items.len(), creates);
            (StatusCode::OK, black_box(reply))
        }
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()),
    }
}

fn app() -> Router {
    Router::new()
        .route("/audit", post(audit))
        .layer(DefaultBodyLimit::max(64 << 20))
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn serve_until_killed(addr: &str) -> Result<ExitCode, Box<dyn std::error::Error>> {
    current_thread()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "bare_parse listening on http://{}/audit",
            listener.local_addr()?
        );
        axum::serve(listener, app()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Serves on a loopback port from a thread of its own and loads it from this one.
fn measure(stop: Stop) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/audit", listener.local_addr()?);
    std::thread::spawn(move || {
        let served = current_thread().and_then(|runtime| {
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app()).await
            })
        });
        if let Err(err) = served {
            eprintln!("bare_parse server: {err}");
        }
    });
    let target = Target::new(&ClientOptions::new(url.parse()?))?;
    let traces = Traces::load(&default_traces_dir())?;
    let generator = Arc::new(Generator::new(&traces, 1, 400)?);
    let load = Load::Closed {
        concurrency: CONCURRENCY,
        stop,
    };
    let report = current_thread()?.block_on(loadgen::run(&target, generator, load))?;
    println!("bare_parse, closed loop, concurrency {CONCURRENCY}: {report}");
    if report.failures > 0 || !report.any_accepted() {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
