//! What a running script reaches beyond its event: `alert(#{…})`, the stateful helpers
//! `count_over` and `first_seen`, `setting` and `setting_list`, `print` and `debug`, and
//! the run-time deadline. They read and fill the running evaluation's [`Frame`], one per
//! thread, which the evaluator (`ruleset`) sets up through the functions below.
//!
//! Owns the frame and these functions; calls `alert` (validation) and `sightings`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use rhai::plugin::*;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

use crate::rules::alert::AlertSpec;
use crate::rules::sightings::{Sightings, Staged};

/// What the current script run has raised; one per thread, as a run never leaves its thread.
#[derive(Default)]
struct Frame {
    rule: Option<Arc<str>>,
    specs: Vec<AlertSpec>,
    max_alerts: usize,
    deadline: Option<Instant>,
    /// The evaluation's clock (ms since the epoch) and the stateful helpers' memory.
    now_ms: i64,
    sightings: Option<Arc<Sightings>>,
    /// The sightings of the batch being evaluated, recorded when it is stored.
    staged: Staged,
    settings: Option<Arc<Map>>,
}

thread_local! {
    static FRAME: RefCell<Frame> = RefCell::new(Frame::default());
}

/// Starts an evaluation on this thread: its clock, the stateful helpers' memory and the
/// `[scripts.settings]` values.
pub(crate) fn begin_evaluation(now_ms: i64, sightings: Arc<Sightings>, settings: Arc<Map>) {
    FRAME.with(|f| {
        let mut f = f.borrow_mut();
        f.now_ms = now_ms;
        f.sightings = Some(sightings);
        f.settings = Some(settings);
    });
}

/// Hands the batch's staged sightings to this thread's evaluation.
pub(crate) fn put_staged(staged: Staged) {
    FRAME.with(|f| f.borrow_mut().staged = staged);
}

/// Takes the batch's staged sightings back from this thread's evaluation.
pub(crate) fn take_staged() -> Staged {
    FRAME.with(|f| std::mem::take(&mut f.borrow_mut().staged))
}

/// Marks `rule` as running until [`leave_rule`]: at most `max_alerts` alerts, until `deadline`.
pub(crate) fn enter_rule(rule: Arc<str>, max_alerts: usize, deadline: Instant) {
    FRAME.with(|f| {
        let mut f = f.borrow_mut();
        f.rule = Some(rule);
        f.max_alerts = max_alerts;
        f.deadline = Some(deadline);
    });
}

/// Ends the run started by [`enter_rule`].
pub(crate) fn leave_rule() {
    FRAME.with(|f| {
        let mut f = f.borrow_mut();
        f.rule = None;
        f.deadline = None;
    });
}

/// The alerts the last run raised, validated, without the rule's context.
pub(crate) fn take_alerts() -> Vec<AlertSpec> {
    FRAME.with(|f| std::mem::take(&mut f.borrow_mut().specs))
}

/// `alert`, `count_over`, `first_seen`, `setting` and `setting_list`, with the doc comments
/// the engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;

    /// Validates the alert map and raises it for the running rule (at most
    /// `max_alerts_per_event` per run).
    #[rhai_fn(return_raw)]
    pub fn alert(ctx: NativeCallContext, map: Map) -> Result<(), Box<EvalAltResult>> {
        super::alert(&ctx, map)
    }

    /// Records a sighting of `key` now; the sightings of `key` by this rule within `window`
    /// (e.g. `"5m"`), this one included.
    #[rhai_fn(return_raw)]
    pub fn count_over(
        ctx: NativeCallContext,
        key: &str,
        window: &str,
    ) -> Result<i64, Box<EvalAltResult>> {
        super::count_over(&ctx, key, window)
    }

    /// True when this rule has not seen `key` within `window` (e.g. `"24h"`), and then
    /// records it as seen now.
    #[rhai_fn(return_raw)]
    pub fn first_seen(
        ctx: NativeCallContext,
        key: &str,
        window: &str,
    ) -> Result<bool, Box<EvalAltResult>> {
        super::first_seen(&ctx, key, window)
    }

    /// `[scripts.settings]`'s value for `name`, else `default`.
    pub fn setting(name: &str, default: Dynamic) -> Dynamic {
        setting_value(name).unwrap_or(default)
    }

    /// `defaults` followed by the strings of the setting `name` (an array of strings), or
    /// `defaults` alone when it is not set.
    #[rhai_fn(return_raw)]
    pub fn setting_list(
        ctx: NativeCallContext,
        name: &str,
        defaults: Array,
    ) -> Result<Array, Box<EvalAltResult>> {
        super::setting_list(&ctx, name, defaults)
    }
}

/// `print` and `debug` to the log with the running rule's name, and the wall-clock bound
/// besides the operation count: some operations (growing a large array) cost far more
/// than others.
pub(super) fn register_hooks(engine: &mut Engine) {
    engine.on_print(|text| {
        let rule = running_rule();
        tracing::info!(target: "klaxon::script", rule = %rule, "{text}");
    });
    engine.on_debug(|text, source, pos| {
        let rule = running_rule();
        tracing::debug!(
            target: "klaxon::script",
            rule = %rule,
            source = source.unwrap_or(""),
            line = pos.line().unwrap_or(0),
            "{text}"
        );
    });
    engine.on_progress(|ops| {
        if ops % 1024 != 0 {
            return None;
        }
        let deadline = FRAME.with(|f| f.borrow().deadline)?;
        (Instant::now() > deadline).then(|| "max_run_time".into())
    });
}

/// The running rule's name, `""` outside a run.
fn running_rule() -> Arc<str> {
    FRAME.with(|f| f.borrow().rule.clone()).unwrap_or_default()
}

/// `alert(#{…})`: validates the map and records it for the current rule.
fn alert(ctx: &NativeCallContext, map: Map) -> Result<(), Box<EvalAltResult>> {
    let spec = AlertSpec::from_map(map)
        .map_err(|msg| EvalAltResult::ErrorRuntime(msg.into(), ctx.call_position()))?;
    FRAME.with(|f| {
        let mut f = f.borrow_mut();
        if f.specs.len() >= f.max_alerts {
            return Err(EvalAltResult::ErrorRuntime(
                format!(
                    "alert: more than {} alerts on one event (max_alerts_per_event)",
                    f.max_alerts
                )
                .into(),
                ctx.call_position(),
            )
            .into());
        }
        f.specs.push(spec);
        Ok(())
    })
}

/// The running rule's stateful-helper key, window and clock.
fn stateful(
    ctx: &NativeCallContext,
    helper: &str,
    key: &str,
    window: &str,
) -> Result<(Arc<Sightings>, String, i64, i64), Box<EvalAltResult>> {
    let window_ms = humantime::parse_duration(window)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            EvalAltResult::ErrorRuntime(
                format!("{helper}: `{window}` is not a window like \"5m\" or \"24h\"").into(),
                ctx.call_position(),
            )
        })?;
    FRAME.with(|f| {
        let f = f.borrow();
        let sightings = f.sightings.clone().ok_or_else(|| {
            EvalAltResult::ErrorRuntime(
                format!("{helper}: only available while evaluating events").into(),
                ctx.call_position(),
            )
        })?;
        let rule = f.rule.as_deref().unwrap_or("");
        Ok((sightings, format!("{rule}\u{1f}{key}"), window_ms, f.now_ms))
    })
}

/// `count_over(key, window)`: sightings of `key` by this rule within `window`, this one
/// included.
fn count_over(ctx: &NativeCallContext, key: &str, window: &str) -> Result<i64, Box<EvalAltResult>> {
    let (sightings, key, window_ms, now_ms) = stateful(ctx, "count_over", key, window)?;
    Ok(with_staged(|staged| {
        sightings.count_over(&key, window_ms, now_ms, staged)
    }))
}

/// `first_seen(key, window)`: true when this rule has not seen `key` within `window`.
fn first_seen(
    ctx: &NativeCallContext,
    key: &str,
    window: &str,
) -> Result<bool, Box<EvalAltResult>> {
    let (sightings, key, window_ms, now_ms) = stateful(ctx, "first_seen", key, window)?;
    Ok(with_staged(|staged| {
        sightings.first_seen(&key, window_ms, now_ms, staged)
    }))
}

/// Runs `f` on the running batch's staged sightings (taken out of the frame meanwhile, so
/// that a shared-store call inside `f` holds no borrow of it).
fn with_staged<T>(f: impl FnOnce(&mut Staged) -> T) -> T {
    let mut staged = take_staged();
    let out = f(&mut staged);
    put_staged(staged);
    out
}

/// The running evaluation's `[scripts.settings]` value for `name`, if set.
fn setting_value(name: &str) -> Option<Dynamic> {
    FRAME.with(|f| {
        f.borrow()
            .settings
            .as_ref()
            .and_then(|s| s.get(name).cloned())
    })
}

/// `setting_list(name, defaults)`: `defaults` followed by the strings of the setting `name`
/// (an array of strings), or `defaults` alone when it is not set.
fn setting_list(
    ctx: &NativeCallContext,
    name: &str,
    defaults: Array,
) -> Result<Array, Box<EvalAltResult>> {
    let Some(extra) = setting_strings(name).map_err(|mut err| {
        err.set_position(ctx.call_position());
        err
    })?
    else {
        return Ok(defaults);
    };
    let mut list = defaults;
    list.extend(extra);
    Ok(list)
}

/// The setting `name` when it is set: an array of strings, else a script error naming it.
pub(super) fn setting_strings(name: &str) -> Result<Option<Array>, Box<EvalAltResult>> {
    let Some(value) = setting_value(name) else {
        return Ok(None);
    };
    let wrong = |what: String| -> Box<EvalAltResult> {
        format!("setting {name} must be an array of strings, not {what}").into()
    };
    let type_name = value.type_name();
    let items = value
        .try_cast::<Array>()
        .ok_or_else(|| wrong(type_name.to_owned()))?;
    if let Some(item) = items.iter().find(|item| !item.is_string()) {
        return Err(wrong(format!("an array holding {}", item.type_name())));
    }
    Ok(Some(items))
}
