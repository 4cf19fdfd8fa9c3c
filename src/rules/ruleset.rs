//! Loading, compiling and running the scripts: one rule per `*.rhai` file, compiled once,
//! run on every event in a sandboxed engine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use rhai::{AST, Engine, EvalAltResult, Map, Position, Scope};
use serde::{Deserialize, Serialize};

use super::alert::{Alert, AlertContext};
use super::api::{self, ScriptEvent, runtime};
use super::attack::attack_declaration;
use super::index::{MATCH_CONST, RuleFilter, RuleIndex};
use super::needs;
use super::sightings::{Sightings, Staged};
use crate::audit::Event;
use crate::audit::policy::{Level, Need};

/// Sandbox limits for every script run; each is per run of one script on one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptLimits {
    /// Operations before a run is stopped (stops infinite loops).
    pub max_operations: u64,
    /// Longest string a script may build, in bytes.
    pub max_string_size: usize,
    /// Largest array a script may build.
    pub max_array_size: usize,
    /// Largest map a script may build.
    pub max_map_size: usize,
    /// Deepest function call nesting.
    pub max_call_levels: usize,
    /// Deepest expression nesting at compile time.
    pub max_expr_depth: usize,
    /// Most alerts one script may raise on one event.
    pub max_alerts_per_event: usize,
    /// Longest one script may run on one event (checked every 1,024 operations).
    #[serde(with = "humantime_serde")]
    pub max_run_time: std::time::Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            max_operations: 100_000,
            max_string_size: 1 << 20,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_alerts_per_event: 100,
            max_run_time: std::time::Duration::from_millis(100),
        }
    }
}

/// A script that could not be read or compiled, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The script file (or the directory, when the directory itself is the problem).
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a position.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Every problem found while loading a script set.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct LoadErrors(pub Vec<LoadError>);

/// A run-time failure of one script on one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptError {
    /// The rule that failed.
    pub rule: String,
    /// `file:line` of the failure (the file alone when Rhai gives no line).
    pub location: String,
    /// The auditID of the event it failed on.
    pub audit_id: String,
    /// Rhai's message, e.g. `Too many operations`.
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: rule {} failed on auditID {}: {}",
            self.location, self.rule, self.audit_id, self.message
        )
    }
}

/// One script to compile: its rule name, where it came from, and its text.
#[derive(Debug, Clone)]
pub struct ScriptSource {
    /// Rule name (the file stem).
    pub name: String,
    /// File the text came from; used in every message about the rule.
    pub path: PathBuf,
    /// The Rhai source.
    pub text: String,
}

impl ScriptSource {
    /// Reads every `*.rhai` file of `dirs`, sorted by name within each directory.
    pub fn read_dirs(dirs: &[PathBuf]) -> Result<Vec<ScriptSource>, LoadErrors> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for dir in dirs {
            match script_files(dir) {
                Ok(files) => {
                    for path in files {
                        match std::fs::read_to_string(&path) {
                            Ok(text) => sources.push(ScriptSource {
                                name: rule_name(&path),
                                path,
                                text,
                            }),
                            Err(e) => errors.push(LoadError {
                                path,
                                position: None,
                                message: e.to_string(),
                            }),
                        }
                    }
                }
                Err(e) => errors.push(LoadError {
                    path: dir.clone(),
                    position: None,
                    message: format!("cannot read scripts directory: {e}"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(sources)
        } else {
            Err(LoadErrors(errors))
        }
    }
}

fn script_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "rhai") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn rule_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A compiled rule.
pub struct Rule {
    name: Arc<str>,
    path: PathBuf,
    ast: AST,
    filters: Option<Vec<RuleFilter>>,
    attack: Vec<String>,
    level: Level,
}

impl Rule {
    /// The rule's name (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The script file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the script declares it can match (`const MATCH`: any of these); `None`: every
    /// event.
    pub fn filters(&self) -> Option<&[RuleFilter]> {
        self.filters.as_deref()
    }

    /// The MITRE ATT&CK technique IDs the script declares (`const ATTACK`), in the order
    /// written; empty when it declares none.
    pub fn attack(&self) -> &[String] {
        &self.attack
    }

    /// The audit level the rule reads (`const LEVEL`; Metadata when it declares none).
    pub fn level(&self) -> Level {
        self.level
    }
}

/// A script's declarations: what it can match, its ATT&CK techniques and the level it reads.
type Declarations = (Option<Vec<RuleFilter>>, Vec<String>, Level);

/// Reads the script's `MATCH`, `ATTACK` and `LEVEL` declarations; an error carries its
/// position when it has one.
fn declarations(ast: &AST, text: &str) -> Result<Declarations, (Option<(usize, usize)>, String)> {
    let filters = match_declaration(ast, text).map_err(|message| {
        let line = needs::declaration_line(text, MATCH_CONST);
        (line.map(|l| (l, 1)), message)
    })?;
    let attack = attack_declaration(ast, text).map_err(|e| (e.position, e.message))?;
    let level = needs::level_declaration(ast, text)
        .map_err(|(line, message)| (line.map(|l| (l, 1)), message))?;
    Ok((filters, attack, level))
}

/// Reads the script's `const MATCH = #{…};` (or `[#{…}, …]`) declaration, if it has one.
fn match_declaration(ast: &AST, text: &str) -> Result<Option<Vec<RuleFilter>>, String> {
    let literal = ast
        .iter_literal_variables(true, false)
        .find(|(name, ..)| *name == MATCH_CONST)
        .map(|(_, _, value)| value);
    match literal {
        Some(value) if value.is_array() => {
            let items = value.cast::<rhai::Array>();
            if items.is_empty() {
                return Err(not_a_map());
            }
            items
                .into_iter()
                .map(|item| {
                    item.try_cast::<rhai::Map>()
                        .ok_or_else(not_a_map)
                        .and_then(|map| RuleFilter::from_map(&map))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
        Some(value) => match value.try_cast::<rhai::Map>() {
            Some(map) => RuleFilter::from_map(&map).map(|f| Some(vec![f])),
            None => Err(not_a_map()),
        },
        None if needs::declaration_line(text, MATCH_CONST).is_some() => {
            Err("MATCH must be a top-level constant map of literals (strings and integers)".into())
        }
        None => Ok(None),
    }
}

fn not_a_map() -> String {
    "MATCH must be a map, e.g. #{ verb: \"create\", resource: \"pods\" }, or an array of maps"
        .into()
}

/// The result of running the rules on one event.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Alerts raised, in rule order.
    pub alerts: Vec<Alert>,
    /// Scripts that failed on this event.
    pub errors: Vec<ScriptError>,
    /// The rules that ran (the index skipped the others), in rule order, with their time.
    pub runs: Vec<RuleRun>,
}

/// One rule run on one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRun {
    /// The rule's position in [`Ruleset::rules`].
    pub rule: usize,
    /// How long it took, in nanoseconds.
    pub nanos: u64,
}

/// Which rules an evaluation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Only those whose `MATCH` declaration admits the event (the default).
    Indexed,
    /// Every rule, ignoring `MATCH`: to check that declarations skip nothing that fires.
    Every,
}

/// The compiled scripts and the sandboxed engine that runs them.
pub struct Ruleset {
    engine: Engine,
    rules: Vec<Rule>,
    index: RuleIndex,
    limits: ScriptLimits,
    cluster: String,
    sightings: Arc<Sightings>,
    settings: Arc<Map>,
}

impl fmt::Debug for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ruleset")
            .field(
                "rules",
                &self.rules.iter().map(Rule::name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Ruleset {
    /// Reads and compiles every script of `dirs`; every problem is reported, not just the first.
    pub fn load(
        dirs: &[PathBuf],
        limits: &ScriptLimits,
        cluster: &str,
    ) -> Result<Self, LoadErrors> {
        Self::compile_with_modules(ScriptSource::read_dirs(dirs)?, dirs, limits, cluster)
    }

    /// Compiles the given scripts; rule names must be unique; `import` finds nothing.
    pub fn compile(
        sources: Vec<ScriptSource>,
        limits: &ScriptLimits,
        cluster: &str,
    ) -> Result<Self, LoadErrors> {
        Self::compile_with_modules(sources, &[], limits, cluster)
    }

    /// Compiles the given scripts, resolving `import "NAME"` to `DIR/lib/NAME.rhai` of
    /// `module_dirs`; imported modules are embedded at load.
    pub fn compile_with_modules(
        sources: Vec<ScriptSource>,
        module_dirs: &[PathBuf],
        limits: &ScriptLimits,
        cluster: &str,
    ) -> Result<Self, LoadErrors> {
        let mut engine = build_engine(limits);
        engine.set_module_resolver(super::modules::ConfinedResolver::new(module_dirs));
        // `event` is declared for strict variables but not as a constant: the optimiser would
        // otherwise fold this empty placeholder into the AST wherever `event` is passed to a
        // function. It is a constant at run time (see `evaluate_at`).
        let mut scope = Scope::new();
        scope.push("event", ScriptEvent::new(Arc::default()));
        let mut rules: Vec<Rule> = Vec::with_capacity(sources.len());
        let mut errors = Vec::new();
        for source in sources {
            if let Some(first) = rules.iter().find(|r| *r.name == *source.name) {
                errors.push(LoadError {
                    message: format!(
                        "rule `{}` is already defined by {}",
                        source.name,
                        first.path.display()
                    ),
                    path: source.path,
                    position: None,
                });
                continue;
            }
            match engine.compile_into_self_contained(&scope, &source.text) {
                Ok(mut ast) => {
                    ast.set_source(source.path.to_string_lossy().as_ref());
                    match declarations(&ast, &source.text) {
                        Ok((filters, attack, level)) => rules.push(Rule {
                            name: source.name.into(),
                            path: source.path,
                            ast,
                            filters,
                            attack,
                            level,
                        }),
                        Err((position, message)) => errors.push(LoadError {
                            path: source.path,
                            position,
                            message,
                        }),
                    }
                }
                Err(err) => errors.push(load_error(source.path, *err)),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                engine,
                index: RuleIndex::new(rules.iter().map(|r| r.filters.clone()).collect()),
                rules,
                limits: limits.clone(),
                cluster: cluster.to_owned(),
                sightings: Arc::default(),
                settings: Arc::default(),
            })
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// The compiled rules, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What each rule needs the audit policy to log (its `MATCH` alternatives that its
    /// `[scripts.settings]` switch leaves on, at its `LEVEL`), in rule order.
    pub fn audit_needs(&self) -> Vec<Need> {
        self.rules
            .iter()
            .flat_map(|r| needs::rule_needs(&r.name, r.filters(), r.level, &self.settings))
            .collect()
    }

    /// Signatures of the functions klaxon registers for scripts (not Rhai's standard
    /// library), as Rhai prints them, e.g. `glob(_: string, _: string) -> bool`; the docs
    /// are checked against them.
    pub fn function_signatures(&self) -> Vec<String> {
        let mut out = self.engine.gen_fn_signatures(false);
        out.sort();
        out.dedup();
        out
    }

    /// Rhai's metadata of the functions klaxon registers (not Rhai's standard library), as
    /// its JSON (`functions`: name, params with names and types, returnType, docComments,
    /// signature); the docs are checked against it.
    pub fn function_metadata(&self) -> serde_json::Value {
        self.engine
            .gen_fn_metadata_to_json(false)
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    }

    /// The values scripts read with `setting(name, default)` (`[scripts.settings]`).
    pub fn set_settings(&mut self, settings: &BTreeMap<String, serde_json::Value>) {
        self.settings = Arc::new(
            settings
                .iter()
                .map(|(k, v)| (k.as_str().into(), api::json_to_dynamic(v)))
                .collect(),
        );
        self.index.apply_settings(&self.settings);
    }

    /// Shares the stateful helpers' memory with other replicas (kept across reloads, which
    /// adopt this memory).
    pub fn share_helpers(&self, shared: Arc<dyn crate::state::SharedHelpers>) {
        self.sightings.share(shared);
    }

    /// Keeps the stateful helpers' memory of `previous` (on reload).
    pub fn adopt_state(&mut self, previous: &Ruleset) {
        self.sightings = previous.sightings.clone();
    }

    /// Whether any rule can run on `event` (the index's view): an event no rule can run on
    /// raises nothing and changes no state, wherever and however often it is evaluated.
    pub fn may_match(&self, event: &Event) -> bool {
        self.index.any_candidate(event)
    }

    /// Runs every rule on `event` with the wall clock. A failing rule is reported in the
    /// result and never stops the others.
    pub fn evaluate(&self, event: Arc<Event>) -> Evaluation {
        self.evaluate_at(event, crate::clock::wall_clock_ms())
    }

    /// Runs every rule on `event`, with `now_ms` as the stateful helpers' clock; the
    /// helpers' sightings are recorded at once.
    pub fn evaluate_at(&self, event: Arc<Event>, now_ms: i64) -> Evaluation {
        self.evaluate_selected(event, now_ms, Selection::Indexed)
    }

    /// Runs the `selection` of rules on `event`, with `now_ms` as the stateful helpers'
    /// clock; the helpers' sightings are recorded at once.
    pub fn evaluate_selected(
        &self,
        event: Arc<Event>,
        now_ms: i64,
        selection: Selection,
    ) -> Evaluation {
        let mut staged = Staged::default();
        let evaluation = self.evaluate_staged(event, now_ms, selection, &mut staged);
        self.commit_sightings(staged);
        evaluation
    }

    /// Runs the `selection` of rules on `event` as part of a batch: the stateful helpers
    /// see the sightings `staged` by the batch so far and stage theirs there, to be
    /// recorded with [`Ruleset::commit_sightings`] once the batch is stored (or dropped).
    pub fn evaluate_staged(
        &self,
        event: Arc<Event>,
        now_ms: i64,
        selection: Selection,
        staged: &mut Staged,
    ) -> Evaluation {
        runtime::put_staged(std::mem::take(staged));
        let evaluation = self.evaluate_unstaged(event, now_ms, selection);
        *staged = runtime::take_staged();
        evaluation
    }

    /// Records a stored batch's staged sightings in the stateful helpers' memory.
    pub fn commit_sightings(&self, staged: Staged) {
        self.sightings.commit(staged);
    }

    /// The evaluation itself, with the frame's staged sightings.
    fn evaluate_unstaged(
        &self,
        event: Arc<Event>,
        now_ms: i64,
        selection: Selection,
    ) -> Evaluation {
        let positions: Vec<usize> = match selection {
            Selection::Indexed => self.index.candidates(&event),
            Selection::Every => (0..self.rules.len()).collect(),
        };
        runtime::begin_evaluation(now_ms, self.sightings.clone(), self.settings.clone());
        let script_event = ScriptEvent::new(event);
        let mut out = Evaluation::default();
        // One scope for all rules: `event` stays, whatever a script declared is dropped.
        let mut scope = Scope::new();
        scope.push_constant("event", script_event.clone());
        out.runs.reserve(positions.len());
        for position in positions {
            let rule = &self.rules[position];
            let started = std::time::Instant::now();
            let result = self.run_rule(rule, &mut scope, started);
            out.runs.push(RuleRun {
                rule: position,
                nanos: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            });
            scope.rewind(1);
            let specs = runtime::take_alerts();
            if !specs.is_empty() {
                let context = AlertContext::from_event(
                    script_event.event(),
                    &script_event.object_name(),
                    &self.cluster,
                );
                out.alerts.extend(
                    specs
                        .into_iter()
                        .map(|spec| spec.into_alert(rule, context.clone())),
                );
            }
            if let Err(err) = result {
                out.errors
                    .push(script_error(rule, script_event.event(), *err, &self.limits));
            }
        }
        out
    }

    fn run_rule(
        &self,
        rule: &Rule,
        scope: &mut Scope,
        started: std::time::Instant,
    ) -> Result<(), Box<EvalAltResult>> {
        runtime::enter_rule(
            rule.name.clone(),
            self.limits.max_alerts_per_event,
            started + self.limits.max_run_time,
        );
        let result = self.engine.run_ast_with_scope(scope, &rule.ast);
        runtime::leave_rule();
        result
    }

    /// Evaluates a Rhai expression (or statements) with `event` in scope, for tests and debugging.
    pub fn eval_expression(
        &self,
        event: Arc<Event>,
        expression: &str,
    ) -> Result<rhai::Dynamic, Box<EvalAltResult>> {
        let mut scope = Scope::new();
        scope.push_constant("event", ScriptEvent::new(event));
        self.engine.eval_with_scope(&mut scope, expression)
    }
}

/// A compile failure: a syntax error, or an import that failed (with its module's error).
fn load_error(path: PathBuf, mut err: EvalAltResult) -> LoadError {
    let position = line_column(err.position());
    let message = match err {
        EvalAltResult::ErrorParsing(kind, _) => kind.to_string(),
        _ => {
            err.clear_position();
            err.to_string()
        }
    };
    LoadError {
        path,
        position,
        message,
    }
}

fn line_column(pos: Position) -> Option<(usize, usize)> {
    pos.line().map(|l| (l, pos.position().unwrap_or(1)))
}

fn script_error(
    rule: &Rule,
    event: &Event,
    mut err: EvalAltResult,
    limits: &ScriptLimits,
) -> ScriptError {
    let pos = innermost_position(&err);
    err.clear_position();
    let hint = match innermost(&err) {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            " (scripts.limits.max_operations = {})",
            limits.max_operations
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            " (scripts.limits.max_call_levels = {})",
            limits.max_call_levels
        ),
        EvalAltResult::ErrorTerminated(..) => format!(
            " (ran longer than scripts.limits.max_run_time = {})",
            humantime::format_duration(limits.max_run_time)
        ),
        EvalAltResult::ErrorDataTooLarge(..) => {
            " (see scripts.limits: max_string_size, max_array_size, max_map_size)".to_owned()
        }
        _ => String::new(),
    };
    let location = match pos.line() {
        Some(line) => format!("{}:{line}", rule.path.display()),
        None => rule.path.display().to_string(),
    };
    ScriptError {
        rule: rule.name.to_string(),
        location,
        audit_id: event.audit_id.clone(),
        message: format!("{err}{hint}"),
    }
}

/// The error inside any function calls that wrap it.
fn innermost(err: &EvalAltResult) -> &EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        other => other,
    }
}

/// The position of the failure itself, inside any function calls that wrap it.
fn innermost_position(err: &EvalAltResult) -> Position {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, pos) => {
            let p = innermost_position(inner);
            if p.is_none() { *pos } else { p }
        }
        other => other.position(),
    }
}

/// Builds the sandboxed engine: no modules or eval, limits on everything, and the script API
/// (`api`, which also sends print to the log and enforces the run-time deadline).
fn build_engine(limits: &ScriptLimits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .set_max_operations(limits.max_operations)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_strict_variables(true)
        // No string interning: with event data the cache stays full and every new string
        // scanned all of it to evict one (a few % of evaluation time).
        .set_max_strings_interned(0)
        .disable_symbol("eval");
    api::register(&mut engine);
    engine
}
