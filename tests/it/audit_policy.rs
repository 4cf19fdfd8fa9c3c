//! `klaxon gen audit-policy` and `klaxon check --audit-policy FILE`, as processes.
//!
//! The generated policy of the shipped rules is a valid audit.k8s.io/v1 Policy (a strict
//! schema written from the Kubernetes reference, tests/fixtures/audit-policy/README.md,
//! checked with PyYAML and jsonschema, which kubernetes-validate installs) and `check
//! --audit-policy` finds nothing missing in it for the same rules; a Metadata policy is
//! flagged for a rule that reads the request body, and a policy that omits ResponseStarted
//! for a rule that reads exec sessions as they open, each warning naming the rule, its script
//! and the policy file, with exit status 2; a bad `LEVEL` is a load error at its line.

use std::path::{Path, PathBuf};
use std::process::Output;

use tempfile::TempDir;

use crate::support;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `klaxon --config DIR/klaxon.toml --scripts SCRIPTS ARGS` in a clean environment.
fn klaxon(dir: &Path, scripts: &Path, args: &[&str]) -> Output {
    klaxon_with(dir, &[scripts], args)
}

/// `klaxon --config DIR/klaxon.toml --scripts DIR… ARGS` in a clean environment.
fn klaxon_with(dir: &Path, scripts: &[&Path], args: &[&str]) -> Output {
    let mut cmd = support::process::klaxon_command(dir);
    let config = dir.join("klaxon.toml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    cmd.arg("--config").arg(config);
    for dir in scripts {
        cmd.arg("--scripts").arg(dir);
    }
    cmd.args(args).output().expect("run klaxon")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Validates a policy file against the strict v1 schema; Err holds jsonschema's message.
fn schema_check(policy: &Path) -> Result<(), String> {
    let script = "import json, sys, yaml, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  jsonschema.validate(yaml.safe_load(open(sys.argv[2])), schema)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(repo("tests/fixtures/audit-policy/policy-v1.schema.json"))
        .arg(policy)
        .output()
        .expect("python3");
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "PyYAML and jsonschema are needed: `python3 -m pip install kubernetes-validate==1.37.0` \
         installs both (./test.sh does): {stderr}"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(stderr)
    }
}

/// Generates the policy of `scripts` into DIR/policy.yaml.
fn generate(dir: &Path, scripts: &[&Path]) -> PathBuf {
    let policy = dir.join("policy.yaml");
    let out = klaxon_with(
        dir,
        scripts,
        &["gen", "audit-policy", "--out", policy.to_str().unwrap()],
    );
    assert!(out.status.success(), "gen failed: {}", text(&out.stderr));
    policy
}

#[test]
fn the_schema_accepts_the_shipped_policy_and_refuses_a_wrong_level() {
    schema_check(&repo("config/apiserver/audit-policy.yaml")).unwrap();
    let dir = TempDir::new().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Everything\n",
    )
    .unwrap();
    let err = schema_check(&bad).unwrap_err();
    assert!(err.contains("Everything"), "{err}");
}

#[test]
fn the_policy_generated_for_the_shipped_rules_is_valid_and_checks_clean() {
    let shipped = repo("scripts");
    let falco = repo("examples/rules/falco");
    // The shipped rules, and with them the Falco pack (rules whose resources overlap, each
    // declaring its LEVEL: check fails where the policy logs less than a rule reads).
    for scripts in [
        vec![shipped.as_path()],
        vec![shipped.as_path(), falco.as_path()],
    ] {
        let dir = TempDir::new().unwrap();
        let policy = generate(dir.path(), &scripts);
        schema_check(&policy).unwrap();
        let yaml = std::fs::read_to_string(&policy).unwrap();
        assert!(
            yaml.trim_end().ends_with("- level: None"),
            "the last rule logs nothing:\n{yaml}"
        );
        assert!(yaml.contains("\"RequestReceived\""), "{yaml}");
        assert!(yaml.contains("\"pods/exec\""), "{yaml}");
        let out = klaxon_with(
            dir.path(),
            &scripts,
            &["check", "--audit-policy", policy.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "check found gaps in the generated policy:\n{}\n{yaml}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("logs every event the rules need"),
            "{}",
            text(&out.stdout)
        );
    }
}

/// A scripts directory with `scripts` (name, text).
fn scripts_dir(dir: &Path, scripts: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("scripts");
    std::fs::create_dir_all(&path).unwrap();
    for (name, body) in scripts {
        std::fs::write(path.join(format!("{name}.rhai")), body).unwrap();
    }
    path
}

const READS_BODY: &str = r#"
const LEVEL = "Request";
const MATCH = #{ stage: "ResponseComplete", verb: "create", resource: "pods", subresource: "" };
if (event.requestObject?.spec?.hostNetwork ?? false) {
    alert(#{ title: "host network" });
}
"#;

const EXEC_OPENED: &str = r#"
const MATCH = #{ stage: "ResponseStarted", resource: "pods", subresource: ["exec", "attach"] };
alert(#{ title: `exec: ${event.requestURI}` });
"#;

/// Runs `check --audit-policy` of `policy_yaml` for `scripts`: (status, stderr).
fn check_policy(scripts: &[(&str, &str)], policy_yaml: &str) -> (Option<i32>, String) {
    let dir = TempDir::new().unwrap();
    let scripts = scripts_dir(dir.path(), scripts);
    let policy = dir.path().join("audit-policy.yaml");
    std::fs::write(&policy, policy_yaml).unwrap();
    let out = klaxon(
        dir.path(),
        &scripts,
        &["check", "--audit-policy", policy.to_str().unwrap()],
    );
    (out.status.code(), text(&out.stderr))
}

/// Checks `policy` for the rules reads_body and exec_opened, expecting exit status 2 and a
/// warning about `rule`: (stderr, that warning's line).
fn flagged(policy: &str, rule: &str) -> (String, String) {
    let (status, stderr) = check_policy(
        &[("reads_body", READS_BODY), ("exec_opened", EXEC_OPENED)],
        policy,
    );
    assert_eq!(status, Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("rule {rule} (")))
        .unwrap_or_else(|| panic!("no warning for {rule}:\n{stderr}"))
        .to_owned();
    (stderr, line)
}

#[test]
fn a_metadata_policy_is_flagged_for_a_rule_reading_the_request_body() {
    let (stderr, line) = flagged(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n",
        "reads_body",
    );
    assert!(line.starts_with("warning: "), "{line}");
    assert!(line.contains("audit-policy.yaml"), "{line}");
    assert!(line.contains("reads_body.rhai"), "{line}");
    assert!(
        line.contains("rule 1 (line 4) logs its events at Metadata, below the Request level"),
        "{line}"
    );
    assert!(line.contains("create pods"), "{line}");
    assert!(
        !stderr.contains("rule exec_opened"),
        "Metadata is all exec_opened reads:\n{stderr}"
    );
}

#[test]
fn a_policy_omitting_response_started_is_flagged_for_an_exec_rule() {
    let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\n\
                  omitStages: [\"RequestReceived\"]\nrules:\n\
                  - level: RequestResponse\n  resources: [{group: \"\", resources: [\"pods\"]}]\n\
                  - level: Metadata\n  omitStages: [\"ResponseStarted\"]\n";
    let (stderr, line) = flagged(policy, "exec_opened");
    assert!(line.contains("exec_opened.rhai"), "{line}");
    assert!(line.contains("omits stage ResponseStarted"), "{line}");
    assert!(
        line.contains("pods/exec") && line.contains("pods/attach"),
        "{line}"
    );
    assert!(
        !stderr.contains("rule reads_body"),
        "pods are logged with bodies first:\n{stderr}"
    );
}

#[test]
fn the_first_matching_policy_rule_decides() {
    // `pods` does not match pods/exec, and the catch-all logs nothing.
    let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n\
                  - level: Metadata\n  resources: [{group: \"\", resources: [\"pods\"]}]\n\
                  - level: None\n";
    let (status, stderr) = check_policy(&[("exec_opened", EXEC_OPENED)], policy);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("rule 2 (line 6) does not log its events: any verb pods/exec"),
        "{stderr}"
    );
    // A rule for reads only, first, leaves exec's create (SPDY) to a later rule.
    let policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n\
                  - level: None\n  verbs: [\"get\"]\n\
                  - level: Metadata\n  resources: [{group: \"\", resources: [\"*/exec\", \"pods/attach\"]}]\n";
    let (status, stderr) = check_policy(&[("exec_opened", EXEC_OPENED)], policy);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("rule 1 (line 4) does not log some of its events"),
        "{stderr}"
    );
    assert!(!stderr.contains("no rule matches"), "{stderr}");
}

#[test]
fn a_bad_level_is_a_load_error_at_its_line() {
    let (status, stderr) = check_policy(
        &[("bad", "// a rule\nconst LEVEL = \"Everything\";\n")],
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n",
    );
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.rhai:2:1: LEVEL must be one of"),
        "{stderr}"
    );
}

#[test]
fn a_policy_that_is_not_one_is_an_error_naming_the_file() {
    let (status, stderr) = check_policy(
        &[("reads_body", READS_BODY)],
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n    verb: [get]\n",
    );
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("audit-policy.yaml: ") && stderr.contains("verb"),
        "{stderr}"
    );
}

#[test]
fn the_kubeadm_policy_is_checked_against_the_shipped_rules() {
    let dir = TempDir::new().unwrap();
    let policy = repo("config/apiserver/audit-policy.yaml");
    let out = klaxon(
        dir.path(),
        &repo("scripts"),
        &["check", "--audit-policy", policy.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "the check itself failed:\n{stderr}"
    );
    for line in stderr.lines().filter(|l| l.starts_with("warning: ")) {
        assert!(
            line.contains("audit-policy.yaml: rule ") && line.contains(".rhai)"),
            "a warning names the policy, the rule and its script: {line}"
        );
    }
    // The shipped policy is written for these rules: it logs what each reads, but for the
    // control plane's reads, Event objects, lease heartbeats and health probes it leaves
    // out on purpose, which anonymous_request, repeated_failed_auth and
    // system_principal_outside_networks would see (see docs/DEPLOYMENT.md).
    let warned: std::collections::BTreeSet<&str> = stderr
        .lines()
        .filter_map(|l| l.split(": rule ").nth(1))
        .filter_map(|rest| rest.split(" (").next())
        .collect();
    assert_eq!(
        warned,
        [
            "anonymous_request",
            "repeated_failed_auth",
            "system_principal_outside_networks",
        ]
        .into(),
        "the shipped policy misses events other rules need:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}
