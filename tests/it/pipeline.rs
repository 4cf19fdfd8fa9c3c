//! The pipeline's decisions on the event clock, with exact counts: dedup windows and the
//! suppressed count, silences, per-rule budgets and their digests, routing, and the
//! replay's grouping and pacing of notices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use klaxon::notify::{ConsoleFormat, Pacing, Rate, Target, Targets};
use klaxon::pipeline::{
    Matcher, Outcome, Pipeline, PipelineSettings, Replay, Route, RulePolicy, Silence,
};
use klaxon::rules::{Alert, Severity};

const MINUTE: i64 = 60_000;
const T0: i64 = 1_700_000_000_000;

fn alert(rule: &str, title: &str, namespace: &str) -> Alert {
    let mut alert = Alert::new(rule, title);
    alert.context.namespace = namespace.to_owned();
    alert
}

fn targets(names: &[&str]) -> Arc<Targets> {
    Arc::new(Targets {
        by_name: names
            .iter()
            .map(|n| (n.to_string(), Target::Console(ConsoleFormat::Json)))
            .collect(),
        pacing: BTreeMap::new(),
    })
}

/// Everything to `console`, every rule's budget `budget` alerts a minute.
fn budget_per_minute(budget: u32) -> PipelineSettings {
    let mut s = settings(&["console"]);
    s.rule_defaults = RulePolicy {
        budget,
        budget_window: Duration::from_secs(60),
        ..RulePolicy::default()
    };
    s
}

/// One target `name` with this group window and rate (per second, burst).
fn paced(name: &str, group_wait: Duration, rate: Option<(f64, u32)>) -> Arc<Targets> {
    let pacing = Pacing {
        group_wait,
        rate: rate.map(|(per_second, burst)| Rate { per_second, burst }),
    };
    Arc::new(Targets {
        by_name: [(name.to_owned(), Target::Console(ConsoleFormat::Json))].into(),
        pacing: [(name.to_owned(), pacing)].into(),
    })
}

fn settings(defaults: &[&str]) -> PipelineSettings {
    PipelineSettings {
        default_targets: defaults.iter().map(|s| s.to_string()).collect(),
        ..PipelineSettings::default()
    }
}

fn outcomes(pipeline: &Pipeline, alerts: Vec<Alert>, now: i64) -> Vec<Outcome> {
    pipeline
        .admit(alerts, now)
        .outcomes
        .into_iter()
        .map(|(_, o)| o)
        .collect()
}

#[test]
fn duplicates_within_the_window_are_counted_and_reported_on_the_next_notice() {
    let pipeline = Pipeline::new(settings(&["console"]), targets(&["console"]));
    let first = pipeline.admit(vec![alert("exec", "alice exec'd", "ns")], T0);
    assert_eq!(first.outcomes[0].1, Outcome::Admitted);
    assert_eq!(first.deliveries.len(), 1);
    assert_eq!(first.deliveries[0].alert.dedup_key, "alice exec'd");
    assert_eq!(first.deliveries[0].alert.group_key, "exec/ns");
    for i in 1..=4 {
        let got = outcomes(
            &pipeline,
            vec![alert("exec", "alice exec'd", "ns")],
            T0 + i * MINUTE,
        );
        assert_eq!(got, [Outcome::Deduplicated]);
    }
    // Another title is another incident; another rule with the same title too.
    let other = outcomes(
        &pipeline,
        vec![
            alert("exec", "bob exec'd", "ns"),
            alert("attach", "alice exec'd", "ns"),
        ],
        T0 + 5 * MINUTE,
    );
    assert_eq!(other, [Outcome::Admitted, Outcome::Admitted]);
    // Past the default 10-minute window: admitted, carrying the 4 suppressed.
    let later = pipeline.admit(vec![alert("exec", "alice exec'd", "ns")], T0 + 10 * MINUTE);
    assert_eq!(later.outcomes[0].1, Outcome::Admitted);
    assert_eq!(later.deliveries[0].alert.suppressed, 4);
    let again = pipeline.admit(vec![alert("exec", "alice exec'd", "ns")], T0 + 21 * MINUTE);
    assert_eq!(again.deliveries[0].alert.suppressed, 0);
}

#[test]
fn an_explicit_dedup_key_and_a_per_rule_window_apply() {
    let mut s = settings(&["console"]);
    s.rule_policies.insert(
        "exec".to_owned(),
        RulePolicy {
            dedup_window: Duration::from_secs(60),
            ..RulePolicy::default()
        },
    );
    let pipeline = Pipeline::new(s, targets(&["console"]));
    let keyed = |title: &str| {
        let mut a = alert("exec", title, "ns");
        a.dedup_key = "ns/alice".to_owned();
        a
    };
    assert_eq!(
        outcomes(&pipeline, vec![keyed("one")], T0),
        [Outcome::Admitted]
    );
    assert_eq!(
        outcomes(&pipeline, vec![keyed("two")], T0 + 59_999),
        [Outcome::Deduplicated]
    );
    assert_eq!(
        outcomes(&pipeline, vec![keyed("three")], T0 + 60_000),
        [Outcome::Admitted]
    );
}

#[test]
fn silences_hold_until_they_end() {
    let mut s = settings(&["console"]);
    s.silences.push(Silence {
        matcher: Matcher {
            rules: vec!["pod_*".to_owned()],
            labels: [("team".to_owned(), "pay*".to_owned())].into(),
            ..Matcher::default()
        },
        ends_at_ms: T0 + MINUTE,
        comment: "migration".to_owned(),
    });
    let pipeline = Pipeline::new(s, targets(&["console"]));
    let labelled = |title: &str, team: &str| {
        let mut a = alert("pod_created", title, "ns");
        a.labels.insert("team".to_owned(), team.to_owned());
        a
    };
    let got = outcomes(
        &pipeline,
        vec![
            labelled("a", "payments"),
            labelled("b", "search"),
            alert("exec", "c", "ns"),
        ],
        T0,
    );
    assert_eq!(
        got,
        [Outcome::Silenced, Outcome::Admitted, Outcome::Admitted]
    );
    assert_eq!(
        outcomes(&pipeline, vec![labelled("d", "payments")], T0 + MINUTE),
        [Outcome::Admitted]
    );
}

#[test]
fn a_flood_over_budget_becomes_one_digest_at_the_end_of_the_window() {
    let pipeline = Pipeline::new(budget_per_minute(3), targets(&["console"]));
    let flood: Vec<Alert> = (0..10)
        .map(|i| alert("pod_created", &format!("pod {i}"), "ns"))
        .collect();
    let admission = pipeline.admit(flood, T0);
    let counts = admission
        .outcomes
        .iter()
        .fold(BTreeMap::new(), |mut m, (_, o)| {
            *m.entry(*o).or_insert(0) += 1;
            m
        });
    assert_eq!(counts[&Outcome::Admitted], 3);
    assert_eq!(counts[&Outcome::Folded], 7);
    assert!(pipeline.due_digests(T0 + 59_999).is_empty());
    let digests = pipeline.due_digests(T0 + 60_000);
    assert_eq!(digests.len(), 1);
    let digest = &digests[0].alert;
    assert_eq!(digest.title, "pod_created fired 7 more times");
    assert!(
        digest.text.contains("• pod 3\n• pod 4\n• pod 5"),
        "{}",
        digest.text
    );
    assert_eq!(digest.fields["folded"], "7");
    assert_eq!(digest.labels["klaxon_digest"], "budget");
    // The next window starts fresh, and nothing more is due.
    assert!(pipeline.due_digests(T0 + 10 * MINUTE).is_empty());
    assert_eq!(
        outcomes(
            &pipeline,
            vec![alert("pod_created", "pod 99", "ns")],
            T0 + 2 * MINUTE
        ),
        [Outcome::Admitted]
    );
}

#[test]
fn routes_match_in_order_and_fallbacks_are_followed() {
    let mut by_name: BTreeMap<String, Target> = ["console", "pager", "mail"]
        .iter()
        .map(|n| (n.to_string(), Target::Console(ConsoleFormat::Json)))
        .collect();
    by_name.insert(
        "slack".to_owned(),
        Target::Fallback {
            to: "console".to_owned(),
            reason: "unset".to_owned(),
            unconfigured: Box::new(Target::Console(ConsoleFormat::Json)),
        },
    );
    let targets = Arc::new(Targets {
        by_name,
        pacing: BTreeMap::new(),
    });
    let mut s = settings(&["slack"]);
    s.routes = vec![
        Route {
            rules: vec!["exec*".to_owned()],
            min_severity: Some(Severity::Warning),
            labels: BTreeMap::new(),
            targets: vec!["pager".to_owned()],
            continue_matching: true,
        },
        Route {
            rules: Vec::new(),
            min_severity: None,
            labels: [("team".to_owned(), "pay*".to_owned())].into(),
            targets: vec!["mail".to_owned()],
            continue_matching: false,
        },
        Route {
            rules: Vec::new(),
            min_severity: Some(Severity::Error),
            labels: BTreeMap::new(),
            targets: vec!["pager".to_owned()],
            continue_matching: false,
        },
    ];
    let pipeline = Pipeline::new(s, targets);
    let route = |a: Alert| -> Vec<String> {
        pipeline
            .admit(vec![a], T0)
            .deliveries
            .into_iter()
            .map(|d| d.target)
            .collect()
    };
    let mut warning_exec = alert("exec_into_pod", "w", "ns");
    warning_exec.severity = Severity::Warning;
    warning_exec
        .labels
        .insert("team".to_owned(), "payments".to_owned());
    assert_eq!(route(warning_exec), ["pager", "mail"]);
    assert_eq!(
        route(alert("exec_into_pod", "info exec", "ns")),
        ["console"]
    );
    let mut error = alert("secret_read", "e", "ns");
    error.severity = Severity::Error;
    assert_eq!(route(error), ["pager"]);
    let mut named = alert("pod_created", "named", "ns");
    named.targets = vec!["mail".to_owned(), "nope".to_owned()];
    assert_eq!(route(named), ["mail"]);
    let mut unknown_only = alert("pod_created", "unknown only", "ns");
    unknown_only.targets = vec!["nope".to_owned()];
    assert_eq!(route(unknown_only), ["console"]);
}

#[test]
fn replay_groups_alerts_within_group_wait_and_paces_notices() {
    let t = paced("slack", Duration::from_secs(10), Some((1.0, 3)));
    let mut replay = Replay::new(settings(&["slack"]), t, 100);
    // Four pods in ns a within 10 s: one notice; one pod in ns b: another.
    for i in 0..4 {
        replay.push(
            vec![alert("pod_created", &format!("a{i}"), "a")],
            T0 + i * 2_000,
        );
    }
    replay.push(vec![alert("pod_created", "b0", "b")], T0 + 1_000);
    assert!(replay.take_notices().is_empty());
    // At T0 + 15 s both groups have closed; a new alert in ns a opens a new group.
    replay.push(vec![alert("pod_created", "a4", "a")], T0 + 15_000);
    let closed = replay.take_notices();
    assert_eq!(closed.len(), 2);
    assert_eq!(closed[0].notice.alerts.len(), 4);
    assert_eq!(closed[0].notice.title(), "4 alerts: a0 (+3 more)");
    assert_eq!(closed[0].at_ms, T0 + 10_000);
    assert_eq!(closed[1].notice.alerts.len(), 1);
    // Twelve more groups closing at once: the bucket (burst 3, 1/s) holds most back.
    for i in 0..12 {
        replay.push(
            vec![alert("pod_created", &format!("x{i}"), &format!("ns{i}"))],
            T0 + 100_000,
        );
    }
    let (rest, report) = replay.finish();
    assert_eq!(rest.len(), 13);
    // Sorted by send time: a4 at +25 s, then 3 at once at +110 s and one per second after.
    let times: Vec<i64> = rest.iter().map(|n| (n.at_ms - T0) / 1000).collect();
    assert_eq!(
        times,
        [
            25, 110, 110, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119
        ]
    );
    let slack = report.targets["slack"];
    assert_eq!(slack.notices, 15);
    assert_eq!(slack.alerts, 18);
    assert_eq!(slack.paced, 9);
    assert_eq!(slack.max_pacing_ms, 9_000);
    let rule = report.rules["pod_created"];
    assert_eq!((rule.fired, rule.admitted, rule.folded), (18, 18, 0));
}

#[test]
fn replay_stores_a_budget_digest_when_its_window_ends_not_at_the_next_event() {
    let console = paced("console", Duration::from_secs(10), None);
    let mut replay = Replay::new(budget_per_minute(1), console, 100);
    let flood: Vec<Alert> = (0..4)
        .map(|i| alert("pod_created", &format!("pod {i}"), "ns"))
        .collect();
    replay.push(flood, T0);
    // The next event comes an hour later: the digest was stored when the window ended
    // (T0 + 60 s), as serve's ticker stores it, and went out after its group window.
    replay.push(vec![alert("other", "later", "ns")], T0 + 60 * MINUTE);
    let sent = replay.take_notices();
    let times: Vec<(i64, String)> = sent
        .iter()
        .map(|n| (n.at_ms - T0, n.notice.title()))
        .collect();
    assert_eq!(
        times,
        [
            (10_000, "pod 0".to_owned()),
            (70_000, "pod_created fired 3 more times".to_owned()),
        ]
    );
    let (rest, _) = replay.finish();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].at_ms, T0 + 60 * MINUTE + 10_000);
}

#[test]
fn replay_holds_a_paced_notice_until_its_time() {
    let t = paced("slack", Duration::ZERO, Some((1.0, 1)));
    let mut replay = Replay::new(settings(&["slack"]), t, 100);
    replay.push(vec![alert("r", "a", "a"), alert("r", "b", "b")], T0);
    // At T0 + 1 ms: a went at T0; b is composed but waits for its slot at T0 + 1 s.
    replay.push(Vec::new(), T0 + 1);
    let first = replay.take_notices();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].at_ms, first[0].notice.title()),
        (T0, "a".to_owned())
    );
    replay.push(Vec::new(), T0 + 1_000);
    let second = replay.take_notices();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].at_ms, T0 + 1_000);
    let (rest, report) = replay.finish();
    assert!(rest.is_empty());
    let slack = report.targets["slack"];
    assert_eq!(
        (slack.notices, slack.paced, slack.max_pacing_ms),
        (2, 1, 1_000)
    );
}

#[test]
fn dedup_memory_stays_bounded_under_a_flood_of_new_keys() {
    let pipeline = Pipeline::new(settings(&["console"]), targets(&["console"]));
    let mut t = T0;
    let n = klaxon::pipeline::MAX_DEDUP_KEYS + 5_000;
    for i in 0..n {
        t += 1;
        pipeline.admit(vec![alert("flood", &format!("k{i}"), "ns")], t);
    }
    assert!(pipeline.dedup_keys() <= klaxon::pipeline::MAX_DEDUP_KEYS);
    // The newest keys are still remembered: a repeat of the last one is a duplicate.
    let last = format!("k{}", n - 1);
    assert_eq!(
        outcomes(&pipeline, vec![alert("flood", &last, "ns")], t + 1),
        [Outcome::Deduplicated]
    );
}

/// Admits `alerts` in a transaction whose store fails, as when the outbox cannot be written.
fn failed_batch(pipeline: &Pipeline, alerts: Vec<Alert>, now: i64) -> usize {
    pipeline
        .transact(alerts, now, |admission| {
            Err::<(), usize>(admission.deliveries.len())
        })
        .unwrap_err()
}

#[test]
fn a_batch_that_fails_to_store_leaves_no_trace_and_its_retry_is_decided_the_same() {
    let mut s = settings(&["console"]);
    s.rule_defaults = RulePolicy {
        budget: 2,
        budget_window: Duration::from_secs(60),
        ..RulePolicy::default()
    };
    let pipeline = Pipeline::new(s, targets(&["console"]));
    assert_eq!(
        outcomes(&pipeline, vec![alert("exec", "seen before", "ns")], T0),
        [Outcome::Admitted]
    );
    let batch = || {
        vec![
            alert("exec", "seen before", "ns"),
            alert("exec", "new", "ns"),
            alert("exec", "new", "ns"),
            alert("exec", "over budget", "ns"),
        ]
    };
    // Would store one delivery ("new"); the store fails: nothing changes.
    assert_eq!(failed_batch(&pipeline, batch(), T0 + 1), 1);
    assert_eq!(failed_batch(&pipeline, batch(), T0 + 2), 1);
    // The retry is decided as the first attempt would have been.
    assert_eq!(
        outcomes(&pipeline, batch(), T0 + 3),
        [
            Outcome::Deduplicated,
            Outcome::Admitted,
            Outcome::Deduplicated,
            Outcome::Folded
        ]
    );
    // The failed attempts counted no suppressed duplicates: the next notice of "seen
    // before" reports the one of the stored batch only.
    let next = pipeline.admit(vec![alert("exec", "seen before", "ns")], T0 + 11 * MINUTE);
    let notice = next
        .deliveries
        .iter()
        .find(|d| d.alert.title == "seen before")
        .expect("admitted after its window");
    assert_eq!(notice.alert.suppressed, 1);
}

#[test]
fn a_budget_digest_whose_store_fails_stays_due() {
    let mut s = settings(&["console"]);
    s.rule_defaults = RulePolicy {
        budget: 1,
        budget_window: Duration::from_secs(60),
        ..RulePolicy::default()
    };
    let pipeline = Pipeline::new(s, targets(&["console"]));
    let flood: Vec<Alert> = (0..4)
        .map(|i| alert("flood", &format!("f{i}"), "ns"))
        .collect();
    pipeline.admit(flood, T0);
    let failed = pipeline.store_due_digests(T0 + MINUTE, |due| Err::<(), usize>(due.len()));
    assert_eq!(failed, Err(1));
    let stored = pipeline.store_due_digests(T0 + MINUTE + 1, |due| {
        Ok::<_, ()>(
            due.iter()
                .map(|d| d.alert.title.clone())
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(stored, Ok(vec!["flood fired 3 more times".to_owned()]));
    assert!(pipeline.due_digests(T0 + 2 * MINUTE).is_empty());
}
