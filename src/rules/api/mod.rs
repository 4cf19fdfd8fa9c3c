//! The script API: everything klaxon registers on the engine for scripts. The typed `event`
//! and its sub-records (`event.rs`, `records.rs`), helpers by subject (`pod.rs`, `rbac.rs`,
//! `uri.rs`, `text.rs`, `falco.rs`), and what a running script reaches beyond its event —
//! `alert`, the stateful helpers, settings, logging (`runtime.rs`).
//!
//! Owns the registrations; calls `audit` (the event), `alert` (validation), `glob` and
//! `sightings`.

mod convert;
mod event;
mod falco;
mod pod;
mod rbac;
mod records;
pub(crate) mod runtime;
mod text;
mod uri;

use rhai::Engine;

pub use convert::json_to_dynamic;
pub use event::{EVENT_ACCESSORS, ScriptEvent};
pub use text::is_system_user;

/// Registers the event types, their accessors, the helper functions and the runtime
/// functions (`alert`, `count_over`, `first_seen`, `setting`, `setting_list`, `print` and
/// `debug`) on `engine`.
pub(crate) fn register(engine: &mut Engine) {
    runtime::register(engine);
    event::register(engine);
    records::register(engine);
    uri::register(engine);
    pod::register(engine);
    rbac::register(engine);
    text::register(engine);
    falco::register(engine);
}
