//! Audit input: the typed `Event`, the decoder for every shape the apiserver and its logs
//! produce, and the mapping of GKE's Cloud Logging audit entries to events (`gke.rs`).
//!
//! Owns parsing only. Calls nothing of the crate.

mod decode;
mod event;
mod gke;

pub use decode::{DecodeError, Decoded, Location, decode};
pub use event::{Event, EventList, ObjectReference, Status, UserInfo};

/// Maps one Cloud Logging LogEntry of a GKE cluster's Kubernetes audit log (its JSON text)
/// to an audit event: `Ok(None)` for an entry of another service (not `k8s.io`), which is
/// skipped; `Err` names the field and the problem. See docs/SOURCES.md (GKE) for the mapping.
pub fn event_from_gke_log_entry(json: &str) -> Result<Option<Event>, String> {
    gke::event_from_log_entry(json)
}
