//! Decode and evaluation cost per event on a realistic mix: about 85% Metadata-level
//! reads by controllers and kubelets, 15% writes with request and response bodies.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use klaxon::audit::{self, Event};
use klaxon::rules::{Ruleset, ScriptLimits, ScriptSource};
use serde_json::{Value, json};

const BATCH: usize = 400;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A 400-event EventList body as the apiserver sends it.
fn batch_body() -> Vec<u8> {
    let reads = json_lines(&repo("examples/events/controller-noise.jsonl"));
    let mut writes = Vec::new();
    for entry in std::fs::read_dir(repo("tests/fixtures/falco")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("create_") && name.ends_with(".json") {
            writes.extend(json_lines(&path));
        }
    }
    writes.extend(json_lines(&repo("examples/events/pod-created.jsonl")));
    let items: Vec<Value> = (0..BATCH)
        .map(|i| {
            let mut event = if i % 7 == 0 {
                writes[i % writes.len()].clone()
            } else {
                reads[i % reads.len()].clone()
            };
            let map = event.as_object_mut().unwrap();
            map.remove("kind");
            map.remove("apiVersion");
            map.insert("auditID".into(), json!(format!("bench-{i}")));
            event
        })
        .collect();
    serde_json::to_vec(
        &json!({"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":items}),
    )
    .unwrap()
}

fn shipped_rules(copies: usize) -> Ruleset {
    let text = std::fs::read_to_string(repo("scripts/pod_created.rhai")).unwrap();
    let sources = (0..copies)
        .map(|i| ScriptSource {
            name: format!("pod_created_{i}"),
            path: PathBuf::from(format!("pod_created_{i}.rhai")),
            text: text.clone(),
        })
        .collect();
    Ruleset::compile(sources, &ScriptLimits::default(), "bench").unwrap()
}

/// Every script of the given directories, with their `lib/` modules.
fn rule_dirs(dirs: &[&str]) -> Ruleset {
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| repo(d)).collect();
    Ruleset::load(&dirs, &ScriptLimits::default(), "bench").unwrap()
}

fn bench(c: &mut Criterion) {
    let body = batch_body();
    let events: Vec<Arc<Event>> = audit::decode(&body)
        .events
        .into_iter()
        .map(Arc::new)
        .collect();
    assert_eq!(events.len(), BATCH);

    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode", |b| b.iter(|| audit::decode(black_box(&body))));
    for copies in [1, 50] {
        let rules = shipped_rules(copies);
        group.bench_function(format!("evaluate_{copies}_scripts"), |b| {
            b.iter(|| {
                for event in &events {
                    black_box(rules.evaluate(event.clone()));
                }
            })
        });
    }
    for (name, dirs) in [
        ("evaluate_shipped_set", &["scripts"][..]),
        ("evaluate_falco_pack", &["examples/rules/falco"][..]),
        (
            "evaluate_shipped_and_falco",
            &["scripts", "examples/rules/falco"][..],
        ),
    ] {
        let rules = rule_dirs(dirs);
        group.bench_function(name, |b| {
            b.iter(|| {
                for event in &events {
                    black_box(rules.evaluate(event.clone()));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
