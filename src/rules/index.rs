//! The rule index: which scripts can match an event, from each script's optional
//! `const MATCH = #{…};` declaration, so the evaluator skips the others.
//!
//! A declaration is a promise of the script's author: the script raises nothing (and changes
//! no state) on an event outside it. Keys: `stage`, `verb`, `resource`, `subresource`
//! (`""` is none), `code` (response codes), each one value or an array of values (any of
//! them); `username` (globs, one must match), `not_username` (globs, none may match) and
//! `group` (globs, one of the user's groups must match one); `api_group` (the
//! `objectRef.apiGroup`, `""` is core); `setting` (the name of a
//! `[scripts.settings]` switch: unless it is set to something other than `false`, the
//! script is off and never runs). Every key given must hold.
//! `MATCH` may also be an array of such maps: the script runs when any of them holds. A
//! script without a declaration runs on every event.
//!
//! Owns the parsing of declarations and the candidate lookup; calls `glob::glob_match`.

use rhai::{Array, Dynamic, Map};
use rustc_hash::FxHashMap;

use super::glob::glob_match;
use crate::audit::Event;

/// The name of the constant that declares what a script can match.
pub const MATCH_CONST: &str = "MATCH";

/// The keys a `MATCH` declaration may have.
pub const MATCH_KEYS: [&str; 10] = [
    "stage",
    "verb",
    "resource",
    "subresource",
    "code",
    "username",
    "not_username",
    "group",
    "api_group",
    "setting",
];

/// What one script declares it can match; `None` / empty means unconstrained.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleFilter {
    /// Accepted stages.
    pub stage: Option<Vec<String>>,
    /// Accepted verbs.
    pub verb: Option<Vec<String>>,
    /// Accepted `objectRef.resource` values.
    pub resource: Option<Vec<String>>,
    /// Accepted `objectRef.subresource` values (`""`: none).
    pub subresource: Option<Vec<String>>,
    /// Accepted `responseStatus.code` values.
    pub code: Option<Vec<i64>>,
    /// Username globs of which one must match.
    pub username: Vec<String>,
    /// Username globs of which none may match.
    pub not_username: Vec<String>,
    /// Group globs of which one must match one of the user's groups.
    pub group: Vec<String>,
    /// Accepted `objectRef.apiGroup` values (`""`: core).
    pub api_group: Option<Vec<String>>,
    /// The `[scripts.settings]` switch that turns the script on (absent or `false`: off).
    pub setting: Option<String>,
}

impl RuleFilter {
    /// Reads a `MATCH` map; the error names the offending key.
    pub fn from_map(map: &Map) -> Result<Self, String> {
        let mut filter = Self::default();
        for (key, value) in map {
            match key.as_str() {
                "stage" => filter.stage = Some(strings(key, value)?),
                "verb" => filter.verb = Some(strings(key, value)?),
                "resource" => filter.resource = Some(strings(key, value)?),
                "subresource" => filter.subresource = Some(strings(key, value)?),
                "code" => filter.code = Some(ints(key, value)?),
                "username" => filter.username = strings(key, value)?,
                "not_username" => filter.not_username = strings(key, value)?,
                "group" => filter.group = strings(key, value)?,
                "api_group" => filter.api_group = Some(strings(key, value)?),
                "setting" => filter.setting = Some(string(key, value)?),
                other => {
                    return Err(format!(
                        "MATCH: unknown key `{other}` (one of {})",
                        MATCH_KEYS.join(", ")
                    ));
                }
            }
        }
        Ok(filter)
    }

    /// Whether `event` is inside the declaration.
    pub fn admits(&self, event: &Event) -> bool {
        let object = event.object_ref.as_ref();
        let resource = object.map_or("", |o| o.resource.as_str());
        let subresource = object.map_or("", |o| o.subresource.as_str());
        admits_text(self.stage.as_deref(), &event.stage)
            && admits_text(self.verb.as_deref(), &event.verb)
            && admits_text(self.resource.as_deref(), resource)
            && admits_text(self.subresource.as_deref(), subresource)
            && self.admits_user_and_code(event)
    }

    /// The checks the index does not key on: username globs, response code and API group.
    fn admits_user_and_code(&self, event: &Event) -> bool {
        let user = event.user.username.as_str();
        let code = event.response_status.as_ref().map_or(0, |s| s.code);
        let api_group = event
            .object_ref
            .as_ref()
            .map_or("", |o| o.api_group.as_str());
        admits_text(self.api_group.as_deref(), api_group)
            && (self.username.is_empty() || self.username.iter().any(|g| glob_match(g, user)))
            && !self.not_username.iter().any(|g| glob_match(g, user))
            && self.code.as_ref().is_none_or(|codes| codes.contains(&code))
            && (self.group.is_empty()
                || event
                    .user
                    .groups
                    .iter()
                    .any(|name| self.group.iter().any(|g| glob_match(g, name))))
    }
}

fn admits_text(accepted: Option<&[String]>, value: &str) -> bool {
    accepted.is_none_or(|values| values.iter().any(|v| v == value))
}

/// One value or an array of values, as an array.
fn items(value: &Dynamic) -> Array {
    match value.clone().try_cast::<Array>() {
        Some(items) => items,
        None => vec![value.clone()],
    }
}

fn string(key: &str, value: &Dynamic) -> Result<String, String> {
    value
        .clone()
        .into_immutable_string()
        .map(|s| s.to_string())
        .map_err(|ty| format!("MATCH: `{key}` takes a string, not {ty}"))
}

fn strings(key: &str, value: &Dynamic) -> Result<Vec<String>, String> {
    items(value)
        .into_iter()
        .map(|item| {
            item.into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|ty| format!("MATCH: `{key}` takes strings, not {ty}"))
        })
        .collect()
}

fn ints(key: &str, value: &Dynamic) -> Result<Vec<i64>, String> {
    items(value)
        .into_iter()
        .map(|item| {
            item.as_int()
                .map_err(|ty| format!("MATCH: `{key}` takes integers, not {ty}"))
        })
        .collect()
}

/// A set of rule positions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleSet(Vec<u64>);

impl RuleSet {
    fn empty(rules: usize) -> Self {
        Self(vec![0; rules.div_ceil(64)])
    }

    fn insert(&mut self, rule: usize) {
        self.0[rule / 64] |= 1 << (rule % 64);
    }

    fn intersect_with(&mut self, other: &Self) {
        for (o, w) in self.0.iter_mut().zip(&other.0) {
            *o &= w;
        }
    }

    /// Keeps the rules that are in `a` or in `b`.
    fn intersect_with_union(&mut self, a: &Self, b: &Self) {
        for ((o, x), y) in self.0.iter_mut().zip(&a.0).zip(&b.0) {
            *o &= x | y;
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, word)| {
            let mut w = *word;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros() as usize;
                    w &= w - 1;
                    i * 64 + bit
                })
            })
        })
    }
}

/// One keyed dimension (stage, verb, resource, subresource): the rules that accept each
/// value, and those that accept any. Fx hashing: four lookups per event, in a map built
/// from the scripts that events never grow (SipHash's flood resistance buys nothing here,
/// and it was most of the index's cost).
#[derive(Debug)]
struct Dimension {
    by_value: FxHashMap<String, RuleSet>,
    any: RuleSet,
}

impl Dimension {
    fn build(filters: &[Option<RuleFilter>], pick: fn(&RuleFilter) -> Option<&[String]>) -> Self {
        let mut dim = Self {
            by_value: FxHashMap::default(),
            any: RuleSet::empty(filters.len()),
        };
        for (rule, filter) in filters.iter().enumerate() {
            match filter.as_ref().and_then(pick) {
                None => dim.any.insert(rule),
                Some(values) => {
                    for value in values {
                        dim.by_value
                            .entry(value.clone())
                            .or_insert_with(|| RuleSet::empty(filters.len()))
                            .insert(rule);
                    }
                }
            }
        }
        dim
    }

    /// Narrows `candidates` to the rules that accept `value` (no allocation: per event).
    fn narrow(&self, value: &str, candidates: &mut RuleSet) {
        match self.by_value.get(value) {
            Some(rules) => candidates.intersect_with_union(&self.any, rules),
            None => candidates.intersect_with(&self.any),
        }
    }
}

/// The candidate rules of an event, by stage, verb, resource and subresource, then by user
/// and response code. Entries are the rules' alternatives (or the rule itself when it
/// declares nothing), in rule order.
#[derive(Debug)]
pub struct RuleIndex {
    /// (rule position, alternative; `None`: every event).
    entries: Vec<(usize, Option<RuleFilter>)>,
    /// The entries whose `setting` switch is on (or that have none).
    enabled: RuleSet,
    stage: Dimension,
    verb: Dimension,
    resource: Dimension,
    subresource: Dimension,
}

impl RuleIndex {
    /// Indexes the rules' declarations, in rule order (`None`: the rule runs on every
    /// event; several filters: any of them).
    pub fn new(declarations: Vec<Option<Vec<RuleFilter>>>) -> Self {
        let entries: Vec<(usize, Option<RuleFilter>)> = declarations
            .into_iter()
            .enumerate()
            .flat_map(|(rule, filters)| match filters {
                None => vec![(rule, None)],
                Some(filters) => filters.into_iter().map(|f| (rule, Some(f))).collect(),
            })
            .collect();
        let filters: Vec<Option<RuleFilter>> = entries.iter().map(|(_, f)| f.clone()).collect();
        let mut index = Self {
            enabled: RuleSet::empty(entries.len()),
            stage: Dimension::build(&filters, |f| f.stage.as_deref()),
            verb: Dimension::build(&filters, |f| f.verb.as_deref()),
            resource: Dimension::build(&filters, |f| f.resource.as_deref()),
            subresource: Dimension::build(&filters, |f| f.subresource.as_deref()),
            entries,
        };
        index.apply_settings(&Map::new());
        index
    }

    /// Switches the rules with a `setting` key on or off by `settings`: a rule is off while
    /// its switch is absent or `false` (any other value leaves it on, so the script's own
    /// check of the value runs and reports a wrongly typed one).
    pub fn apply_settings(&mut self, settings: &Map) {
        let mut enabled = RuleSet::empty(self.entries.len());
        for (entry, (_, filter)) in self.entries.iter().enumerate() {
            let switch = filter.as_ref().and_then(|f| f.setting.as_deref());
            let on = switch.is_none_or(|name| {
                settings
                    .get(name)
                    .is_some_and(|value| value.as_bool().unwrap_or(true))
            });
            if on {
                enabled.insert(entry);
            }
        }
        self.enabled = enabled;
    }

    /// The positions of the rules that may match `event`, in rule order.
    pub fn candidates(&self, event: &Event) -> Vec<usize> {
        let mut rules: Vec<usize> = self
            .narrowed(event)
            .iter()
            .filter(|entry| self.entry_admits(*entry, event))
            .map(|entry| self.entries[entry].0)
            .collect();
        rules.dedup();
        rules
    }

    /// Whether any rule may match `event` (without listing them).
    pub fn any_candidate(&self, event: &Event) -> bool {
        self.narrowed(event)
            .iter()
            .any(|entry| self.entry_admits(entry, event))
    }

    /// The enabled entries that accept the event's stage, verb, resource and subresource.
    fn narrowed(&self, event: &Event) -> RuleSet {
        let mut set = self.enabled.clone();
        let object = event.object_ref.as_ref();
        self.stage.narrow(&event.stage, &mut set);
        self.verb.narrow(&event.verb, &mut set);
        self.resource
            .narrow(object.map_or("", |o| o.resource.as_str()), &mut set);
        self.subresource
            .narrow(object.map_or("", |o| o.subresource.as_str()), &mut set);
        set
    }

    /// Whether entry `entry` accepts the event's user and response code.
    fn entry_admits(&self, entry: usize, event: &Event) -> bool {
        self.entries[entry]
            .1
            .as_ref()
            .is_none_or(|f| f.admits_user_and_code(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ObjectReference, Status};

    fn event(stage: &str, verb: &str, resource: &str, user: &str, code: i64) -> Event {
        let mut e = Event {
            stage: stage.into(),
            verb: verb.into(),
            ..Event::default()
        };
        e.user.username = user.into();
        e.object_ref = Some(ObjectReference {
            resource: resource.into(),
            ..ObjectReference::default()
        });
        e.response_status = Some(Status {
            code,
            ..Status::default()
        });
        e
    }

    fn filter(text: &str) -> RuleFilter {
        let engine = rhai::Engine::new();
        let map: Map = engine.eval(text).unwrap();
        RuleFilter::from_map(&map).unwrap()
    }

    #[test]
    fn candidates_equal_the_filters_one_by_one() {
        let filters = vec![
            Some(filter(
                r#"#{ verb: "create", resource: ["pods", "deployments"] }"#,
            )),
            None,
            Some(filter(
                r#"#{ stage: "ResponseComplete", not_username: "system:*" }"#,
            )),
            Some(filter(r#"#{ username: "system:anonymous" }"#)),
            Some(filter(r#"#{ code: [401, 403] }"#)),
            Some(filter(
                r#"#{ resource: "pods", subresource: ["exec", "attach"] }"#,
            )),
        ];
        // More than 64 rules, so the sets span words.
        let mut many = filters.clone();
        for _ in 0..20 {
            many.extend(filters.clone());
        }
        let index = RuleIndex::new(many.iter().map(|f| f.clone().map(|f| vec![f])).collect());
        let mut checked = 0;
        for stage in ["ResponseComplete", "ResponseStarted"] {
            for verb in ["create", "get"] {
                for resource in ["pods", "deployments", "secrets", ""] {
                    for user in ["alice", "system:anonymous", "system:node:n1"] {
                        for code in [200, 401, 0] {
                            let e = event(stage, verb, resource, user, code);
                            let expected: Vec<usize> = many
                                .iter()
                                .enumerate()
                                .filter(|(_, f)| f.as_ref().is_none_or(|f| f.admits(&e)))
                                .map(|(i, _)| i)
                                .collect();
                            assert_eq!(index.candidates(&e), expected, "{e:?}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 2 * 4 * 3 * 3);
    }

    #[test]
    fn alternatives_admit_an_event_any_of_them_admits() {
        let index = RuleIndex::new(vec![
            Some(vec![
                filter(r#"#{ username: "system:anonymous" }"#),
                filter(r#"#{ group: "system:unauthenticated" }"#),
            ]),
            Some(vec![filter(r#"#{ verb: "create" }"#)]),
        ]);
        let mut anonymous = event("ResponseComplete", "get", "pods", "system:anonymous", 200);
        assert_eq!(index.candidates(&anonymous), [0]);
        anonymous.user.groups = vec!["system:unauthenticated".into()];
        assert_eq!(index.candidates(&anonymous), [0]);
        let mut grouped = event("ResponseComplete", "create", "pods", "bob", 200);
        assert_eq!(index.candidates(&grouped), [1]);
        grouped.user.groups = vec!["system:unauthenticated".into()];
        assert_eq!(index.candidates(&grouped), [0, 1]);
    }

    #[test]
    fn declarations_are_checked() {
        let engine = rhai::Engine::new();
        let bad = |text: &str| {
            let map: Map = engine.eval(text).unwrap();
            RuleFilter::from_map(&map).unwrap_err()
        };
        assert!(bad(r#"#{ verbs: "get" }"#).contains("unknown key `verbs`"));
        assert!(bad(r#"#{ verb: 1 }"#).contains("`verb` takes strings"));
        assert!(bad(r#"#{ code: "401" }"#).contains("`code` takes integers"));
        assert!(bad(r#"#{ setting: ["a"] }"#).contains("`setting` takes a string"));
        let f = filter(r#"#{ subresource: "" }"#);
        assert!(f.admits(&event("ResponseComplete", "get", "pods", "u", 200)));
    }

    #[test]
    fn a_switched_rule_runs_unless_its_setting_is_absent_or_false() {
        let mut index = RuleIndex::new(vec![
            Some(vec![filter(r#"#{ verb: "get", setting: "on" }"#)]),
            None,
        ]);
        let get = event("ResponseComplete", "get", "pods", "u", 200);
        assert_eq!(index.candidates(&get), [1], "absent: off");
        for (value, expected) in [
            (Dynamic::FALSE, vec![1]),
            (Dynamic::TRUE, vec![0, 1]),
            // A wrongly typed switch runs the script, whose own check reports it.
            (Dynamic::from("yes"), vec![0, 1]),
        ] {
            index.apply_settings(&Map::from([("on".into(), value)]));
            assert_eq!(index.candidates(&get), expected);
        }
    }
}
