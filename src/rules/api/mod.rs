//! The script API: everything klaxon registers on the engine for scripts. The typed `event`
//! and its sub-records (`event.rs`, `records.rs`), helpers by subject (`pod.rs`, `rbac.rs`,
//! `uri.rs`, `text.rs`, `net.rs` for addresses, networks and trusted principals, `falco.rs`), and what a running script reaches beyond its event —
//! `alert`, the stateful helpers, settings, logging (`runtime.rs`).
//!
//! Each file declares its script functions in a Rhai plugin module (`#[export_module] mod
//! functions`): the Rust doc comments and parameter names become the engine's metadata,
//! which tests/it/scripting_doc.rs checks docs/SCRIPTING.md against. Functions taking the
//! event or a record by `&mut` are `pure` (`event` is a constant).
//!
//! Owns the registrations; calls `audit` (the event), `alert` (validation), `glob` and
//! `sightings`.

mod convert;
mod event;
mod falco;
mod net;
mod pod;
mod rbac;
mod records;
pub(crate) mod runtime;
mod text;
mod uri;

use rhai::plugin::*;
use rhai::{Engine, Module};

pub use convert::json_to_dynamic;
pub use event::{EVENT_ACCESSORS, ScriptEvent};
pub use net::{
    CLUSTER_NETWORKS, Cidr, CidrError, PRIVATE_NETWORKS, SettingProblem, TRUSTED_PRINCIPALS,
    is_private_ip, settings_problems,
};
pub use text::is_system_user;

/// Registers the event types, their accessors, the helper functions and the runtime
/// functions (`alert`, `count_over`, `first_seen`, `setting`, `setting_list`, `print` and
/// `debug`) on `engine`: one module of Rust functions whose doc comments are the engine's
/// metadata (`Ruleset::function_metadata`).
pub(crate) fn register(engine: &mut Engine) {
    let mut module = Module::new();
    combine_with_exported_module!(&mut module, "runtime", runtime::functions);
    combine_with_exported_module!(&mut module, "event", event::functions);
    combine_with_exported_module!(&mut module, "records", records::functions);
    combine_with_exported_module!(&mut module, "uri", uri::functions);
    combine_with_exported_module!(&mut module, "pod", pod::functions);
    combine_with_exported_module!(&mut module, "rbac", rbac::functions);
    combine_with_exported_module!(&mut module, "text", text::functions);
    combine_with_exported_module!(&mut module, "net", net::functions);
    combine_with_exported_module!(&mut module, "falco", falco::functions);
    engine.register_global_module(module.into());
    runtime::register_hooks(engine);
}
