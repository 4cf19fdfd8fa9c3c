//! `klaxon bench-rules` as a user runs it: throughput next to decoding, and a per-rule cost
//! table whose counts follow from the events given, from files or stdin, including the
//! shape `klaxon-bench mix` writes (one EventList per line); without events, a clear error.

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `klaxon --config … bench-rules --scripts scripts --duration 0s ARGS`, not yet run.
fn command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("klaxon"));
    cmd.args(["--config", &repo("config/klaxon.toml")])
        .args(["bench-rules", "--scripts", &repo("scripts")])
        .args(["--duration", "0s"])
        .args(args);
    cmd
}

/// The stdout of a successful `bench-rules` run.
fn bench_rules(args: &[&str]) -> String {
    let output = command(args).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The events of examples/events/pod-created.jsonl, one per line.
fn pod_created_lines() -> Vec<String> {
    std::fs::read_to_string(repo("examples/events/pod-created.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `pod_created` row's columns.
fn pod_created_row(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .find(|r| r.starts_with("pod_created "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The rules in scripts/: its `.rhai` files (the modules are in scripts/lib).
fn shipped_rule_count() -> usize {
    std::fs::read_dir(repo("scripts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "rhai")
        })
        .count()
}

#[test]
fn reports_throughput_and_what_each_rule_cost_on_the_given_events() {
    let stdout = bench_rules(&["--top", "0", &repo("examples/events/pod-created.jsonl")]);
    let events = pod_created_lines().len();
    // One round over the file's events (--duration 0s), with the decoding cost beside it.
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "{} rules on {events} events × 1 rounds in ",
            shipped_rule_count()
        )),
        "{first}"
    );
    assert!(
        first.contains("events/s") && first.contains("decoding alone"),
        "{first}"
    );
    // Every rule has a row; pod_created ran on every pod creation and alerted on each.
    let rows: Vec<&str> = stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), shipped_rule_count(), "{stdout}");
    let pod_created = pod_created_row(&stdout);
    assert_eq!(pod_created[1], "100.0%", "{stdout}");
    assert_eq!(pod_created[2], "yes");
    assert_eq!(pod_created.last().unwrap(), &events.to_string(), "{stdout}");
}

#[test]
fn batches_one_per_line_from_stdin_count_every_event() {
    // The shape `klaxon-bench mix` writes: each line an EventList, as the webhook sends it.
    let events = pod_created_lines();
    let text: String = events
        .chunks(2)
        .map(|pair| {
            format!(
                "{{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{}]}}\n",
                pair.join(",")
            )
        })
        .collect();
    let output = command(&["--top", "0", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!(
            "{} rules on {} events × 1 rounds",
            shipped_rule_count(),
            events.len()
        )),
        "{stdout}"
    );
    let row = pod_created_row(&stdout);
    assert_eq!(row[1], "100.0%", "{stdout}");
    assert_eq!(row.last().unwrap(), &events.len().to_string(), "{stdout}");
}

#[test]
fn without_files_it_says_how_to_get_the_mix() {
    let output = command(&["--top", "3"]).output().unwrap();
    assert!(!output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: bench-rules needs audit files to evaluate"),
        "{stderr}"
    );
    assert!(
        stderr.contains("klaxon-bench mix --events 20000 > mix.jsonl"),
        "{stderr}"
    );
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // `klaxon bench-rules … | head -1`: stdout closes before the table is written.
    let mut child = command(&["--top", "0", &repo("examples/events/pod-created.jsonl")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
