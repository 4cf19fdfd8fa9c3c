//! The event's sub-records as scripts see them: `event.user` / `event.impersonatedUser`
//! (`User`), `event.objectRef` (`ObjectRef`) and `event.responseStatus` (`ResponseStatus`).
//! Each is a small handle on the [`ScriptEvent`]; an absent record reads as zero values.
//!
//! Owns the three handle types and their getters; calls `event` and `text`
//! (`is_system_user`).

use rhai::plugin::*;
use rhai::{Array, Dynamic, ImmutableString, Map};

use super::convert::{strings, text};
use super::event::{Hot, ScriptEvent};
use super::text::is_system_user;

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

/// The `User`, `ObjectRef` and `ResponseStatus` types and their functions, with the doc
/// comments the engine's metadata carries.
#[export_module]
pub(super) mod functions {
    use super::*;

    /// `event.user` / `event.impersonatedUser`: empty strings, `[]` and `#{}` when absent.
    pub type User = UserView;

    /// `event.objectRef`: empty strings when absent.
    pub type ObjectRef = ObjectRefView;

    /// `event.responseStatus`: code 0 and empty strings when absent.
    pub type ResponseStatus = StatusView;

    /// The user's name, e.g. `alice`, `system:serviceaccount:ns:sa`.
    #[rhai_fn(get = "username", pure)]
    pub fn username(u: &mut User) -> ImmutableString {
        match u.1 {
            WhichUser::Authenticated => u.0.hot(Hot::Username, |e| &e.event().user.username),
            WhichUser::Impersonated => text(&u.0.user_info(u.1).username),
        }
    }

    /// The user's UID.
    #[rhai_fn(get = "uid", pure)]
    pub fn user_uid(u: &mut User) -> ImmutableString {
        text(&u.0.user_info(u.1).uid)
    }

    /// The user's groups.
    #[rhai_fn(get = "groups", pure)]
    pub fn groups(u: &mut User) -> Array {
        strings(&u.0.user_info(u.1).groups)
    }

    /// Extra authenticator information: name → array of strings.
    #[rhai_fn(get = "extra", pure)]
    pub fn extra(u: &mut User) -> Map {
        u.0.user_info(u.1)
            .extra
            .iter()
            .map(|(k, v)| (k.as_str().into(), Dynamic::from_array(strings(v))))
            .collect()
    }

    /// `is_system_user(username)`: one of Kubernetes' own identities.
    #[rhai_fn(pure)]
    pub fn is_system(u: &mut User) -> bool {
        is_system_user(&u.0.user_info(u.1).username)
    }

    /// The username.
    #[rhai_fn(name = "to_string", pure)]
    pub fn user_to_string(u: &mut User) -> String {
        u.0.user_info(u.1).username.clone()
    }

    /// Plural resource, e.g. `pods`.
    #[rhai_fn(get = "resource", pure)]
    pub fn resource(o: &mut ObjectRef) -> ImmutableString {
        o.0.hot(Hot::Resource, |e| &e.object_ref().resource)
    }

    /// The namespace; empty for cluster-scoped objects.
    #[rhai_fn(get = "namespace", pure)]
    pub fn namespace(o: &mut ObjectRef) -> ImmutableString {
        o.0.hot(Hot::Namespace, |e| &e.object_ref().namespace)
    }

    /// The object's name; empty on `create` and `list`.
    #[rhai_fn(get = "name", pure)]
    pub fn name(o: &mut ObjectRef) -> ImmutableString {
        o.0.hot(Hot::Name, |e| &e.object_ref().name)
    }

    /// The object's UID.
    #[rhai_fn(get = "uid", pure)]
    pub fn object_uid(o: &mut ObjectRef) -> ImmutableString {
        text(&o.0.object_ref().uid)
    }

    /// The API group; empty for the core group.
    #[rhai_fn(get = "apiGroup", pure)]
    pub fn api_group(o: &mut ObjectRef) -> ImmutableString {
        text(&o.0.object_ref().api_group)
    }

    /// The API version, e.g. `v1`.
    #[rhai_fn(get = "apiVersion", pure)]
    pub fn api_version(o: &mut ObjectRef) -> ImmutableString {
        text(&o.0.object_ref().api_version)
    }

    /// The object's resourceVersion.
    #[rhai_fn(get = "resourceVersion", pure)]
    pub fn resource_version(o: &mut ObjectRef) -> ImmutableString {
        text(&o.0.object_ref().resource_version)
    }

    /// The subresource, e.g. `exec`, `attach`, `status`.
    #[rhai_fn(get = "subresource", pure)]
    pub fn subresource(o: &mut ObjectRef) -> ImmutableString {
        o.0.hot(Hot::Subresource, |e| &e.object_ref().subresource)
    }

    /// `resource namespace/name`.
    #[rhai_fn(name = "to_string", pure)]
    pub fn object_ref_to_string(o: &mut ObjectRef) -> String {
        o.0.event().object_display()
    }

    /// The HTTP status code; `0` before the response.
    #[rhai_fn(get = "code", pure)]
    pub fn code(s: &mut ResponseStatus) -> i64 {
        s.0.status().code
    }

    /// `Success` or `Failure`.
    #[rhai_fn(get = "status", pure)]
    pub fn status(s: &mut ResponseStatus) -> ImmutableString {
        text(&s.0.status().status)
    }

    /// The reason, e.g. `Forbidden`.
    #[rhai_fn(get = "reason", pure)]
    pub fn reason(s: &mut ResponseStatus) -> ImmutableString {
        text(&s.0.status().reason)
    }

    /// The error message.
    #[rhai_fn(get = "message", pure)]
    pub fn message(s: &mut ResponseStatus) -> ImmutableString {
        text(&s.0.status().message)
    }
}
