//! Rules: the sandboxed Rhai engine, the script API (`event` accessors, helpers, `alert`),
//! and the compiled script set that turns one event into candidate alerts.
//!
//! Owns script loading and evaluation. Calls `state` (the `SharedHelpers` of `count_over`
//! and `first_seen` across replicas), `audit` (the event type) and `clock`.

mod alert;
mod api;
mod attack;
mod glob;
mod index;
mod modules;
mod needs;
mod ruleset;
mod sightings;

pub use alert::{ALERT_FIELDS, Alert, AlertContext, Severity};
pub use api::{
    CLUSTER_NETWORKS, Cidr, CidrError, EVENT_ACCESSORS, PRIVATE_NETWORKS, ScriptEvent,
    SettingProblem, TRUSTED_PRINCIPALS, is_private_ip, is_system_user, json_to_dynamic,
    settings_problems,
};
pub use attack::{ATTACK_CONST, is_technique_id, technique_url};
pub use glob::glob_match;
pub use index::{MATCH_CONST, MATCH_KEYS, RuleFilter, RuleIndex};
pub use modules::MODULE_DIR;
pub use needs::{DEFAULT_STAGES, LEVEL_CONST};
pub use ruleset::{
    Evaluation, LoadError, LoadErrors, Rule, RuleRun, Ruleset, ScriptError, ScriptLimits,
    ScriptSource, Selection,
};
pub use sightings::{MAX_TIMESTAMPS, Sightings, Staged};
