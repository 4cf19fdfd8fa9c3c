//! Text helpers: glob and prefix matching (`glob`, `glob_any`, `starts_with_any`), system
//! users (`is_system_user`), and `text in array` for lists of strings.
//!
//! Owns the string helpers; calls `glob`.

use rhai::plugin::*;
use rhai::{Array, Dynamic, EvalAltResult, ImmutableString, NativeCallContext};

use crate::rules::glob::glob_match;

/// The text helpers and klaxon's `contains(list, text)`, with the doc comments the
/// engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;

    /// True for Kubernetes' own identities (`system:…`), except `system:anonymous`.
    #[rhai_fn(name = "is_system_user")]
    pub fn system_user(name: &str) -> bool {
        is_system_user(name)
    }

    /// Whether the whole of `text` matches `pattern` (`*` any run of characters, `?` one).
    pub fn glob(text: &str, pattern: &str) -> bool {
        glob_match(pattern, text)
    }

    /// Whether `text` matches at least one glob of `patterns` (non-strings ignored).
    pub fn glob_any(text: &str, patterns: Array) -> bool {
        strings_of(&patterns).any(|p| glob_match(&p, text))
    }

    /// Whether `text` starts with at least one string of `prefixes` (non-strings ignored).
    pub fn starts_with_any(text: &str, prefixes: Array) -> bool {
        strings_of(&prefixes).any(|p| text.starts_with(p.as_str()))
    }

    /// `text in list` with a string on the left, as Rhai's own `in` decides it, without a
    /// function call per item for the items that are strings (Falco's lists are arrays of
    /// strings; Rhai's version calls `==` through the function table for each item).
    #[rhai_fn(pure, return_raw)]
    pub fn contains(
        ctx: NativeCallContext,
        list: &mut Array,
        text: ImmutableString,
    ) -> Result<bool, Box<EvalAltResult>> {
        string_in_array(&ctx, list, text)
    }
}

/// True for Kubernetes' own identities (`system:…`), except `system:anonymous`.
pub fn is_system_user(username: &str) -> bool {
    username.starts_with("system:") && username != "system:anonymous"
}

/// The string items of a script array; other items are skipped.
fn strings_of(
    items: &Array,
) -> impl Iterator<Item = impl std::ops::Deref<Target = ImmutableString> + '_> {
    items
        .iter()
        .filter_map(|p| p.read_lock::<ImmutableString>())
}

/// Whether `value` is in `array`: string items compared directly, others as Rhai's `==`.
fn string_in_array(
    ctx: &NativeCallContext,
    array: &mut Array,
    value: ImmutableString,
) -> Result<bool, Box<EvalAltResult>> {
    for item in array.iter_mut() {
        let text = item
            .read_lock::<ImmutableString>()
            .map(|text| *text == value);
        let equal = match text {
            Some(equal) => equal,
            // Anything else (a char, a custom type with its own `==`): Rhai's comparison.
            None => other_equals(ctx, item, &value)?,
        };
        if equal {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `item == value` through Rhai's function table; false when no `==` exists for the two
/// (different) types, as Rhai's own `in` decides.
fn other_equals(
    ctx: &NativeCallContext,
    item: &mut Dynamic,
    value: &ImmutableString,
) -> Result<bool, Box<EvalAltResult>> {
    let mut value = Dynamic::from(value.clone());
    match ctx.call_native_fn_raw(rhai::OP_EQUALS, true, &mut [item, &mut value]) {
        Ok(result) => Ok(result.as_bool().unwrap_or(false)),
        Err(err) if matches!(&*err, EvalAltResult::ErrorFunctionNotFound(sig, ..) if sig.starts_with(rhai::OP_EQUALS)) => {
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_users_exclude_anonymous() {
        assert!(is_system_user("system:serviceaccount:kube-system:default"));
        assert!(is_system_user("system:node:worker-1"));
        assert!(!is_system_user("system:anonymous"));
        assert!(!is_system_user("alice"));
    }
}
