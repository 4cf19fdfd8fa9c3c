//! `klaxon bench-rules`: offline evaluation throughput of a script set on audit files, on
//! one core, with a per-rule cost table, so a user sees which script is expensive before
//! deploying it. The load generator's realistic mix is a file written by `klaxon-bench mix`
//! (crates/klaxon-bench), not part of the daemon.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::dry_run::read_input;
use crate::audit::{self, Event};
use crate::clock::parse_time_ms;
use crate::config::Config;
use crate::rules::Ruleset;

/// Arguments of `bench-rules`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Audit files to evaluate (EventList, Event, JSON array or JSON lines); `-` reads
    /// stdin. For the load generator's realistic mix (85% controller reads, 15% writes from
    /// Falco's traces): `klaxon-bench mix --events 20000 > mix.jsonl`.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Evaluate the events over and over for at least this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Rows of the per-rule table (the most expensive first); 0 prints every rule.
    #[arg(long, default_value_t = 20)]
    top: usize,
}

/// The answer to `bench-rules` without files.
const NO_FILES: &str = "bench-rules needs audit files to evaluate (`-` reads stdin); \
    for the load generator's mix, write one with `klaxon-bench mix --events 20000 > mix.jsonl` \
    (in the repository: `cargo run --release -p klaxon-bench -- mix …`) \
    and run `klaxon bench-rules mix.jsonl`";

/// One rule's totals over the run.
#[derive(Clone, Default)]
struct RuleCost {
    runs: u64,
    nanos: u64,
    alerts: u64,
}

/// The events and the bodies they were decoded from (to time decoding too).
struct Corpus {
    bodies: Vec<Vec<u8>>,
    events: Vec<(Arc<Event>, i64)>,
}

/// Runs the benchmark and prints its report.
pub fn run(config: &Config, args: &Args) -> anyhow::Result<ExitCode> {
    if args.files.is_empty() {
        bail!("{NO_FILES}");
    }
    let rules = super::load_rules(config)?;
    let corpus = corpus(args)?;
    if corpus.events.is_empty() {
        bail!("no events to evaluate");
    }
    let decode_nanos = time_decoding(&corpus.bodies);
    let (rounds, elapsed, costs) = evaluate(&rules, &corpus.events, args.duration);
    let evaluated = rounds * corpus.events.len() as u64;
    let per_event = elapsed.as_nanos() as f64 / evaluated as f64;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} rules on {} events × {rounds} rounds in {:.2} s: {:.0} events/s, {:.2} µs/event \
         (decoding alone: {:.2} µs/event, {:.0} events/s)",
        rules.rules().len(),
        corpus.events.len(),
        elapsed.as_secs_f64(),
        1e9 / per_event,
        per_event / 1e3,
        decode_nanos / 1e3,
        1e9 / decode_nanos,
    )?;
    print_table(&mut out, &rules, &costs, evaluated, args.top)?;
    Ok(ExitCode::SUCCESS)
}

fn corpus(args: &Args) -> anyhow::Result<Corpus> {
    let bodies: Vec<Vec<u8>> = args
        .files
        .iter()
        .map(|f| read_input(f))
        .collect::<anyhow::Result<_>>()?;
    let mut events = Vec::new();
    for (file, body) in args.files.iter().zip(&bodies) {
        let decoded = audit::decode(body);
        if let Some(err) = decoded.errors.first() {
            let name = file.display();
            eprintln!("{name}: skipped {} malformed: {err}", decoded.errors.len());
        }
        events.extend(decoded.events.into_iter().map(|e| {
            let now = parse_time_ms(e.time()).unwrap_or(0);
            (Arc::new(e), now)
        }));
    }
    Ok(Corpus { bodies, events })
}

/// Nanoseconds per event to decode the bodies (best of three passes).
fn time_decoding(bodies: &[Vec<u8>]) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let events: usize = bodies
                .iter()
                .map(|b| std::hint::black_box(audit::decode(b)).events.len())
                .sum();
            started.elapsed().as_nanos() as f64 / events.max(1) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Evaluates every event, round after round, until `duration` has passed.
fn evaluate(
    rules: &Ruleset,
    events: &[(Arc<Event>, i64)],
    duration: Duration,
) -> (u64, Duration, Vec<RuleCost>) {
    let mut costs = vec![RuleCost::default(); rules.rules().len()];
    let position: std::collections::HashMap<&str, usize> = rules
        .rules()
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name(), i))
        .collect();
    let started = Instant::now();
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < duration {
        for (event, now) in events {
            let evaluation = rules.evaluate_at(event.clone(), *now);
            for run in &evaluation.runs {
                let cost = &mut costs[run.rule];
                cost.runs += 1;
                cost.nanos += run.nanos;
            }
            for alert in &evaluation.alerts {
                if let Some(i) = position.get(alert.rule.as_str()) {
                    costs[*i].alerts += 1;
                }
            }
        }
        rounds += 1;
    }
    (rounds, started.elapsed(), costs)
}

fn print_table(
    out: &mut impl std::io::Write,
    rules: &Ruleset,
    costs: &[RuleCost],
    evaluated: u64,
    top: usize,
) -> std::io::Result<()> {
    let total: u64 = costs.iter().map(|c| c.nanos).sum::<u64>().max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(costs[*i].nanos));
    let shown = if top == 0 {
        order.len()
    } else {
        top.min(order.len())
    };
    let width = rules
        .rules()
        .iter()
        .map(|r| r.name().len())
        .max()
        .unwrap_or(4);
    writeln!(
        out,
        "{:<width$}  {:>9}  {:>8}  {:>10}  {:>11}  {:>7}  {:>9}",
        "rule", "ran on", "indexed", "µs per run", "µs / event", "share", "alerts"
    )?;
    for i in order.into_iter().take(shown) {
        let c = &costs[i];
        let rule = &rules.rules()[i];
        writeln!(
            out,
            "{:<width$}  {:>8.1}%  {:>8}  {:>10.2}  {:>11.3}  {:>6.1}%  {:>9}",
            rule.name(),
            100.0 * c.runs as f64 / evaluated.max(1) as f64,
            if rule.filters().is_some() {
                "yes"
            } else {
                "no"
            },
            c.nanos as f64 / 1e3 / c.runs.max(1) as f64,
            c.nanos as f64 / 1e3 / evaluated.max(1) as f64,
            100.0 * c.nanos as f64 / total as f64,
            c.alerts,
        )?;
    }
    if shown < costs.len() {
        writeln!(
            out,
            "({} more rules; --top 0 shows all)",
            costs.len() - shown
        )?;
    }
    Ok(())
}
