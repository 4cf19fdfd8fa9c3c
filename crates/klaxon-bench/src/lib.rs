//! klaxon's benchmark tooling, kept out of the daemon: the load generator ([`loadgen`]:
//! the event mix, built from Falco's audit traces read at run time, the HTTP client,
//! closed and open loop, counting) and the `klaxon-bench` command line ([`cli`]).
//!
//! Depends on the `klaxon` library for its audit types only (to check its templates);
//! its tests and benches also start klaxon's in-process server.

pub mod cli;
pub mod loadgen;
