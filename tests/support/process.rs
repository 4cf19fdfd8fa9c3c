//! klaxon as a real child process: started with JSON logs, its address read from the
//! "listening" log line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A running `klaxon serve` child; killed on drop if still running.
pub struct Daemon {
    /// The child process.
    pub child: Child,
    /// The address it listens on.
    pub addr: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `klaxon --log-format json serve --listen 127.0.0.1:0` with `args` before `serve`
    /// and `envs`, and waits for its "listening" log line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_listening(args, envs, "127.0.0.1:0")
    }

    /// Starts klaxon as [`Daemon::start`] does, listening on `listen` (a restart on the
    /// address the apiserver posts to).
    pub fn start_listening(args: &[&str], envs: &[(&str, &str)], listen: &str) -> Self {
        Self::spawn(args, &["--listen", listen], envs, Stdio::null())
    }

    /// Starts klaxon as [`Daemon::start`] does, with `serve_args` after `serve` and its
    /// standard input from `stdin` (`Stdio::piped()`: write to `child.stdin`).
    pub fn start_serving(
        args: &[&str],
        serve_args: &[&str],
        envs: &[(&str, &str)],
        stdin: Stdio,
    ) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(serve_args);
        Self::spawn(args, &all, envs, stdin)
    }

    fn spawn(args: &[&str], serve_args: &[&str], envs: &[(&str, &str)], stdin: Stdio) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_klaxon"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--log-format")
            .arg("json")
            .args(args)
            .arg("serve")
            .args(serve_args)
            .env("RUST_LOG", "info")
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("klaxon starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let addr = listening_address(&mut child, logs.clone());
        Self { child, addr, logs }
    }

    /// Every log line so far (JSON).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM or SIGKILL.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the child's JSON log lines until the "listening" line and returns its address;
/// keeps collecting the lines into `logs`.
fn listening_address(child: &mut Child, logs: Arc<Mutex<Vec<String>>>) -> String {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        logs.lock().unwrap().push(line.clone());
        let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(addr) = log["fields"]["listen"].as_str() {
            let addr = addr.to_owned();
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
            return addr;
        }
    }
    panic!("klaxon exited before listening");
}

/// The `klaxon` binary run in `dir`, with `RUST_LOG`, `SLACK_WEBHOOK_URL` and every
/// `KLAXON_*` variable removed, so results do not depend on the caller's environment.
pub fn klaxon_command(dir: &std::path::Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("klaxon");
    cmd.current_dir(dir)
        .env_remove("SLACK_WEBHOOK_URL")
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KLAXON_") {
            cmd.env_remove(key);
        }
    }
    cmd
}
