//! A rule's MITRE ATT&CK techniques: the optional top-level `const ATTACK = ["T1609", …];`
//! declaration, read and validated at load, carried on every alert the rule raises.
//!
//! Owns the declaration's parsing and the technique ID format; calls nothing else.

use rhai::{AST, Dynamic};

/// The name of the constant that declares a rule's ATT&CK techniques.
pub const ATTACK_CONST: &str = "ATTACK";

/// A declaration that cannot be used: the message and, when known, the 1-based line and
/// column of the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttackError {
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// Whether `id` is an ATT&CK technique or sub-technique ID: `T` and four digits, then
/// optionally `.` and three digits (`T1609`, `T1552.007`).
pub fn is_technique_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    match bytes.len() {
        5 => bytes[0] == b'T' && digits(1..5),
        9 => bytes[0] == b'T' && digits(1..5) && bytes[5] == b'.' && digits(6..9),
        _ => false,
    }
}

/// The link to a technique's page on attack.mitre.org (`T1552.007` → `…/T1552/007/`).
pub fn technique_url(id: &str) -> String {
    format!(
        "https://attack.mitre.org/techniques/{}/",
        id.replacen('.', "/", 1)
    )
}

/// Reads the script's `const ATTACK` declaration: its technique IDs in the order written
/// (empty when the script declares none, or declares `[]`).
pub(crate) fn attack_declaration(ast: &AST, text: &str) -> Result<Vec<String>, AttackError> {
    let declared = ast
        .iter_literal_variables(true, false)
        .find(|(name, ..)| *name == ATTACK_CONST)
        .map(|(_, _, value)| value);
    let line = declaration_line(text);
    let Some(value) = declared else {
        return match line {
            Some(line) => Err(AttackError {
                position: Some((line, 1)),
                message: "ATTACK must be a top-level constant array of literal technique IDs, \
                          e.g. [\"T1609\", \"T1552.007\"]"
                    .into(),
            }),
            None => Ok(Vec::new()),
        };
    };
    let start = line.unwrap_or(1);
    let mut ids: Vec<String> = Vec::new();
    for item in items(value) {
        let id = item.into_immutable_string().map_err(|ty| AttackError {
            position: Some((start, 1)),
            message: format!("ATTACK takes technique IDs as strings, not {ty}"),
        })?;
        let id = id.to_string();
        if !is_technique_id(&id) {
            return Err(AttackError {
                position: Some(position_of(text, start, &id)),
                message: format!(
                    "ATTACK: `{id}` is not an ATT&CK technique ID (T and four digits, \
                     optionally a dot and three more: T1609, T1552.007)"
                ),
            });
        }
        if ids.contains(&id) {
            return Err(AttackError {
                position: Some(position_of(text, start, &id)),
                message: format!("ATTACK: `{id}` is listed twice"),
            });
        }
        ids.push(id);
    }
    Ok(ids)
}

/// One value or an array of values, as a list.
fn items(value: Dynamic) -> Vec<Dynamic> {
    if value.is_array() {
        value.cast::<rhai::Array>()
    } else {
        vec![value]
    }
}

/// The 1-based line of `const ATTACK = …` in `text` (not `const ATTACKS`, say).
fn declaration_line(text: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix("const ")
                .and_then(|rest| rest.trim_start().strip_prefix(ATTACK_CONST))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| index + 1)
}

/// Where the quoted `id` first appears at or after line `from` (1-based line and column);
/// the declaration's line when it cannot be found.
fn position_of(text: &str, from: usize, id: &str) -> (usize, usize) {
    let quoted = format!("\"{id}\"");
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(index, line)| {
            line.find(&quoted)
                .map(|byte| (index + 1, line[..byte].chars().count() + 2))
        })
        .unwrap_or((from, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_ids_are_t_four_digits_and_an_optional_sub_technique() {
        for good in ["T1609", "T1552.007", "T0000"] {
            assert!(is_technique_id(good), "{good}");
        }
        for bad in [
            "",
            "T160",
            "T16090",
            "t1609",
            "T1552.07",
            "T1552.0070",
            "T1552-007",
            "TA0001",
            "T1609 ",
            "1609",
            "T１６０９",
        ] {
            assert!(!is_technique_id(bad), "{bad}");
        }
    }

    #[test]
    fn urls_point_at_the_technique_or_sub_technique_page() {
        assert_eq!(
            technique_url("T1609"),
            "https://attack.mitre.org/techniques/T1609/"
        );
        assert_eq!(
            technique_url("T1552.007"),
            "https://attack.mitre.org/techniques/T1552/007/"
        );
    }

    #[test]
    fn the_bad_id_is_located_on_its_own_line() {
        let text = "// c\nconst ATTACK = [\n    \"T1609\",\n    \"T16O9\",\n];\n";
        assert_eq!(declaration_line(text), Some(2));
        assert_eq!(position_of(text, 2, "T16O9"), (4, 6));
    }
}
