//! Falco's output rendering: `falco_text(value)` prints a value as Falco prints an output
//! field, so the Falco pack's alerts read as Falco's.
//!
//! Owns the rendering; calls nothing.

use rhai::plugin::*;
use rhai::{Array, Dynamic, ImmutableString, Map};

/// `falco_text`, one overload per type (a `Dynamic` parameter makes Rhai search for the
/// function on every call), with the doc comments the engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;

    /// A string as Falco prints an output field: itself (shared, not copied), `<NA>` when empty.
    #[rhai_fn(name = "falco_text")]
    pub fn of_string(value: ImmutableString) -> ImmutableString {
        match value.is_empty() {
            true => ImmutableString::from("<NA>"),
            false => value,
        }
    }

    /// An array as Falco prints an output field: `(a,b)`, maps in it as JSON; `[]` as `<NA>`.
    #[rhai_fn(name = "falco_text")]
    pub fn of_array(value: Array) -> String {
        falco_text(&value.into())
    }

    /// A map as Falco prints an output field: as JSON.
    #[rhai_fn(name = "falco_text")]
    pub fn of_map(value: Map) -> String {
        falco_text(&value.into())
    }

    /// `()` as Falco prints a missing output field: `<NA>`.
    #[rhai_fn(name = "falco_text")]
    pub fn of_unit(value: ()) -> String {
        let () = value;
        falco_text(&Dynamic::UNIT)
    }

    /// An integer as Falco prints an output field.
    #[rhai_fn(name = "falco_text")]
    pub fn of_int(value: i64) -> String {
        value.to_string()
    }

    /// A boolean as Falco prints an output field.
    #[rhai_fn(name = "falco_text")]
    pub fn of_bool(value: bool) -> String {
        value.to_string()
    }

    /// A float as Falco prints an output field.
    #[rhai_fn(name = "falco_text")]
    pub fn of_float(value: f64) -> String {
        falco_text(&value.into())
    }
}

/// `falco_text(v)`: a value as Falco prints an output field: `()`, `""` and `[]` as `<NA>`,
/// an array as `(a,b)` (maps in it as JSON), a map as JSON, anything else as text.
pub fn falco_text(value: &Dynamic) -> String {
    if value.is_unit() {
        return "<NA>".to_owned();
    }
    if let Some(text) = value.read_lock::<ImmutableString>() {
        return if text.is_empty() {
            "<NA>".to_owned()
        } else {
            text.to_string()
        };
    }
    if let Some(items) = value.read_lock::<Array>() {
        if items.is_empty() {
            return "<NA>".to_owned();
        }
        let parts: Vec<String> = items
            .iter()
            .map(|item| match item.read_lock::<Map>() {
                Some(map) => rhai::format_map_as_json(&map),
                None => item.to_string(),
            })
            .collect();
        return format!("({})", parts.join(","));
    }
    if let Some(map) = value.read_lock::<Map>() {
        return rhai::format_map_as_json(&map);
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falco_text_renders_as_falco_prints_output_fields() {
        let engine = {
            let mut e = Engine::new();
            e.register_global_module(exported_module!(functions).into());
            e
        };
        for (expr, text) in [
            ("falco_text(())", "<NA>"),
            (r#"falco_text("")"#, "<NA>"),
            ("falco_text([])", "<NA>"),
            (r#"falco_text("alice")"#, "alice"),
            ("falco_text(201)", "201"),
            ("falco_text(true)", "true"),
            (r#"falco_text(["a", "b"])"#, "(a,b)"),
            (r#"falco_text([#{ k: 1 }, "x"])"#, r#"({"k":1},x)"#),
            (r#"falco_text(#{ a: "b" })"#, r#"{"a":"b"}"#),
        ] {
            assert_eq!(engine.eval::<String>(expr).unwrap(), text, "{expr}");
        }
    }
}
