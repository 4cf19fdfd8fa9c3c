//! The `event` scripts see: [`ScriptEvent`], one decoded audit event shared by every script
//! that runs on it, with its lazily filled caches, and its top-level accessors (named
//! exactly as in audit.k8s.io/v1 JSON).
//!
//! Owns the per-event caches and the `Event` type's getters, `object_name`, `to_json` and
//! `to_string`; calls `audit` for the event and `records` for the sub-records' handles.

use std::sync::{Arc, OnceLock};

use rhai::plugin::*;
use rhai::{Array, Dynamic, ImmutableString, Map};
use serde_json::Value;

use super::convert::{dyn_text, json_to_dynamic, strings, text};
use super::records::{ObjectRefView, StatusView, UserView, WhichUser};
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
pub(super) enum Hot {
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
    pub(super) fn hot(&self, field: Hot, read: impl FnOnce(&Self) -> &str) -> ImmutableString {
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
    pub(super) fn subject_object(&self) -> Option<&Value> {
        self.request_object().or_else(|| self.response_object())
    }

    /// `objectRef`, or an empty one when the event has none.
    pub(super) fn object_ref(&self) -> &ObjectReference {
        static EMPTY: OnceLock<ObjectReference> = OnceLock::new();
        self.event()
            .object_ref
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(ObjectReference::default))
    }

    /// `responseStatus`, or an empty one when the event has none.
    pub(super) fn status(&self) -> &Status {
        static EMPTY: OnceLock<Status> = OnceLock::new();
        self.event()
            .response_status
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Status::default))
    }

    /// One of the event's two users; an empty one when the request impersonates nobody.
    pub(super) fn user_info(&self, which: WhichUser) -> &UserInfo {
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

/// The `Event` type and its functions, with the doc comments the engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;
    use crate::rules::api::records::functions::{ObjectRef, ResponseStatus, User};

    /// The audit event a script runs on, read through accessors named as in audit.k8s.io/v1 JSON.
    pub type Event = ScriptEvent;

    /// `"Event"`.
    #[rhai_fn(get = "kind", pure)]
    pub fn kind(e: &mut Event) -> ImmutableString {
        text(&e.event().kind)
    }

    /// `"audit.k8s.io/v1"`.
    #[rhai_fn(get = "apiVersion", pure)]
    pub fn api_version(e: &mut Event) -> ImmutableString {
        text(&e.event().api_version)
    }

    /// `None`, `Metadata`, `Request` or `RequestResponse`.
    #[rhai_fn(get = "level", pure)]
    pub fn level(e: &mut Event) -> ImmutableString {
        text(&e.event().level)
    }

    /// Unique per request; the same for all stages of a request.
    #[rhai_fn(get = "auditID", pure)]
    pub fn audit_id(e: &mut Event) -> ImmutableString {
        text(&e.event().audit_id)
    }

    /// `RequestReceived`, `ResponseStarted`, `ResponseComplete` or `Panic`.
    #[rhai_fn(get = "stage", pure)]
    pub fn stage(e: &mut Event) -> ImmutableString {
        e.hot(Hot::Stage, |e| &e.event().stage)
    }

    /// Path and query of the request.
    #[rhai_fn(get = "requestURI", pure)]
    pub fn request_uri(e: &mut Event) -> ImmutableString {
        e.hot(Hot::RequestUri, |e| &e.event().request_uri)
    }

    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    #[rhai_fn(get = "verb", pure)]
    pub fn verb(e: &mut Event) -> ImmutableString {
        e.hot(Hot::Verb, |e| &e.event().verb)
    }

    /// The client's User-Agent.
    #[rhai_fn(get = "userAgent", pure)]
    pub fn user_agent(e: &mut Event) -> ImmutableString {
        text(&e.event().user_agent)
    }

    /// When the apiserver received the request (RFC 3339 with microseconds).
    #[rhai_fn(get = "requestReceivedTimestamp", pure)]
    pub fn request_received_timestamp(e: &mut Event) -> ImmutableString {
        text(&e.event().request_received_timestamp)
    }

    /// When the event's stage was reached (RFC 3339 with microseconds).
    #[rhai_fn(get = "stageTimestamp", pure)]
    pub fn stage_timestamp(e: &mut Event) -> ImmutableString {
        text(&e.event().stage_timestamp)
    }

    /// Client addresses; the first is the origin.
    #[rhai_fn(get = "sourceIPs", pure)]
    pub fn source_ips(e: &mut Event) -> Array {
        strings(&e.event().source_ips)
    }

    /// The event's annotations (`authorization.k8s.io/decision`, …).
    #[rhai_fn(get = "annotations", pure)]
    pub fn annotations(e: &mut Event) -> Map {
        e.event()
            .annotations
            .iter()
            .map(|(k, v)| (k.as_str().into(), dyn_text(v)))
            .collect()
    }

    /// The authenticated user.
    #[rhai_fn(get = "user", pure)]
    pub fn user(e: &mut Event) -> User {
        UserView::new(e.clone(), WhichUser::Authenticated)
    }

    /// The impersonated user; empty when the request impersonates nobody.
    #[rhai_fn(get = "impersonatedUser", pure)]
    pub fn impersonated_user(e: &mut Event) -> User {
        UserView::new(e.clone(), WhichUser::Impersonated)
    }

    /// The object the request is about.
    #[rhai_fn(get = "objectRef", pure)]
    pub fn object_ref(e: &mut Event) -> ObjectRef {
        ObjectRefView::new(e.clone())
    }

    /// The response's status.
    #[rhai_fn(get = "responseStatus", pure)]
    pub fn response_status(e: &mut Event) -> ResponseStatus {
        StatusView::new(e.clone())
    }

    /// The request body as a map, `()` without one.
    #[rhai_fn(get = "requestObject", pure)]
    pub fn request_object(e: &mut Event) -> Dynamic {
        e.request_value()
    }

    /// The response body as a map, `()` without one.
    #[rhai_fn(get = "responseObject", pure)]
    pub fn response_object(e: &mut Event) -> Dynamic {
        e.response_value()
    }

    /// `objectRef.name`, else `metadata.name` of the response body, else of the request
    /// body, else the request's `metadata.generateName`, else `""`.
    #[rhai_fn(pure)]
    pub fn object_name(e: &mut Event) -> ImmutableString {
        super::object_name(e)
    }

    /// The whole event as compact JSON, re-serialised from what klaxon decoded.
    #[rhai_fn(pure)]
    pub fn to_json(e: &mut Event) -> String {
        serde_json::to_string(e.event()).unwrap_or_default()
    }

    /// A short summary for logs: `Event(stage verb object by user auditID=…)`.
    #[rhai_fn(pure)]
    pub fn to_string(e: &mut Event) -> String {
        event_summary(e)
    }

    /// The same summary as `to_string`, for `debug`.
    #[rhai_fn(pure)]
    pub fn to_debug(e: &mut Event) -> String {
        event_summary(e)
    }
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
