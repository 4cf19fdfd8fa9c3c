//! What scripts see: the typed `event` accessors (named exactly as in audit.k8s.io/v1 JSON),
//! lazily decoded request/response objects, and the helper functions rule authors reach for.

use std::sync::{Arc, OnceLock};

use rhai::{Array, Dynamic, Engine, ImmutableString, Map};
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
}

impl ScriptEvent {
    /// Wraps an event for evaluation.
    pub fn new(event: Arc<Event>) -> Self {
        Self(Arc::new(EventCell {
            event,
            request: OnceLock::new(),
            response: OnceLock::new(),
        }))
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
        .register_get("stage", |e: &mut ScriptEvent| text(&e.event().stage))
        .register_get("requestURI", |e: &mut ScriptEvent| {
            text(&e.event().request_uri)
        })
        .register_get("verb", |e: &mut ScriptEvent| text(&e.event().verb))
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
        .register_get("requestObject", |e: &mut ScriptEvent| {
            e.request_object().map_or(Dynamic::UNIT, json_to_dynamic)
        })
        .register_get("responseObject", |e: &mut ScriptEvent| {
            e.response_object().map_or(Dynamic::UNIT, json_to_dynamic)
        })
        .register_fn("object_name", |e: &mut ScriptEvent| object_name(e))
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
        .register_get("username", |u: &mut UserView| {
            text(&u.0.user_info(u.1).username)
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
    engine
        .register_type_with_name::<ObjectRefView>("ObjectRef")
        .register_get("resource", get(|r| &r.resource))
        .register_get("namespace", get(|r| &r.namespace))
        .register_get("name", get(|r| &r.name))
        .register_get("uid", get(|r| &r.uid))
        .register_get("apiGroup", get(|r| &r.api_group))
        .register_get("apiVersion", get(|r| &r.api_version))
        .register_get("resourceVersion", get(|r| &r.resource_version))
        .register_get("subresource", get(|r| &r.subresource))
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

/// All containers of the pod spec: regular, init and ephemeral.
fn containers(e: &ScriptEvent) -> impl Iterator<Item = &Value> {
    let spec = pod_spec(e);
    ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .filter_map(move |k| spec.and_then(|s| s.get(k)).and_then(Value::as_array))
        .flatten()
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
        .register_fn("images", |e: &mut ScriptEvent| {
            containers(e)
                .filter_map(|c| c.get("image").and_then(Value::as_str))
                .map(dyn_text)
                .collect::<Array>()
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
        .register_fn("subjects", |e: &mut ScriptEvent| object_list(e, "subjects"))
        .register_fn("role_ref", |e: &mut ScriptEvent| {
            e.subject_object()
                .and_then(|o| o.get("roleRef"))
                .map_or_else(|| Dynamic::from_map(Map::new()), json_to_dynamic)
        });
}

/// True for Kubernetes' own identities (`system:…`), except `system:anonymous`.
pub fn is_system_user(username: &str) -> bool {
    username.starts_with("system:") && username != "system:anonymous"
}

/// Glob match where `*` matches any run of characters and `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
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
    fn system_users_exclude_anonymous() {
        assert!(is_system_user("system:serviceaccount:kube-system:default"));
        assert!(is_system_user("system:node:worker-1"));
        assert!(!is_system_user("system:anonymous"));
        assert!(!is_system_user("alice"));
    }
}
