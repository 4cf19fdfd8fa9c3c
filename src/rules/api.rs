//! What scripts see: the typed `event` accessors (named exactly as in audit.k8s.io/v1 JSON),
//! lazily decoded request/response objects, and the helper functions rule authors reach for.

use std::sync::{Arc, OnceLock};

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext};
use serde_json::Value;

use crate::audit::{Event, ObjectReference, Status, UserInfo};

/// One event shared by every script that runs on it; request and response objects are
/// decoded on first access and then kept.
#[derive(Clone)]
pub struct ScriptEvent(Arc<EventCell>);

struct EventCell {
    event: Arc<Event>,
    request: OnceLock<Option<Value>>,
    response: OnceLock<Option<Value>>,
    /// The fields every script reads, as script strings made once per event.
    hot: [OnceLock<ImmutableString>; HOT_FIELDS],
    /// `requestObject` / `responseObject` as script values, converted once per event; each
    /// script gets a copy (strings shared, maps copied), cheaper than converting again.
    request_value: OnceLock<Dynamic>,
    response_value: OnceLock<Dynamic>,
}

/// The fields most guards read; each is converted to a script string once per event and
/// then shared (a reference-count increment) by every script.
#[derive(Clone, Copy)]
enum Hot {
    Stage,
    Verb,
    RequestUri,
    Resource,
    Subresource,
    Namespace,
    Name,
    Username,
}

const HOT_FIELDS: usize = 8;

impl ScriptEvent {
    /// Wraps an event for evaluation.
    pub fn new(event: Arc<Event>) -> Self {
        Self(Arc::new(EventCell {
            event,
            request: OnceLock::new(),
            response: OnceLock::new(),
            hot: Default::default(),
            request_value: OnceLock::new(),
            response_value: OnceLock::new(),
        }))
    }

    /// `requestObject` as a script value (a copy of the per-event conversion).
    fn request_value(&self) -> Dynamic {
        self.0
            .request_value
            .get_or_init(|| self.request_object().map_or(Dynamic::UNIT, json_to_dynamic))
            .clone()
    }

    /// `responseObject` as a script value (a copy of the per-event conversion).
    fn response_value(&self) -> Dynamic {
        self.0
            .response_value
            .get_or_init(|| {
                self.response_object()
                    .map_or(Dynamic::UNIT, json_to_dynamic)
            })
            .clone()
    }

    /// A hot field as a script string, made on first use.
    fn hot(&self, field: Hot, read: impl FnOnce(&Self) -> &str) -> ImmutableString {
        self.0.hot[field as usize]
            .get_or_init(|| text(read(self)))
            .clone()
    }

    /// The underlying event.
    pub fn event(&self) -> &Event {
        &self.0.event
    }

    /// `requestObject` as JSON, decoded once.
    pub fn request_object(&self) -> Option<&Value> {
        self.0
            .request
            .get_or_init(|| decode_raw(self.event().request_object.as_deref()))
            .as_ref()
    }

    /// `responseObject` as JSON, decoded once.
    pub fn response_object(&self) -> Option<&Value> {
        self.0
            .response
            .get_or_init(|| decode_raw(self.event().response_object.as_deref()))
            .as_ref()
    }

    /// The object's name, also on create where only the response body has it.
    pub fn object_name(&self) -> String {
        object_name(self).to_string()
    }

    /// The object a helper inspects: the request body, else the response body.
    fn subject_object(&self) -> Option<&Value> {
        self.request_object().or_else(|| self.response_object())
    }

    fn object_ref(&self) -> &ObjectReference {
        static EMPTY: OnceLock<ObjectReference> = OnceLock::new();
        self.event()
            .object_ref
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(ObjectReference::default))
    }

    fn status(&self) -> &Status {
        static EMPTY: OnceLock<Status> = OnceLock::new();
        self.event()
            .response_status
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Status::default))
    }

    fn user_info(&self, which: WhichUser) -> &UserInfo {
        static EMPTY: OnceLock<UserInfo> = OnceLock::new();
        match which {
            WhichUser::Authenticated => &self.event().user,
            WhichUser::Impersonated => self
                .event()
                .impersonated_user
                .as_ref()
                .unwrap_or_else(|| EMPTY.get_or_init(UserInfo::default)),
        }
    }
}

fn decode_raw(raw: Option<&serde_json::value::RawValue>) -> Option<Value> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .filter(|v: &Value| !v.is_null())
}

/// Which of the event's two users a `User` handle reads.
#[derive(Clone, Copy)]
enum WhichUser {
    Authenticated,
    Impersonated,
}

/// `event.user` / `event.impersonatedUser` as scripts see them.
#[derive(Clone)]
pub struct UserView(ScriptEvent, WhichUser);

/// `event.objectRef` as scripts see it; an absent objectRef reads as empty strings.
#[derive(Clone)]
pub struct ObjectRefView(ScriptEvent);

/// `event.responseStatus` as scripts see it; absent reads as code 0 and empty strings.
#[derive(Clone)]
pub struct StatusView(ScriptEvent);

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

fn strings(items: &[String]) -> Array {
    items.iter().map(|s| dyn_text(s)).collect()
}

fn text(s: &str) -> ImmutableString {
    s.into()
}

fn dyn_text(s: &str) -> Dynamic {
    Dynamic::from(text(s))
}

/// The decoded `name=value` pairs of the request URI's query, in order.
fn query_pairs(e: &ScriptEvent) -> impl Iterator<Item = (String, String)> + '_ {
    let uri = e.event().request_uri.as_str();
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// `event.uri_params()`: every query parameter, name → array of its decoded values.
fn uri_params(e: &ScriptEvent) -> Map {
    let mut out = Map::new();
    for (k, v) in query_pairs(e) {
        let values = out
            .entry(k.into())
            .or_insert_with(|| Dynamic::from_array(Array::new()));
        if let Some(mut values) = values.write_lock::<Array>() {
            values.push(dyn_text(&v));
        }
    }
    out
}

/// Every accessor scripts can read on `event`, with its Rhai type; docs and tests check against it.
pub const EVENT_ACCESSORS: &[(&str, &str)] = &[
    ("kind", "string"),
    ("apiVersion", "string"),
    ("level", "string"),
    ("auditID", "string"),
    ("stage", "string"),
    ("requestURI", "string"),
    ("verb", "string"),
    ("user", "User"),
    ("impersonatedUser", "User"),
    ("sourceIPs", "array of strings"),
    ("userAgent", "string"),
    ("objectRef", "ObjectRef"),
    ("responseStatus", "ResponseStatus"),
    ("requestObject", "map or ()"),
    ("responseObject", "map or ()"),
    ("requestReceivedTimestamp", "string"),
    ("stageTimestamp", "string"),
    ("annotations", "map of strings"),
];

/// Registers the event types, their accessors and the helper functions on `engine`.
pub fn register(engine: &mut Engine) {
    register_event(engine);
    register_user(engine);
    register_object_ref(engine);
    register_status(engine);
    register_pod_helpers(engine);
    register_rbac_helpers(engine);
    register_text_helpers(engine);
    register_string_membership(engine);
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

fn register_event(engine: &mut Engine) {
    engine
        .register_type_with_name::<ScriptEvent>("Event")
        .register_get("kind", |e: &mut ScriptEvent| text(&e.event().kind))
        .register_get("apiVersion", |e: &mut ScriptEvent| {
            text(&e.event().api_version)
        })
        .register_get("level", |e: &mut ScriptEvent| text(&e.event().level))
        .register_get("auditID", |e: &mut ScriptEvent| text(&e.event().audit_id))
        .register_get("stage", |e: &mut ScriptEvent| {
            e.hot(Hot::Stage, |e| &e.event().stage)
        })
        .register_get("requestURI", |e: &mut ScriptEvent| {
            e.hot(Hot::RequestUri, |e| &e.event().request_uri)
        })
        .register_get("verb", |e: &mut ScriptEvent| {
            e.hot(Hot::Verb, |e| &e.event().verb)
        })
        .register_get("userAgent", |e: &mut ScriptEvent| {
            text(&e.event().user_agent)
        })
        .register_get("requestReceivedTimestamp", |e: &mut ScriptEvent| {
            text(&e.event().request_received_timestamp)
        })
        .register_get("stageTimestamp", |e: &mut ScriptEvent| {
            text(&e.event().stage_timestamp)
        })
        .register_get("sourceIPs", |e: &mut ScriptEvent| {
            strings(&e.event().source_ips)
        })
        .register_get("annotations", |e: &mut ScriptEvent| {
            e.event()
                .annotations
                .iter()
                .map(|(k, v)| (k.as_str().into(), dyn_text(v)))
                .collect::<Map>()
        })
        .register_get("user", |e: &mut ScriptEvent| {
            UserView(e.clone(), WhichUser::Authenticated)
        })
        .register_get("impersonatedUser", |e: &mut ScriptEvent| {
            UserView(e.clone(), WhichUser::Impersonated)
        })
        .register_get("objectRef", |e: &mut ScriptEvent| ObjectRefView(e.clone()))
        .register_get("responseStatus", |e: &mut ScriptEvent| {
            StatusView(e.clone())
        })
        .register_get("requestObject", |e: &mut ScriptEvent| e.request_value())
        .register_get("responseObject", |e: &mut ScriptEvent| e.response_value())
        .register_fn("object_name", |e: &mut ScriptEvent| object_name(e))
        .register_fn("uri_param", |e: &mut ScriptEvent, name: &str| {
            query_pairs(e)
                .find(|(k, _)| k == name)
                .map_or_else(ImmutableString::new, |(_, v)| text(&v))
        })
        .register_fn("uri_params", |e: &mut ScriptEvent| uri_params(e))
        .register_fn("to_json", |e: &mut ScriptEvent| {
            serde_json::to_string(e.event()).unwrap_or_default()
        })
        .register_fn("to_string", |e: &mut ScriptEvent| event_summary(e))
        .register_fn("to_debug", |e: &mut ScriptEvent| event_summary(e));
}

fn event_summary(e: &ScriptEvent) -> String {
    let ev = e.event();
    format!(
        "Event({} {} {} by {} auditID={})",
        ev.stage,
        ev.verb,
        ev.object_display(),
        ev.user.username,
        ev.audit_id
    )
}

/// The object's name: objectRef.name, else the name in the response or request body
/// (on create the name is known only there), else its generateName.
fn object_name(e: &ScriptEvent) -> ImmutableString {
    let from_ref = &e.object_ref().name;
    if !from_ref.is_empty() {
        return text(from_ref);
    }
    let meta = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.pointer(&format!("/metadata/{key}")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    meta(e.response_object(), "name")
        .or_else(|| meta(e.request_object(), "name"))
        .or_else(|| meta(e.request_object(), "generateName"))
        .unwrap_or_default()
        .into()
}

fn register_user(engine: &mut Engine) {
    engine
        .register_type_with_name::<UserView>("User")
        .register_get("username", |u: &mut UserView| match u.1 {
            WhichUser::Authenticated => u.0.hot(Hot::Username, |e| &e.event().user.username),
            WhichUser::Impersonated => text(&u.0.user_info(u.1).username),
        })
        .register_get("uid", |u: &mut UserView| text(&u.0.user_info(u.1).uid))
        .register_get("groups", |u: &mut UserView| {
            strings(&u.0.user_info(u.1).groups)
        })
        .register_get("extra", |u: &mut UserView| {
            u.0.user_info(u.1)
                .extra
                .iter()
                .map(|(k, v)| (k.as_str().into(), Dynamic::from_array(strings(v))))
                .collect::<Map>()
        })
        .register_fn("is_system", |u: &mut UserView| {
            is_system_user(&u.0.user_info(u.1).username)
        })
        .register_fn("to_string", |u: &mut UserView| {
            u.0.user_info(u.1).username.clone()
        });
}

fn register_object_ref(engine: &mut Engine) {
    fn get(
        f: fn(&ObjectReference) -> &String,
    ) -> impl Fn(&mut ObjectRefView) -> ImmutableString + Send + Sync + 'static {
        move |o: &mut ObjectRefView| text(f(o.0.object_ref()))
    }
    fn hot(
        field: Hot,
        f: fn(&ObjectReference) -> &String,
    ) -> impl Fn(&mut ObjectRefView) -> ImmutableString + Send + Sync + 'static {
        move |o: &mut ObjectRefView| o.0.hot(field, |e| f(e.object_ref()))
    }
    engine
        .register_type_with_name::<ObjectRefView>("ObjectRef")
        .register_get("resource", hot(Hot::Resource, |r| &r.resource))
        .register_get("namespace", hot(Hot::Namespace, |r| &r.namespace))
        .register_get("name", hot(Hot::Name, |r| &r.name))
        .register_get("uid", get(|r| &r.uid))
        .register_get("apiGroup", get(|r| &r.api_group))
        .register_get("apiVersion", get(|r| &r.api_version))
        .register_get("resourceVersion", get(|r| &r.resource_version))
        .register_get("subresource", hot(Hot::Subresource, |r| &r.subresource))
        .register_fn("to_string", |o: &mut ObjectRefView| {
            o.0.event().object_display()
        });
}

fn register_status(engine: &mut Engine) {
    engine
        .register_type_with_name::<StatusView>("ResponseStatus")
        .register_get("code", |s: &mut StatusView| s.0.status().code)
        .register_get("status", |s: &mut StatusView| text(&s.0.status().status))
        .register_get("reason", |s: &mut StatusView| text(&s.0.status().reason))
        .register_get("message", |s: &mut StatusView| text(&s.0.status().message));
}

/// The pod spec inside the request (or response) object: a Pod's `spec`, a workload's
/// `spec.template.spec`, or a CronJob's `spec.jobTemplate.spec.template.spec`.
fn pod_spec(e: &ScriptEvent) -> Option<&Value> {
    let obj = e.subject_object()?;
    [
        "/spec/jobTemplate/spec/template/spec",
        "/spec/template/spec",
    ]
    .into_iter()
    .find_map(|p| obj.pointer(p))
    .or_else(|| {
        // A Pod, or a patch of `kubectl debug` carrying only ephemeral containers.
        obj.get("spec").filter(|s| {
            ["containers", "initContainers", "ephemeralContainers"]
                .iter()
                .any(|k| s.get(*k).is_some())
        })
    })
}

/// The pod spec's container lists, as named in the Pod API.
pub const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// All containers of the pod spec: regular, init and ephemeral.
fn containers(e: &ScriptEvent) -> impl Iterator<Item = &Value> {
    containers_of(e, &CONTAINER_LISTS)
}

/// The containers of the named lists of the pod spec.
fn containers_of<'a>(e: &'a ScriptEvent, lists: &'a [&str]) -> impl Iterator<Item = &'a Value> {
    let spec = pod_spec(e);
    lists
        .iter()
        .filter_map(move |k| spec.and_then(|s| s.get(*k)).and_then(Value::as_array))
        .flatten()
}

fn image_texts<'a>(containers: impl Iterator<Item = &'a Value>) -> Array {
    containers
        .filter_map(|c| c.get("image").and_then(Value::as_str))
        .map(dyn_text)
        .collect()
}

/// `event.images_of(list)`: the images of one container list; an unknown list is an error.
fn images_of(e: &ScriptEvent, list: &str) -> Result<Array, Box<EvalAltResult>> {
    let Some(list) = CONTAINER_LISTS.iter().find(|l| **l == list) else {
        return Err(format!(
            "images_of: unknown container list `{list}` (one of {})",
            CONTAINER_LISTS.join(", ")
        )
        .into());
    };
    Ok(image_texts(containers_of(e, std::slice::from_ref(list))))
}

/// The image reference without its tag and digest (`docker.io/library/nginx:1.25@sha256:…`
/// → `docker.io/library/nginx`); a registry port (`host:5000/app`) stays.
pub fn image_repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    }
}

fn spec_flag(e: &ScriptEvent, key: &str) -> bool {
    pod_spec(e)
        .and_then(|s| s.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn register_pod_helpers(engine: &mut Engine) {
    engine
        .register_fn("containers", |e: &mut ScriptEvent| {
            containers(e).map(json_to_dynamic).collect::<Array>()
        })
        .register_fn("images", |e: &mut ScriptEvent| image_texts(containers(e)))
        .register_fn("images_of", |e: &mut ScriptEvent, list: &str| {
            images_of(e, list)
        })
        .register_fn("privileged", |e: &mut ScriptEvent| {
            containers(e).any(|c| {
                c.pointer("/securityContext/privileged")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
        })
        .register_fn("host_network", |e: &mut ScriptEvent| {
            spec_flag(e, "hostNetwork")
        })
        .register_fn("host_pid", |e: &mut ScriptEvent| spec_flag(e, "hostPID"))
        .register_fn("host_ipc", |e: &mut ScriptEvent| spec_flag(e, "hostIPC"))
        .register_fn("host_path_mounts", |e: &mut ScriptEvent| {
            pod_spec(e)
                .and_then(|s| s.get("volumes"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.pointer("/hostPath/path").and_then(Value::as_str))
                .map(dyn_text)
                .collect::<Array>()
        });
}

fn object_list(e: &ScriptEvent, key: &str) -> Array {
    e.subject_object()
        .and_then(|o| o.get(key))
        .and_then(Value::as_array)
        .map(|items| items.iter().map(json_to_dynamic).collect())
        .unwrap_or_default()
}

fn register_rbac_helpers(engine: &mut Engine) {
    engine
        .register_fn("role_rules", |e: &mut ScriptEvent| object_list(e, "rules"))
        .register_fn("role_rule_values", |e: &mut ScriptEvent, key: &str| {
            role_rule_values(e, key)
        })
        .register_fn("subjects", |e: &mut ScriptEvent| object_list(e, "subjects"))
        .register_fn("role_ref", |e: &mut ScriptEvent| {
            e.subject_object()
                .and_then(|o| o.get("roleRef"))
                .map_or_else(|| Dynamic::from_map(Map::new()), json_to_dynamic)
        });
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

/// The list fields of an RBAC PolicyRule.
pub const RULE_FIELDS: [&str; 5] = [
    "apiGroups",
    "resources",
    "verbs",
    "resourceNames",
    "nonResourceURLs",
];

/// `event.role_rule_values(key)`: every value of one PolicyRule list field over all rules of
/// the role in the request, in order; an unknown field is an error.
fn role_rule_values(e: &ScriptEvent, key: &str) -> Result<Array, Box<EvalAltResult>> {
    if !RULE_FIELDS.contains(&key) {
        return Err(format!(
            "role_rule_values: unknown rule field `{key}` (one of {})",
            RULE_FIELDS.join(", ")
        )
        .into());
    }
    Ok(e.subject_object()
        .and_then(|o| o.get("rules"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.get(key).and_then(Value::as_array))
        .flatten()
        .map(json_to_dynamic)
        .collect())
}

/// True for Kubernetes' own identities (`system:…`), except `system:anonymous`.
pub fn is_system_user(username: &str) -> bool {
    username.starts_with("system:") && username != "system:anonymous"
}

/// Glob match where `*` matches any run of characters and `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // The common shapes without allocating: a literal, `prefix*`, `*suffix`.
    let wild = |s: &str| s.contains(['*', '?']);
    if !wild(pattern) {
        return pattern == text;
    }
    if let Some(prefix) = pattern.strip_suffix('*').filter(|p| !wild(p)) {
        return text.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*').filter(|s| !wild(s)) {
        return text.ends_with(suffix);
    }
    glob_match_chars(pattern, text)
}

/// Any glob, char by char, with backtracking on the last `*`.
fn glob_match_chars(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    pi = bp + 1;
                    ti = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn register_text_helpers(engine: &mut Engine) {
    engine
        .register_fn("is_system_user", |name: &str| is_system_user(name))
        // One overload per type: a `Dynamic` parameter makes Rhai search for the function on
        // every call.
        .register_fn("falco_text", |value: ImmutableString| {
            // The string itself (shared, not copied), `<NA>` when empty.
            match value.is_empty() {
                true => ImmutableString::from("<NA>"),
                false => value,
            }
        })
        .register_fn("falco_text", |value: Array| falco_text(&value.into()))
        .register_fn("falco_text", |value: Map| falco_text(&value.into()))
        .register_fn("falco_text", |_: ()| falco_text(&Dynamic::UNIT))
        .register_fn("falco_text", |value: i64| value.to_string())
        .register_fn("falco_text", |value: bool| value.to_string())
        .register_fn("falco_text", |value: f64| falco_text(&value.into()))
        .register_fn("image_repository", |image: &str| {
            text(image_repository(image))
        })
        .register_fn("glob", |text: &str, pattern: &str| {
            glob_match(pattern, text)
        })
        .register_fn("glob_any", |text: &str, patterns: Array| {
            patterns
                .iter()
                .filter_map(|p| p.read_lock::<ImmutableString>())
                .any(|p| glob_match(&p, text))
        })
        .register_fn("starts_with_any", |text: &str, prefixes: Array| {
            prefixes
                .iter()
                .filter_map(|p| p.read_lock::<ImmutableString>())
                .any(|p| text.starts_with(p.as_str()))
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_match("kube-*", "kube-system"));
        assert!(glob_match("*-system", "kube-system"));
        assert!(glob_match("k?be-*m", "kube-system"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("kube-*", "default"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*a*b*", "xxaybzb"));
    }

    #[test]
    fn glob_shortcuts_decide_as_the_general_matcher() {
        let patterns = [
            "",
            "*",
            "**",
            "?",
            "a",
            "ab",
            "a*",
            "*a",
            "a*b",
            "*a*",
            "a?",
            "?a",
            "é*",
            "*é",
            "system:*",
            "*:anonymous",
            "system:serviceaccount:*:*",
        ];
        let texts = [
            "",
            "a",
            "ab",
            "ba",
            "aab",
            "é",
            "éa",
            "aé",
            "system:anonymous",
            "system:",
            "system:serviceaccount:kube-system:default",
            "*",
            "a*",
        ];
        for p in patterns {
            for t in texts {
                assert_eq!(glob_match(p, t), glob_match_chars(p, t), "{p:?} on {t:?}");
            }
        }
    }

    #[test]
    fn image_repository_drops_tag_and_digest_but_not_a_registry_port() {
        for (image, repo) in [
            ("nginx", "nginx"),
            ("nginx:1.25", "nginx"),
            ("docker.io/library/nginx:1.25", "docker.io/library/nginx"),
            (
                "registry.k8s.io/kube-proxy@sha256:abc",
                "registry.k8s.io/kube-proxy",
            ),
            (
                "quay.io/calico/node:v3.27@sha256:abc",
                "quay.io/calico/node",
            ),
            ("host:5000/app", "host:5000/app"),
            ("host:5000/team/app:2", "host:5000/team/app"),
            ("", ""),
        ] {
            assert_eq!(image_repository(image), repo, "{image}");
        }
    }

    #[test]
    fn falco_text_renders_as_falco_prints_output_fields() {
        let engine = {
            let mut e = Engine::new();
            register(&mut e);
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

    #[test]
    fn system_users_exclude_anonymous() {
        assert!(is_system_user("system:serviceaccount:kube-system:default"));
        assert!(is_system_user("system:node:worker-1"));
        assert!(!is_system_user("system:anonymous"));
        assert!(!is_system_user("alice"));
    }
}
