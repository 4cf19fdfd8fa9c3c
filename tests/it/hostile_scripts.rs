//! Hostile and careless scripts against the sandbox of `klaxon::rules::Ruleset`, compiled
//! from strings with `Ruleset::compile` and run on a real event (the Falco trace
//! `create_nginx_pod_privileged.json`):
//!
//! - an infinite loop, a string doubled in a loop, unbounded recursion, a giant array, a
//!   giant map (built in bulk and key by key) and a script calling `alert()` 1,000 times are
//!   each stopped by a limit, with a `ScriptError` whose message names that limit
//!   (`scripts.limits.max_operations = …`, `max_call_levels = …`, `max_string_size` /
//!   `max_array_size` / `max_map_size`, `max_alerts_per_event`);
//! - a well-behaved script placed after all of them in the same ruleset still raises its
//!   alert on the same event, and the time all of them take together is printed and kept
//!   under a stated, generous bound;
//! - lowered limits are the ones enforced and named in the messages;
//! - the sandbox: `eval` is refused at load (and indirectly at run time), `import` fails
//!   for want of a module resolver, `print` and `debug` work without failing the script.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klaxon::audit::{Event, decode};
use klaxon::rules::{Evaluation, Ruleset, ScriptError, ScriptLimits, ScriptSource, Severity};

const PRIVILEGED_POD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/falco/create_nginx_pod_privileged.json"
);

/// The pod's name, known on create only from the response body.
const POD_NAME: &str = "nginx-deployment-5cdcc99dbf-rgw6z";

/// The well-behaved rule; always placed last so it runs after every hostile one.
const WELL_BEHAVED: (&str, &str) = (
    "privileged_pod",
    r#"
if event.verb == "create" && event.privileged() {
    alert(#{
        title: `Privileged pod ${event.object_name()} created`,
        severity: "critical",
        fields: #{ namespace: event.objectRef.namespace, user: event.user.username },
    });
}
"#,
);

/// A map of 2^14 = 16,384 distinct keys built in 14 bulk steps: each step appends a copy
/// of the JSON entries with every key given a new prefix, so it costs a few hundred
/// operations, not one per key; `parse_json` then builds the map in one call.
const GIANT_MAP_BULK: &str = r#"
let entries = `"@":0`;
for round in 0..14 {
    let renamed = entries;
    renamed.replace("\"@", `"@${round}_`);
    entries += "," + renamed;
}
let m = parse_json("{" + entries + "}");
m.len()
"#;

/// A hostile script: rule name, source, and what its error message must contain with the
/// default limits.
struct Hostile {
    name: &'static str,
    text: &'static str,
    message: &'static [&'static str],
}

/// Every hostile script, stopped with the default limits (`ScriptLimits::default()`:
/// 100,000 operations, 1 MiB strings, 10,000 array items and map entries, 32 call levels,
/// 100 alerts per event).
const HOSTILE: &[Hostile] = &[
    Hostile {
        name: "infinite_loop",
        text: "loop {}",
        message: &[
            "Too many operations",
            "(scripts.limits.max_operations = 100000)",
        ],
    },
    Hostile {
        name: "huge_string",
        text: r#"let s = "x"; loop { s += s; }"#,
        message: &["Length of string too large", "max_string_size"],
    },
    Hostile {
        name: "deep_recursion",
        text: "fn down(n) { down(n + 1) } down(0);",
        message: &["Stack overflow", "(scripts.limits.max_call_levels = 32)"],
    },
    Hostile {
        name: "giant_array",
        text: "let a = []; loop { a.push(event.verb); }",
        // Growing an array costs more per operation as it grows: whichever comes first,
        // the size limit or the run-time limit, stops it (see `stopped_by`).
        message: &[],
    },
    Hostile {
        name: "giant_map",
        text: GIANT_MAP_BULK,
        message: &["Size of object map too large", "max_map_size"],
    },
    // Rhai checks a map's size when the map is next used, not on `m[k] = v`; a map grown
    // key by key is therefore stopped by the operation limit (at about 10,000 keys).
    Hostile {
        name: "giant_map_key_by_key",
        text: "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
        // Timing-dependent too: the operation or the run-time limit (see `stopped_by`).
        message: &[],
    },
    Hostile {
        name: "alert_flood",
        text: r#"for i in 0..1000 { alert(#{ title: `flood ${i}` }); }"#,
        message: &[
            "alert: more than 100 alerts on one event",
            "max_alerts_per_event",
        ],
    },
];

/// Generous sanity bound on one evaluation of the event with every hostile script. Each
/// script is bounded by `max_run_time` (100 ms, checked every 1,024 operations) besides
/// its other limits, so seven hostile scripts cost at most about 0.7 s plus one check
/// interval each (measured about 0.3 s in a debug build on 2 cores, most of it in
/// `giant_array`). It documents that hostile scripts delay the scripts after them by a
/// bounded time; it is not a benchmark.
const HOSTILE_BOUND: Duration = Duration::from_secs(10);

fn source(name: &str, text: &str) -> ScriptSource {
    ScriptSource {
        name: name.to_owned(),
        path: PathBuf::from(format!("scripts/{name}.rhai")),
        text: text.to_owned(),
    }
}

fn compile(scripts: &[(&str, &str)], limits: &ScriptLimits) -> Ruleset {
    let sources = scripts.iter().map(|(n, t)| source(n, t)).collect();
    Ruleset::compile(sources, limits, "test-cluster").expect("scripts compile")
}

/// The one event of the privileged-pod trace.
fn privileged_pod() -> Arc<Event> {
    let decoded = decode(&std::fs::read(PRIVILEGED_POD).expect("fixture is readable"));
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    assert_eq!(decoded.events.len(), 1);
    Arc::new(decoded.events.into_iter().next().unwrap())
}

/// The only error of `rule`.
fn error_of<'a>(eval: &'a Evaluation, rule: &str) -> &'a ScriptError {
    let errors: Vec<&ScriptError> = eval.errors.iter().filter(|e| e.rule == rule).collect();
    assert_eq!(errors.len(), 1, "{rule}: {:?}", eval.errors);
    errors[0]
}

fn assert_message(err: &ScriptError, parts: &[&str]) {
    for part in parts {
        assert!(
            err.message.contains(part),
            "{}: message `{}` lacks `{part}`",
            err.rule,
            err.message
        );
    }
}

/// The well-behaved rule raised exactly its one alert.
fn assert_well_behaved_alerted(eval: &Evaluation) {
    let alerts: Vec<_> = eval
        .alerts
        .iter()
        .filter(|a| a.rule == WELL_BEHAVED.0)
        .collect();
    assert_eq!(alerts.len(), 1, "errors: {:?}", eval.errors);
    assert_eq!(
        alerts[0].title,
        format!("Privileged pod {POD_NAME} created")
    );
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert_eq!(alerts[0].fields["namespace"], "default");
    assert_eq!(
        alerts[0].fields["user"],
        "system:serviceaccount:kube-system:replicaset-controller"
    );
    assert!(eval.errors.iter().all(|e| e.rule != WELL_BEHAVED.0));
}

#[test]
fn hostile_scripts_are_stopped_and_do_not_keep_the_last_script_from_alerting() {
    let mut scripts: Vec<(&str, &str)> = HOSTILE.iter().map(|h| (h.name, h.text)).collect();
    scripts.push(WELL_BEHAVED);
    let rules = compile(&scripts, &ScriptLimits::default());
    let event = privileged_pod();

    let started = Instant::now();
    let eval = rules.evaluate(event.clone());
    let elapsed = started.elapsed();
    eprintln!(
        "evaluating 1 event with {} hostile scripts + 1 well-behaved script took {elapsed:?}",
        HOSTILE.len()
    );
    for ((name, _), run) in scripts.iter().zip(&eval.runs) {
        eprintln!("  {name:<22} {:?}", Duration::from_nanos(run.nanos));
    }

    // Every hostile rule failed once, in rule order, with a message naming its limit.
    let failed: Vec<&str> = eval.errors.iter().map(|e| e.rule.as_str()).collect();
    let hostile: Vec<&str> = HOSTILE.iter().map(|h| h.name).collect();
    assert_eq!(failed, hostile);
    for h in HOSTILE {
        let err = error_of(&eval, h.name);
        assert_message(err, h.message);
        let stopped_by: &[&str] = match h.name {
            "giant_array" => &["max_array_size", "max_run_time"],
            "giant_map_key_by_key" => &["max_operations = 100000", "max_run_time"],
            _ => &[],
        };
        if !stopped_by.is_empty() {
            assert!(
                stopped_by.iter().any(|limit| err.message.contains(limit)),
                "{}: `{}` names none of {stopped_by:?}",
                h.name,
                err.message
            );
        }
        assert_eq!(err.audit_id, event.audit_id);
        assert!(
            err.location
                .starts_with(&format!("scripts/{}.rhai", h.name)),
            "{}",
            err.location
        );
    }

    // The flood keeps the alerts raised before the limit, and no more.
    let flood = eval
        .alerts
        .iter()
        .filter(|a| a.rule == "alert_flood")
        .count();
    assert_eq!(flood, ScriptLimits::default().max_alerts_per_event);
    // The well-behaved rule, run last, still alerts; nobody else raised anything.
    assert_well_behaved_alerted(&eval);
    assert_eq!(eval.alerts.len(), flood + 1);
    assert_eq!(eval.runs.len(), scripts.len());

    assert!(
        elapsed < HOSTILE_BOUND,
        "hostile scripts took {elapsed:?}, over the {HOSTILE_BOUND:?} bound"
    );

    // Nothing carries over to the next event: the same errors and alerts again.
    let again = rules.evaluate(event);
    assert_eq!(again.errors, eval.errors);
    assert_eq!(again.alerts.len(), eval.alerts.len());
}

#[test]
fn lower_max_operations_stops_the_infinite_loop_at_that_limit() {
    let limits = ScriptLimits {
        max_operations: 1_000,
        ..ScriptLimits::default()
    };
    let rules = compile(&[("infinite_loop", "loop {}"), WELL_BEHAVED], &limits);
    let eval = rules.evaluate(privileged_pod());
    let err = error_of(&eval, "infinite_loop");
    assert_message(
        err,
        &[
            "Too many operations",
            "(scripts.limits.max_operations = 1000)",
        ],
    );
    assert!(!err.message.contains("100000"), "{}", err.message);
    assert_well_behaved_alerted(&eval);
}

/// Scripts that fit the default limits but not a lowered one: each lowered limit is the one
/// enforced, and its message names it. Each runs with the well-behaved script after it.
#[test]
fn lowered_limits_are_enforced_and_named() {
    let defaults = ScriptLimits::default();
    let map_256 = GIANT_MAP_BULK.replace("0..14", "0..8");
    let cases: [(&str, &str, ScriptLimits, &[&str]); 5] = [
        (
            "string_2k",
            r#"let s = "x"; for i in 0..11 { s += s; } s.len()"#,
            ScriptLimits {
                max_string_size: 1_000,
                ..defaults.clone()
            },
            &["Length of string too large", "max_string_size"],
        ),
        (
            "array_200",
            "let a = []; for i in 0..200 { a.push(i); } a.len()",
            ScriptLimits {
                max_array_size: 100,
                ..defaults.clone()
            },
            &["Size of array/BLOB too large", "max_array_size"],
        ),
        (
            "map_256",
            &map_256,
            ScriptLimits {
                max_map_size: 100,
                ..defaults.clone()
            },
            &["Size of object map too large", "max_map_size"],
        ),
        (
            "calls_12",
            "fn down(n) { if n > 0 { down(n - 1) } else { 0 } } down(12)",
            ScriptLimits {
                max_call_levels: 8,
                ..defaults.clone()
            },
            &["Stack overflow", "(scripts.limits.max_call_levels = 8)"],
        ),
        (
            "alerts_10",
            r#"for i in 0..10 { alert(#{ title: `a${i}` }); }"#,
            ScriptLimits {
                max_alerts_per_event: 5,
                ..defaults.clone()
            },
            &[
                "alert: more than 5 alerts on one event",
                "max_alerts_per_event",
            ],
        ),
    ];
    let event = privileged_pod();
    for (name, text, limits, message) in cases {
        let scripts = [(name, text), WELL_BEHAVED];

        let relaxed = compile(&scripts, &defaults).evaluate(event.clone());
        assert!(relaxed.errors.is_empty(), "{name}: {:?}", relaxed.errors);
        assert_well_behaved_alerted(&relaxed);

        let strict = compile(&scripts, &limits).evaluate(event.clone());
        assert_eq!(strict.errors.len(), 1, "{name}: {:?}", strict.errors);
        assert_message(error_of(&strict, name), message);
        assert_well_behaved_alerted(&strict);
        if name == "alerts_10" {
            // The alerts raised before the limit are kept.
            let kept = strict.alerts.iter().filter(|a| a.rule == name).count();
            assert_eq!(kept, 5);
        }
    }
}

#[test]
fn eval_is_refused_at_load() {
    let err = Ruleset::compile(
        vec![
            source("uses_eval", r#"eval("1")"#),
            source(WELL_BEHAVED.0, WELL_BEHAVED.1),
        ],
        &ScriptLimits::default(),
        "test-cluster",
    )
    .expect_err("a script calling eval must not load");
    // Only the script using eval is reported, at its position.
    assert_eq!(err.0.len(), 1, "{err}");
    let load = &err.0[0];
    assert_eq!(load.path, PathBuf::from("scripts/uses_eval.rhai"));
    assert_eq!(load.position, Some((1, 1)));
    assert!(
        load.message.contains("'eval'") && load.message.contains("disabled"),
        "{}",
        load.message
    );
}

#[test]
fn eval_through_a_function_pointer_is_refused_at_run_time() {
    let rules = compile(
        &[
            (
                "eval_by_name",
                r#"call(Fn("eval"), "alert(#{title: \"x\"})")"#,
            ),
            WELL_BEHAVED,
        ],
        &ScriptLimits::default(),
    );
    let eval = rules.evaluate(privileged_pod());
    assert_message(
        error_of(&eval, "eval_by_name"),
        &["'eval' is a reserved keyword"],
    );
    assert!(eval.alerts.iter().all(|a| a.rule != "eval_by_name"));
    assert_well_behaved_alerted(&eval);
}

#[test]
fn an_import_that_leaves_the_module_directories_is_refused_at_load() {
    for module in ["x", "../../etc/passwd", "/etc/passwd"] {
        let sources = vec![
            source(
                "imports",
                &format!(r#"import "{module}" as x; alert(#{{ title: "after import" }});"#),
            ),
            source(WELL_BEHAVED.0, WELL_BEHAVED.1),
        ];
        let err = Ruleset::compile(sources, &ScriptLimits::default(), "test")
            .err()
            .unwrap_or_else(|| panic!("`{module}` was accepted"));
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].path, PathBuf::from("scripts/imports.rhai"));
        assert!(err.0[0].message.starts_with("Module not found"), "{err}");
    }
}

#[test]
fn print_and_debug_do_not_fail_the_script() {
    let rules = compile(
        &[
            (
                "chatty",
                r#"
print("checking " + event.auditID);
print(event);
debug(event.objectRef);
alert(#{ title: "still running after print" });
"#,
            ),
            WELL_BEHAVED,
        ],
        &ScriptLimits::default(),
    );
    let eval = rules.evaluate(privileged_pod());
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    let chatty: Vec<&str> = eval
        .alerts
        .iter()
        .filter(|a| a.rule == "chatty")
        .map(|a| a.title.as_str())
        .collect();
    assert_eq!(chatty, ["still running after print"]);
    assert_well_behaved_alerted(&eval);
}

#[test]
fn a_script_past_max_run_time_is_stopped_with_a_message_naming_the_limit() {
    let limits = ScriptLimits {
        max_run_time: Duration::from_millis(20),
        max_operations: u64::MAX,
        ..ScriptLimits::default()
    };
    let rules = Ruleset::compile(
        vec![
            source("spin", "loop {}"),
            source("good", r#"alert(#{ title: "still here" });"#),
        ],
        &limits,
        "test",
    )
    .unwrap();
    let eval = rules.evaluate(privileged_pod());
    let err = error_of(&eval, "spin");
    assert_message(err, &["Script terminated", "max_run_time = 20ms"]);
    assert_eq!(eval.alerts.len(), 1);
    assert_eq!(eval.alerts[0].title, "still here");
}
