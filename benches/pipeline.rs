//! Pipeline overhead per alert (silence, dedup, budget, routing) and the cost of the
//! outbox's durable write (one fsync per batch) for batches of 1 and 50 deliveries, and
//! of 50 deliveries with the history of 150 alerts (the 50 admitted, 100 deduplicated)
//! written in the same transaction.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use klaxon::notify::{ConsoleFormat, Target, Targets};
use klaxon::outbox::{Delivery, Outbox, Processed, Raised};
use klaxon::pipeline::{Pipeline, PipelineSettings, RulePolicy};
use klaxon::rules::{Alert, AlertContext};

fn alert(i: u64) -> Alert {
    Alert {
        text: "alice created it via kubectl".to_owned(),
        fields: [("namespace".to_owned(), "payments".to_owned())].into(),
        context: AlertContext {
            cluster: "prod".to_owned(),
            event_time: "2026-11-20T10:15:02.131902Z".to_owned(),
            audit_id: format!("b61e6ba5-3682-4dd6-b804-{i:012}"),
            namespace: "payments".to_owned(),
            user: "alice".to_owned(),
            verb: "create".to_owned(),
            object: format!("pods payments/web-{i}"),
            ..AlertContext::default()
        },
        ..Alert::new("pod_created", &format!("Pod created: payments/web-{i}"))
    }
}

fn bench(c: &mut Criterion) {
    let targets = Arc::new(Targets {
        by_name: [("slack".to_owned(), Target::Console(ConsoleFormat::Json))].into(),
        pacing: BTreeMap::new(),
    });
    let settings = PipelineSettings {
        default_targets: vec!["slack".to_owned()],
        rule_defaults: RulePolicy {
            budget: u32::MAX,
            ..RulePolicy::default()
        },
        ..PipelineSettings::default()
    };
    let pipeline = Pipeline::new(settings, targets);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    let mut now = 1_700_000_000_000i64;
    group.bench_function("admit_one_alert", |b| {
        b.iter(|| {
            i += 1;
            now += 1;
            black_box(pipeline.admit(vec![alert(i)], now))
        })
    });
    group.finish();

    let dir = tempfile::TempDir::new().unwrap();
    let outbox = Outbox::open(dir.path()).unwrap();
    let mut group = c.benchmark_group("outbox");
    for n in [1u64, 50] {
        let deliveries: Vec<Delivery> = (0..n)
            .map(|i| Delivery {
                target: "slack".to_owned(),
                alert: alert(i),
            })
            .collect();
        group.throughput(Throughput::Elements(n));
        group.bench_function(format!("enqueue_batch_of_{n}"), |b| {
            b.iter(|| black_box(outbox.enqueue(&deliveries, 0).unwrap()))
        });
    }
    let deliveries: Vec<Delivery> = (0..50)
        .map(|i| Delivery {
            target: "slack".to_owned(),
            alert: alert(i),
        })
        .collect();
    let raised: Vec<Raised> = (0..150)
        .map(|i| Raised {
            seq: 0,
            raised_at_ms: 0,
            alert: alert(i % 50),
            outcome: if i < 50 { "admitted" } else { "deduplicated" }.to_owned(),
            silenced_by: None,
            duplicates: i / 50,
            targets: vec!["slack".to_owned()],
            count: 1,
        })
        .collect();
    group.throughput(Throughput::Elements(50));
    group.bench_function("enqueue_batch_of_50_with_history_of_150", |b| {
        b.iter_batched(
            || raised.clone(),
            |raised| {
                let stored = outbox.enqueue_batch(&deliveries, &Processed::default(), raised, 0);
                black_box(stored.unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
