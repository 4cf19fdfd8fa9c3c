//! A real `redis-server` (Debian's package) on a free loopback port, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `redis-server` child without persistence.
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (again, after [`RedisServer::stop`]); returns once it accepts
    /// connections.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &["--port", &port.to_string()])
    }

    /// Starts one whose only port is a TLS port (`rediss://`) with `cert` and `key`,
    /// requiring `password`.
    pub fn start_tls(cert: &Path, key: &Path, password: &str) -> Self {
        let port = free_port();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        Self::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-auth-clients",
                "no",
                "--requirepass",
                password,
            ],
        )
    }

    /// Starts one on loopback with `args` (its ports) and no persistence.
    fn start_with(port: u16, args: &[&str]) -> Self {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(args)
            .args(["--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server, or run ./test.sh, which installs every tool the tests need");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("Ready to accept connections") {
                // Keep draining its log so it never blocks on a full pipe.
                std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
                return Self { child, port };
            }
        }
        let status = child.wait();
        panic!("redis-server exited before accepting connections on port {port}: {status:?}");
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to exit: its state is gone.
    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
