//! The apiserver's audit policy (audit.k8s.io/v1 `Policy`): reading one, deciding which of
//! its rules logs a request the way the apiserver does, and writing one that logs exactly
//! what a set of needs asks for.
//!
//! The apiserver's semantics (kubernetes.io, "Auditing", and the Policy API reference): the
//! rules are tried in order and the first that matches sets the level and the stages; a rule
//! matches when every field it sets matches (`users`, `userGroups`, `verbs`, then
//! `resources`/`namespaces` for resource requests or `nonResourceURLs` for the others); a
//! `resources` entry names its API `group` (`""`: core) and its resources as `pods`,
//! `pods/exec`, `*`, `*/exec` or `pods/*`; `omitStages` of the policy is added to every
//! rule's own; a request no rule matches is not logged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use serde::Deserialize;

/// The stages of an audit event, in order.
pub const STAGES: [&str; 4] = [
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

/// How much of a request the apiserver logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Default)]
pub enum Level {
    /// Nothing.
    #[default]
    None,
    /// Who, what, when and the result; no bodies.
    Metadata,
    /// Metadata and the request body (`requestObject`).
    Request,
    /// Request and the response body (`responseObject`).
    RequestResponse,
}

impl Level {
    /// The level named `name` (`None`, `Metadata`, `Request`, `RequestResponse`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "None" => Some(Self::None),
            "Metadata" => Some(Self::Metadata),
            "Request" => Some(Self::Request),
            "RequestResponse" => Some(Self::RequestResponse),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A policy that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not YAML, or not the Policy's fields and types.
    #[error("{0}")]
    Syntax(String),
    /// A field with a value the apiserver refuses.
    #[error("{0}")]
    Invalid(String),
}

/// One `resources` entry of a policy rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GroupResources {
    /// The API group (`""`: core).
    #[serde(default)]
    pub group: String,
    /// Resources (`pods`, `pods/exec`, `*`, `*/exec`, `pods/*`); empty: every one of the group.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Object names; empty: any.
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// One rule of a policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRule {
    /// The level of the requests it matches.
    pub level: Level,
    /// Users (by name); empty: anyone.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups, one of which the user must be in; empty: anyone.
    #[serde(default)]
    pub user_groups: Vec<String>,
    /// Verbs; empty: any.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources; empty: any.
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    /// Namespaces (`""`: cluster-scoped); empty: any.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Non-resource URL paths (`*` suffix: a prefix); empty: any.
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    /// Stages not logged, besides the policy's.
    #[serde(default)]
    pub omit_stages: Vec<String>,
    /// Whether managedFields are left out of bodies.
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
}

/// An audit policy, as read from a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// `audit.k8s.io/v1`.
    pub api_version: String,
    /// `Policy`.
    pub kind: String,
    /// Ignored (an ObjectMeta).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// The rules, first match wins.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Stages never logged.
    #[serde(default)]
    pub omit_stages: Vec<String>,
    /// Whether managedFields are left out of bodies.
    #[serde(default)]
    pub omit_managed_fields: Option<bool>,
    /// The 1-based line of each rule in the text, where it could be found.
    #[serde(skip)]
    pub rule_lines: Vec<Option<usize>>,
}

impl Policy {
    /// Reads a policy from YAML (or JSON) text, with the checks the apiserver makes.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut policy: Policy =
            serde_norway::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if policy.api_version != "audit.k8s.io/v1" || policy.kind != "Policy" {
            return Err(PolicyError::Invalid(format!(
                "apiVersion/kind is {}/{}, not audit.k8s.io/v1/Policy",
                policy.api_version, policy.kind
            )));
        }
        check_stages("omitStages", &policy.omit_stages)?;
        for (i, rule) in policy.rules.iter().enumerate() {
            check_stages(&format!("rules[{i}].omitStages"), &rule.omit_stages)?;
            if !rule.non_resource_urls.is_empty()
                && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
            {
                return Err(PolicyError::Invalid(format!(
                    "rules[{i}]: nonResourceURLs cannot be combined with resources or namespaces"
                )));
            }
        }
        policy.rule_lines = rule_lines(text, policy.rules.len());
        Ok(policy)
    }

    /// The stages rule `index` does not log (its own and the policy's).
    pub fn omitted(&self, index: usize) -> BTreeSet<&str> {
        self.omit_stages
            .iter()
            .chain(&self.rules[index].omit_stages)
            .map(String::as_str)
            .collect()
    }

    /// How rule `index` is named in messages: its number and, when known, its line.
    pub fn rule_label(&self, index: usize) -> String {
        match self.rule_lines.get(index).copied().flatten() {
            Some(line) => format!("rule {} (line {line})", index + 1),
            None => format!("rule {}", index + 1),
        }
    }
}

fn check_stages(field: &str, stages: &[String]) -> Result<(), PolicyError> {
    match stages.iter().find(|s| !STAGES.contains(&s.as_str())) {
        Some(bad) => Err(PolicyError::Invalid(format!(
            "{field}: unknown stage {bad:?} (one of {})",
            STAGES.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The lines of the block-style list items under the top-level `rules:` key; nothing when the
/// count differs from the parsed rules (flow style, say).
fn rule_lines(text: &str, count: usize) -> Vec<Option<usize>> {
    let mut lines = text
        .lines()
        .enumerate()
        .skip_while(|(_, l)| !l.starts_with("rules:"));
    if lines.next().is_none() {
        return vec![None; count];
    }
    let mut found = Vec::new();
    let mut indent = None;
    for (n, line) in lines {
        let trimmed = line.trim_start();
        let depth = line.len() - trimmed.len();
        if !line.is_empty() && depth == 0 && !trimmed.starts_with('-') && !trimmed.starts_with('#')
        {
            break;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            if indent.is_none() {
                indent = Some(depth);
            }
            if indent == Some(depth) {
                found.push(Some(n + 1));
            }
        }
    }
    if found.len() == count {
        found
    } else {
        vec![None; count]
    }
}

/// The requests a rule may act on, one dimension at a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Every request, resource or not.
    Everything,
    /// Requests for no resource (non-resource URLs such as /healthz).
    NonResource,
    /// A resource, with its API group when known (`None`: a resource of no group klaxon
    /// knows), and its subresource (`""`: none).
    Resource {
        /// The API group; `None`: unknown.
        group: Option<String>,
        /// The resource.
        resource: String,
        /// The subresource (`""`: none).
        subresource: String,
    },
}

/// Who makes the requests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    /// Anyone.
    Any,
    /// One user, by name.
    User(String),
    /// Anyone in one group.
    Group(String),
}

/// What one rule (one alternative of its `MATCH`) needs the policy to log.
#[derive(Debug, Clone)]
pub struct Need {
    /// The rule's name.
    pub rule: String,
    /// Verbs; `None`: any.
    pub verbs: Option<Vec<String>>,
    /// Targets.
    pub targets: Vec<Target>,
    /// Principals (any of them).
    pub principals: Vec<Principal>,
    /// Username globs of which one must match (empty: any), for telling policy rules apart.
    pub username_globs: Vec<String>,
    /// Username globs of which none may match.
    pub not_username_globs: Vec<String>,
    /// The level the rule reads.
    pub level: Level,
    /// The stages it reads.
    pub stages: BTreeSet<String>,
}

/// One concrete slice of a need: a verb (or any), a target and a principal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    /// The verb; `None`: any.
    pub verb: Option<String>,
    /// The target.
    pub target: Target,
    /// The principal.
    pub principal: Principal,
}

impl Need {
    /// The need as cells: every verb × target × principal.
    pub fn cells(&self) -> Vec<Cell> {
        let verbs: Vec<Option<String>> = match &self.verbs {
            None => vec![None],
            Some(v) => v.iter().cloned().map(Some).collect(),
        };
        let mut out = Vec::new();
        for verb in &verbs {
            for target in &self.targets {
                for principal in &self.principals {
                    out.push(Cell {
                        verb: verb.clone(),
                        target: target.clone(),
                        principal: principal.clone(),
                    });
                }
            }
        }
        out
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb.as_deref().unwrap_or("any verb"))?;
        match &self.target {
            Target::Everything => f.write_str(" of anything")?,
            Target::NonResource => f.write_str(" of non-resource URLs")?,
            Target::Resource {
                group,
                resource,
                subresource,
            } => {
                f.write_char(' ')?;
                match group.as_deref() {
                    None => f.write_str("(any group)/")?,
                    Some("") => {}
                    Some(g) => write!(f, "{g}/")?,
                }
                f.write_str(resource)?;
                if !subresource.is_empty() {
                    write!(f, "/{subresource}")?;
                }
            }
        }
        match &self.principal {
            Principal::Any => Ok(()),
            Principal::User(u) => write!(f, " by {u}"),
            Principal::Group(g) => write!(f, " by group {g}"),
        }
    }
}

/// Whether a policy rule matches the requests of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// None of them.
    No,
    /// Some of them (it narrows by something the rule does not declare).
    Some,
    /// All of them.
    All,
}

fn and(a: Match, b: Match) -> Match {
    a.min(b)
}

/// The groups `system:anonymous` is in, and the users of `system:unauthenticated`: the only
/// membership the apiserver fixes.
const ANONYMOUS: (&str, &str) = ("system:anonymous", "system:unauthenticated");

impl PolicyRule {
    /// Whether this rule matches the requests of `cell` (from `need`), as the apiserver
    /// decides; what the rule narrows by that the need does not declare (other users, groups,
    /// namespaces, paths, names) gives `Some`.
    pub fn matches(&self, cell: &Cell, need: &Need) -> Match {
        let mut m = and(self.match_users(cell, need), self.match_groups(cell));
        if !self.verbs.is_empty() {
            m = and(
                m,
                match &cell.verb {
                    Some(v) if self.verbs.contains(v) => Match::All,
                    Some(_) => Match::No,
                    None => Match::Some,
                },
            );
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            and(m, self.match_resource(&cell.target))
        } else if !self.non_resource_urls.is_empty() {
            and(m, self.match_non_resource(&cell.target))
        } else {
            m
        }
    }

    fn match_users(&self, cell: &Cell, need: &Need) -> Match {
        if self.users.is_empty() {
            return Match::All;
        }
        let user = match &cell.principal {
            Principal::User(u) => Some(u.as_str()),
            Principal::Group(g) if g == ANONYMOUS.1 => Some(ANONYMOUS.0),
            _ => None,
        };
        if let Some(user) = user {
            return if self.users.iter().any(|u| u == user) {
                Match::All
            } else {
                Match::No
            };
        }
        let possible = |u: &String| {
            (need.username_globs.is_empty() || need.username_globs.iter().any(|g| glob(g, u)))
                && !need.not_username_globs.iter().any(|g| glob(g, u))
        };
        if self.users.iter().any(possible) {
            Match::Some
        } else {
            Match::No
        }
    }

    fn match_groups(&self, cell: &Cell) -> Match {
        if self.user_groups.is_empty() {
            return Match::All;
        }
        let in_list = |g: &str| self.user_groups.iter().any(|x| x == g);
        match &cell.principal {
            Principal::Group(g) if in_list(g) => Match::All,
            Principal::User(u) if u == ANONYMOUS.0 => {
                if in_list(ANONYMOUS.1) {
                    Match::All
                } else {
                    Match::No
                }
            }
            Principal::Group(g) if g == ANONYMOUS.1 => Match::No,
            _ => Match::Some,
        }
    }

    fn match_resource(&self, target: &Target) -> Match {
        let namespaced = if self.namespaces.is_empty() {
            Match::All
        } else {
            Match::Some
        };
        let resource = match target {
            Target::NonResource => return Match::No,
            Target::Everything => {
                return if self.resources.is_empty() {
                    and(namespaced, Match::Some)
                } else {
                    Match::Some
                };
            }
            Target::Resource {
                group,
                resource,
                subresource,
            } => {
                if self.resources.is_empty() {
                    Match::All
                } else {
                    self.resources
                        .iter()
                        .filter(|gr| group.as_ref().is_none_or(|g| *g == gr.group))
                        .map(|gr| {
                            let m = gr_matches(gr, resource, subresource);
                            match (m, group) {
                                (Match::All, None) => Match::Some,
                                _ => m,
                            }
                        })
                        .max()
                        .unwrap_or(Match::No)
                }
            }
        };
        and(namespaced, resource)
    }

    fn match_non_resource(&self, target: &Target) -> Match {
        match target {
            Target::Resource { .. } => Match::No,
            Target::NonResource if self.non_resource_urls.iter().any(|u| u == "*") => Match::All,
            _ => Match::Some,
        }
    }
}

/// Whether a `resources` entry of the right group matches `resource[/subresource]`.
fn gr_matches(gr: &GroupResources, resource: &str, subresource: &str) -> Match {
    let names = if gr.resource_names.is_empty() {
        Match::All
    } else {
        Match::Some
    };
    if gr.resources.is_empty() {
        return names;
    }
    if subresource == "*" {
        // Any subresource: `*` and `resource/*` hold them all, a named one only some.
        let prefix = format!("{resource}/");
        let all = gr
            .resources
            .iter()
            .any(|s| s == "*" || *s == format!("{resource}/*"));
        let some = gr
            .resources
            .iter()
            .any(|s| s.starts_with(&prefix) || s.starts_with("*/"));
        return match (all, some) {
            (true, _) => names,
            (false, true) => Match::Some,
            _ => Match::No,
        };
    }
    let combined = if subresource.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{subresource}")
    };
    let hit = gr.resources.iter().any(|spec| {
        spec == &combined
            || spec == "*"
            || (!subresource.is_empty() && spec.strip_prefix("*/") == Some(subresource))
            // As the apiserver's checker: `resource/*` holds the resource itself too.
            || spec.strip_suffix("/*") == Some(resource)
    });
    if hit { names } else { Match::No }
}

/// Glob matching of user names (`*` any run, `?` one character), as `MATCH` does.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// What is wrong with how a policy logs some of a rule's requests.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gap {
    /// A policy rule logs them below the level the rule reads (at `None`: not at all).
    Level {
        /// The policy rule's position.
        rule: usize,
        /// Its level.
        level: Level,
        /// Whether it matches only some of the requests.
        partly: bool,
    },
    /// A policy rule (or the policy) does not log stages the rule reads.
    Stages {
        /// The policy rule's position.
        rule: usize,
        /// The stages omitted.
        stages: Vec<String>,
        /// Whether it matches only some of the requests.
        partly: bool,
    },
    /// No policy rule matches them (all of them, or the ones the narrower rules leave).
    Unmatched {
        /// Whether narrower rules matched some of them first.
        partly: bool,
    },
}

/// One problem of a rule with a policy: which of its requests and what is wrong.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The rule's name.
    pub rule: String,
    /// What is wrong.
    pub gap: Gap,
    /// The level the rule reads.
    pub level: Level,
    /// The requests concerned.
    pub cells: Vec<Cell>,
}

impl Policy {
    /// Every way this policy fails to log what `needs` ask for, grouped by rule and gap.
    pub fn gaps(&self, needs: &[Need]) -> Vec<Finding> {
        let mut grouped: BTreeMap<(String, Gap), (Level, Vec<Cell>)> = BTreeMap::new();
        for need in needs {
            for cell in need.cells() {
                for gap in self.cell_gaps(&cell, need) {
                    let entry = grouped
                        .entry((need.rule.clone(), gap))
                        .or_insert((need.level, Vec::new()));
                    if !entry.1.contains(&cell) {
                        entry.1.push(cell.clone());
                    }
                }
            }
        }
        grouped
            .into_iter()
            .map(|((rule, gap), (level, cells))| Finding {
                rule,
                gap,
                level,
                cells,
            })
            .collect()
    }

    /// The gaps of one cell: the rules are walked in order, as the apiserver does.
    fn cell_gaps(&self, cell: &Cell, need: &Need) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let mut partly = false;
        for (index, rule) in self.rules.iter().enumerate() {
            let m = rule.matches(cell, need);
            if m == Match::No {
                continue;
            }
            let some = m == Match::Some;
            if rule.level < need.level || rule.level == Level::None {
                gaps.push(Gap::Level {
                    rule: index,
                    level: rule.level,
                    partly: some,
                });
            } else {
                let omitted = self.omitted(index);
                let stages: Vec<String> = need
                    .stages
                    .iter()
                    .filter(|s| omitted.contains(s.as_str()))
                    .cloned()
                    .collect();
                if !stages.is_empty() {
                    gaps.push(Gap::Stages {
                        rule: index,
                        stages,
                        partly: some,
                    });
                }
            }
            if !some {
                return gaps;
            }
            partly = true;
        }
        gaps.push(Gap::Unmatched { partly });
        gaps
    }

    /// The message of a finding, without the rule's name.
    pub fn describe(&self, finding: &Finding) -> String {
        const SHOWN: usize = 4;
        let mut requests: Vec<String> = finding
            .cells
            .iter()
            .take(SHOWN)
            .map(ToString::to_string)
            .collect();
        if finding.cells.len() > SHOWN {
            requests.push(format!("{} more", finding.cells.len() - SHOWN));
        }
        let requests = requests.join(", ");
        let some = |partly: bool| if partly { "some of " } else { "" };
        match &finding.gap {
            Gap::Level {
                rule,
                level,
                partly,
            } if *level == Level::None => format!(
                "{} does not log {}its events: {requests}",
                self.rule_label(*rule),
                some(*partly)
            ),
            Gap::Level {
                rule,
                level,
                partly,
            } => format!(
                "{} logs {}its events at {level}, below the {} level it reads: {requests}",
                self.rule_label(*rule),
                some(*partly),
                finding.level
            ),
            Gap::Stages {
                rule,
                stages,
                partly,
            } => format!(
                "{} omits stage {} of {}its events: {requests}",
                self.rule_label(*rule),
                stages.join(", "),
                some(*partly)
            ),
            Gap::Unmatched { partly } => format!(
                "no rule matches {}its events, so they are not logged: {requests}",
                if *partly { "the rest of " } else { "" }
            ),
        }
    }
}

/// The order of a generated rule: specific requests first, so a broad rule only decides what
/// the specific ones leave.
fn tier(cell: &Cell) -> u8 {
    let target = match &cell.target {
        Target::Everything => 2,
        Target::Resource { subresource, .. } if subresource == "*" => 1,
        _ => 0,
    };
    let verb = u8::from(cell.verb.is_none());
    let principal = u8::from(cell.principal != Principal::Any);
    target * 4 + verb * 2 + principal
}

/// The resource and group of a `resource/*` target (which the apiserver matches for the
/// resource itself and every subresource of it).
fn wildcard(target: &Target) -> Option<(&Option<String>, &str)> {
    match target {
        Target::Resource {
            group,
            resource,
            subresource,
        } if subresource == "*" => Some((group, resource)),
        _ => None,
    }
}

fn same_resource(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (
            Target::Resource {
                group: g1,
                resource: r1,
                ..
            },
            Target::Resource {
                group: g2,
                resource: r2,
                ..
            },
        ) => g1 == g2 && r1 == r2,
        _ => false,
    }
}

/// Whether every request of target `inner` is one of `outer`.
fn target_contains(outer: &Target, inner: &Target) -> bool {
    *outer == Target::Everything
        || outer == inner
        || (wildcard(outer).is_some() && same_resource(outer, inner))
}

/// The requests two targets share, when they may share any.
fn target_meet(a: &Target, b: &Target) -> Option<Target> {
    if target_contains(a, b) {
        Some(b.clone())
    } else if target_contains(b, a) {
        Some(a.clone())
    } else {
        None
    }
}

/// Whether every request of `inner` is a request of `outer`.
fn contains(outer: &Cell, inner: &Cell) -> bool {
    (outer.verb.is_none() || outer.verb == inner.verb)
        && target_contains(&outer.target, &inner.target)
        && (outer.principal == Principal::Any || outer.principal == inner.principal)
}

/// Whether `a` and `b` may share a request.
fn overlaps(a: &Cell, b: &Cell) -> bool {
    (a.verb.is_none() || b.verb.is_none() || a.verb == b.verb)
        && target_meet(&a.target, &b.target).is_some()
}

/// Whether the requests `a` and `b` share all fall into `outer`.
fn shared_within(a: &Cell, b: &Cell, outer: &Cell) -> bool {
    let verb = a.verb.clone().or_else(|| b.verb.clone());
    let Some(target) = target_meet(&a.target, &b.target) else {
        return true;
    };
    let principal = match (&a.principal, &b.principal) {
        (Principal::Any, p) | (p, Principal::Any) => Some(p.clone()),
        (p, q) if p == q => Some(p.clone()),
        _ => None,
    };
    (outer.verb.is_none() || outer.verb == verb)
        && target_contains(&outer.target, &target)
        && (outer.principal == Principal::Any || principal.as_ref() == Some(&outer.principal))
}

/// A rule of a generated policy.
#[derive(Debug, Clone)]
struct Planned {
    tier: u8,
    principal: Principal,
    verbs: Option<BTreeSet<String>>,
    targets: BTreeSet<Target>,
    level: Level,
    stages: BTreeSet<String>,
    rules: BTreeSet<String>,
}

/// One cell of the plan and what it must log.
struct Slot {
    cell: Cell,
    level: Level,
    stages: BTreeSet<String>,
    rules: BTreeSet<String>,
}

/// The cells to log, specific first, each with the highest level and every stage of the
/// needs that reach it (a broader need reaches a cell unless an earlier, more specific cell
/// takes all it shares with it).
fn plan_slots(needs: &[Need]) -> Vec<Slot> {
    let mut sources: Vec<(Cell, &Need)> = Vec::new();
    for need in needs {
        for mut cell in need.cells() {
            if matches!(cell.target, Target::Resource { group: None, .. }) {
                cell.target = Target::Everything;
            }
            sources.push((cell, need));
        }
    }
    let mut cells: Vec<Cell> = sources.iter().map(|(c, _)| c.clone()).collect();
    cells.sort_by(|a, b| (tier(a), a).cmp(&(tier(b), b)));
    cells.dedup();
    let mut slots: Vec<Slot> = Vec::new();
    for cell in cells {
        let earlier: Vec<&Cell> = slots
            .iter()
            .filter(|s| tier(&s.cell) < tier(&cell))
            .map(|s| &s.cell)
            .collect();
        if earlier.iter().any(|e| contains(e, &cell)) {
            continue;
        }
        let mut slot = Slot {
            cell,
            level: Level::None,
            stages: BTreeSet::new(),
            rules: BTreeSet::new(),
        };
        for (source, need) in &sources {
            if overlaps(source, &slot.cell)
                && !earlier.iter().any(|e| shared_within(source, &slot.cell, e))
            {
                slot.level = slot.level.max(need.level);
                slot.stages.extend(need.stages.iter().cloned());
                slot.rules.insert(need.rule.clone());
            }
        }
        slots.push(slot);
    }
    slots
}

/// The slots merged into as few rules as keep their meaning: same tier, principal, level and
/// stages; first by verb (collecting targets), then by targets (collecting verbs).
fn plan(needs: &[Need]) -> Vec<Planned> {
    type ByVerb = BTreeMap<(u8, Principal, Level, BTreeSet<String>, Option<String>, bool), Planned>;
    let mut by_verb: ByVerb = BTreeMap::new();
    for slot in plan_slots(needs) {
        let resource = matches!(slot.cell.target, Target::Resource { .. });
        let key = (
            tier(&slot.cell),
            slot.cell.principal.clone(),
            slot.level,
            slot.stages.clone(),
            slot.cell.verb.clone(),
            resource,
        );
        let planned = by_verb.entry(key).or_insert_with(|| Planned {
            tier: tier(&slot.cell),
            principal: slot.cell.principal.clone(),
            verbs: slot.cell.verb.clone().map(|v| BTreeSet::from([v])),
            targets: BTreeSet::new(),
            level: slot.level,
            stages: slot.stages.clone(),
            rules: BTreeSet::new(),
        });
        planned.targets.insert(slot.cell.target.clone());
        planned.rules.extend(slot.rules);
    }
    let mut merged: Vec<Planned> = Vec::new();
    for planned in by_verb.into_values() {
        let same = merged.iter_mut().find(|m| {
            m.tier == planned.tier
                && m.principal == planned.principal
                && m.level == planned.level
                && m.stages == planned.stages
                && m.targets == planned.targets
                && m.verbs.is_some()
                && planned.verbs.is_some()
        });
        match same {
            Some(m) => {
                if let (Some(verbs), Some(more)) = (&mut m.verbs, planned.verbs) {
                    verbs.extend(more);
                }
                m.rules.extend(planned.rules);
            }
            None => merged.push(planned),
        }
    }
    merged.sort_by_key(|p| p.tier);
    merged
}

/// A YAML double-quoted string.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

fn flow_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(quoted).collect();
    format!("[{}]", items.join(", "))
}

/// An audit policy that logs what `needs` ask for and nothing else; `notes` become comment
/// lines at its top.
pub fn generate(needs: &[Need], notes: &[String]) -> String {
    let planned = plan(needs);
    let needed: BTreeSet<&str> = planned
        .iter()
        .flat_map(|p| p.stages.iter().map(String::as_str))
        .collect();
    let never: Vec<&str> = STAGES
        .iter()
        .copied()
        .filter(|s| !needed.contains(s))
        .collect();
    let mut out = String::new();
    out.push_str(
        "# Audit policy generated by `klaxon gen audit-policy`: it logs what the loaded rules\n\
         # read and nothing else. The apiserver takes the first rule that matches a request\n\
         # (--audit-policy-file, read at start-up: restart it after a change).\n",
    );
    for note in notes {
        let _ = writeln!(out, "# {note}");
    }
    out.push_str("apiVersion: audit.k8s.io/v1\nkind: Policy\n");
    if !never.is_empty() {
        let _ = writeln!(out, "omitStages: {}", flow_list(never.iter().copied()));
    }
    out.push_str("omitManagedFields: true\nrules:\n");
    for p in &planned {
        write_rule(&mut out, p, &never);
    }
    out.push_str("  # Everything else: no loaded rule reads it.\n  - level: None\n");
    out
}

fn write_rule(out: &mut String, p: &Planned, never: &[&str]) {
    let names: Vec<&str> = p.rules.iter().map(String::as_str).collect();
    let _ = writeln!(out, "  # for {}", names.join(", "));
    let _ = writeln!(out, "  - level: {}", p.level);
    match &p.principal {
        Principal::Any => {}
        Principal::User(u) => {
            let _ = writeln!(out, "    users: {}", flow_list([u.as_str()]));
        }
        Principal::Group(g) => {
            let _ = writeln!(out, "    userGroups: {}", flow_list([g.as_str()]));
        }
    }
    if let Some(verbs) = &p.verbs {
        let _ = writeln!(
            out,
            "    verbs: {}",
            flow_list(verbs.iter().map(String::as_str))
        );
    }
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for target in &p.targets {
        match target {
            Target::Resource {
                group: Some(group),
                resource,
                subresource,
            } => groups
                .entry(group)
                .or_default()
                .push(if subresource.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}/{subresource}")
                }),
            Target::NonResource => {
                let _ = writeln!(out, "    nonResourceURLs: [\"*\"]");
            }
            _ => {}
        }
    }
    if !groups.is_empty() {
        out.push_str("    resources:\n");
        for (group, resources) in &groups {
            let _ = writeln!(out, "      - group: {}", quoted(group));
            let _ = writeln!(
                out,
                "        resources: {}",
                flow_list(resources.iter().map(String::as_str))
            );
        }
    }
    let omit: Vec<&str> = STAGES
        .iter()
        .copied()
        .filter(|s| !p.stages.contains(*s) && !never.contains(s))
        .collect();
    if !omit.is_empty() {
        let _ = writeln!(out, "    omitStages: {}", flow_list(omit));
    }
}

/// The API groups of the kube-apiserver's own resources (Kubernetes 1.31), by resource.
const BUILT_IN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "bindings",
            "componentstatuses",
            "configmaps",
            "endpoints",
            "events",
            "limitranges",
            "namespaces",
            "nodes",
            "persistentvolumeclaims",
            "persistentvolumes",
            "pods",
            "podtemplates",
            "replicationcontrollers",
            "resourcequotas",
            "secrets",
            "serviceaccounts",
            "services",
        ],
    ),
    (
        "admissionregistration.k8s.io",
        &[
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
            "mutatingwebhookconfigurations",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "validatingwebhookconfigurations",
        ],
    ),
    ("apiextensions.k8s.io", &["customresourcedefinitions"]),
    ("apiregistration.k8s.io", &["apiservices"]),
    (
        "apps",
        &[
            "controllerrevisions",
            "daemonsets",
            "deployments",
            "replicasets",
            "statefulsets",
        ],
    ),
    (
        "authentication.k8s.io",
        &["selfsubjectreviews", "tokenreviews"],
    ),
    (
        "authorization.k8s.io",
        &[
            "localsubjectaccessreviews",
            "selfsubjectaccessreviews",
            "selfsubjectrulesreviews",
            "subjectaccessreviews",
        ],
    ),
    ("autoscaling", &["horizontalpodautoscalers"]),
    ("batch", &["cronjobs", "jobs"]),
    (
        "certificates.k8s.io",
        &["certificatesigningrequests", "clustertrustbundles"],
    ),
    ("coordination.k8s.io", &["leases"]),
    ("discovery.k8s.io", &["endpointslices"]),
    ("events.k8s.io", &["events"]),
    (
        "flowcontrol.apiserver.k8s.io",
        &["flowschemas", "prioritylevelconfigurations"],
    ),
    (
        "networking.k8s.io",
        &[
            "ingressclasses",
            "ingresses",
            "networkpolicies",
            "ipaddresses",
            "servicecidrs",
        ],
    ),
    ("node.k8s.io", &["runtimeclasses"]),
    ("policy", &["poddisruptionbudgets"]),
    (
        "rbac.authorization.k8s.io",
        &[
            "clusterrolebindings",
            "clusterroles",
            "rolebindings",
            "roles",
        ],
    ),
    ("scheduling.k8s.io", &["priorityclasses"]),
    (
        "storage.k8s.io",
        &[
            "csidrivers",
            "csinodes",
            "csistoragecapacities",
            "storageclasses",
            "volumeattachments",
            "volumeattributesclasses",
        ],
    ),
    (
        "resource.k8s.io",
        &[
            "deviceclasses",
            "resourceclaims",
            "resourceclaimtemplates",
            "resourceslices",
        ],
    ),
];

/// The subresources of the kube-apiserver's own resources that have any (Kubernetes 1.31).
const SUBRESOURCES: &[(&str, &[&str])] = &[
    (
        "pods",
        &[
            "attach",
            "binding",
            "ephemeralcontainers",
            "eviction",
            "exec",
            "log",
            "portforward",
            "proxy",
            "resize",
            "status",
        ],
    ),
    ("nodes", &["proxy", "status"]),
    ("services", &["proxy", "status"]),
    ("namespaces", &["finalize", "status"]),
    ("serviceaccounts", &["token"]),
    ("replicationcontrollers", &["scale", "status"]),
    ("deployments", &["scale", "status"]),
    ("statefulsets", &["scale", "status"]),
    ("replicasets", &["scale", "status"]),
    ("daemonsets", &["status"]),
    ("jobs", &["status"]),
    ("cronjobs", &["status"]),
    ("persistentvolumes", &["status"]),
    ("persistentvolumeclaims", &["status"]),
    ("resourcequotas", &["status"]),
    ("horizontalpodautoscalers", &["status"]),
    ("poddisruptionbudgets", &["status"]),
    ("certificatesigningrequests", &["approval", "status"]),
    ("ingresses", &["status"]),
    ("customresourcedefinitions", &["status"]),
    ("apiservices", &["status"]),
    ("podtemplates", &[]),
    ("configmaps", &[]),
    ("secrets", &[]),
    ("roles", &[]),
    ("rolebindings", &[]),
    ("clusterroles", &[]),
    ("clusterrolebindings", &[]),
];

/// Whether `resource/subresource` can be requested of the kube-apiserver: false only for a
/// subresource that a resource listed above does not have (so `MATCH`'s subresources, which
/// apply to each of its resources, name no request that cannot happen).
pub fn subresource_exists(resource: &str, subresource: &str) -> bool {
    if subresource.is_empty() || subresource == "*" {
        return true;
    }
    SUBRESOURCES
        .iter()
        .find(|(r, _)| *r == resource)
        .is_none_or(|(_, subs)| subs.contains(&subresource))
}

/// The API groups of the kube-apiserver that serve `resource` (empty: none of its own, e.g.
/// a custom resource).
pub fn built_in_groups(resource: &str) -> Vec<&'static str> {
    BUILT_IN
        .iter()
        .filter(|(_, resources)| resources.contains(&resource))
        .map(|(group, _)| *group)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(rule: &str, verbs: Option<&[&str]>, targets: Vec<Target>, level: Level) -> Need {
        Need {
            rule: rule.into(),
            verbs: verbs.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
            targets,
            principals: vec![Principal::Any],
            username_globs: Vec::new(),
            not_username_globs: Vec::new(),
            level,
            stages: BTreeSet::from(["ResponseComplete".to_owned()]),
        }
    }

    fn res(group: &str, resource: &str, sub: &str) -> Target {
        Target::Resource {
            group: Some(group.into()),
            resource: resource.into(),
            subresource: sub.into(),
        }
    }

    fn policy(rules: &str) -> Policy {
        Policy::parse(&format!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n{rules}"
        ))
        .unwrap()
    }

    fn cell(verb: &str, target: Target) -> Cell {
        Cell {
            verb: Some(verb.into()),
            target,
            principal: Principal::Any,
        }
    }

    #[test]
    fn resources_match_as_the_apiserver_matches_them() {
        let n = need("r", None, vec![], Level::Metadata);
        let rule = |spec: &str| {
            policy(&format!(
                "- level: Metadata\n  resources: [{{group: \"\", resources: [\"{spec}\"]}}]\n"
            ))
            .rules
            .remove(0)
        };
        let exec = cell("create", res("", "pods", "exec"));
        let pods = cell("create", res("", "pods", ""));
        assert_eq!(rule("pods").matches(&pods, &n), Match::All);
        assert_eq!(rule("pods").matches(&exec, &n), Match::No);
        assert_eq!(rule("pods/exec").matches(&exec, &n), Match::All);
        assert_eq!(rule("*/exec").matches(&exec, &n), Match::All);
        assert_eq!(rule("pods/*").matches(&exec, &n), Match::All);
        assert_eq!(rule("*").matches(&exec, &n), Match::All);
        // The apiserver's checker takes `pods/*` for pods itself too (`resource ==
        // TrimSuffix(res, "/*")`, whatever the subresource).
        assert_eq!(rule("pods/*").matches(&pods, &n), Match::All);
        let apps = cell("create", res("apps", "pods", ""));
        assert_eq!(rule("pods").matches(&apps, &n), Match::No, "another group");
        let any_sub = cell("get", res("", "pods", "*"));
        assert_eq!(rule("pods/*").matches(&any_sub, &n), Match::All);
        assert_eq!(rule("pods/log").matches(&any_sub, &n), Match::Some);
        assert_eq!(rule("pods").matches(&any_sub, &n), Match::No);
    }

    #[test]
    fn narrowing_fields_match_some_and_anonymous_is_known() {
        let n = need("r", None, vec![], Level::Metadata);
        let p = policy(
            "- level: None\n  users: [alice]\n\
             - level: None\n  userGroups: [system:nodes]\n\
             - level: None\n  namespaces: [kube-system]\n\
             - level: None\n  nonResourceURLs: [\"/healthz*\"]\n",
        );
        let pods = cell("get", res("", "pods", ""));
        let m: Vec<Match> = p.rules.iter().map(|r| r.matches(&pods, &n)).collect();
        assert_eq!(m, [Match::Some, Match::Some, Match::Some, Match::No]);
        let anonymous = Cell {
            principal: Principal::User(ANONYMOUS.0.into()),
            ..pods.clone()
        };
        let m: Vec<Match> = p.rules.iter().map(|r| r.matches(&anonymous, &n)).collect();
        assert_eq!(m, [Match::No, Match::No, Match::Some, Match::No]);
        let health = cell("get", Target::NonResource);
        assert_eq!(p.rules[3].matches(&health, &n), Match::Some);
        assert_eq!(p.rules[2].matches(&health, &n), Match::No);
        let mut system_only = n.clone();
        system_only.not_username_globs = vec!["al*".into()];
        assert_eq!(p.rules[0].matches(&pods, &system_only), Match::No);
    }

    #[test]
    fn the_first_match_decides_and_policy_stages_add_to_the_rules() {
        let p = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted]\nrules:\n\
             - level: Metadata\n  verbs: [create]\n\
             - level: RequestResponse\n",
        )
        .unwrap();
        let mut n = need(
            "body",
            Some(&["create", "delete"]),
            vec![res("", "pods", "")],
            Level::Request,
        );
        n.stages.insert("ResponseStarted".into());
        let gaps = p.gaps(&[n]);
        let described: Vec<String> = gaps.iter().map(|f| p.describe(f)).collect();
        assert_eq!(gaps.len(), 2, "{described:?}");
        assert!(described[0].contains("rule 1 (line 5) logs its events at Metadata, below the Request level it reads: create pods"), "{described:?}");
        assert!(
            described[1]
                .contains("rule 2 (line 7) omits stage ResponseStarted of its events: delete pods"),
            "{described:?}"
        );
    }

    #[test]
    fn bad_policies_are_refused_with_the_field() {
        let err = |text: &str| Policy::parse(text).unwrap_err().to_string();
        assert!(err("apiVersion: v1\nkind: ConfigMap\n").contains("not audit.k8s.io/v1"));
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
        assert!(err(&format!("{head}omitStages: [Done]\n")).contains("unknown stage \"Done\""));
        assert!(err(&format!("{head}rules:\n- level: Some\n")).contains("Some"));
        assert!(err(&format!("{head}rules:\n- level: None\n  verb: [get]\n")).contains("verb"));
        assert!(
            err(&format!(
                "{head}rules:\n- level: None\n  nonResourceURLs: [\"/x\"]\n  namespaces: [a]\n"
            ))
            .contains("cannot be combined")
        );
    }

    /// Needs that overlap in every way: broad and narrow verbs, targets and principals.
    fn mixed_needs() -> Vec<Need> {
        let mut anonymous = need("anon", None, vec![Target::Everything], Level::Metadata);
        anonymous.principals = vec![
            Principal::User("system:anonymous".into()),
            Principal::Group("system:unauthenticated".into()),
        ];
        let mut any_sub = need(
            "deploy_any",
            Some(&["create", "delete"]),
            vec![res("apps", "deployments", "*")],
            Level::Metadata,
        );
        any_sub.stages.insert("ResponseStarted".into());
        let mut exec = need(
            "exec",
            None,
            vec![res("", "pods", "exec"), res("", "pods", "attach")],
            Level::Metadata,
        );
        exec.stages = BTreeSet::from(["ResponseStarted".to_owned()]);
        let mut failures = need("fail", None, vec![Target::Everything], Level::Metadata);
        failures.stages.insert("ResponseStarted".into());
        vec![
            need(
                "pods",
                Some(&["create"]),
                vec![res("", "pods", ""), Target::NonResource],
                Level::RequestResponse,
            ),
            need(
                "deploy",
                Some(&["create"]),
                vec![
                    res("apps", "deployments", ""),
                    res("apps", "deployments", "scale"),
                ],
                Level::RequestResponse,
            ),
            any_sub,
            need(
                "rbac",
                Some(&["create", "update", "patch"]),
                vec![res("rbac.authorization.k8s.io", "roles", "")],
                Level::Request,
            ),
            need(
                "secrets",
                Some(&["get", "list", "watch"]),
                vec![res("", "secrets", ""), res("", "secrets", "*")],
                Level::Metadata,
            ),
            need(
                "crd",
                Some(&["delete"]),
                vec![Target::Resource {
                    group: None,
                    resource: "widgets".into(),
                    subresource: String::new(),
                }],
                Level::Request,
            ),
            anonymous,
            exec,
            failures,
        ]
    }

    #[test]
    fn a_generated_policy_logs_everything_its_needs_ask_for() {
        let needs = mixed_needs();
        // Every subset of the needs, so each overlap is tried with and without the others.
        for mask in 1u32..(1 << needs.len()) {
            let chosen: Vec<Need> = needs
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, n)| n.clone())
                .collect();
            let text = generate(&chosen, &[]);
            let policy = Policy::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let gaps = policy.gaps(&chosen);
            let described: Vec<String> = gaps.iter().map(|f| policy.describe(f)).collect();
            assert!(gaps.is_empty(), "{described:#?}\n{text}");
            assert_eq!(policy.rules.last().map(|r| r.level), Some(Level::None));
        }
    }

    #[test]
    fn a_generated_policy_logs_nothing_else() {
        let needs: Vec<Need> = mixed_needs()
            .into_iter()
            .filter(|n| ["pods", "rbac", "secrets"].contains(&n.rule.as_str()))
            .collect();
        let text = generate(&needs, &["a note".into()]);
        assert!(text.contains("# a note\n"), "{text}");
        let policy = Policy::parse(&text).unwrap();
        assert_eq!(
            policy.omit_stages,
            ["RequestReceived", "ResponseStarted", "Panic"],
            "{text}"
        );
        let n = need("probe", None, vec![], Level::Metadata);
        let level_of = |c: &Cell| {
            policy
                .rules
                .iter()
                .find(|r| r.matches(c, &n) == Match::All)
                .map(|r| r.level)
        };
        assert_eq!(
            level_of(&cell("create", res("", "pods", ""))),
            Some(Level::RequestResponse)
        );
        assert_eq!(
            level_of(&cell("create", res("", "pods", "exec"))),
            Some(Level::None)
        );
        assert_eq!(
            level_of(&cell("delete", res("", "pods", ""))),
            Some(Level::None)
        );
        assert_eq!(
            level_of(&cell(
                "patch",
                res("rbac.authorization.k8s.io", "roles", "")
            )),
            Some(Level::Request)
        );
        assert_eq!(
            level_of(&cell("get", res("", "secrets", "x"))),
            Some(Level::Metadata)
        );
        assert_eq!(
            level_of(&cell("get", res("", "configmaps", ""))),
            Some(Level::None)
        );
    }
}
