//! Text helpers: glob and prefix matching (`glob`, `glob_any`, `starts_with_any`), system
//! users (`is_system_user`), and `text in array` for lists of strings.
//!
//! Owns the string helpers; calls `glob`.

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, NativeCallContext};

use crate::rules::glob::glob_match;

/// Registers the text helpers and klaxon's `contains(array, string)`.
pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("is_system_user", |name: &str| is_system_user(name))
        .register_fn("glob", |text: &str, pattern: &str| {
            glob_match(pattern, text)
        })
        .register_fn("glob_any", |text: &str, patterns: Array| {
            strings_of(&patterns).any(|p| glob_match(&p, text))
        })
        .register_fn("starts_with_any", |text: &str, prefixes: Array| {
            strings_of(&prefixes).any(|p| text.starts_with(p.as_str()))
        });
    register_string_membership(engine);
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

/// `text in array` with a string on the left, as Rhai's own `in` decides it, without a
/// function call per item for the items that are strings (Falco's lists are arrays of
/// strings; Rhai's version calls `==` through the function table for each item).
fn register_string_membership(engine: &mut Engine) {
    engine.register_fn(
        "contains",
        |ctx: NativeCallContext, array: &mut Array, value: ImmutableString| {
            string_in_array(&ctx, array, value)
        },
    );
}

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
