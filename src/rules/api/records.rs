//! The event's sub-records as scripts see them: `event.user` / `event.impersonatedUser`
//! (`User`), `event.objectRef` (`ObjectRef`) and `event.responseStatus` (`ResponseStatus`).
//! Each is a small handle on the [`ScriptEvent`]; an absent record reads as zero values.
//!
//! Owns the three handle types and their getters; calls `event` and `text`
//! (`is_system_user`).

use rhai::{Dynamic, Engine, ImmutableString, Map};

use super::convert::{strings, text};
use super::event::{Hot, ScriptEvent};
use super::text::is_system_user;
use crate::audit::ObjectReference;

/// Which of the event's two users a `User` handle reads.
#[derive(Clone, Copy)]
pub(super) enum WhichUser {
    Authenticated,
    Impersonated,
}

/// `event.user` / `event.impersonatedUser` as scripts see them.
#[derive(Clone)]
pub struct UserView(ScriptEvent, WhichUser);

impl UserView {
    /// The handle on `which` user of `event`.
    pub(super) fn new(event: ScriptEvent, which: WhichUser) -> Self {
        Self(event, which)
    }
}

/// `event.objectRef` as scripts see it; an absent objectRef reads as empty strings.
#[derive(Clone)]
pub struct ObjectRefView(ScriptEvent);

impl ObjectRefView {
    /// The handle on `event`'s objectRef.
    pub(super) fn new(event: ScriptEvent) -> Self {
        Self(event)
    }
}

/// `event.responseStatus` as scripts see it; absent reads as code 0 and empty strings.
#[derive(Clone)]
pub struct StatusView(ScriptEvent);

impl StatusView {
    /// The handle on `event`'s responseStatus.
    pub(super) fn new(event: ScriptEvent) -> Self {
        Self(event)
    }
}

/// Registers the `User`, `ObjectRef` and `ResponseStatus` types and their getters.
pub(super) fn register(engine: &mut Engine) {
    register_user(engine);
    register_object_ref(engine);
    register_status(engine);
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
