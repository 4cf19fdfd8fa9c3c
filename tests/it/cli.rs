//! Process-level tests of the `klaxon` binary's `check` and `dry-run` commands.
//!
//! Covers: `check` on the shipped config and scripts, and the file:line(:column) it reports
//! for broken scripts and broken configs (TOML syntax, unknown key, undefined default target,
//! Slack target without a URL); `dry-run` on the shipped example events in human, JSON,
//! Slack-payload and console-payload form, from stdin, and over every example file; and how
//! `dry-run` reports script failures (a `throw`, an index out of bounds, a runaway loop stopped
//! by the operation limit, `alert()` misuse) and malformed input lines while still evaluating
//! everything else.
//!
//! Every command runs with `SLACK_WEBHOOK_URL`, `RUST_LOG` and all `KLAXON_*` variables removed,
//! so the results do not depend on the caller's environment. Commands that use shipped files run
//! in the repository root; the others run in a temporary directory holding their own config,
//! scripts and events.

use std::path::{Path, PathBuf};

use crate::support;
use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::{contains, is_match};
use tempfile::TempDir;

const POD_CREATED: &str = "examples/events/pod-created.jsonl";
const POD_CREATED_TITLE: &str = "Pod created: payments/web-7d4b9c";

/// `klaxon` with a clean environment, run in `dir`.
fn klaxon_in(dir: &Path) -> Command {
    support::process::klaxon_command(dir)
}

/// `klaxon` with a clean environment, run in the repository root (for shipped files).
fn klaxon() -> Command {
    klaxon_in(&repo_root())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Writes `text` to `dir/name`, creating parent directories, and returns the path.
/// `klaxon --config NAME --scripts scripts check`, run in a new directory that holds one
/// working script and the config file NAME with `text`.
fn check_with_config(name: &str, text: &str) -> assert_cmd::assert::Assert {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "scripts/fine.rhai", FIRES_ON_CREATE);
    write(dir.path(), name, text);
    klaxon_in(dir.path())
        .args(["--config", name, "--scripts", "scripts", "check"])
        .assert()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("create dir");
    std::fs::write(&path, text).expect("write fixture");
    path
}

/// A config that routes everything to the console and nothing else.
const CONSOLE_ONLY: &str = r#"[routing]
default_targets = ["console"]

[targets.console]
type = "console"
"#;

/// Two minimal `create` events, as JSON lines.
const TWO_EVENTS: &str = concat!(
    r#"{"auditID":"id-1","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api","stageTimestamp":"2026-11-20T10:00:00Z"}"#,
    "\n",
    r#"{"auditID":"id-2","verb":"create","stage":"ResponseComplete","level":"Metadata","requestURI":"/api","stageTimestamp":"2026-11-20T10:00:01Z"}"#,
    "\n",
);

/// A rule that fires on every `create`, titled with the auditID.
const FIRES_ON_CREATE: &str = r#"if event.verb == "create" {
    alert(#{ title: `seen ${event.auditID}` });
}
"#;

/// A temporary directory with `klaxon.toml` (console only), `events.jsonl` (two events) and
/// `scripts/a_fires.rhai` plus the given extra scripts.
struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(scripts: &[(&str, &str)]) -> Self {
        let dir = TempDir::new().expect("temp dir");
        write(dir.path(), "klaxon.toml", CONSOLE_ONLY);
        write(dir.path(), "events.jsonl", TWO_EVENTS);
        write(dir.path(), "scripts/a_fires.rhai", FIRES_ON_CREATE);
        for (name, text) in scripts {
            write(dir.path(), &format!("scripts/{name}"), text);
        }
        Self { dir }
    }

    /// `klaxon --config klaxon.toml --scripts scripts dry-run FILE`, in the fixture.
    fn dry_run(&self, file: &str) -> Command {
        let mut cmd = klaxon_in(self.dir.path());
        cmd.args([
            "--config",
            "klaxon.toml",
            "--scripts",
            "scripts",
            "dry-run",
            file,
        ]);
        cmd
    }
}

/// The auditID of the only event of the shipped `pod-created.jsonl`.
fn pod_created_audit_id() -> String {
    let text = std::fs::read_to_string(repo_root().join(POD_CREATED)).expect("read fixture");
    let event: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("one line")).expect("fixture is JSON");
    event["auditID"]
        .as_str()
        .expect("fixture has an auditID")
        .to_owned()
}

/// The shipped rules: the `*.rhai` files of scripts/, sorted.
fn shipped_rules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Matches the summary line's counts, whether each noun is written singular or plural.
fn summary(
    events: &str,
    rules: usize,
    alerts: usize,
    errors: usize,
    malformed: usize,
) -> impl Predicate<str> {
    is_match(format!(
        r"(?m)^summary: {events} events?, {rules} rules?, {alerts} alerts?, {errors} script errors?, {malformed} malformed$"
    ))
    .unwrap()
}

fn stdout_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).expect("stdout is UTF-8")
}

// ---------------------------------------------------------------------------------------------
// klaxon check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_accepts_shipped_config_and_scripts() {
    let assert = klaxon().arg("check").assert().success();
    let stdout = stdout_of(&assert);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line, got {stdout:?}");
    let line = lines[0];
    assert!(line.starts_with("ok:"), "{line}");
    assert!(line.contains("config/klaxon.toml"), "{line}");
    let rules = shipped_rules();
    assert!(rules.contains(&"pod_created".to_owned()), "{rules:?}");
    let listed = format!("{} rules from scripts ({})", rules.len(), rules.join(", "));
    assert!(line.contains(&listed), "{line}");
    assert!(line.contains("console (console)"), "{line}");
    // Without SLACK_WEBHOOK_URL the slack target falls back to the console, and says why.
    assert!(line.contains("slack → console"), "{line}");
    assert!(line.contains("SLACK_WEBHOOK_URL"), "{line}");
}

#[test]
fn check_reports_script_syntax_error_with_line_and_column() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "klaxon.toml", CONSOLE_ONLY);
    write(dir.path(), "scripts/fine.rhai", FIRES_ON_CREATE);
    let broken = write(dir.path(), "scripts/broken.rhai", "let x = 1;\nlet y = ;\n");
    klaxon_in(dir.path())
        .args(["--config", "klaxon.toml", "check", "--scripts"])
        .arg(dir.path().join("scripts"))
        .assert()
        .failure()
        .stdout(predicate::str::is_empty())
        .stderr(contains(format!("error: {}:2:9: ", broken.display())))
        .stderr(contains("1 problem found"));
}

#[test]
fn check_reports_every_broken_script() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "klaxon.toml", CONSOLE_ONLY);
    write(dir.path(), "scripts/one.rhai", "let x = 1;\nlet y = ;\n");
    write(
        dir.path(),
        "scripts/two.rhai",
        "// comment\nif true {\n    let z = (1 + ;\n}\n",
    );
    klaxon_in(dir.path())
        .args(["--config", "klaxon.toml", "check", "--scripts", "scripts"])
        .assert()
        .failure()
        .stderr(contains(format!(
            "{}:2:",
            Path::new("scripts/one.rhai").display()
        )))
        .stderr(contains(format!(
            "{}:3:",
            Path::new("scripts/two.rhai").display()
        )))
        .stderr(contains("2 problems found"));
}

#[test]
fn check_reports_toml_syntax_error_with_path_and_line() {
    check_with_config("bad.toml", "cluster_name = \"x\"\n\n[server]\nlisten = \n")
        .failure()
        .stdout(predicate::str::is_empty())
        .stderr(contains("error: bad.toml:4: "))
        .stderr(contains("1 problem found"));
}

#[test]
fn check_reports_unknown_config_key_with_path_and_line() {
    check_with_config(
        "typo.toml",
        "cluster_name = \"x\"\n\n[server]\nmax_bdy_bytes = 1024\n",
    )
    .failure()
    .stderr(contains("error: typo.toml:4: "))
    .stderr(contains("unknown field `max_bdy_bytes`"))
    .stderr(contains("max_body_bytes"))
    .stderr(contains("1 problem found"));
}

#[test]
fn check_reports_undefined_default_target_with_key_and_line() {
    check_with_config(
        "routing.toml",
        "cluster_name = \"x\"\n\n[routing]\ndefault_targets = [\"pager\"]\n\n[targets.console]\ntype = \"console\"\n",
    )
        .failure()
        .stderr(contains(
            "error: routing.toml:4: routing.default_targets: no target named `pager` (defined: console)",
        ))
        .stderr(contains("1 problem found"));
}

#[test]
fn check_rejects_slack_target_without_url_or_fallback() {
    check_with_config(
        "slack.toml",
        "[routing]\ndefault_targets = [\"slack\"]\n\n[targets.slack]\ntype = \"slack\"\n",
    )
    .failure()
    .stdout(predicate::str::is_empty())
    .stderr(contains(
        "error: slack.toml:4: targets.slack.webhook_url: webhook URL not set",
    ))
    .stderr(contains("1 problem found"));
}

#[test]
fn check_locates_a_typo_inside_a_target_on_its_own_line() {
    check_with_config(
        "target.toml",
        "[routing]\ndefault_targets = [\"slack\"]\n\n[targets.slack]\ntype = \"slack\"\nwebhok_url = \"https://x\"\n",
    )
        .failure()
        .stderr(contains("error: target.toml:6: "))
        .stderr(contains("unknown field `webhok_url`"));
}

#[test]
fn check_blames_an_environment_override_not_the_file() {
    klaxon()
        .env("KLAXON_SERVER__LISTEN", "not-an-address")
        .arg("check")
        .assert()
        .failure()
        .stderr(contains(
            "error: environment KLAXON_SERVER__LISTEN: server.listen: `not-an-address` is not an address",
        ));
}

#[test]
fn environment_overrides_config_keys() {
    let assert = klaxon()
        .env("KLAXON_CLUSTER_NAME", "prod-eu")
        .args(["dry-run", "--format", "json", POD_CREATED])
        .assert()
        .success();
    let alert: serde_json::Value = serde_json::from_str(stdout_of(&assert).trim()).unwrap();
    assert_eq!(alert["context"]["cluster"], "prod-eu");
}

// ---------------------------------------------------------------------------------------------
// klaxon dry-run on the shipped examples
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_shows_pod_created_alert_origin_and_summary() {
    klaxon()
        .args(["dry-run", POD_CREATED])
        .assert()
        .success()
        .stdout(contains(format!(
            "{POD_CREATED}:1 → slack (not configured: console)"
        )))
        .stdout(contains(format!("[info] pod_created: {POD_CREATED_TITLE}")))
        .stdout(contains(format!("auditID {}", pod_created_audit_id())))
        .stdout(summary("1", shipped_rules().len(), 1, 0, 0))
        .stdout(is_match(r"(?m)^rule\s+evaluated\s+fired\s+errors\b").unwrap())
        .stdout(is_match(r"(?m)^pod_created\s+1\s+1\s+0\b").unwrap());
}

#[test]
fn dry_run_json_prints_one_alert_per_line_and_summary_on_stderr() {
    let assert = klaxon()
        .args(["dry-run", "--format", "json", POD_CREATED])
        .assert()
        .success()
        .stderr(summary("1", shipped_rules().len(), 1, 0, 0))
        .stderr(is_match(r"(?m)^pod_created\s+1\s+1\s+0\b").unwrap());
    let stdout = stdout_of(&assert);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one alert line, got {stdout:?}");
    let alert: serde_json::Value = serde_json::from_str(lines[0]).expect("alert line is JSON");
    assert_eq!(alert["rule"], "pod_created");
    assert_eq!(alert["title"], POD_CREATED_TITLE);
    assert_eq!(alert["severity"], "info");
    assert_eq!(
        alert["context"]["audit_id"],
        pod_created_audit_id().as_str()
    );
}

#[test]
fn dry_run_target_slack_prints_block_kit_payload() {
    let assert = klaxon()
        .args(["dry-run", "--target", "slack", POD_CREATED])
        .assert()
        .success()
        .stderr(summary("1", shipped_rules().len(), 1, 0, 0));
    let stdout = stdout_of(&assert);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one payload line, got {stdout:?}");
    let payload: serde_json::Value = serde_json::from_str(lines[0]).expect("payload is JSON");
    let text = payload["text"]
        .as_str()
        .expect("`text` fallback is a string");
    assert!(text.contains(POD_CREATED_TITLE), "{text}");
    let blocks = payload["blocks"].as_array().expect("`blocks` is an array");
    assert!(!blocks.is_empty());
    assert_eq!(blocks[0]["type"], "header");
    let header = blocks[0]["text"]["text"].as_str().expect("header text");
    assert!(header.contains(POD_CREATED_TITLE), "{header}");
}

#[test]
fn dry_run_target_console_prints_console_text() {
    let dir = TempDir::new().unwrap();
    let config = write(dir.path(), "klaxon.toml", CONSOLE_ONLY);
    klaxon()
        .arg("--config")
        .arg(&config)
        .args(["dry-run", "--target", "console", POD_CREATED])
        .assert()
        .success()
        .stdout(contains(format!("[info] pod_created: {POD_CREATED_TITLE}")))
        .stdout(contains(format!("auditID {}", pod_created_audit_id())))
        // The payload alone: no origin line and no summary on stdout.
        .stdout(contains(" → ").not())
        .stdout(contains("summary:").not())
        .stderr(summary("1", shipped_rules().len(), 1, 0, 0));
}

#[test]
fn dry_run_target_console_includes_alerts_reaching_it_by_fallback() {
    // Shipped config, no SLACK_WEBHOOK_URL: slack falls back to the console.
    klaxon()
        .args(["dry-run", "--target", "console", POD_CREATED])
        .assert()
        .success()
        .stdout(contains(format!("[info] pod_created: {POD_CREATED_TITLE}")));
}

#[test]
fn dry_run_unknown_target_lists_defined_targets() {
    klaxon()
        .args(["dry-run", "--target", "nope", POD_CREATED])
        .assert()
        .failure()
        .stdout(predicate::str::is_empty())
        .stderr(contains("no target named `nope` (defined: console, slack)"));
}

#[test]
fn dry_run_reads_stdin() {
    let input = std::fs::read(repo_root().join(POD_CREATED)).unwrap();
    klaxon()
        .args(["dry-run", "-"])
        .write_stdin(input)
        .assert()
        .success()
        .stdout(contains("<stdin>:1 → "))
        .stdout(contains(format!("[info] pod_created: {POD_CREATED_TITLE}")))
        .stdout(is_match(r"(?m)^pod_created\s+1\s+1\s+0\b").unwrap());
}

#[test]
fn dry_run_over_all_examples_fires_pod_created_twice() {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("examples/events"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".json"))
        // The two corpora have their own test (tests/it/corpora.rs).
        .filter(|name| !name.starts_with("attacks") && !name.starts_with("normal-cluster"))
        .map(|name| format!("examples/events/{name}"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "examples found: {files:?}");
    let assert = klaxon()
        .arg("dry-run")
        .args(&files)
        .assert()
        .success()
        .stdout(is_match(r"(?m)^pod_created\s+\d+\s+2\s+0\b").unwrap());
    let stdout = stdout_of(&assert);
    // The origins of pod_created's alerts (other shipped rules fire on other examples).
    let lines: Vec<&str> = stdout.lines().collect();
    let origins: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[0].contains(" → ") && w[1].contains("pod_created:"))
        .map(|w| w[0].split(" → ").next().unwrap())
        .collect();
    assert_eq!(
        origins,
        [
            "examples/events/batch.json:1 (item 1)",
            "examples/events/pod-created.jsonl:1"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("Pod created: shop/api-5f6c8d9b7-x2kqz"),
        "{stdout}"
    );
    assert!(stdout.contains(POD_CREATED_TITLE), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// klaxon dry-run: script failures and bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_reports_script_throw_and_other_scripts_still_fire() {
    let fx = Fixture::new(&[(
        "b_throws.rhai",
        "// throws on one event only\nif event.auditID == \"id-2\" {\n    throw \"boom\";\n}\n",
    )]);
    let script = Path::new("scripts").join("b_throws.rhai");
    fx.dry_run("events.jsonl")
        .assert()
        .failure()
        .stderr(contains(format!(
            "error: {}:3: rule b_throws failed on auditID id-2: ",
            script.display()
        )))
        .stderr(contains("boom"))
        .stderr(contains("auditID id-1").not())
        .stdout(contains("[info] a_fires: seen id-1"))
        .stdout(contains("[info] a_fires: seen id-2"))
        .stdout(summary("2", 2, 2, 1, 0))
        .stdout(is_match(r"(?m)^b_throws\s+2\s+0\s+1\b").unwrap());
}

#[test]
fn dry_run_reports_index_out_of_bounds() {
    let fx = Fixture::new(&[(
        "b_index.rhai",
        "let xs = [1, 2];\nif event.auditID == \"id-1\" {\n    let y = xs[5];\n}\n",
    )]);
    let script = Path::new("scripts").join("b_index.rhai");
    fx.dry_run("events.jsonl")
        .assert()
        .failure()
        .stderr(contains(format!(
            "error: {}:3: rule b_index failed on auditID id-1: ",
            script.display()
        )))
        .stderr(contains("out of bounds"))
        .stdout(contains("[info] a_fires: seen id-1"))
        .stdout(contains("[info] a_fires: seen id-2"));
}

#[test]
fn dry_run_stops_runaway_loop_at_operation_limit() {
    let fx = Fixture::new(&[(
        "spin.rhai",
        "// spins forever on one event\nif event.auditID == \"id-1\" {\n    loop {}\n}\n",
    )]);
    let script = Path::new("scripts").join("spin.rhai");
    fx.dry_run("events.jsonl")
        .assert()
        .failure()
        .stderr(contains(format!(
            "error: {}:3: rule spin failed on auditID id-1: ",
            script.display()
        )))
        .stderr(is_match("(?i)too many operations").unwrap())
        .stderr(contains("scripts.limits.max_operations = 100000"))
        .stdout(contains("[info] a_fires: seen id-1"))
        .stdout(contains("[info] a_fires: seen id-2"))
        .stdout(is_match(r"(?m)^spin\s+2\s+0\s+1\b").unwrap());
}

#[test]
fn dry_run_reports_malformed_line_and_evaluates_the_rest() {
    let fx = Fixture::new(&[]);
    let lines: Vec<&str> = TWO_EVENTS.lines().collect();
    write(
        fx.dir.path(),
        "mixed.jsonl",
        &format!("{}\nthis is not json\n{}\n", lines[0], lines[1]),
    );
    fx.dry_run("mixed.jsonl")
        .assert()
        .failure()
        .stderr(is_match(r"(?m)^error: mixed\.jsonl:2(:\d+)?: invalid JSON: ").unwrap())
        .stdout(contains("mixed.jsonl:1 → console"))
        .stdout(contains("mixed.jsonl:3 → console"))
        .stdout(contains("[info] a_fires: seen id-1"))
        .stdout(contains("[info] a_fires: seen id-2"))
        .stdout(summary("2", 1, 2, 0, 1));
}

/// Runs a fixture whose only extra script is `bad.rhai` = `script` and checks that the alert
/// call on line 1 is a script error of rule `bad` that says `problem`.
fn assert_alert_misuse(script: &str, problem: &str) {
    let fx = Fixture::new(&[("bad.rhai", script)]);
    let path = Path::new("scripts").join("bad.rhai");
    fx.dry_run("events.jsonl")
        .assert()
        .failure()
        .stderr(contains(format!(
            "error: {}:1: rule bad failed on auditID id-1: ",
            path.display()
        )))
        .stderr(contains(problem))
        .stdout(contains("[info] a_fires: seen id-1"))
        .stdout(contains("[info] a_fires: seen id-2"))
        .stdout(is_match(r"(?m)^bad\s+2\s+0\s+2\b").unwrap());
}

#[test]
fn alert_without_title_is_a_script_error() {
    assert_alert_misuse(
        "alert(#{\n    text: \"no title\",\n});\n",
        "`title` is required",
    );
}

#[test]
fn alert_with_unknown_field_is_a_script_error() {
    assert_alert_misuse(
        "alert(#{\n    titel: \"typo\",\n});\n",
        "unknown field `titel`",
    );
}

#[test]
fn alert_with_bad_severity_is_a_script_error() {
    assert_alert_misuse(
        "alert(#{\n    title: \"t\",\n    severity: \"urgent\",\n});\n",
        "unknown severity `urgent`",
    );
}

#[test]
fn shipped_config_routes_to_slack_once_its_url_is_set() {
    klaxon()
        .env(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/secret-part",
        )
        .arg("check")
        .assert()
        .success()
        .stdout(contains("slack (slack)"))
        .stdout(contains("secret-part").not());
    klaxon()
        .env(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/secret-part",
        )
        .args(["dry-run", POD_CREATED])
        .assert()
        .success()
        .stdout(contains(format!("{POD_CREATED}:1 → slack\n")));
}

#[test]
fn email_and_http_targets_validate_and_dry_run_shows_the_mail() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "scripts/fires.rhai", FIRES_ON_CREATE);
    write(dir.path(), "events.jsonl", TWO_EVENTS);
    write(
        dir.path(),
        "mail.toml",
        r#"[routing]
default_targets = ["mail", "hook"]

[targets.mail]
type = "email"
smtp_host = "smtp.example.com"
from = "klaxon <klaxon@example.com>"
to = ["oncall@example.com"]
subject = "[{{ severity }}] {{ title }}"

[targets.hook]
type = "http"
url = "https://receiver.example.com/alerts"
body_template = '{"text": {{ title | tojson }}}'
content_type = "application/json"
"#,
    );
    klaxon_in(dir.path())
        .args(["--config", "mail.toml", "--scripts", "scripts", "check"])
        .assert()
        .success()
        .stdout(contains("mail (email)"))
        .stdout(contains("hook (http)"));
    klaxon_in(dir.path())
        .args(["--config", "mail.toml", "--scripts", "scripts"])
        .args(["dry-run", "--target", "mail", "events.jsonl"])
        .assert()
        .success()
        // Both alerts arrive within the group window: one digest mail.
        .stdout(contains("Subject: [info] 2 alerts: seen id-1 (+1 more)"))
        .stdout(contains("To: oncall@example.com"));
    klaxon_in(dir.path())
        .args(["--config", "mail.toml", "--scripts", "scripts"])
        .args(["dry-run", "--target", "hook", "events.jsonl"])
        .assert()
        .success()
        .stdout(contains(r#"{"text": "2 alerts: seen id-1 (+1 more)"}"#));
}

#[test]
fn target_keys_that_do_not_apply_are_refused_with_their_line() {
    check_with_config(
        "bad.toml",
        "[targets.hook]\ntype = \"http\"\nurl = \"https://x.example.com\"\nsmtp_host = \"smtp\"\n",
    )
    .failure()
    .stderr(contains(
        "error: bad.toml:4: targets.hook.smtp_host: does not apply to a http target",
    ));
}

#[test]
fn check_reports_unreadable_tls_files() {
    check_with_config(
        "tls.toml",
        "[server.tls]\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"\n",
    )
    .failure()
    .stderr(contains("server.tls: "))
    .stderr(contains("missing.crt"));
}

#[test]
fn scripts_read_settings_from_the_config() {
    let dir = TempDir::new().unwrap();
    write(
        dir.path(),
        "scripts/gated.rhai",
        r#"if setting("gated_enabled", false) { alert(#{ title: `gated ${setting("suffix", "none")}` }); }"#,
    );
    write(dir.path(), "events.jsonl", TWO_EVENTS);
    write(dir.path(), "off.toml", CONSOLE_ONLY);
    write(
        dir.path(),
        "on.toml",
        &format!("{CONSOLE_ONLY}\n[scripts.settings]\ngated_enabled = true\nsuffix = \"x\"\n"),
    );
    klaxon_in(dir.path())
        .args([
            "--config",
            "off.toml",
            "--scripts",
            "scripts",
            "dry-run",
            "--format",
            "json",
            "events.jsonl",
        ])
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    klaxon_in(dir.path())
        .args([
            "--config",
            "on.toml",
            "--scripts",
            "scripts",
            "dry-run",
            "--format",
            "json",
            "events.jsonl",
        ])
        .assert()
        .success()
        .stdout(contains(r#""title":"gated x""#));
}

#[test]
fn check_reports_a_bad_shared_state_config_with_key_and_line() {
    check_with_config(
        "state.toml",
        "[state]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@redis:6379/0\"\nkey_prefix = \"\"\n",
    )
    .failure()
    .stderr(contains(
        "error: state.toml:3: state.redis_url: holds a password: give it as redis_password_env or redis_password_file",
    ))
    .stderr(contains("error: state.toml:4: state.key_prefix: must not be empty"))
    .stderr(contains("hunter2").not())
    .stderr(contains("2 problems found"));
    check_with_config("backend.toml", "[state]\nbackend = \"etcd\"\n")
        .failure()
        .stderr(contains("error: backend.toml:2: "))
        .stderr(contains(
            "unknown variant `etcd`, expected `memory` or `redis`",
        ));
    check_with_config(
        "scheme.toml",
        "[state]\nbackend = \"redis\"\nredis_url = \"http://redis:6379\"\n",
    )
    .failure()
    .stderr(contains(
        "state.redis_url: must be redis:// or rediss://, not http://",
    ));
}

#[test]
fn check_accepts_a_redis_backend_without_reaching_it() {
    check_with_config(
        "redis.toml",
        "[state]\nbackend = \"redis\"\nredis_url = \"rediss://redis.example:6380/1\"\nredis_password_env = \"NOT_SET_ANYWHERE\"\n",
    )
    .success();
}

#[test]
fn check_ignores_the_variables_kubernetes_sets_for_services_named_klaxon_and_klaxon_redis() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "scripts/fine.rhai", FIRES_ON_CREATE);
    klaxon_in(dir.path())
        .args(["--scripts", "scripts", "check"])
        .env("KLAXON_PORT", "tcp://10.96.0.80:8080")
        .env("KLAXON_PORT_8080_TCP", "tcp://10.96.0.80:8080")
        .env("KLAXON_PORT_8080_TCP_ADDR", "10.96.0.80")
        .env("KLAXON_SERVICE_HOST", "10.96.0.80")
        .env("KLAXON_SERVICE_PORT", "8080")
        .env("KLAXON_SERVICE_PORT_WEBHOOK", "8080")
        .env("KLAXON_REDIS_PORT", "tcp://10.96.0.81:6379")
        .env("KLAXON_REDIS_PORT_6379_TCP_PROTO", "tcp")
        .env("KLAXON_REDIS_SERVICE_HOST", "10.96.0.81")
        .env("KLAXON_REDIS_SERVICE_PORT", "6379")
        .assert()
        .success();
    // A real override next to them still applies (and a bad one is still reported).
    klaxon_in(dir.path())
        .args(["--scripts", "scripts", "check"])
        .env("KLAXON_PORT", "tcp://10.96.0.80:8080")
        .env("KLAXON_SERVER__LISTEN", "nonsense")
        .assert()
        .failure()
        .stderr(contains("server.listen"));
    // A top-level typo is still an error, not a service variable.
    klaxon_in(dir.path())
        .args(["--scripts", "scripts", "check"])
        .env("KLAXON_CLUSTERNAME", "x")
        .assert()
        .failure()
        .stderr(contains("clustername: unknown field"));
}
