//! MITRE ATT&CK techniques: `const ATTACK` is validated at load (file, line and column of a
//! bad declaration), carried on every alert of its rule (console, dry-run JSON, the HTTP
//! payload; Slack and email in tests/it/slack.rs and email.rs), and docs/DETECTIONS.md is
//! checked against the shipped scripts and the Falco pack.
//!
//! What the table check holds, per rule: it is listed exactly once (and every row is a
//! rule); its techniques are the script's `ATTACK` declaration, in order, and every
//! technique used is in the document's technique list (and nothing else is); its severities
//! are the severity names the script's code spells as string literals (the severities it
//! can raise, statically: every shipped rule and every Falco-pack rule names its severities
//! as literals); its stages are the stages of its `MATCH` declaration, or, when `MATCH` does
//! not constrain the stage, valid stage names; its level is `Metadata` exactly when the
//! script reads no request or response body (`requestObject`, `responseObject`, the body
//! helpers such as `event.containers()`, and Falco macros built on them), and it is the
//! level the script declares (`const LEVEL`, which every rule spells out, so `klaxon gen
//! audit-policy` logs what it reads). Whether a rule needs `Request` or `RequestResponse`,
//! and its false positives, are judged by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::cargo::cargo_bin_cmd;
use klaxon::audit::policy::Level;
use klaxon::notify::{self, ConsoleFormat, Notice};
use klaxon::rules::{
    Rule, Ruleset, ScriptLimits, ScriptSource, Severity, is_technique_id, technique_url,
};

const DOC: &str = "docs/DETECTIONS.md";
const SCRIPT_DIRS: [&str; 2] = ["scripts", "examples/rules/falco"];
const STAGES: [&str; 4] = [
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];
const LEVELS: [&str; 3] = ["Metadata", "Request", "RequestResponse"];

/// What reads a request or response body: the objects themselves and the helpers that read
/// them (docs/SCRIPTING.md). Falco macros that use them are found through lib/falco.rhai.
const BODY_READERS: [&str; 15] = [
    "requestObject",
    "responseObject",
    ".containers(",
    ".images(",
    ".images_of(",
    ".privileged(",
    ".host_network(",
    ".host_pid(",
    ".host_ipc(",
    ".host_path_mounts(",
    ".capabilities_added(",
    ".role_rules(",
    ".role_rule_values(",
    ".subjects(",
    ".role_ref(",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// One row of the detections table.
#[derive(Debug)]
struct Row {
    line: usize,
    /// The script, relative to the repository root.
    script: PathBuf,
    severities: BTreeSet<String>,
    techniques: Vec<String>,
    level: String,
    stages: BTreeSet<String>,
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

/// The link target of `[text](target)` in `cell`.
fn link_target(cell: &str) -> Option<&str> {
    let start = cell.find("](")? + 2;
    let end = start + cell[start..].find(')')?;
    Some(&cell[start..end])
}

/// The words of `cell` that are in `names`.
fn words_in(cell: &str, names: &[&str]) -> BTreeSet<String> {
    cell.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| names.contains(w))
        .map(str::to_owned)
        .collect()
}

/// The rows of the table whose header starts with `| Rule |`.
fn rows() -> Vec<Row> {
    let doc = read(DOC);
    let lines: Vec<&str> = doc.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("| Rule |"))
        .unwrap_or_else(|| panic!("{DOC} has no table starting with `| Rule |`"));
    let columns = cells(lines[header]);
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("{DOC}: the table has no column `{name}`: {columns:?}"))
    };
    let (rule, severity, attack, level, stages) = (
        column("Rule"),
        column("Severity"),
        column("ATT&CK"),
        column("Level"),
        column("Stages"),
    );
    let severity_names: Vec<&str> = Severity::ALL.iter().map(|s| s.as_str()).collect();
    lines
        .iter()
        .enumerate()
        .skip(header + 2)
        .take_while(|(_, l)| l.starts_with('|'))
        .map(|(index, line)| {
            let c = cells(line);
            assert_eq!(c.len(), columns.len(), "{DOC}:{}: {line}", index + 1);
            let target = link_target(&c[rule])
                .unwrap_or_else(|| panic!("{DOC}:{}: the rule is not a link", index + 1));
            Row {
                line: index + 1,
                script: PathBuf::from(target.trim_start_matches("../")),
                severities: words_in(&c[severity], &severity_names),
                techniques: techniques(&c[attack]),
                level: c[level]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                stages: words_in(&c[stages], &STAGES),
            }
        })
        .collect()
}

/// `T1610, T1611` → the IDs; `—` → none.
fn techniques(cell: &str) -> Vec<String> {
    if cell == "—" {
        return Vec::new();
    }
    cell.split(',').map(|t| t.trim().to_owned()).collect()
}

/// The shipped rules and the Falco pack, loaded as klaxon loads them.
fn rules() -> Ruleset {
    let dirs: Vec<PathBuf> = SCRIPT_DIRS.iter().map(|d| root().join(d)).collect();
    Ruleset::load(&dirs, &ScriptLimits::default(), "test").expect("the shipped scripts load")
}

fn relative(rule: &Rule) -> PathBuf {
    rule.path()
        .strip_prefix(root())
        .expect("a shipped script")
        .to_path_buf()
}

/// Each rule's row; panics unless every rule has exactly one and every row is a rule.
fn rows_by_rule(rules: &Ruleset) -> BTreeMap<PathBuf, Row> {
    let mut by_script: BTreeMap<PathBuf, Row> = BTreeMap::new();
    let mut problems = Vec::new();
    for row in rows() {
        if let Some(first) = by_script.get(&row.script) {
            problems.push(format!(
                "{DOC}:{}: {} is listed again (first at line {})",
                row.line,
                row.script.display(),
                first.line
            ));
        } else {
            by_script.insert(row.script.clone(), row);
        }
    }
    let scripts: BTreeSet<PathBuf> = rules.rules().iter().map(relative).collect();
    for script in &scripts {
        if !by_script.contains_key(script) {
            problems.push(format!("{} has no row in {DOC}", script.display()));
        }
    }
    for (script, row) in &by_script {
        if !scripts.contains(script) {
            problems.push(format!(
                "{DOC}:{}: {} is not a shipped or Falco-pack rule",
                row.line,
                script.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    by_script
}

#[test]
fn every_rule_is_listed_once_and_every_row_is_a_rule() {
    let rules = rules();
    let rows = rows_by_rule(&rules);
    assert_eq!(rows.len(), rules.rules().len());
    assert!(rows.len() >= 55, "{} rows", rows.len());
}

#[test]
fn every_shipped_and_falco_rule_declares_its_techniques() {
    let missing: Vec<String> = rules()
        .rules()
        .iter()
        .filter(|rule| {
            let text = std::fs::read_to_string(rule.path()).unwrap();
            !text.lines().any(|l| l.starts_with("const ATTACK = "))
        })
        .map(|rule| rule.path().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "no `const ATTACK = [...]` (use [] for a rule of no technique): {missing:?}"
    );
}

#[test]
fn techniques_in_the_table_are_the_declarations_and_all_are_explained() {
    let rules = rules();
    let rows = rows_by_rule(&rules);
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for rule in rules.rules() {
        let row = &rows[&relative(rule)];
        if row.techniques != rule.attack() {
            problems.push(format!(
                "{DOC}:{}: {} lists {:?}, the script declares {:?}",
                row.line,
                rule.name(),
                row.techniques,
                rule.attack()
            ));
        }
        used.extend(rule.attack().iter().cloned());
    }
    // The technique list: `- [T1609](https://attack.mitre.org/techniques/T1609/) Name`.
    let doc = read(DOC);
    let listed: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("- [T"))
        .filter_map(|rest| {
            let id = format!("T{}", &rest[..rest.find(']')?]);
            Some((id, link_target(&format!("[{rest}"))?.to_owned()))
        })
        .collect();
    for (id, url) in &listed {
        assert!(is_technique_id(id), "{DOC}: `{id}` in the technique list");
        if *url != technique_url(id) {
            problems.push(format!(
                "{DOC}: {id} links to {url}, not {}",
                technique_url(id)
            ));
        }
    }
    let listed_ids: BTreeSet<String> = listed.into_keys().collect();
    for id in used.difference(&listed_ids) {
        problems.push(format!("{DOC}: {id} is used but not in the technique list"));
    }
    for id in listed_ids.difference(&used) {
        problems.push(format!(
            "{DOC}: {id} is in the technique list but no rule uses it"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The severity names a script's code (not its comments) spells as string literals.
fn literal_severities(text: &str) -> BTreeSet<String> {
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let code = code.join("\n");
    Severity::ALL
        .iter()
        .map(|s| s.as_str())
        .filter(|name| code.contains(&format!("\"{name}\"")))
        .map(str::to_owned)
        .collect()
}

/// Runs `check` on every rule and its row; fails listing every problem it returns.
fn check_each_row(check: impl Fn(&Rule, &Row) -> Option<String>) {
    let rules = rules();
    let rows = rows_by_rule(&rules);
    let problems: Vec<String> = rules
        .rules()
        .iter()
        .filter_map(|rule| check(rule, &rows[&relative(rule)]))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A rule's script with the modules of its directory's `lib/` it imports appended
/// (`import "pod_risks" as risks;` reads `lib/pod_risks.rhai`): what it can raise and read.
/// The Falco pack's own library is walked macro by macro instead (`reads_a_body`).
fn script_with_imports(path: &Path) -> String {
    let mut text = std::fs::read_to_string(path).unwrap();
    let lib = path.parent().unwrap().join("lib");
    let modules: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("import \""))
        .filter_map(|rest| rest.split('"').next())
        .filter(|module| *module != "falco")
        .map(str::to_owned)
        .collect();
    for module in modules {
        if let Ok(body) = std::fs::read_to_string(lib.join(format!("{module}.rhai"))) {
            text.push_str(&body);
        }
    }
    text
}

#[test]
fn severities_in_the_table_are_those_the_script_can_raise() {
    check_each_row(|rule, row| {
        // The script itself: a module may rank every severity (scripts/lib/pod_risks.rhai),
        // so a rule whose severity a module computes lists those its own code names.
        let text = std::fs::read_to_string(rule.path()).unwrap();
        let literals = literal_severities(&text);
        assert!(
            !literals.is_empty(),
            "{} names no severity as a literal: this check cannot hold it",
            rule.name()
        );
        (row.severities != literals).then(|| {
            format!(
                "{DOC}:{}: {} lists severities {:?}, the script raises {:?}",
                row.line,
                rule.name(),
                row.severities,
                literals
            )
        })
    });
}

#[test]
fn stages_in_the_table_are_those_of_the_match_declaration() {
    check_each_row(|rule, row| {
        let declared: Option<BTreeSet<String>> = rule.filters().and_then(|filters| {
            filters
                .iter()
                .map(|f| f.stage.clone())
                .collect::<Option<Vec<Vec<String>>>>()
                .map(|stages| stages.into_iter().flatten().collect())
        });
        match declared {
            Some(stages) if stages != row.stages => Some(format!(
                "{DOC}:{}: {} lists stages {:?}, its MATCH declares {:?}",
                row.line,
                rule.name(),
                row.stages,
                stages
            )),
            None if row.stages.is_empty() => Some(format!(
                "{DOC}:{}: {} names no stage",
                row.line,
                rule.name()
            )),
            _ => None,
        }
    });
}

/// lib/falco.rhai's functions: name → body.
fn falco_functions() -> BTreeMap<String, String> {
    let lib = read("examples/rules/falco/lib/falco.rhai");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in lib.lines() {
        if let Some(rest) = line.strip_prefix("fn ") {
            let name = rest.split('(').next().unwrap_or_default().trim().to_owned();
            current = Some(name.clone());
            out.insert(name, String::new());
        } else if line.starts_with(|c: char| !c.is_whitespace() && c != '}') {
            current = None;
        }
        if let Some(name) = &current {
            let body = out.get_mut(name).expect("inserted");
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// Whether `text`, with the Falco macros it calls (and those they call), reads a body.
fn reads_a_body(text: &str, falco: &BTreeMap<String, String>) -> bool {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut pending = vec![text];
    while let Some(code) = pending.pop() {
        if BODY_READERS.iter().any(|r| code.contains(r)) {
            return true;
        }
        for (name, body) in falco {
            let called = code.contains(&format!("falco::{name}("))
                || code.contains(&format!(" {name}("))
                || code.contains(&format!("({name}("));
            if called && seen.insert(name) {
                pending.push(body);
            }
        }
    }
    false
}

#[test]
fn the_level_is_metadata_exactly_for_rules_that_read_no_body() {
    let falco = falco_functions();
    assert!(
        falco.contains_key("sensitive_vol_mount"),
        "{:?}",
        falco.keys()
    );
    check_each_row(|rule, row| {
        if !LEVELS.contains(&row.level.as_str()) {
            return Some(format!(
                "{DOC}:{}: level `{}` is not one of {LEVELS:?}",
                row.line, row.level
            ));
        }
        let text = script_with_imports(rule.path());
        let body = reads_a_body(&text, &falco);
        (body == (row.level == "Metadata")).then(|| {
            format!(
                "{DOC}:{}: {} is listed at level {}, but it {} request or response body",
                row.line,
                rule.name(),
                row.level,
                if body { "reads a" } else { "reads no" }
            )
        })
    });
}

#[test]
fn every_rule_declares_the_level_of_its_row() {
    check_each_row(|rule, row| {
        let text = std::fs::read_to_string(rule.path()).unwrap();
        if !text.lines().any(|l| l.starts_with("const LEVEL = ")) {
            return Some(format!(
                "{}: declares no `const LEVEL` (gen audit-policy would log it at Metadata)",
                relative(rule).display()
            ));
        }
        let declared = Level::parse(&row.level);
        (declared != Some(rule.level())).then(|| {
            format!(
                "{DOC}:{}: {} is listed at level {}, its script declares {:?}",
                row.line,
                rule.name(),
                row.level,
                rule.level()
            )
        })
    });
}

fn load_one(name: &str, text: &str) -> Result<Ruleset, String> {
    Ruleset::compile(
        vec![ScriptSource {
            name: name.to_owned(),
            path: PathBuf::from(format!("rules/{name}.rhai")),
            text: text.to_owned(),
        }],
        &ScriptLimits::default(),
        "prod",
    )
    .map_err(|e| e.to_string())
}

#[test]
fn a_bad_attack_declaration_fails_the_load_naming_file_line_and_column() {
    for (text, expected) in [
        (
            "// header\nconst ATTACK = [\n    \"T1609\",\n    \"T16O9\",\n];\n",
            "rules/r.rhai:4:6: ATTACK: `T16O9` is not an ATT&CK technique ID",
        ),
        (
            "const ATTACK = [\"T1552.07\"];",
            "rules/r.rhai:1:18: ATTACK: `T1552.07` is not an ATT&CK technique ID",
        ),
        (
            "const ATTACK = [\"t1609\"];",
            "rules/r.rhai:1:18: ATTACK: `t1609` is not",
        ),
        (
            "const ATTACK = [\"T1609\", \"T1611\", \"T1609\"];",
            "rules/r.rhai:1:18: ATTACK: `T1609` is listed twice",
        ),
        (
            "let x = 1;\nconst ATTACK = [\"T1609\", 7];",
            "rules/r.rhai:2:1: ATTACK takes technique IDs as strings, not i64",
        ),
        (
            "let id = \"T1609\";\n\nconst ATTACK = [id];",
            "rules/r.rhai:3:1: ATTACK must be a top-level constant array of literal technique IDs",
        ),
    ] {
        let err = load_one("r", text).expect_err(text);
        assert!(err.starts_with(expected), "{text:?}:\n{err}");
    }
}

#[test]
fn good_declarations_load_in_order_and_a_script_without_one_has_none() {
    for (text, expected) in [
        (
            "const ATTACK = [\"T1610\", \"T1552.007\"];",
            vec!["T1610", "T1552.007"],
        ),
        ("const ATTACK = \"T1609\";", vec!["T1609"]),
        ("const ATTACK = [];", vec![]),
        ("const ATTACKS = 1; // not the declaration", vec![]),
        ("let x = 1;", vec![]),
    ] {
        let rules = load_one("r", text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(rules.rules()[0].attack(), expected, "{text}");
    }
}

const EXEC_EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-1","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/payments/pods/web/exec?command=sh","verb":"create","user":{"username":"alice"},"sourceIPs":["10.0.0.7"],"objectRef":{"resource":"pods","namespace":"payments","name":"web","subresource":"exec"},"responseStatus":{"code":101},"stageTimestamp":"2025-03-14T09:26:53.589793Z"}"#;

#[test]
fn every_alert_carries_its_rules_techniques_to_console_and_payload() {
    let rules = load_one(
        "exec",
        "const ATTACK = [\"T1609\", \"T1552.007\"];\n\
         alert(#{ title: \"one\" });\nalert(#{ title: \"two\", severity: \"warning\" });",
    )
    .unwrap();
    let event = klaxon::audit::decode(EXEC_EVENT.as_bytes())
        .events
        .pop()
        .expect("the event decodes");
    let alerts = rules.evaluate(Arc::new(event)).alerts;
    assert_eq!(alerts.len(), 2);
    for alert in &alerts {
        assert_eq!(alert.attack, ["T1609", "T1552.007"]);
    }

    let human = notify::console_text(&alerts[0], ConsoleFormat::Human);
    assert!(human.contains("\n    ATT&CK T1609, T1552.007\n"), "{human}");
    let json: serde_json::Value =
        serde_json::from_str(&notify::console_text(&alerts[0], ConsoleFormat::Json)).unwrap();
    assert_eq!(json["attack"], serde_json::json!(["T1609", "T1552.007"]));

    let payload = Notice {
        target: "hook".to_owned(),
        group_key: "g".to_owned(),
        alerts: alerts.clone(),
    }
    .payload();
    for alert in payload["alerts"].as_array().unwrap() {
        assert_eq!(alert["attack"], serde_json::json!(["T1609", "T1552.007"]));
    }

    // No declaration: no `attack` key, no console line.
    let plain = load_one("plain", "alert(#{ title: \"x\" });").unwrap();
    let event = klaxon::audit::decode(EXEC_EVENT.as_bytes())
        .events
        .pop()
        .unwrap();
    let alert = plain.evaluate(Arc::new(event)).alerts.pop().unwrap();
    assert!(alert.attack.is_empty());
    let payload = Notice::single("hook", alert.clone()).payload();
    assert!(payload["alerts"][0].get("attack").is_none(), "{payload}");
    assert!(!notify::console_text(&alert, ConsoleFormat::Human).contains("ATT&CK"));
}

#[test]
fn dry_run_json_lines_carry_the_shipped_rules_techniques() {
    let rules = rules();
    let declared: BTreeMap<&str, &[String]> = rules
        .rules()
        .iter()
        .map(|r| (r.name(), r.attack()))
        .collect();
    let output = cargo_bin_cmd!("klaxon")
        .current_dir(root())
        .env_remove("SLACK_WEBHOOK_URL")
        .env_remove("RUST_LOG")
        .args(["--scripts", "scripts", "dry-run", "--format", "json"])
        .args([
            "examples/events/exec-into-pod.jsonl",
            "examples/events/pod-created.jsonl",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: BTreeSet<&str> = lines.iter().map(|l| l["rule"].as_str().unwrap()).collect();
    assert!(
        seen.contains("exec_or_attach") && seen.contains("pod_created"),
        "{seen:?}"
    );
    for line in &lines {
        let rule = line["rule"].as_str().unwrap();
        assert_eq!(
            line["attack"],
            serde_json::json!(declared[rule]),
            "{rule}: {line}"
        );
    }
}
