//! Typed audit.k8s.io/v1 `Event` and `EventList`, tolerant of v1beta1 and unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One audit event as the apiserver writes it (audit.k8s.io/v1, also v1beta1).
///
/// Absent fields deserialize to their zero value, so a guard in a script never throws;
/// `requestObject` and `responseObject` stay raw JSON until something reads them.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Event {
    /// `Event` on log lines; absent on EventList items.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `audit.k8s.io/v1` or `audit.k8s.io/v1beta1`; absent on EventList items.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Audit level: None, Metadata, Request or RequestResponse.
    pub level: String,
    /// Unique per request; shared by the request's stages. Not always a UUID.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// RequestReceived, ResponseStarted, ResponseComplete or Panic.
    pub stage: String,
    /// The request URI as the client sent it.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Kubernetes verb (get, list, watch, create, update, patch, delete, …).
    pub verb: String,
    /// The authenticated user.
    pub user: UserInfo,
    /// The user impersonated by `user`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<UserInfo>,
    /// Client and proxy addresses, client first.
    #[serde(rename = "sourceIPs")]
    pub source_ips: Vec<String>,
    /// The client's User-Agent header.
    pub user_agent: String,
    /// The object the request is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    /// The response status (for ResponseComplete and ResponseStarted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<Status>,
    /// The request body at level Request or RequestResponse, kept as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<Box<RawValue>>,
    /// The response body at level RequestResponse, kept as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_object: Option<Box<RawValue>>,
    /// When the apiserver received the request (RFC 3339, microseconds).
    pub request_received_timestamp: String,
    /// When the event's stage was reached (RFC 3339, microseconds).
    pub stage_timestamp: String,
    /// Annotations set by admission and authorization (e.g. `authorization.k8s.io/decision`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// v1beta1 only: the event's own timestamp.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// The cluster the event came from when its envelope says so (GKE's
    /// `resource.labels.cluster_name`); empty otherwise. Not part of the audit.k8s.io
    /// format: never read from or written to the event's JSON.
    #[serde(skip)]
    pub cluster: String,
}

impl Event {
    /// The event's time: `stageTimestamp`, else `requestReceivedTimestamp`, else v1beta1 `timestamp`.
    pub fn time(&self) -> &str {
        [
            &self.stage_timestamp,
            &self.request_received_timestamp,
            &self.timestamp,
        ]
        .into_iter()
        .find(|t| !t.is_empty())
        .map_or("", |t| t.as_str())
    }

    /// A short human description of the object: `pods/exec payments/web-1`.
    pub fn object_display(&self) -> String {
        let name = self.object_ref.as_ref().map_or("", |r| r.name.as_str());
        self.object_display_named(name)
    }

    /// Like [`Event::object_display`], with the object's name given (on create it is
    /// known only from the response body).
    pub fn object_display_named(&self, name: &str) -> String {
        let Some(r) = &self.object_ref else {
            return self.request_uri.clone();
        };
        let mut out = r.resource.clone();
        if !r.subresource.is_empty() {
            out.push('/');
            out.push_str(&r.subresource);
        }
        let target = match (r.namespace.is_empty(), name.is_empty()) {
            (true, true) => String::new(),
            (true, false) => name.to_owned(),
            (false, true) => r.namespace.clone(),
            (false, false) => format!("{}/{name}", r.namespace),
        };
        if !target.is_empty() {
            out.push(' ');
            out.push_str(&target);
        }
        out
    }
}

/// `authentication.k8s.io/v1` UserInfo.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct UserInfo {
    /// The user's name, e.g. `alice` or `system:serviceaccount:kube-system:default`.
    pub username: String,
    /// The user's UID, if the authenticator gives one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// Extra authenticator attributes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The object a request refers to.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectReference {
    /// Resource, plural (`pods`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Object name; empty on create (the name is in the response) and on list.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Object UID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// API group; empty for the core group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// API version (`v1`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Resource version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Subresource (`exec`, `attach`, `status`, …); empty for the object itself.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// A `meta/v1` Status as found in `responseStatus`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Status {
    /// HTTP status code of the response.
    #[serde(skip_serializing_if = "is_zero")]
    pub code: i64,
    /// `Success` or `Failure`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Machine-readable reason (`Forbidden`, `NotFound`, …).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable message.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The body the apiserver's webhook backend POSTs: `{"kind":"EventList","items":[…]}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventList {
    /// `EventList`.
    pub kind: String,
    /// Present on EventLists; `None` means the document was something else.
    pub items: Option<Vec<Event>>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
