//! GKE's Kubernetes audit log entries, mapped to the audit event.
//!
//! A GKE cluster's apiserver audit events reach users only through Cloud Logging: one
//! `LogEntry` per event, whose `protoPayload` is a `google.cloud.audit.AuditLog` of service
//! `k8s.io`. [`event_from_log_entry`] rebuilds the audit.k8s.io/v1 event from one such entry,
//! as far as the entry tells it (docs/SOURCES.md, GKE section, lists what it cannot tell);
//! an entry of another service is skipped. Errors name the field and the problem.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::event::{Event, ObjectReference, Status, UserInfo};

/// The `@type` of an AuditLog payload.
const AUDIT_LOG_TYPE: &str = "type.googleapis.com/google.cloud.audit.AuditLog";
/// The `serviceName` of GKE's Kubernetes audit entries.
const K8S_SERVICE: &str = "k8s.io";
/// The form a Kubernetes `methodName` takes, for error messages.
const METHOD_FORM: &str = "io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>";
/// API groups named without a domain: GKE writes them `io.k8s.<group>`.
const UNSUFFIXED_GROUPS: [&str; 5] = ["apps", "autoscaling", "batch", "extensions", "policy"];
/// The longest excerpt of a bad value quoted in an error.
const QUOTE_CHARS: usize = 120;

/// A Kubernetes `meta/v1` Status, as `protoPayload.response` carries it for a failed request.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusBody {
    kind: Option<String>,
    code: Option<i64>,
    status: Option<String>,
    reason: Option<String>,
    message: Option<String>,
}

/// What `protoPayload.methodName` says: `io.k8s.core.v1.pods.exec.create`.
#[derive(Debug, PartialEq)]
struct Method<'a> {
    /// The group as GKE spells it, reversed: `io.k8s.core`, `io.k8s.authorization.rbac`.
    group: &'a str,
    version: &'a str,
    resource: &'a str,
    subresource: &'a str,
    verb: &'a str,
}

/// What `protoPayload.resourceName` says: `core/v1/namespaces/default/pods/nginx/exec`.
#[derive(Debug, Default, PartialEq)]
struct Target {
    group: String,
    namespace: String,
    name: String,
}

/// Maps one Cloud Logging LogEntry (its JSON text) to an audit event: `Ok(None)` for an
/// entry of another service (not `k8s.io`), which is skipped.
///
/// The `Err` names the field and the problem, e.g. ``protoPayload.methodName: `x.y` is not
/// io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>``. Never panics.
pub(crate) fn event_from_log_entry(json: &str) -> Result<Option<Event>, String> {
    let raw: &RawValue =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {}", without_position(&e)))?;
    let entry = Members::of(raw, "")?;
    let payload = entry
        .object("protoPayload")?
        .ok_or("protoPayload: absent; a Kubernetes audit entry carries an AuditLog there")?;
    if let Some(type_url) = payload.string("@type")?
        && type_url != AUDIT_LOG_TYPE
    {
        return Err(format!(
            "protoPayload.@type: `{}` is not {AUDIT_LOG_TYPE}",
            quoted(&type_url)
        ));
    }
    let service = payload
        .string("serviceName")?
        .ok_or("protoPayload.serviceName: absent")?;
    if service != K8S_SERVICE {
        return Ok(None);
    }
    map_k8s_entry(&entry, &payload).map(Some)
}

/// Builds the event of a `k8s.io` entry.
fn map_k8s_entry(entry: &Members, payload: &Members) -> Result<Event, String> {
    let method_name = payload
        .string("methodName")?
        .ok_or("protoPayload.methodName: absent")?;
    let method = parse_method(&method_name)?;
    let resource_name = payload.string("resourceName")?.unwrap_or_default();
    let target = parse_resource_name(&resource_name, &method)?;
    let object_ref = ObjectReference {
        resource: method.resource.to_owned(),
        namespace: target.namespace,
        name: target.name,
        api_group: target.group,
        api_version: method.version.to_owned(),
        subresource: method.subresource.to_owned(),
        ..ObjectReference::default()
    };
    let request_object = body(payload, "request")?;
    let response_object = body(payload, "response")?;
    let (audit_id, stage) = operation(entry)?;
    let time = timestamp(entry)?;
    let (source_ips, user_agent) = request_metadata(payload)?;
    Ok(Event {
        kind: "Event".to_owned(),
        api_version: "audit.k8s.io/v1".to_owned(),
        level: level(request_object.is_some(), response_object.is_some()).to_owned(),
        audit_id,
        stage: stage.to_owned(),
        request_uri: request_uri(&object_ref),
        verb: method.verb.to_owned(),
        user: user(payload)?,
        source_ips,
        user_agent,
        response_status: Some(response_status(payload, method.verb)?),
        object_ref: Some(object_ref),
        request_object,
        response_object,
        request_received_timestamp: time.clone(),
        stage_timestamp: time,
        annotations: labels(entry)?,
        cluster: cluster(entry)?,
        ..Event::default()
    })
}

/// Splits `io.k8s.core.v1.pods.exec.create` into group, version, resource, subresource
/// and verb: the version is the segment three (or, with a subresource, four) from the end.
fn parse_method(name: &str) -> Result<Method<'_>, String> {
    let bad = || {
        format!(
            "protoPayload.methodName: `{}` is not {METHOD_FORM}",
            quoted(name)
        )
    };
    let segments: Vec<&str> = name.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(bad());
    }
    let n = segments.len();
    let version_at = [3, 4]
        .into_iter()
        .filter(|back| n > back + 1)
        .map(|back| n - back)
        .find(|&i| is_version(segments[i]))
        .ok_or_else(bad)?;
    let group_len = segments[..version_at]
        .iter()
        .map(|s| s.len() + 1)
        .sum::<usize>()
        - 1;
    let verb = segments[n - 1];
    if !verb.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(bad());
    }
    Ok(Method {
        group: &name[..group_len],
        version: segments[version_at],
        resource: segments[version_at + 1],
        subresource: if version_at + 3 < n {
            segments[version_at + 2]
        } else {
            ""
        },
        verb,
    })
}

/// `v1`, `v1beta1`, `v2alpha3`: a Kubernetes API version.
fn is_version(segment: &str) -> bool {
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let major_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (major, tail) = rest.split_at(major_len);
    let level = tail
        .strip_prefix("alpha")
        .or_else(|| tail.strip_prefix("beta"));
    !major.is_empty()
        && match level {
            None => tail.is_empty(),
            Some(n) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        }
}

/// The API group of `methodName`'s reversed spelling: `io.k8s.core` → `""`,
/// `io.k8s.apps` → `apps`, `io.k8s.authorization.rbac` → `rbac.authorization.k8s.io`,
/// `io.cert-manager` → `cert-manager.io`. Used when `resourceName` is empty.
fn group_of_method(reversed: &str) -> String {
    if reversed == "io.k8s.core" {
        return String::new();
    }
    if let Some(name) = reversed.strip_prefix("io.k8s.")
        && UNSUFFIXED_GROUPS.contains(&name)
    {
        return name.to_owned();
    }
    reversed.rsplit('.').collect::<Vec<_>>().join(".")
}

/// Reads namespace, name and group from `resourceName`
/// (`<group>/<version>[/namespaces/<ns>]/<resource>[/<name>[/<subresource>]]`, `core` for
/// the core group), checking it against the method's version, resource and subresource.
/// An empty `resourceName` (a create that names no object) leaves namespace and name empty.
fn parse_resource_name(name: &str, method: &Method) -> Result<Target, String> {
    if name.is_empty() {
        return Ok(Target {
            group: group_of_method(method.group),
            ..Target::default()
        });
    }
    let bad = |why: &str| format!("protoPayload.resourceName: `{}` {why}", quoted(name));
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad(
            "is not <group>/<version>/[namespaces/<namespace>/]<resource>[/<name>[/<subresource>]]",
        ));
    }
    if parts[1] != method.version {
        return Err(bad(&format!(
            "has version `{}`, methodName has `{}`",
            quoted(parts[1]),
            method.version
        )));
    }
    let rest = &parts[2..];
    let (namespace, tail) =
        if rest.len() >= 3 && rest[0] == "namespaces" && rest[2] == method.resource {
            (rest[1], &rest[2..])
        } else {
            ("", rest)
        };
    if tail[0] != method.resource {
        return Err(bad(&format!(
            "does not name methodName's resource `{}`",
            method.resource
        )));
    }
    let object = match tail {
        [_] => "",
        [_, object] => object,
        [_, object, sub] if *sub == method.subresource => object,
        _ => {
            return Err(bad(&format!(
                "does not end in methodName's resource `{}`, a name and subresource `{}`",
                method.resource, method.subresource
            )));
        }
    };
    // The apiserver records a Namespace object's own name as its namespace too.
    let namespace = if method.resource == "namespaces" && namespace.is_empty() {
        object
    } else {
        namespace
    };
    let group = if parts[0] == "core" { "" } else { parts[0] };
    Ok(Target {
        group: group.to_owned(),
        namespace: namespace.to_owned(),
        name: object.to_owned(),
    })
}

/// The request URI the apiserver would have seen for `r`, rebuilt (GKE does not keep it):
/// `/api/v1/namespaces/default/pods/nginx/exec`, `/apis/apps/v1/namespaces/x/deployments`.
/// Query parameters (exec's `command`, a list's selectors) are not known.
fn request_uri(r: &ObjectReference) -> String {
    let mut uri = if r.api_group.is_empty() {
        format!("/api/{}", r.api_version)
    } else {
        format!("/apis/{}/{}", r.api_group, r.api_version)
    };
    if !r.namespace.is_empty() && r.resource != "namespaces" {
        uri.push_str("/namespaces/");
        uri.push_str(&r.namespace);
    }
    for part in [&r.resource, &r.name, &r.subresource] {
        if !part.is_empty() {
            uri.push('/');
            uri.push_str(part);
        }
    }
    uri
}

/// `operation.id` (else `insertId`) as the auditID, and the stage `operation.first` and
/// `operation.last` imply: first without last is the start of a long-running request
/// (`ResponseStarted`); last, both or neither is `ResponseComplete`.
fn operation(entry: &Members) -> Result<(String, &'static str), String> {
    let insert_id = entry.string("insertId")?.unwrap_or_default();
    let Some(op) = entry.object("operation")? else {
        return Ok((insert_id, "ResponseComplete"));
    };
    let id = op.string("id")?.filter(|id| !id.is_empty());
    let stage = if op.boolean("first")? && !op.boolean("last")? {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    Ok((id.unwrap_or(insert_id), stage))
}

/// The entry's `timestamp` (when the apiserver logged the event), else `receiveTimestamp`.
fn timestamp(entry: &Members) -> Result<String, String> {
    match entry.string("timestamp")?.filter(|t| !t.is_empty()) {
        Some(time) => Ok(time),
        None => Ok(entry.string("receiveTimestamp")?.unwrap_or_default()),
    }
}

/// The authenticated principal.
fn user(payload: &Members) -> Result<UserInfo, String> {
    let Some(info) = payload.object("authenticationInfo")? else {
        return Ok(UserInfo::default());
    };
    Ok(UserInfo {
        username: info.string("principalEmail")?.unwrap_or_default(),
        ..UserInfo::default()
    })
}

/// The caller's address (as sourceIPs) and User-Agent.
fn request_metadata(payload: &Members) -> Result<(Vec<String>, String), String> {
    let Some(meta) = payload.object("requestMetadata")? else {
        return Ok((Vec::new(), String::new()));
    };
    let ip = meta.string("callerIp")?.filter(|ip| !ip.is_empty());
    let agent = meta.string("callerSuppliedUserAgent")?;
    Ok((ip.into_iter().collect(), agent.unwrap_or_default()))
}

/// The response status: code, status, reason and message of a Kubernetes Status in the
/// response body when there is one (what the apiserver's audit event carries), else the
/// HTTP code of the gRPC `status.code` (an absent code is 0, OK: 200, 201 for a create).
fn response_status(payload: &Members, verb: &str) -> Result<Status, String> {
    let (rpc_code, rpc_message) = match payload.object("status")? {
        None => (0, String::new()),
        Some(s) => (s.integer("code")?, s.string("message")?.unwrap_or_default()),
    };
    let body = status_body(payload.field("response"));
    let code = body
        .code
        .filter(|c| *c > 0)
        .unwrap_or_else(|| http_code(rpc_code, verb));
    let failed = rpc_code != 0 || code >= 400;
    let status = body
        .status
        .unwrap_or_else(|| if failed { "Failure" } else { "" }.to_owned());
    let message = Some(rpc_message)
        .filter(|m| !m.is_empty())
        .or(body.message)
        .unwrap_or_default();
    Ok(Status {
        code,
        status,
        reason: body.reason.unwrap_or_default(),
        message,
    })
}

/// The response body as a Kubernetes Status, or nothing when it is something else.
fn status_body(response: Option<&RawValue>) -> StatusBody {
    response
        .and_then(|raw| serde_json::from_str::<StatusBody>(raw.get()).ok())
        .filter(|b| b.kind.as_deref() == Some("Status"))
        .unwrap_or_default()
}

/// The HTTP code of a `google.rpc.Code` (its documented "HTTP Mapping"); OK is 201 for a
/// create, as the apiserver answers one; an unknown code is 500, like UNKNOWN.
fn http_code(rpc_code: i64, verb: &str) -> i64 {
    match rpc_code {
        0 if verb == "create" => 201,
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// Audit level from what the entry carries.
fn level(has_request: bool, has_response: bool) -> &'static str {
    match (has_request, has_response) {
        (_, true) => "RequestResponse",
        (true, false) => "Request",
        (false, false) => "Metadata",
    }
}

/// The payload's `request` or `response` as raw JSON, without the `@type` the AuditLog
/// format adds (the proto name; not part of the Kubernetes object).
fn body(payload: &Members, key: &str) -> Result<Option<Box<RawValue>>, String> {
    let Some(mut members) = payload.object(key)? else {
        return Ok(None);
    };
    let path = members.path.clone();
    match members.map.remove("@type") {
        None => Ok(payload.field(key).map(ToOwned::to_owned)),
        Some(_) => {
            let text = serde_json::to_string(&members.map).map_err(|e| format!("{path}: {e}"))?;
            RawValue::from_string(text)
                .map(Some)
                .map_err(|e| format!("{path}: {e}"))
        }
    }
}

/// The LogEntry's `labels` (e.g. `authorization.k8s.io/decision`), as annotations.
fn labels(entry: &Members) -> Result<BTreeMap<String, String>, String> {
    let Some(labels) = entry.object("labels")? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for key in labels.map.keys() {
        if let Some(value) = labels.string(key)? {
            out.insert(key.clone(), value);
        }
    }
    Ok(out)
}

/// `resource.labels.cluster_name`, empty when absent.
fn cluster(entry: &Members) -> Result<String, String> {
    let Some(resource) = entry.object("resource")? else {
        return Ok(String::new());
    };
    let Some(labels) = resource.object("labels")? else {
        return Ok(String::new());
    };
    Ok(labels.string("cluster_name")?.unwrap_or_default())
}

/// The members of one JSON object, each left raw until it is read, so that an error names
/// its field by its path (`protoPayload.status.code`). `null` reads as absent.
struct Members<'a> {
    /// Where the object is: empty for the entry itself, else `protoPayload`, `operation`, ….
    path: String,
    map: BTreeMap<String, &'a RawValue>,
}

impl<'a> Members<'a> {
    /// The members of `raw`, which must be a JSON object.
    fn of(raw: &'a RawValue, path: &str) -> Result<Self, String> {
        let text = raw.get().trim_start();
        let shown = if path.is_empty() { "LogEntry" } else { path };
        if !text.starts_with('{') {
            return Err(format!(
                "{shown}: expected a JSON object, found {}",
                json_kind(text)
            ));
        }
        let map =
            serde_json::from_str(text).map_err(|e| format!("{shown}: {}", without_position(&e)))?;
        Ok(Self {
            path: path.to_owned(),
            map,
        })
    }

    /// The path of member `key`, for errors.
    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Member `key` as raw JSON; absent or `null` is `None`.
    fn field(&self, key: &str) -> Option<&'a RawValue> {
        self.map
            .get(key)
            .copied()
            .filter(|raw| raw.get().trim() != "null")
    }

    /// Member `key`, which must be an object when present.
    fn object(&self, key: &str) -> Result<Option<Members<'a>>, String> {
        self.field(key)
            .map(|raw| Members::of(raw, &self.path_of(key)))
            .transpose()
    }

    /// Member `key`, which must be a string when present.
    fn string(&self, key: &str) -> Result<Option<String>, String> {
        self.read(key, "a string")
    }

    /// Member `key`, which must be true or false when present; absent is false.
    fn boolean(&self, key: &str) -> Result<bool, String> {
        Ok(self.read(key, "true or false")?.unwrap_or(false))
    }

    /// Member `key`, which must be an integer when present; absent is 0 (proto3 JSON
    /// leaves a zero out).
    fn integer(&self, key: &str) -> Result<i64, String> {
        Ok(self.read(key, "an integer")?.unwrap_or(0))
    }

    /// Member `key` as a `T`, or an error saying at its path that `expected` was wanted.
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, String> {
        self.field(key)
            .map(|raw| {
                serde_json::from_str(raw.get()).map_err(|_| {
                    format!(
                        "{}: expected {expected}, found {}",
                        self.path_of(key),
                        json_kind(raw.get())
                    )
                })
            })
            .transpose()
    }
}

/// What kind of JSON value `text` starts with, for error messages.
fn json_kind(text: &str) -> &'static str {
    match text.trim_start().bytes().next() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "nothing",
    }
}

/// A serde_json error without its " at line L column C" (positions inside a field mean
/// little to the reader; the lead names the entry's own position).
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

/// `value` shortened to [`QUOTE_CHARS`] characters with control characters escaped, to be
/// quoted in an error.
fn quoted(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(QUOTE_CHARS)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if value.chars().nth(QUOTE_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// One test per mapping rule, on the fixtures of tests/fixtures/gke (authored from Google's
/// documentation, see its README.md) and on entries built here.
///
/// Formats followed:
/// - LogEntry and LogEntryOperation:
///   <https://cloud.google.com/logging/docs/reference/v2/rest/v2/LogEntry>
/// - AuditLog (`request`/`response` carry the proto name in `@type`):
///   <https://cloud.google.com/logging/docs/reference/audit/auditlog/rest/Shared.Types/AuditLog>
/// - GKE audit logs (service `k8s.io`, `io.k8s.…` methods, resource `k8s_cluster`):
///   <https://cloud.google.com/kubernetes-engine/docs/how-to/audit-logging>,
///   <https://cloud.google.com/kubernetes-engine/docs/concepts/audit-policy>
/// - google.rpc.Code and its HTTP mapping:
///   <https://cloud.google.com/video-intelligence/docs/reference/rest/Shared.Types/Code>
#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const POD_CREATE: &str = include_str!("../../tests/fixtures/gke/pod_create.json");
    const EXEC_FIRST: &str = include_str!("../../tests/fixtures/gke/exec_first.json");
    const EXEC_LAST: &str = include_str!("../../tests/fixtures/gke/exec_last.json");
    const CRB_UPDATE: &str =
        include_str!("../../tests/fixtures/gke/clusterrolebinding_update.json");
    const SECRET_DENIED: &str = include_str!("../../tests/fixtures/gke/secret_get_denied.json");
    const OTHER_SERVICE: &str = include_str!("../../tests/fixtures/gke/other_service.json");

    /// The event of an entry that must map.
    fn map(json: &str) -> Event {
        event_from_log_entry(json)
            .expect("the entry maps")
            .expect("the entry is a k8s.io entry")
    }

    /// The error of an entry that must not map.
    fn error(json: &str) -> String {
        event_from_log_entry(json).expect_err("the entry is refused")
    }

    /// A minimal k8s.io entry with this method and resource name.
    fn entry(method: &str, resource_name: &str) -> Value {
        json!({
            "insertId": "insert-1",
            "timestamp": "2026-11-30T09:00:00.000001Z",
            "protoPayload": {
                "@type": AUDIT_LOG_TYPE,
                "serviceName": "k8s.io",
                "methodName": method,
                "resourceName": resource_name,
            },
        })
    }

    /// `value` with the member at `path` (`/`-separated object keys) set to `member`.
    fn with(mut value: Value, path: &str, member: Value) -> String {
        let mut at = &mut value;
        let keys: Vec<&str> = path.split('/').collect();
        for key in &keys[..keys.len() - 1] {
            at = at
                .as_object_mut()
                .expect("an object on the way")
                .entry(*key)
                .or_insert_with(|| json!({}));
        }
        at.as_object_mut()
            .expect("an object at the end")
            .insert(keys[keys.len() - 1].to_owned(), member);
        value.to_string()
    }

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    fn object_ref(event: &Event) -> &ObjectReference {
        event.object_ref.as_ref().expect("objectRef is set")
    }

    #[test]
    fn method_name_gives_verb_group_version_and_resource() {
        let event = map(POD_CREATE);
        let r = object_ref(&event);
        assert_eq!(event.verb, "create");
        assert_eq!(
            (
                r.api_group.as_str(),
                r.api_version.as_str(),
                r.resource.as_str()
            ),
            ("", "v1", "pods")
        );
        assert_eq!(r.subresource, "");
        assert_eq!(
            parse_method("io.k8s.apps.v1.deployments.patch"),
            Ok(Method {
                group: "io.k8s.apps",
                version: "v1",
                resource: "deployments",
                subresource: "",
                verb: "patch",
            })
        );
        assert_eq!(
            parse_method("io.k8s.networking.v1beta1.ingresses.list").map(|m| m.version),
            Ok("v1beta1")
        );
    }

    #[test]
    fn rbac_methods_map_to_the_rbac_group() {
        let event = map(CRB_UPDATE);
        let r = object_ref(&event);
        assert_eq!(event.verb, "update");
        assert_eq!(r.api_group, "rbac.authorization.k8s.io");
        assert_eq!(r.resource, "clusterrolebindings");
        assert_eq!(
            event.request_uri,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/ops-admins"
        );
    }

    /// The reversed spelling of `methodName` gives the group when `resourceName` is empty.
    /// The rbac and core spellings are documented; other groups (a CRD's `cert-manager.io`
    /// included) follow the same reversal, which `resourceName` overrides when present.
    #[test]
    fn method_group_is_the_reversed_api_group() {
        for (reversed, group) in [
            ("io.k8s.core", ""),
            ("io.k8s.apps", "apps"),
            ("io.k8s.batch", "batch"),
            ("io.k8s.authorization.rbac", "rbac.authorization.k8s.io"),
            ("io.k8s.authorization", "authorization.k8s.io"),
            ("io.k8s.networking", "networking.k8s.io"),
            ("io.cert-manager", "cert-manager.io"),
        ] {
            assert_eq!(group_of_method(reversed), group, "{reversed}");
        }
        let event =
            map(&entry("io.k8s.authorization.v1.subjectaccessreviews.create", "").to_string());
        let r = object_ref(&event);
        assert_eq!(
            (r.api_group.as_str(), r.namespace.as_str(), r.name.as_str()),
            ("authorization.k8s.io", "", "")
        );
        assert_eq!(
            event.request_uri,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        );
        let crd = map(&entry(
            "io.cert-manager.v1.certificates.create",
            "cert-manager.io/v1/namespaces/web/certificates/shop-tls",
        )
        .to_string());
        assert_eq!(object_ref(&crd).api_group, "cert-manager.io");
        assert_eq!(
            crd.request_uri,
            "/apis/cert-manager.io/v1/namespaces/web/certificates/shop-tls"
        );
    }

    #[test]
    fn subresources_come_from_method_and_resource_name() {
        let exec = map(EXEC_LAST);
        assert_eq!(
            format!("{} {}", exec.verb, exec.object_display()),
            "create pods/exec payments/api-7d9f6c5b8-x2kqp"
        );
        for sub in ["attach", "portforward", "log"] {
            let method = format!("io.k8s.core.v1.pods.{sub}.create");
            let event =
                map(&entry(&method, &format!("core/v1/namespaces/ns/pods/p/{sub}")).to_string());
            assert_eq!(object_ref(&event).subresource, sub);
            assert_eq!(
                event.request_uri,
                format!("/api/v1/namespaces/ns/pods/p/{sub}")
            );
        }
        // A resourceName that stops at the object still takes the method's subresource.
        let event = map(&entry(
            "io.k8s.core.v1.pods.exec.create",
            "core/v1/namespaces/ns/pods/p",
        )
        .to_string());
        assert_eq!(object_ref(&event).subresource, "exec");
    }

    #[test]
    fn resource_name_gives_namespace_and_name() {
        let cases = [
            (
                "io.k8s.core.v1.pods.create",
                "core/v1/namespaces/default/pods/nginx",
                "default",
                "nginx",
                "/api/v1/namespaces/default/pods/nginx",
            ),
            (
                "io.k8s.core.v1.pods.list",
                "core/v1/namespaces/default/pods",
                "default",
                "",
                "/api/v1/namespaces/default/pods",
            ),
            (
                "io.k8s.core.v1.pods.list",
                "core/v1/pods",
                "",
                "",
                "/api/v1/pods",
            ),
            (
                "io.k8s.apps.v1.deployments.list",
                "apps/v1/namespaces/x/deployments",
                "x",
                "",
                "/apis/apps/v1/namespaces/x/deployments",
            ),
            (
                "io.k8s.core.v1.nodes.get",
                "core/v1/nodes/gke-pool-1-abcd",
                "",
                "gke-pool-1-abcd",
                "/api/v1/nodes/gke-pool-1-abcd",
            ),
            (
                "io.k8s.core.v1.namespaces.delete",
                "core/v1/namespaces/team-a",
                "team-a",
                "team-a",
                "/api/v1/namespaces/team-a",
            ),
            (
                "io.k8s.core.v1.namespaces.status.update",
                "core/v1/namespaces/team-a/status",
                "team-a",
                "team-a",
                "/api/v1/namespaces/team-a/status",
            ),
            (
                "io.k8s.core.v1.namespaces.list",
                "core/v1/namespaces",
                "",
                "",
                "/api/v1/namespaces",
            ),
            (
                "io.k8s.core.v1.pods.get",
                "core/v1/namespaces/pods/pods/pods",
                "pods",
                "pods",
                "/api/v1/namespaces/pods/pods/pods",
            ),
        ];
        for (method, name, namespace, object, uri) in cases {
            let event = map(&entry(method, name).to_string());
            let r = object_ref(&event);
            assert_eq!(
                (r.namespace.as_str(), r.name.as_str()),
                (namespace, object),
                "{name}"
            );
            assert_eq!(event.request_uri, uri, "{name}");
        }
    }

    #[test]
    fn user_address_and_agent_come_from_the_audit_log() {
        let event = map(POD_CREATE);
        assert_eq!(event.user.username, "alice@acme.example");
        assert!(event.user.groups.is_empty(), "GKE does not log groups");
        assert_eq!(event.source_ips, ["203.0.113.24"]);
        assert_eq!(
            event.user_agent,
            "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46"
        );
        assert!(event.impersonated_user.is_none());
        let bare =
            map(&entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/b").to_string());
        assert_eq!(
            (bare.user.username.as_str(), bare.user_agent.as_str()),
            ("", "")
        );
        assert!(bare.source_ips.is_empty());
    }

    #[test]
    fn grpc_codes_map_to_http_codes() {
        let table = [
            (0, 200),
            (1, 499),
            (2, 500),
            (3, 400),
            (4, 504),
            (5, 404),
            (6, 409),
            (7, 403),
            (8, 429),
            (9, 400),
            (10, 409),
            (11, 400),
            (12, 501),
            (13, 500),
            (14, 503),
            (15, 500),
            (16, 401),
            (17, 500),
            (-1, 500),
        ];
        for (rpc, http) in table {
            assert_eq!(http_code(rpc, "get"), http, "code {rpc}");
            let json = with(
                entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/b"),
                "protoPayload/status",
                json!({ "code": rpc }),
            );
            let status = map(&json).response_status.expect("status");
            assert_eq!(status.code, http, "code {rpc}");
            assert_eq!(
                status.status,
                if rpc == 0 { "" } else { "Failure" },
                "code {rpc}"
            );
        }
        assert_eq!(http_code(0, "create"), 201);
        assert_eq!(map(POD_CREATE).response_status.expect("status").code, 201);
        let denied = map(SECRET_DENIED).response_status.expect("status");
        assert_eq!((denied.code, denied.status.as_str()), (403, "Failure"));
        assert!(
            denied
                .message
                .starts_with("secrets \"db-password\" is forbidden"),
            "{}",
            denied.message
        );
    }

    #[test]
    fn a_kubernetes_status_response_gives_code_and_reason() {
        let base = entry(
            "io.k8s.core.v1.pods.create",
            "core/v1/namespaces/default/pods/nginx",
        );
        let base = serde_json::from_str(&with(
            base,
            "protoPayload/status",
            json!({"code": 3, "message": "denied by policy"}),
        ))
        .unwrap();
        let json = with(
            base,
            "protoPayload/response",
            json!({
                "@type": "core.k8s.io/v1.Status", "apiVersion": "v1", "kind": "Status",
                "code": 400, "reason": "VIOLATES_POLICY", "status": "Failure", "message": "from the body",
            }),
        );
        let status = map(&json).response_status.expect("status");
        assert_eq!(status.code, 400);
        assert_eq!(status.reason, "VIOLATES_POLICY");
        assert_eq!(status.status, "Failure");
        assert_eq!(
            status.message, "denied by policy",
            "status.message comes first"
        );
    }

    #[test]
    fn request_and_response_become_raw_objects_without_type() {
        let event = map(POD_CREATE);
        assert_eq!(event.level, "RequestResponse");
        let request: Value =
            serde_json::from_str(event.request_object.as_ref().expect("request").get()).unwrap();
        let response: Value =
            serde_json::from_str(event.response_object.as_ref().expect("response").get()).unwrap();
        let mut expected = fixture(POD_CREATE)["protoPayload"]["request"].clone();
        expected.as_object_mut().unwrap().remove("@type");
        assert_eq!(request, expected);
        assert_eq!(
            response["metadata"]["uid"],
            "0c1f3a52-6f7e-4d1b-9a0c-5b8e2d4f6a19"
        );
        assert!(response.get("@type").is_none());

        let untyped = r#"{"kind":"Pod","spec":{"n":1.50}}"#;
        let json = with(
            entry("io.k8s.core.v1.pods.create", "core/v1/namespaces/a/pods/b"),
            "protoPayload/request",
            serde_json::from_str(untyped).unwrap(),
        );
        let event = map(&json);
        assert_eq!(event.level, "Request");
        assert_eq!(
            event.request_object.expect("request").get(),
            r#"{"kind":"Pod","spec":{"n":1.5}}"#
        );
        assert!(event.response_object.is_none());
        assert_eq!(map(CRB_UPDATE).level, "Metadata");
    }

    #[test]
    fn operation_gives_audit_id_and_stage() {
        let first = map(EXEC_FIRST);
        let last = map(EXEC_LAST);
        assert_eq!(first.audit_id, "c3d9e5a1-2b7f-4c6e-8d0a-9f1e3b5c7d24");
        assert_eq!(last.audit_id, first.audit_id);
        assert_eq!(first.stage, "ResponseStarted");
        assert_eq!(last.stage, "ResponseComplete");
        assert_eq!(map(POD_CREATE).stage, "ResponseComplete", "first and last");
        let base = entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/b");
        let plain = map(&base.to_string());
        assert_eq!(
            (plain.audit_id.as_str(), plain.stage.as_str()),
            ("insert-1", "ResponseComplete")
        );
        let no_id = map(&with(
            base,
            "operation",
            json!({"producer": "k8s.io", "first": true}),
        ));
        assert_eq!(
            (no_id.audit_id.as_str(), no_id.stage.as_str()),
            ("insert-1", "ResponseStarted")
        );
    }

    #[test]
    fn timestamp_is_the_stage_and_received_time() {
        let event = map(EXEC_LAST);
        assert_eq!(event.stage_timestamp, "2026-11-30T10:09:47.215068Z");
        assert_eq!(event.request_received_timestamp, event.stage_timestamp);
        assert_eq!(event.time(), "2026-11-30T10:09:47.215068Z");
        let mut value = entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/b");
        value.as_object_mut().unwrap().remove("timestamp");
        let event = map(&with(
            value,
            "receiveTimestamp",
            json!("2026-11-30T09:00:03.123456789Z"),
        ));
        assert_eq!(event.stage_timestamp, "2026-11-30T09:00:03.123456789Z");
    }

    #[test]
    fn labels_become_annotations() {
        let event = map(POD_CREATE);
        assert_eq!(event.annotations["authorization.k8s.io/decision"], "allow");
        assert_eq!(
            event.annotations["authorization.k8s.io/reason"],
            "access granted by IAM permissions."
        );
        assert_eq!(
            event.annotations["pod-security.kubernetes.io/enforce-policy"],
            "privileged:latest"
        );
        assert_eq!(
            map(SECRET_DENIED).annotations["authorization.k8s.io/decision"],
            "forbid"
        );
    }

    #[test]
    fn cluster_comes_from_the_monitored_resource() {
        assert_eq!(map(POD_CREATE).cluster, "prod-eu-1");
        let bare =
            map(&entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/b").to_string());
        assert_eq!(bare.cluster, "");
        let event = map(POD_CREATE);
        assert_eq!(
            (event.kind.as_str(), event.api_version.as_str()),
            ("Event", "audit.k8s.io/v1")
        );
        let serialized = serde_json::to_string(&event).unwrap();
        assert!(
            !serialized.contains("prod-eu-1"),
            "cluster is not part of the event's JSON"
        );
    }

    #[test]
    fn entries_of_other_services_are_skipped() {
        assert_eq!(
            event_from_log_entry(OTHER_SERVICE).map(|e| e.is_none()),
            Ok(true)
        );
        let untyped = with(
            entry("x", ""),
            "protoPayload/serviceName",
            json!("storage.googleapis.com"),
        );
        assert_eq!(
            event_from_log_entry(&untyped).map(|e| e.is_none()),
            Ok(true)
        );
    }

    #[test]
    fn broken_entries_name_the_field() {
        let base = || entry("io.k8s.core.v1.pods.get", "core/v1/namespaces/a/pods/b");
        let mut no_payload = base();
        no_payload.as_object_mut().unwrap().remove("protoPayload");
        assert!(error(&no_payload.to_string()).starts_with("protoPayload: absent"));
        assert_eq!(
            error(&entry("x.y", "").to_string()),
            "protoPayload.methodName: `x.y` is not io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>"
        );
        for method in [
            "",
            "io.k8s.core.pods.create",
            "io.k8s.core.v1.create",
            "v1.pods.get",
            "io.k8s..v1.pods.get",
            "io.k8s.core.v1.pods.Create",
            "io.k8s.core.v1.pods.exec.log.get",
        ] {
            let e = error(&entry(method, "").to_string());
            assert!(e.starts_with("protoPayload.methodName: `"), "{method}: {e}");
        }
        let name = |n: &str| with(base(), "protoPayload/resourceName", json!(n));
        let cases = [
            (
                with(base(), "protoPayload", json!([])),
                "protoPayload: expected a JSON object, found an array",
            ),
            (
                with(base(), "protoPayload/methodName", json!(5)),
                "protoPayload.methodName: expected a string, found a number",
            ),
            (
                with(base(), "protoPayload/resourceName", json!(["a"])),
                "protoPayload.resourceName: expected a string, found an array",
            ),
            (
                with(
                    base(),
                    "protoPayload/authenticationInfo/principalEmail",
                    json!(1),
                ),
                "protoPayload.authenticationInfo.principalEmail: expected a string, found a number",
            ),
            (
                with(base(), "protoPayload/requestMetadata", json!("1.2.3.4")),
                "protoPayload.requestMetadata: expected a JSON object, found a string",
            ),
            (
                with(base(), "protoPayload/status/code", json!("7")),
                "protoPayload.status.code: expected an integer, found a string",
            ),
            (
                with(base(), "protoPayload/request", json!([1])),
                "protoPayload.request: expected a JSON object, found an array",
            ),
            (
                with(base(), "protoPayload/serviceName", json!(null)),
                "protoPayload.serviceName: absent",
            ),
            (
                with(
                    base(),
                    "protoPayload/@type",
                    json!("type.googleapis.com/google.logging.v2.Other"),
                ),
                "protoPayload.@type: `type.googleapis.com/google.logging.v2.Other` is not type.googleapis.com/google.cloud.audit.AuditLog",
            ),
            (
                with(base(), "operation/first", json!("true")),
                "operation.first: expected true or false, found a string",
            ),
            (
                with(base(), "labels/decision", json!(1)),
                "labels.decision: expected a string, found a number",
            ),
            (
                with(base(), "resource/labels/cluster_name", json!(false)),
                "resource.labels.cluster_name: expected a string, found a boolean",
            ),
            (
                with(base(), "timestamp", json!(12)),
                "timestamp: expected a string, found a number",
            ),
            (
                name("core/v2/namespaces/a/pods/b"),
                "protoPayload.resourceName: `core/v2/namespaces/a/pods/b` has version `v2`, methodName has `v1`",
            ),
            (
                name("core/v1/namespaces/a/secrets/b"),
                "protoPayload.resourceName: `core/v1/namespaces/a/secrets/b` does not name methodName's resource `pods`",
            ),
            (
                name("core/v1/namespaces/a/pods/b/exec"),
                "protoPayload.resourceName: `core/v1/namespaces/a/pods/b/exec` does not end in methodName's resource `pods`, a name and subresource ``",
            ),
            (
                name("core//pods"),
                "protoPayload.resourceName: `core//pods` is not <group>/<version>/[namespaces/<namespace>/]<resource>[/<name>[/<subresource>]]",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(error(&json), expected, "{json}");
        }
        assert_eq!(
            error("[]"),
            "LogEntry: expected a JSON object, found an array"
        );
        assert!(
            error("{\"protoPayload\":").starts_with("not JSON: EOF"),
            "{}",
            error("{")
        );
        let long = format!("io.\n{}", "x".repeat(500));
        let e = error(&entry(&long, "").to_string());
        assert!(
            e.contains("io.\\n") && e.contains('…') && e.len() < 300,
            "{e}"
        );
    }

    /// Nesting a million deep, as the entry, as a request body or inside a response body,
    /// gives an error or an event, never a stack overflow.
    #[test]
    fn deep_nesting_never_overflows() {
        let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        assert_eq!(
            error(&deep),
            "LogEntry: expected a JSON object, found an array"
        );
        let base = || entry("io.k8s.core.v1.pods.create", "core/v1/namespaces/a/pods/b");
        let marker = "\"@@deep@@\"";
        let request =
            with(base(), "protoPayload/request", json!("@@deep@@")).replace(marker, &deep);
        assert_eq!(
            error(&request),
            "protoPayload.request: expected a JSON object, found an array"
        );
        let response = with(
            base(),
            "protoPayload/response",
            json!({"kind": "Status", "x": "@@deep@@"}),
        )
        .replace(marker, &deep);
        assert_eq!(map(&response).level, "RequestResponse");
    }

    /// Values that matter to the mapping: fragments of methods, resource names and JSON.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            proptest::sample::select(vec![
                "io.k8s.core.v1.pods.exec.create",
                "io.k8s",
                ".",
                "..",
                "v1",
                "v1beta1",
                "vbeta",
                "core/v1/namespaces/a/pods/b/exec",
                "namespaces",
                "/",
                "//",
                "k8s.io",
                "{",
                "}",
                "[",
                "]",
                "\"",
                ":",
                ",",
                "null",
                "true",
                "0",
                "-1",
                "1e999",
                "@type",
                "\\u0000",
                "protoPayload",
                "operation",
                "first",
                "labels",
            ])
            .prop_map(str::to_owned),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary text never panics, and an error always says something.
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Err(e) = event_from_log_entry(&text) {
                prop_assert!(!e.is_empty());
            }
        }

        /// Entries whose method, resource name and any other field are arbitrary strings or
        /// JSON values never panic; a mapped event keeps the method's verb.
        #[test]
        fn arbitrary_fields_never_panic(
            method in token(),
            name in prop::collection::vec(token(), 0..6).prop_map(|p| p.join("/")),
            field in proptest::sample::select(vec![
                "protoPayload/request", "protoPayload/status", "operation", "labels",
                "resource", "protoPayload/requestMetadata", "protoPayload/authenticationInfo",
                "timestamp", "insertId", "protoPayload/response",
            ]),
            value in prop_oneof![
                any::<String>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
                Just(json!({"code": 7, "first": true, "kind": "Status", "@type": "t", "cluster_name": "c"})),
                Just(json!([1, 2])),
                Just(Value::Null),
            ],
        ) {
            let json = with(entry(&method, &name), field, value);
            match event_from_log_entry(&json) {
                Ok(Some(event)) => {
                    let suffix = format!(".{}", event.verb);
                    prop_assert!(method.ends_with(&suffix), "verb {} of {}", event.verb, method);
                }
                Ok(None) => prop_assert!(false, "a k8s.io entry is never skipped"),
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }

        /// Cutting a fixture anywhere, or changing one byte of it, never panics.
        #[test]
        fn damaged_fixtures_never_panic(
            which in 0usize..6,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let text = [POD_CREATE, EXEC_FIRST, EXEC_LAST, CRB_UPDATE, SECRET_DENIED, OTHER_SERVICE][which];
            let cut = at.index(text.len());
            let _ = event_from_log_entry(text.get(..cut).unwrap_or(text));
            let mut bytes = text.as_bytes().to_vec();
            bytes[cut] = byte;
            if let Ok(changed) = std::str::from_utf8(&bytes) {
                let _ = event_from_log_entry(changed);
            }
        }
    }
}
