//! `klaxon test` as a process: the shipped scripts' and the Falco pack's test files all pass; a failing case
//! exits non-zero with the expected and actual alerts; a broken test file names its line.

use std::path::Path;

use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;
use predicates::str::contains;
use tempfile::TempDir;

fn klaxon(dir: &Path) -> assert_cmd::Command {
    let mut cmd = cargo_bin_cmd!("klaxon");
    cmd.current_dir(dir).env_remove("SLACK_WEBHOOK_URL");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KLAXON_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn the_shipped_scripts_tests_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let test_files = std::fs::read_dir(repo.join("scripts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".test.toml")
        })
        .count();
    assert!(test_files >= 1, "scripts/ has no test files");
    klaxon(repo)
        .arg("test")
        .assert()
        .success()
        .stdout(contains("test result: ok."))
        .stdout(predicate::str::is_match(r"(?m)^[1-9]\d* passed, 0 failed$").unwrap());
}

#[test]
fn the_falco_packs_tests_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    klaxon(repo)
        .args(["--scripts", "examples/rules/falco", "test"])
        .assert()
        .success()
        .stdout(contains(
            "subresources.test.toml :: a kubelet's TokenRequest",
        ))
        .stdout(contains("refused.test.toml :: "))
        .stdout(contains("disallowed_k8s_user.test.toml :: "))
        .stdout(predicate::str::is_match(r"(?m)^[1-9]\d* passed, 0 failed$").unwrap());
}

const SCRIPT: &str = r#"if event.verb == "create" { alert(#{ title: `created ${event.auditID}`, severity: "warning" }); }"#;

fn fixture(test_toml: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/created.rhai"), SCRIPT).unwrap();
    std::fs::write(dir.path().join("scripts/created.test.toml"), test_toml).unwrap();
    dir
}

#[test]
fn a_failing_case_exits_non_zero_and_shows_expected_and_actual() {
    let dir = fixture(
        r#"
[[case]]
name = "passes"
event = '{"auditID":"a","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api"}'
[[case.expect]]
rule = "created"
title = "created a"
severity = "warning"

[[case]]
name = "wrong severity"
event = '{"auditID":"b","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api"}'
[[case.expect]]
rule = "created"
severity = "critical"
"#,
    );
    klaxon(dir.path())
        .args(["--scripts", "scripts", "test"])
        .assert()
        .code(1)
        .stdout(contains("created.test.toml :: passes ... ok"))
        .stdout(contains("created.test.toml :: wrong severity ... FAILED"))
        .stdout(contains("expected 1 × created [critical], got 0"))
        .stdout(contains(r#"+ created [warning] "created b""#))
        .stdout(contains("1 passed, 1 failed"));
}

#[test]
fn only_and_pipeline_expectations_are_checked() {
    let dir = fixture(
        r#"
[[case]]
name = "the same event twice is one incident"
event = '''
{"auditID":"a","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api","stageTimestamp":"2026-11-20T10:00:00Z"}
{"auditID":"a","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api","stageTimestamp":"2026-11-20T10:01:00Z"}
'''
only = true
[[case.expect]]
rule = "created"
count = 2
[case.pipeline]
admitted = 1
deduplicated = 1
notices = 1
"#,
    );
    klaxon(dir.path())
        .args(["--scripts", "scripts", "test"])
        .assert()
        .success()
        .stdout(contains("1 passed, 0 failed"));
}

#[test]
fn a_broken_test_file_names_its_line() {
    let dir = fixture("[[case]]\nname = \"x\"\nevnt = 'oops'\n");
    klaxon(dir.path())
        .args(["--scripts", "scripts", "test"])
        .assert()
        .code(2)
        .stdout(contains("created.test.toml: line 3: unknown field `evnt`"));
}
