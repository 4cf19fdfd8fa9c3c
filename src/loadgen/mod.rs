//! The load generator behind `klaxon bench-ingest`: audit EventList batches as the
//! kube-apiserver's batch webhook backend sends them, POSTed to klaxon (or any endpoint)
//! in a closed or open loop, with throughput, latency and failures reported.
//!
//! Owns the event mix and body building (`mix`, with the Falco traces embedded by
//! `traces`), the HTTP client (`client`), pacing (`run`) and counting (`stats`). Calls
//! `audit` (to check its own templates), `rules`, and `config` and `server` (an in-process
//! target for its tests).

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
    /// Pacing options that make no run.
    #[error("{0}")]
    Load(String),
}
