//! Script modules: `import "NAME" as m;` loads `lib/NAME.rhai` of a scripts directory,
//! shared by the scripts that import it; a broken module fails the load with its name.

use std::path::PathBuf;
use std::sync::Arc;

use klaxon::audit::decode;
use klaxon::rules::{Ruleset, ScriptLimits};
use tempfile::TempDir;

fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const SHARED: &str = r#"
export const TRUSTED = ["registry.k8s.io", "quay.io/calico"];
// A module's functions see their arguments (and the module's constants via `global::`).
fn trusted(image, prefixes) { prefixes.some(|p| image.starts_with(p)) }
"#;

const RULE: &str = r#"
import "shared" as lists;
for image in event.images() {
    if !lists::trusted(image, lists::TRUSTED) {
        alert(#{ title: `untrusted image ${image}` });
    }
}
"#;

#[test]
fn scripts_share_a_module_from_lib() {
    let dir = dir_with(&[("lib/shared.rhai", SHARED), ("untrusted.rhai", RULE)]);
    let rules = Ruleset::load(&[dir.path().to_path_buf()], &ScriptLimits::default(), "t").unwrap();
    // lib/ holds modules, not rules.
    let names: Vec<&str> = rules.rules().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["untrusted"]);
    let pod = r#"{"auditID":"p","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api",
        "objectRef":{"resource":"pods"},
        "requestObject":{"kind":"Pod","spec":{"containers":[
            {"name":"a","image":"registry.k8s.io/pause:3.9"},{"name":"b","image":"evil.example/miner:1"}]}}}"#;
    let event = Arc::new(decode(pod.as_bytes()).events.remove(0));
    let eval = rules.evaluate(event);
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    let titles: Vec<&str> = eval.alerts.iter().map(|a| a.title.as_str()).collect();
    assert_eq!(titles, ["untrusted image evil.example/miner:1"]);
}

#[test]
fn a_broken_or_missing_module_fails_the_load_naming_it() {
    let broken = dir_with(&[
        ("lib/shared.rhai", "fn trusted(image) { "),
        ("untrusted.rhai", RULE),
    ]);
    let err = Ruleset::load(
        &[broken.path().to_path_buf()],
        &ScriptLimits::default(),
        "t",
    )
    .expect_err("a broken module is refused");
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].path.ends_with("untrusted.rhai"), "{err}");
    assert!(err.0[0].message.contains("shared"), "{err}");

    let missing = dir_with(&[("untrusted.rhai", RULE)]);
    let err = Ruleset::load(
        &[PathBuf::from(missing.path())],
        &ScriptLimits::default(),
        "t",
    )
    .expect_err("a missing module is refused");
    assert!(
        err.0[0].message.contains("Module not found: shared"),
        "{err}"
    );
    assert!(err.0[0].message.contains("shared.rhai"), "{err}");
}

#[test]
fn functions_of_scripts_and_modules_receive_the_evaluated_event() {
    // Regression: `event` was a compile-time constant, so the optimiser folded an empty
    // placeholder into every call that passed `event` to a function.
    let module = r#"
export const WRITES = ["create", "update"];
fn verb_of(e) { e.verb }
fn is_write(e) { e.verb in global::WRITES }
"#;
    let rule = r#"
import "m" as m;
fn user_of(e) { e.user.username }
if m::is_write(event) {
    alert(#{ title: `${m::verb_of(event)} by ${user_of(event)}`, text: `${event}` });
}
"#;
    let dir = dir_with(&[("lib/m.rhai", module), ("writes.rhai", rule)]);
    let rules = Ruleset::load(&[dir.path().to_path_buf()], &ScriptLimits::default(), "t").unwrap();
    let pod = r#"{"auditID":"e1","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api",
        "user":{"username":"alice"},"objectRef":{"resource":"pods","namespace":"ns","name":"p"}}"#;
    let eval = rules.evaluate(Arc::new(decode(pod.as_bytes()).events.remove(0)));
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    assert_eq!(eval.alerts.len(), 1);
    assert_eq!(eval.alerts[0].title, "create by alice");
    assert!(
        eval.alerts[0].text.contains("create pods ns/p by alice"),
        "{}",
        eval.alerts[0].text
    );
}
