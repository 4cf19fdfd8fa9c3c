//! The `event` scripts see: [`ScriptEvent`], one decoded audit event shared by every script
//! that runs on it, with its lazily filled caches, and its top-level accessors (named
//! exactly as in audit.k8s.io/v1 JSON).
//!
//! Owns the per-event caches and the `Event` type's getters, `object_name`, `to_json` and
//! `to_string`; calls `audit` for the event and `records` for the sub-records' handles.

use std::sync::{Arc, OnceLock};

use rhai::{Dynamic, Engine, ImmutableString, Map};
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

/// Registers the `Event` type, its accessors, `object_name`, `to_json` and `to_string`.
pub(super) fn register(engine: &mut Engine) {
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
            UserView::new(e.clone(), WhichUser::Authenticated)
        })
        .register_get("impersonatedUser", |e: &mut ScriptEvent| {
            UserView::new(e.clone(), WhichUser::Impersonated)
        })
        .register_get("objectRef", |e: &mut ScriptEvent| {
            ObjectRefView::new(e.clone())
        })
        .register_get("responseStatus", |e: &mut ScriptEvent| {
            StatusView::new(e.clone())
        })
        .register_get("requestObject", |e: &mut ScriptEvent| e.request_value())
        .register_get("responseObject", |e: &mut ScriptEvent| e.response_value())
        .register_fn("object_name", |e: &mut ScriptEvent| object_name(e))
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
