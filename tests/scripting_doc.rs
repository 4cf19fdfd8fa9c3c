//! docs/SCRIPTING.md must not drift from the script API: every `event` accessor, every
//! function klaxon registers for scripts, every `alert` field and severity, and every
//! `[scripts.limits]` key with its default value must be documented there.

use std::path::Path;

use klaxon::rules::{ALERT_FIELDS, EVENT_ACCESSORS, Ruleset, ScriptLimits, Severity};

const DOC: &str = "docs/SCRIPTING.md";

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn doc() -> String {
    read(DOC)
}

/// The doc's table rows (lines starting with `|`) whose first cell is `code`, backticks removed.
fn table_rows<'a>(doc: &'a str, code: &str) -> Vec<&'a str> {
    let first_cell = format!("| `{code}` |");
    doc.lines()
        .filter(|l| l.trim_start().starts_with(&first_cell))
        .collect()
}

/// Whether the doc mentions `code` in backticks, or has a table row naming it.
fn mentions(doc: &str, code: &str) -> bool {
    doc.contains(&format!("`{code}`")) || !table_rows(doc, code).is_empty()
}

fn fail_if_missing(what: &str, missing: &[String]) {
    assert!(
        missing.is_empty(),
        "{DOC} is out of date: {} {what} missing:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

#[test]
fn every_event_accessor_is_documented_with_its_type() {
    let doc = doc();
    let mut missing = Vec::new();
    for (name, rhai_type) in EVENT_ACCESSORS {
        let code = format!("event.{name}");
        if !mentions(&doc, &code) {
            missing.push(format!(
                "`{code}` ({rhai_type}): add a row `| `{code}` | {rhai_type} | … |` to the accessor table"
            ));
            continue;
        }
        for row in table_rows(&doc, &code) {
            if !row.replace('`', "").contains(rhai_type) {
                missing.push(format!(
                    "the table row of `{code}` does not give its type `{rhai_type}`: {row}"
                ));
            }
        }
    }
    fail_if_missing("event accessor(s)", &missing);
}

/// A registered function: its name, the type of its first parameter, and the signature.
struct Function {
    name: String,
    getter: bool,
    receiver: String,
    signature: String,
}

fn registered_functions() -> Vec<Function> {
    let ruleset = Ruleset::compile(vec![], &ScriptLimits::default(), "x")
        .expect("an empty rule set compiles");
    let signatures = ruleset.function_signatures();
    assert!(
        signatures.iter().any(|s| s.starts_with("alert(")),
        "function_signatures() no longer lists `alert`: {signatures:#?}"
    );
    signatures
        .into_iter()
        .map(|signature| {
            let (name, rest) = signature
                .split_once('(')
                .unwrap_or_else(|| panic!("cannot read signature {signature:?}"));
            let first_param = rest.split([',', ')']).next().unwrap_or("");
            let receiver = first_param
                .split_once(':')
                .map_or("", |(_, t)| t)
                .trim()
                .trim_start_matches("&mut ")
                .to_owned();
            let (name, getter) = match name.strip_prefix("get$") {
                Some(n) => (n.to_owned(), true),
                None => (name.to_owned(), false),
            };
            Function {
                name,
                getter,
                receiver,
                signature,
            }
        })
        .collect()
}

#[test]
fn every_registered_function_is_documented() {
    let doc = doc();
    let mut missing = Vec::new();
    let mut event_getters = Vec::new();
    for f in registered_functions() {
        if f.name == "to_string" || f.name == "to_debug" {
            continue;
        }
        if f.getter {
            let code = match f.receiver.as_str() {
                "Event" => {
                    event_getters.push(f.name.clone());
                    format!("event.{}", f.name)
                }
                "User" => format!("event.user.{}", f.name),
                "ObjectRef" => format!("event.objectRef.{}", f.name),
                "ResponseStatus" => format!("event.responseStatus.{}", f.name),
                other => panic!(
                    "getter `{}` on type `{other}` ({}) is new: teach tests/scripting_doc.rs \
                     which `event` sub-record it belongs to, and document it",
                    f.name, f.signature
                ),
            };
            if !mentions(&doc, &code) {
                missing.push(format!("`{code}` (registered as `{}`)", f.signature));
            }
        } else {
            let call = format!("{}(", f.name);
            if !(doc.contains(&format!("`{call}")) || doc.contains(&format!(".{call}"))) {
                missing.push(format!(
                    "function `{}` (registered as `{}`): expected `{call}…` or `….{call}…` in the doc",
                    f.name, f.signature
                ));
            }
        }
    }
    fail_if_missing("registered function(s) or accessor(s)", &missing);

    // The accessor list the docs are checked against must be the getters klaxon registers.
    let listed: Vec<&str> = EVENT_ACCESSORS.iter().map(|(n, _)| *n).collect();
    let unlisted: Vec<&String> = event_getters
        .iter()
        .filter(|g| !listed.contains(&g.as_str()))
        .collect();
    let unregistered: Vec<&&str> = listed
        .iter()
        .filter(|n| !event_getters.iter().any(|g| g == **n))
        .collect();
    assert!(
        unlisted.is_empty() && unregistered.is_empty(),
        "EVENT_ACCESSORS (src/rules/api/event.rs) differs from the registered `event` getters: \
         registered but not listed {unlisted:?}; listed but not registered {unregistered:?}"
    );
}

#[test]
fn every_alert_field_and_severity_is_documented() {
    let doc = doc();
    let mut missing: Vec<String> = ALERT_FIELDS
        .iter()
        .filter(|field| !mentions(&doc, field))
        .map(|field| {
            format!("alert field `{field}`: add a row `| `{field}` | … |` to the alert table")
        })
        .collect();
    missing.extend(
        Severity::ALL
            .iter()
            .filter(|s| !doc.contains(&format!("`{}`", s.as_str())))
            .map(|s| format!("severity `{}`", s.as_str())),
    );
    fail_if_missing("alert field(s) or severities", &missing);
}

#[test]
fn every_script_limit_is_documented_with_its_default() {
    let doc = doc();
    let defaults = serde_json::to_value(ScriptLimits::default()).expect("limits serialize");
    let defaults = defaults.as_object().expect("limits serialize to an object");
    assert!(!defaults.is_empty(), "ScriptLimits has no fields?");

    let config: toml::Value = read("config/klaxon.toml")
        .parse()
        .expect("config/klaxon.toml parses");
    let written = config
        .get("scripts")
        .and_then(|s| s.get("limits"))
        .and_then(toml::Value::as_table)
        .expect("config/klaxon.toml has a [scripts.limits] table");

    let mut missing = Vec::new();
    for (key, default) in defaults {
        let Some(value) = written.get(key) else {
            missing.push(format!(
                "`{key}` is not in config/klaxon.toml [scripts.limits] (default {default}), \
                 so its documented default cannot be checked"
            ));
            continue;
        };
        let same = match (default, value) {
            (serde_json::Value::Number(n), toml::Value::Integer(i)) => n.as_i64() == Some(*i),
            (serde_json::Value::String(s), toml::Value::String(t)) => s == t,
            (serde_json::Value::Bool(b), toml::Value::Boolean(c)) => b == c,
            _ => false,
        };
        if !same {
            missing.push(format!(
                "`{key}`: config/klaxon.toml says {value} but ScriptLimits::default() is {default}"
            ));
        }
        let line = format!("{key} = {value}");
        if !doc.contains(&line) {
            missing.push(format!(
                "`{line}` (the default, as written in config/klaxon.toml)"
            ));
        }
    }
    fail_if_missing("script limit(s)", &missing);
}
