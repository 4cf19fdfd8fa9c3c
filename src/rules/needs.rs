//! What the rules need the apiserver's audit policy to log: each rule's `const LEVEL`
//! declaration (the level it reads) and its `MATCH` alternatives, as the `audit::policy`
//! needs that `klaxon gen audit-policy` and `klaxon check --audit-policy` work from.
//!
//! Calls `audit` (the policy's needs and the built-in resources' API groups).

use std::collections::BTreeSet;

use rhai::{AST, Map};

use super::index::RuleFilter;
use crate::audit::policy::{Level, Need, Principal, Target, built_in_groups, subresource_exists};

/// The name of the constant that declares the audit level a rule reads.
pub const LEVEL_CONST: &str = "LEVEL";

/// The stages a rule reads when its `MATCH` names none: those that carry the response
/// (RequestReceived repeats the request of the later stages; Panic is the apiserver's).
pub const DEFAULT_STAGES: [&str; 2] = ["ResponseStarted", "ResponseComplete"];

/// Reads the script's `const LEVEL = "…";` (Metadata when absent); the error has the
/// declaration's 1-based line.
pub fn level_declaration(ast: &AST, text: &str) -> Result<Level, (Option<usize>, String)> {
    let line = declaration_line(text, LEVEL_CONST);
    let literal = ast
        .iter_literal_variables(true, false)
        .find(|(name, ..)| *name == LEVEL_CONST)
        .map(|(_, _, value)| value);
    let expected = "LEVEL must be one of \"Metadata\", \"Request\", \"RequestResponse\"";
    match literal {
        None if line.is_some() => Err((
            line,
            format!("{expected}: a top-level constant string literal"),
        )),
        None => Ok(Level::Metadata),
        Some(value) => {
            let text = value
                .into_immutable_string()
                .map_err(|ty| (line, format!("{expected}, not {ty}")))?;
            match Level::parse(&text) {
                Some(level) if level != Level::None => Ok(level),
                _ => Err((line, format!("{expected}, not {text:?}"))),
            }
        }
    }
}

/// The 1-based line of `const NAME =` in `text`.
pub fn declaration_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.trim_start()
                .strip_prefix("const ")
                .and_then(|rest| rest.trim_start().strip_prefix(name))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Whether a `[scripts.settings]` switch leaves an alternative on (as the index decides).
fn switched_on(filter: &RuleFilter, settings: &Map) -> bool {
    filter.setting.as_deref().is_none_or(|name| {
        settings
            .get(name)
            .is_some_and(|value| value.as_bool().unwrap_or(true))
    })
}

fn literal(name: &str) -> bool {
    !name.contains(['*', '?', '['])
}

/// The needs of one rule: one per alternative of its `MATCH` that its switch leaves on, or
/// one for every request when it declares none.
pub fn rule_needs(
    rule: &str,
    filters: Option<&[RuleFilter]>,
    level: Level,
    settings: &Map,
) -> Vec<Need> {
    let Some(filters) = filters else {
        return vec![Need {
            rule: rule.to_owned(),
            verbs: None,
            targets: vec![Target::Everything],
            principals: vec![Principal::Any],
            username_globs: Vec::new(),
            not_username_globs: Vec::new(),
            level,
            stages: DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
        }];
    };
    filters
        .iter()
        .filter(|f| switched_on(f, settings))
        .map(|f| filter_need(rule, f, level))
        .collect()
}

fn filter_need(rule: &str, f: &RuleFilter, level: Level) -> Need {
    let principals = if !f.username.is_empty() && f.username.iter().all(|u| literal(u)) {
        f.username.iter().cloned().map(Principal::User).collect()
    } else if f.username.is_empty() && !f.group.is_empty() && f.group.iter().all(|g| literal(g)) {
        f.group.iter().cloned().map(Principal::Group).collect()
    } else {
        vec![Principal::Any]
    };
    let stages: BTreeSet<String> = match &f.stage {
        Some(stages) => stages.iter().cloned().collect(),
        None => DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
    };
    Need {
        rule: rule.to_owned(),
        verbs: f.verb.clone(),
        targets: targets(f),
        principals,
        username_globs: f.username.clone(),
        not_username_globs: f.not_username.clone(),
        level,
        stages,
    }
}

/// The targets of an alternative: each resource in each of its API groups (declared, else
/// the kube-apiserver's own; unknown: `None`), with each subresource it has (none declared:
/// the resource itself and any subresource, `*`).
fn targets(f: &RuleFilter) -> Vec<Target> {
    let Some(resources) = &f.resource else {
        return vec![Target::Everything];
    };
    let subresources: Vec<String> = match &f.subresource {
        Some(subs) => subs.clone(),
        None => vec![String::new(), "*".to_owned()],
    };
    let mut out = Vec::new();
    for resource in resources {
        if resource.is_empty() {
            out.push(Target::NonResource);
            continue;
        }
        let groups: Vec<Option<String>> = match &f.api_group {
            Some(groups) => groups.iter().cloned().map(Some).collect(),
            None => {
                let known = built_in_groups(resource);
                if known.is_empty() {
                    vec![None]
                } else {
                    known.into_iter().map(|g| Some(g.to_owned())).collect()
                }
            }
        };
        for group in &groups {
            for sub in subresources
                .iter()
                .filter(|sub| group.is_none() || subresource_exists(resource, sub))
            {
                out.push(Target::Resource {
                    group: group.clone(),
                    resource: resource.clone(),
                    subresource: sub.clone(),
                });
            }
        }
    }
    out
}
