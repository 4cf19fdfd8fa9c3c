//! Lists in scripts: klaxon's `text in array` decides as Rhai's own does, and
//! `setting_list(name, defaults)` grows a list from `[scripts.settings]`.

use std::path::PathBuf;
use std::sync::Arc;

use klaxon::audit::Event;
use klaxon::rules::{Ruleset, ScriptLimits, ScriptSource};
use serde_json::{Value, json};

fn rules_with(script: &str) -> Ruleset {
    let source = ScriptSource {
        name: "lists".into(),
        path: PathBuf::from("lists.rhai"),
        text: script.into(),
    };
    Ruleset::compile(vec![source], &ScriptLimits::default(), "test").expect("compiles")
}

#[test]
fn string_membership_decides_as_rhai_does() {
    let klaxon = rules_with("let x = 1;");
    let rhai = rhai::Engine::new();
    for expr in [
        r#""a" in ["b", "a"]"#,
        r#""a" in ["b", "c"]"#,
        r#""a" in []"#,
        r#""" in [""]"#,
        r#""1" in [1, 2]"#,
        r#""a" in ['a']"#,
        r#""a" in [(), #{}, [1], true, 1.5, "a"]"#,
        r#""ab" in ["a", "b", "ab"]"#,
    ] {
        let ours = klaxon
            .eval_expression(Arc::new(Event::default()), expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"));
        let theirs: rhai::Dynamic = rhai.eval(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(ours.as_bool(), theirs.as_bool(), "{expr}");
    }
    // And the override is the one that runs: a string in a list of strings.
    assert!(
        klaxon
            .function_signatures()
            .iter()
            .any(|s| s.starts_with("contains(list: &mut array, text: string)")),
        "{:?}",
        klaxon.function_signatures()
    );
}

/// Runs the script with `settings`; the alert title is `${list}`, or the error message.
fn list_with(settings: Value) -> Result<String, String> {
    let mut rules = rules_with(
        r#"let list = setting_list("extra_users", ["admin", "ci"]);
           alert(#{ title: `${list}` });"#,
    );
    let settings = settings
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    rules.set_settings(&settings);
    let eval = rules.evaluate(Arc::new(Event::default()));
    match (eval.alerts.first(), eval.errors.first()) {
        (Some(alert), None) => Ok(alert.title.clone()),
        (None, Some(err)) => Err(err.to_string()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn setting_list_appends_the_setting_to_the_defaults() {
    assert_eq!(list_with(json!({})).unwrap(), r#"["admin", "ci"]"#);
    assert_eq!(
        list_with(json!({"extra_users": ["bob"]})).unwrap(),
        r#"["admin", "ci", "bob"]"#
    );
    assert_eq!(
        list_with(json!({"extra_users": []})).unwrap(),
        r#"["admin", "ci"]"#
    );
}

#[test]
fn a_wrongly_shaped_list_setting_is_a_script_error_naming_it() {
    let err = list_with(json!({"extra_users": "bob"})).unwrap_err();
    assert!(
        err.contains("setting extra_users must be an array of strings, not string"),
        "{err}"
    );
    assert!(err.contains("lists.rhai:1"), "{err}");
    let err = list_with(json!({"extra_users": ["bob", 3]})).unwrap_err();
    assert!(err.contains("not an array holding i64"), "{err}");
}
