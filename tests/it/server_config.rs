//! The `[server]` keys of the slow-sender guards and the probe listener, and the followed
//! files of `[[sources.file]]`: defaults, and mistakes reported with the file, line and key.

use std::time::Duration;

use klaxon::config::{self, ConfigError};
use klaxon::sources::{FileSource, Input, StartAt};
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

/// Asserts that `server_keys` are refused with a problem containing `expected`.
fn assert_problem(server_keys: &str, expected: &str) {
    let problem = problem_of(server_keys);
    assert!(problem.contains(expected), "{problem}");
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
    assert_problem(
        "body_read_timeout = \"0s\"",
        "klaxon.toml:3: server.body_read_timeout: must be longer than 0s",
    );
    assert_problem(
        "max_body_bytes = 1000\nbody_buffer_bytes = 999",
        "klaxon.toml:4: server.body_buffer_bytes: 999 is less than",
    );
    assert_problem(
        "probe_listen = \"localhost:8081\"",
        "klaxon.toml:3: server.probe_listen: `localhost:8081` is not an address",
    );
    assert_problem(
        "probe_listen = \"127.0.0.1:8080\"",
        "klaxon.toml:3: server.probe_listen: `127.0.0.1:8080` is server.listen",
    );
    // Like every value toml cannot read: the line, and what was expected.
    assert_problem(
        "body_read_timeout = \"soon\"",
        "klaxon.toml:3: invalid value: string \"soon\", expected a duration",
    );
}

/// `[[sources.file]]` reaches the server's settings (`start_at` defaults to the end); a
/// path followed twice is refused at its line, an unknown `start_at` at its line too.
#[test]
fn followed_files_are_read_and_their_mistakes_name_their_line() {
    let config = load(
        "[[sources.file]]\npath = \"/var/log/kubernetes/audit/audit.log\"\n[[sources.file]]\npath = \"-\"\nstart_at = \"beginning\"",
    )
    .unwrap();
    assert_eq!(
        config.serve.sources,
        [
            FileSource {
                input: Input::File("/var/log/kubernetes/audit/audit.log".into()),
                start_at: StartAt::End,
            },
            FileSource {
                input: Input::Stdin,
                start_at: StartAt::Beginning,
            },
        ]
    );
    assert_problem(
        "[[sources.file]]\npath = \"/a.log\"\n[[sources.file]]\nstart_at = \"end\"\npath = \"/a.log\"",
        "klaxon.toml:7: sources.file.1.path: `/a.log` is followed twice",
    );
    assert_problem(
        "[[sources.file]]\npath = \"/a.log\"\nstart_at = \"middle\"",
        "klaxon.toml:5: unknown variant `middle`, expected `end` or `beginning`",
    );
}
