//! Audit input: the typed `Event`, the decoder for every shape the apiserver and its logs
//! produce, and the mapping of GKE's Cloud Logging audit entries to events (`gke.rs`).
//!
//! Owns parsing only: the shapes of audit input (`decode.rs`), the cloud envelopes around
//! them (`envelope.rs`, which calls `gke.rs` for a LogEntry), and what counts as an audit
//! event (`recognize.rs`); and the apiserver's audit policy (`policy.rs`: reading one,
//! its matching semantics, writing one from what the rules need). Calls `clock`.

mod decode;
mod envelope;
mod event;
mod gke;
pub mod policy;
mod recognize;

pub use decode::{DecodeError, Decoded, Location, decode};
pub use event::{Event, EventList, ObjectReference, Status, UserInfo};

/// Maps one Cloud Logging LogEntry of a GKE cluster's Kubernetes audit log (its JSON text)
/// to an audit event: `Ok(None)` for an entry of another service (not `k8s.io`), which is
/// skipped; `Err` names the field and the problem. See docs/SOURCES.md (GKE) for the mapping.
pub fn event_from_gke_log_entry(json: &str) -> Result<Option<Event>, String> {
    gke::event_from_log_entry(json)
}
