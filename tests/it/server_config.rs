//! The `[server]` keys of the slow-sender guards and the probe listener: defaults, and
//! mistakes reported with the file, line and key.

use std::time::Duration;

use klaxon::config::{self, ConfigError};
use tempfile::TempDir;

/// Loads `[server]` holding `server_keys` (one per line, from line 3 on).
fn load(server_keys: &str) -> Result<config::Config, ConfigError> {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("klaxon.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\n{server_keys}\n[routing]\ndefault_targets = [\"console\"]\n[targets.console]\ntype = \"console\"\n"
    );
    std::fs::write(&path, text).unwrap();
    config::load(Some(&path))
}

fn problem_of(server_keys: &str) -> String {
    let err = load(server_keys).expect_err("the config should be refused");
    assert_eq!(err.0.len(), 1, "{err}");
    err.to_string()
}

#[test]
fn defaults_read_for_30s_budget_four_bodies_and_no_probe_listener() {
    let config = load("max_body_bytes = 1000").unwrap();
    assert_eq!(
        config.serve.server.body_read_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(config.serve.server.body_buffer_bytes, 4000);
    assert_eq!(config.serve.server.probe_listen, None);
}

#[test]
fn the_new_keys_are_read() {
    let config = load(
        "body_read_timeout = \"1m 30s\"\nbody_buffer_bytes = 100000000\nprobe_listen = \"0.0.0.0:8081\"",
    )
    .unwrap();
    assert_eq!(
        config.serve.server.body_read_timeout,
        Duration::from_secs(90)
    );
    assert_eq!(config.serve.server.body_buffer_bytes, 100_000_000);
    assert_eq!(
        config.serve.server.probe_listen,
        Some("0.0.0.0:8081".parse().unwrap())
    );
}

#[test]
fn mistakes_name_their_line_and_key() {
    let problem = problem_of("body_read_timeout = \"0s\"");
    assert!(
        problem.contains("klaxon.toml:3: server.body_read_timeout: must be longer than 0s"),
        "{problem}"
    );
    let problem = problem_of("max_body_bytes = 1000\nbody_buffer_bytes = 999");
    assert!(
        problem.contains("klaxon.toml:4: server.body_buffer_bytes: 999 is less than"),
        "{problem}"
    );
    let problem = problem_of("probe_listen = \"localhost:8081\"");
    assert!(
        problem.contains("klaxon.toml:3: server.probe_listen: `localhost:8081` is not an address"),
        "{problem}"
    );
    let problem = problem_of("probe_listen = \"127.0.0.1:8080\"");
    assert!(
        problem.contains("klaxon.toml:3: server.probe_listen: `127.0.0.1:8080` is server.listen"),
        "{problem}"
    );
    // Like every value toml cannot read: the line, and what was expected.
    let problem = problem_of("body_read_timeout = \"soon\"");
    assert!(
        problem.contains("klaxon.toml:3: invalid value: string \"soon\", expected a duration"),
        "{problem}"
    );
}
