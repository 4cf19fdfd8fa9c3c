//! The shipped rules on two authored corpora (examples/events): a healthy cluster's traffic,
//! on which they raise nothing of severity warning or higher, and one event (or burst) per
//! attack technique, each detected by the rule meant for it.
//!
//! In attacks.jsonl an event's auditID says what must happen: `attack-RULE-…` must raise an
//! alert of RULE; `prelude-RULE-…` events build up to the next `attack-RULE-…` (a burst) and
//! are only evaluated.

use std::path::PathBuf;
use std::sync::Arc;

use klaxon::audit::decode;
use klaxon::clock::parse_time_ms;
use klaxon::rules::{Alert, Ruleset, ScriptLimits, Severity};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn shipped_rules() -> Ruleset {
    Ruleset::load(&[repo("scripts")], &ScriptLimits::default(), "test")
        .unwrap_or_else(|e| panic!("scripts/ does not load:\n{e}"))
}

/// Every event of `file` in order, each with the alerts the shipped rules raise on it.
fn run(file: &str) -> Vec<(String, Vec<Alert>)> {
    let bytes = std::fs::read(repo(file)).unwrap();
    let decoded = decode(&bytes);
    assert!(decoded.errors.is_empty(), "{file}: {:?}", decoded.errors);
    let rules = shipped_rules();
    decoded
        .events
        .into_iter()
        .map(|event| {
            let id = event.audit_id.clone();
            let now = parse_time_ms(event.time()).unwrap();
            let evaluation = rules.evaluate_at(Arc::new(event), now);
            assert!(
                evaluation.errors.is_empty(),
                "{id}: {:?}",
                evaluation.errors
            );
            (id, evaluation.alerts)
        })
        .collect()
}

#[test]
fn a_normal_cluster_raises_nothing_of_warning_or_more() {
    let results = run("examples/events/normal-cluster.jsonl");
    assert!(
        results.len() >= 40,
        "a sample worth the name: {}",
        results.len()
    );
    let loud: Vec<String> = results
        .iter()
        .flat_map(|(id, alerts)| {
            alerts
                .iter()
                .filter(|a| a.severity >= Severity::Warning)
                .map(move |a| format!("{id}: {} [{:?}] {}", a.rule, a.severity, a.title))
        })
        .collect();
    assert!(
        loud.is_empty(),
        "alerts of warning or more on normal traffic:\n{}",
        loud.join("\n")
    );
}

#[test]
fn every_attack_is_detected_by_the_rule_meant_for_it() {
    let results = run("examples/events/attacks.jsonl");
    let rules = shipped_rules();
    let names: Vec<&str> = rules.rules().iter().map(|r| r.name()).collect();
    let mut covered = std::collections::BTreeSet::new();
    for (id, alerts) in &results {
        if id.starts_with("prelude-") {
            continue;
        }
        let rule = id
            .strip_prefix("attack-")
            .and_then(|rest| {
                names
                    .iter()
                    .copied()
                    .filter(|n| rest.starts_with(&format!("{n}-")))
                    .max_by_key(|n| n.len())
            })
            .unwrap_or_else(|| panic!("{id}: not attack-RULE-… of a shipped rule"));
        covered.insert(rule);
        assert!(
            alerts.iter().any(|a| a.rule == rule),
            "{id}: {rule} did not fire; raised: {:?}",
            alerts.iter().map(|a| &a.rule).collect::<Vec<_>>()
        );
    }
    // Every rule that reports an attack has one in the corpus (pod_created only informs).
    let missing: Vec<&&str> = names
        .iter()
        .filter(|n| **n != "pod_created" && !covered.contains(**n))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without an attack in attacks.jsonl: {missing:?}"
    );
}
