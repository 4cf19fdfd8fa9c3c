//! `klaxon bench-rules` as a user runs it: throughput next to decoding, and a per-rule cost
//! table whose counts follow from the events given.

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

#[test]
fn reports_throughput_and_what_each_rule_cost_on_the_given_events() {
    let stdout = bench_rules(&["--top", "0", &repo("examples/events/pod-created.jsonl")]);
    let events = std::fs::read_to_string(repo("examples/events/pod-created.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    // One round over the file's events (--duration 0s), with the decoding cost beside it.
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("7 rules on {events} events × 1 rounds in ")),
        "{first}"
    );
    assert!(
        first.contains("events/s") && first.contains("decoding alone"),
        "{first}"
    );
    // Every rule has a row; pod_created ran on every pod creation and alerted on each.
    let rows: Vec<&str> = stdout.lines().skip(2).collect();
    assert_eq!(rows.len(), 7, "{stdout}");
    let pod_created: Vec<&str> = rows
        .iter()
        .find(|r| r.starts_with("pod_created "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(pod_created[1], "100.0%", "{stdout}");
    assert_eq!(pod_created[2], "yes");
    assert_eq!(pod_created.last().unwrap(), &events.to_string(), "{stdout}");
}

#[test]
fn without_files_it_evaluates_the_built_in_mix() {
    let stdout = bench_rules(&["--events", "800", "--top", "3"]);
    assert!(
        stdout.starts_with("7 rules on 800 events × 1 rounds"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(4 more rules; --top 0 shows all)"),
        "{stdout}"
    );
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // `klaxon bench-rules … | head -1`: stdout closes before the table is written.
    let mut child = command(&["--events", "400", "--top", "0"])
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
