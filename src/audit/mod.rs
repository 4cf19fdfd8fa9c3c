//! Audit input: the typed `Event` and the decoder for every shape the apiserver and its logs produce.
//!
//! Owns parsing only: the shapes of audit input (`decode.rs`), the cloud envelopes around
//! them (`envelope.rs`), and what counts as an audit event (`recognize.rs`). Calls `clock`.

mod decode;
mod envelope;
mod event;
mod recognize;

pub use decode::{DecodeError, Decoded, Location, decode};
pub use event::{Event, EventList, ObjectReference, Status, UserInfo};
