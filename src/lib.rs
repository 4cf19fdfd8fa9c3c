//! klaxon: Kubernetes audit events in, alerts people act on out.
//!
//! Data flow, one module per stage: [`audit`] decodes what the apiserver sends,
//! [`rules`] runs the user's Rhai scripts on each event, [`notify`] renders and
//! delivers alerts, [`server`] receives webhook batches, [`cli`] is the command line.

pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod notify;
pub mod outbox;
pub mod pipeline;
pub mod rules;
pub mod secret;
pub mod server;
pub mod sources;
pub mod state;
pub mod telemetry;
