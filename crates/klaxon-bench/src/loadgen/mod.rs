//! The load generator behind `klaxon-bench ingest` and `klaxon-bench mix`: audit EventList
//! batches as the kube-apiserver's batch webhook backend sends them, POSTed to klaxon (or
//! any endpoint) in a closed or open loop, with throughput, latency and failures reported.
//!
//! Owns the event mix and body building (`mix`, its writes from the Falco traces that
//! `traces` reads from a directory at run time), the HTTP client (`client`), pacing (`run`)
//! and counting (`stats`). Calls `klaxon::audit` (to check its own templates); its tests
//! also `klaxon::config`, `rules` and `server` (an in-process klaxon to load).

mod client;
mod mix;
mod run;
mod stats;
mod traces;

use std::path::PathBuf;

pub use client::{Auth, ClientCert, ClientOptions, Protocol, Target};
pub use mix::{Generator, WRITE_VERBS};
pub use run::{GeneratorSpeed, Load, Stop, generate_only, run};
pub use stats::{Failure, Latency, Mode, Outcome, Report, Tally};
pub use traces::{Traces, default_dir as default_traces_dir};

/// Why a run could not start. The underlying error, if any, is the `source()`.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A PEM file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A CA file holds no usable certificate.
    #[error("{}: not a PEM certificate bundle", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: reqwest::Error,
    },
    /// A CA file holds no certificate at all.
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A client certificate and key do not make an identity.
    #[error("{} and {}: not a PEM client certificate and private key", cert.display(), key.display())]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: reqwest::Error,
    },
    /// Credentials that cannot be sent in a header (control characters).
    #[error("the credentials contain characters not allowed in an HTTP header")]
    Credentials,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The trace directory cannot be listed (missing, not a directory, no permission).
    #[error("cannot read the trace directory {} (set it with --traces DIR)", dir.display())]
    TraceDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The trace directory holds no `*.json` file.
    #[error("no trace (*.json) in {}", dir.display())]
    NoTraces {
        /// The directory.
        dir: PathBuf,
    },
    /// The traces hold no write event (create, update, patch, delete) to build the mix's
    /// writes from.
    #[error("no write event (create, update, patch, delete) in the traces of {}", dir.display())]
    NoWrites {
        /// The directory.
        dir: PathBuf,
    },
    /// Pacing options that make no run.
    #[error("{0}")]
    Load(String),
}

/// The repository's traces, read once per test binary.
#[cfg(test)]
pub(crate) fn test_traces() -> &'static Traces {
    static TRACES: std::sync::OnceLock<Traces> = std::sync::OnceLock::new();
    TRACES.get_or_init(|| Traces::load(&traces::default_dir()).unwrap())
}

/// Asserts that `err`'s message names `path`.
#[cfg(test)]
pub(crate) fn assert_names(err: &LoadgenError, path: &std::path::Path) {
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
}

/// A generator of the repository's traces.
#[cfg(test)]
pub(crate) fn test_generator(seed: u64, batch_size: usize) -> Generator {
    Generator::new(test_traces(), seed, batch_size).unwrap()
}
