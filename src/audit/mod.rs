//! Audit input: the typed `Event` and the decoder for every shape the apiserver and its logs produce.
//!
//! Owns parsing only. Calls nothing of the crate.

mod decode;
mod event;

pub use decode::{DecodeError, Decoded, Location, decode};
pub use event::{Event, EventList, ObjectReference, Status, UserInfo};
