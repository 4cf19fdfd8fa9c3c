//! RBAC helpers on `event`: a Role's rules and their values, a binding's subjects and
//! roleRef, read from the request body (else the response body).
//!
//! Owns the RBAC field lookups; calls `event`.

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map};
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

/// Registers `role_rules`, `role_rule_values`, `subjects` and `role_ref` on `Event`.
pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("role_rules", |e: &mut ScriptEvent| object_list(e, "rules"))
        .register_fn("role_rule_values", |e: &mut ScriptEvent, key: &str| {
            role_rule_values(e, key)
        })
        .register_fn("subjects", |e: &mut ScriptEvent| object_list(e, "subjects"))
        .register_fn("role_ref", |e: &mut ScriptEvent| {
            e.subject_object()
                .and_then(|o| o.get("roleRef"))
                .map_or_else(|| Dynamic::from_map(Map::new()), json_to_dynamic)
        });
}

/// The array `key` of the object, as script values; `[]` when absent.
fn object_list(e: &ScriptEvent, key: &str) -> Array {
    e.subject_object()
        .and_then(|o| o.get(key))
        .and_then(Value::as_array)
        .map(|items| items.iter().map(json_to_dynamic).collect())
        .unwrap_or_default()
}

/// `event.role_rule_values(key)`: every value of one PolicyRule list field over all rules of
/// the role in the request, in order; an unknown field is an error.
fn role_rule_values(e: &ScriptEvent, key: &str) -> Result<Array, Box<EvalAltResult>> {
    if !RULE_FIELDS.contains(&key) {
        return Err(format!(
            "role_rule_values: unknown rule field `{key}` (one of {})",
            RULE_FIELDS.join(", ")
        )
        .into());
    }
    Ok(e.subject_object()
        .and_then(|o| o.get("rules"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get(key).and_then(Value::as_array))
        .flatten()
        .map(json_to_dynamic)
        .collect())
}
