//! klaxon's integration tests, one binary: each module was a test file of its own, and
//! linking the whole crate once instead of once per file is most of the test build's time.
//! `cargo test --test it MODULE::` runs one of them. Tests that need a process of their own
//! (an in-process server whose process-global gauges they read) stay separate binaries:
//! tests/outbox_faults.rs and tests/stalled_senders.rs.

#[path = "../support/mod.rs"]
mod support;

mod accessors;
mod architecture;
mod audit_policy;
mod bench_rules;
mod cli;
mod console;
mod corpora;
mod crash;
mod decode;
mod decode_props;
mod delivery;
mod delivery_model;
mod deploy_manifests;
mod detections;
mod docs;
mod email;
mod envelopes;
mod falco_parity;
mod follow;
mod r#gen;
mod gen_kubectl;
mod gke;
mod history;
mod hostile_scripts;
mod http_target;
mod ingest;
mod klaxon_test;
mod list_helpers;
mod modules;
mod net_helpers;
mod pipeline;
mod probes;
mod redis_state;
mod reliability;
mod rule_index;
mod scripting_doc;
mod serve_process;
mod server;
mod server_config;
mod shipped_settings;
mod silences;
mod slack;
mod stateful;
mod tls;
