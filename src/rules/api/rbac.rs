//! RBAC helpers on `event`: a Role's rules and their values, a binding's subjects and
//! roleRef, read from the request body (else the response body).
//!
//! Owns the RBAC field lookups; calls `event`.

use rhai::plugin::*;
use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde_json::Value;

use super::convert::json_to_dynamic;
use super::event::ScriptEvent;

/// The list fields of an RBAC PolicyRule.
pub const RULE_FIELDS: [&str; 5] = [
    "apiGroups",
    "resources",
    "verbs",
    "resourceNames",
    "nonResourceURLs",
];

/// `role_rules`, `role_rule_values`, `subjects` and `role_ref` on `Event`, with the doc
/// comments the engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;
    use crate::rules::api::event::functions::Event;

    /// A Role's or ClusterRole's `rules`; `[]` otherwise.
    #[rhai_fn(pure)]
    pub fn role_rules(e: &mut Event) -> Array {
        object_list(e, "rules")
    }

    /// Every value of one rule field (`apiGroups`, `resources`, `verbs`, `resourceNames`,
    /// `nonResourceURLs`) over all `rules`, in order; any other field is an error.
    #[rhai_fn(pure, return_raw)]
    pub fn role_rule_values(e: &mut Event, field: &str) -> Result<Array, Box<EvalAltResult>> {
        super::role_rule_values(e, field)
    }

    /// A RoleBinding's or ClusterRoleBinding's `subjects`; `[]` otherwise.
    #[rhai_fn(pure)]
    pub fn subjects(e: &mut Event) -> Array {
        object_list(e, "subjects")
    }

    /// A binding's `roleRef`; `#{}` otherwise.
    #[rhai_fn(pure)]
    pub fn role_ref(e: &mut Event) -> Dynamic {
        e.subject_object()
            .and_then(|o| o.get("roleRef"))
            .map_or_else(|| Dynamic::from_map(Map::new()), json_to_dynamic)
    }
}

/// The array `key` of the object, as script values; `[]` when absent.
fn object_list(e: &ScriptEvent, key: &str) -> Array {
    e.subject_object()
        .and_then(|o| o.get(key))
        .and_then(Value::as_array)
        .map(|items| items.iter().map(json_to_dynamic).collect())
        .unwrap_or_default()
}

/// `event.role_rule_values(field)`: every value of one PolicyRule list field over all rules
/// of the role in the request, in order; an unknown field is an error.
fn role_rule_values(e: &ScriptEvent, field: &str) -> Result<Array, Box<EvalAltResult>> {
    if !RULE_FIELDS.contains(&field) {
        return Err(format!(
            "role_rule_values: unknown rule field `{field}` (one of {})",
            RULE_FIELDS.join(", ")
        )
        .into());
    }
    Ok(e.subject_object()
        .and_then(|o| o.get("rules"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get(field).and_then(Value::as_array))
        .flatten()
        .map(json_to_dynamic)
        .collect())
}
