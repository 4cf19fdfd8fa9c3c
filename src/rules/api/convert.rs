//! Rust and JSON values as script values: the conversions every part of the API shares.
//!
//! Owns the conversions only; calls nothing.

use rhai::{Array, Dynamic, ImmutableString, Map};
use serde_json::Value;

/// Converts JSON into the equivalent Rhai value (objects become maps, null becomes `()`).
pub fn json_to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or_default().into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => Dynamic::from_array(items.iter().map(json_to_dynamic).collect()),
        Value::Object(fields) => Dynamic::from_map(
            fields
                .iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect::<Map>(),
        ),
    }
}

/// Strings as a script array of strings.
pub(super) fn strings(items: &[String]) -> Array {
    items.iter().map(|s| dyn_text(s)).collect()
}

/// A script string.
pub(super) fn text(s: &str) -> ImmutableString {
    s.into()
}

/// A script string as a script value.
pub(super) fn dyn_text(s: &str) -> Dynamic {
    Dynamic::from(text(s))
}
