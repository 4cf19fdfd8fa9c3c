//! docs/SCRIPTING.md must not drift from the script API: every `event` accessor, every
//! function klaxon registers for scripts (called with the parameter names of the Rust
//! function, from the engine's metadata), every `alert` field and severity, and every
//! `[scripts.limits]` key with its default value must be documented there; and every
//! registered function carries its own doc comment in that metadata.

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

/// A registered function, from the engine's metadata: its name, its parameters (name and
/// type), its signature and its doc comment.
struct Function {
    name: String,
    getter: bool,
    params: Vec<(String, String)>,
    signature: String,
    doc_comments: Vec<String>,
}

impl Function {
    /// The type of the first parameter without `&mut `: the type a method or getter is on.
    fn receiver(&self) -> &str {
        self.params
            .first()
            .map_or("", |(_, t)| t.trim_start_matches("&mut ").trim())
    }

    /// How the doc writes a call: `event.NAME(b, c)` for a method on `event` or one of its
    /// records, else `NAME(a, b)` or `a.NAME(b)`; a map parameter may be written `#{…}`.
    fn call_forms(&self) -> Vec<String> {
        let named: Vec<&str> = self.params.iter().map(|(name, _)| name.as_str()).collect();
        let literal: Vec<&str> = self
            .params
            .iter()
            .map(|(name, typ)| if typ == "Map" { "#{…}" } else { name })
            .collect();
        let mut forms: Vec<String> = [named, literal]
            .iter()
            .flat_map(|names| self.calls_with(names))
            .collect();
        forms.dedup();
        forms
    }

    /// The call with these parameter names.
    fn calls_with(&self, names: &[&str]) -> Vec<String> {
        let rest = names.get(1..).unwrap_or_default().join(", ");
        match record_path(self.receiver()) {
            Some(path) => vec![format!("{path}.{}({rest})", self.name)],
            None => {
                let mut forms = vec![format!("{}({})", self.name, names.join(", "))];
                if let Some(first) = names.first() {
                    forms.push(format!("{first}.{}({rest})", self.name));
                }
                forms
            }
        }
    }
}

/// How scripts reach a value of the script type `receiver`, when it is `event` or one of
/// its records.
fn record_path(receiver: &str) -> Option<&'static str> {
    match receiver {
        "Event" => Some("event"),
        "User" => Some("event.user"),
        "ObjectRef" => Some("event.objectRef"),
        "ResponseStatus" => Some("event.responseStatus"),
        _ => None,
    }
}

fn text(value: &serde_json::Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

fn registered_functions() -> Vec<Function> {
    let ruleset = Ruleset::compile(vec![], &ScriptLimits::default(), "x")
        .expect("an empty rule set compiles");
    let metadata = ruleset.function_metadata();
    let functions = metadata["functions"]
        .as_array()
        .unwrap_or_else(|| panic!("function_metadata() has no `functions`: {metadata:#}"));
    assert!(
        functions.iter().any(|f| f["name"] == "alert"),
        "function_metadata() no longer lists `alert`: {metadata:#}"
    );
    functions
        .iter()
        .map(|f| {
            let name = text(f, "name");
            let (name, getter) = match name.strip_prefix("get$") {
                Some(n) => (n.to_owned(), true),
                None => (name, false),
            };
            let list = |key: &str| f[key].as_array().cloned().unwrap_or_default();
            Function {
                name,
                getter,
                params: list("params")
                    .iter()
                    .map(|p| (text(p, "name"), text(p, "type")))
                    .collect(),
                signature: text(f, "signature"),
                doc_comments: list("docComments")
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn every_registered_function_carries_a_doc_comment_in_the_engine_metadata() {
    let undocumented: Vec<String> = registered_functions()
        .into_iter()
        .filter(|f| {
            f.doc_comments
                .iter()
                .all(|c| c.trim_start_matches('/').trim().is_empty())
        })
        .map(|f| f.signature)
        .collect();
    assert!(
        undocumented.is_empty(),
        "functions registered for scripts without a `///` doc comment (write one on the \
         function in src/rules/api/): {undocumented:#?}"
    );
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
            let Some(path) = record_path(f.receiver()) else {
                panic!(
                    "getter `{}` on type `{}` ({}) is new: teach tests/it/scripting_doc.rs \
                     which `event` sub-record it belongs to, and document it",
                    f.name,
                    f.receiver(),
                    f.signature
                );
            };
            if f.receiver() == "Event" {
                event_getters.push(f.name.clone());
            }
            let code = format!("{path}.{}", f.name);
            if !mentions(&doc, &code) {
                missing.push(format!("`{code}` (registered as `{}`)", f.signature));
            }
        } else {
            // The call as the doc writes it, with the parameter names of the Rust function.
            let forms = f.call_forms();
            if !forms.iter().any(|form| doc.contains(&format!("`{form}"))) {
                missing.push(format!(
                    "function `{}` (registered as `{}`): expected `{}` in the doc",
                    f.name,
                    f.signature,
                    forms.join("` or `")
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
