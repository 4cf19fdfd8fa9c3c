//! The alert history API: `GET /api/v1/alerts?rule=&severity=&since=&q=&limit=` answers
//! `{"alerts":[…]}`, newest first, from the outbox's history; a bad parameter is a 400
//! whose JSON reason names it (`field`); behind the admin credentials. Calls `outbox` (the history), `rules` (`Severity`) and
//! `clock`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::admin::{self, AdminError};
use crate::clock::{duration_ms, format_time_ms, parse_time_ms, wall_clock_ms};
use crate::outbox::{HistoryQuery, Raised};
use crate::rules::Severity;

/// Entries answered when the query sets no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 10_000;

/// The history routes, behind the admin credentials.
pub(super) fn routes(state: &Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/api/v1/alerts", get(list))
        .with_state(state.clone());
    admin::protect(state, router)
}

async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, AdminError> {
    let now_ms = wall_clock_ms();
    let query = parse_query(query.as_deref().unwrap_or(""), now_ms)?;
    let found = tokio::task::spawn_blocking(move || state.outbox.history(&query, now_ms)).await?;
    let found = found.map_err(|err| {
        tracing::warn!(error = %err, "cannot read the alert history");
        AdminError::Unavailable(err.to_string())
    })?;
    let alerts: Vec<Item<'_>> = found.iter().map(Item::from).collect();
    Ok(axum::Json(json!({ "alerts": alerts })).into_response())
}

/// The query string as a history query; the error names the bad parameter.
fn parse_query(query: &str, now_ms: i64) -> Result<HistoryQuery, AdminError> {
    let mut out = HistoryQuery {
        limit: DEFAULT_LIMIT,
        ..HistoryQuery::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        let parsed = match &*name {
            "rule" => non_empty(value).map(|v| out.rule = v),
            "severity" => severity(&value).map(|v| out.min_severity = Some(v)),
            "since" => since(&value, now_ms).map(|v| out.since_ms = Some(v)),
            "q" => non_empty(value).map(|v| out.text = v),
            "limit" => limit(&value).map(|v| out.limit = v),
            // The Pub/Sub push token may authenticate any request.
            "token" => Ok(()),
            _ => Err("unknown parameter; expected rule, severity, since, q or limit".to_owned()),
        };
        parsed.map_err(|reason| AdminError::Invalid {
            field: name.into_owned(),
            reason,
        })?;
    }
    Ok(out)
}

/// A text parameter; empty means no filter.
fn non_empty(value: String) -> Result<Option<String>, String> {
    if value.len() > 1024 {
        return Err("longer than 1024 bytes".to_owned());
    }
    Ok(Some(value).filter(|v| !v.is_empty()))
}

fn severity(value: &str) -> Result<Severity, String> {
    value.parse()
}

/// `since`: a duration back from now (`90s`, `1h`, `2d`) or an RFC 3339 time.
fn since(value: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(at) = parse_time_ms(value) {
        return Ok(at);
    }
    let ago: Duration = humantime::parse_duration(value).map_err(|err| {
        format!("`{value}` is neither a duration (e.g. 1h) nor an RFC 3339 time ({err})")
    })?;
    Ok(now_ms.saturating_sub(duration_ms(ago)))
}

fn limit(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{value}` is not a whole number from 1 to {MAX_LIMIT}"
        )),
    }
}

/// One history entry as the API answers it.
#[derive(Debug, Serialize)]
struct Item<'a> {
    id: String,
    raised_at: String,
    rule: &'a str,
    severity: Severity,
    title: &'a str,
    text: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
    fields: &'a std::collections::BTreeMap<String, String>,
    attack: &'a [String],
    dedup_key: &'a str,
    event: EventSummary<'a>,
    outcome: &'a str,
    silenced_by: Option<&'a str>,
    duplicates: u64,
    count: u64,
    targets: &'a [String],
}

/// The event an alert was raised on, in short.
#[derive(Debug, Serialize)]
struct EventSummary<'a> {
    audit_id: &'a str,
    verb: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    name: &'a str,
    user: &'a str,
    source_ips: &'a [String],
    cluster: &'a str,
    stage: &'a str,
    code: i64,
}

impl<'a> From<&'a Raised> for Item<'a> {
    fn from(raised: &'a Raised) -> Self {
        let alert = &raised.alert;
        let c = &alert.context;
        let object = ObjectParts::of(&c.object, &c.namespace);
        Item {
            id: format!("a-{}", raised.seq),
            raised_at: format_time_ms(raised.raised_at_ms),
            rule: &alert.rule,
            severity: alert.severity,
            title: &alert.title,
            text: &alert.text,
            labels: &alert.labels,
            fields: &alert.fields,
            attack: &alert.attack,
            dedup_key: &alert.dedup_key,
            event: EventSummary {
                audit_id: &c.audit_id,
                verb: &c.verb,
                resource: object.resource,
                subresource: object.subresource,
                namespace: &c.namespace,
                name: object.name,
                user: &c.user,
                source_ips: &c.source_ips,
                cluster: &c.cluster,
                stage: &c.stage,
                code: c.response_code,
            },
            outcome: &raised.outcome,
            silenced_by: raised.silenced_by.as_deref(),
            duplicates: raised.duplicates,
            count: raised.count,
            targets: &raised.targets,
        }
    }
}

/// The parts of an alert context's `object`, which reads `resource[/subresource]
/// [namespace/]name`, or the request URI (starting with `/`) when the event named no object.
#[derive(Debug, Default, PartialEq, Eq)]
struct ObjectParts<'a> {
    resource: &'a str,
    subresource: &'a str,
    name: &'a str,
}

impl<'a> ObjectParts<'a> {
    fn of(object: &'a str, namespace: &str) -> Self {
        if object.starts_with('/') {
            return Self::default();
        }
        let (kind, target) = object.split_once(' ').unwrap_or((object, ""));
        let (resource, subresource) = kind.split_once('/').unwrap_or((kind, ""));
        let name = match target.strip_prefix(namespace) {
            _ if namespace.is_empty() => target,
            Some("") => "",
            Some(rest) => rest.strip_prefix('/').unwrap_or(target),
            None => target,
        };
        Self {
            resource,
            subresource,
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(object: &'a str, namespace: &str) -> (&'a str, &'a str, &'a str) {
        let p = ObjectParts::of(object, namespace);
        (p.resource, p.subresource, p.name)
    }

    #[test]
    fn an_object_splits_into_resource_subresource_and_name() {
        assert_eq!(parts("pods shop/web-1", "shop"), ("pods", "", "web-1"));
        assert_eq!(
            parts("pods/exec shop/web-1", "shop"),
            ("pods", "exec", "web-1")
        );
        assert_eq!(parts("pods shop", "shop"), ("pods", "", ""));
        assert_eq!(parts("nodes node-1", ""), ("nodes", "", "node-1"));
        assert_eq!(parts("pods", ""), ("pods", "", ""));
        assert_eq!(parts("/healthz", ""), ("", "", ""));
    }

    #[test]
    fn bad_parameters_are_named() {
        let field = |q: &str| match parse_query(q, 0).unwrap_err() {
            AdminError::Invalid { field, .. } => field,
            other => panic!("{q}: {other}"),
        };
        assert_eq!(field("severity=loud"), "severity");
        assert_eq!(field("since=yesterday"), "since");
        assert_eq!(field("limit=0"), "limit");
        assert_eq!(field("limit=x"), "limit");
        assert_eq!(field("rules=a"), "rules");
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let hour = 3_600_000;
        let q = parse_query("since=1h&severity=warning&q=Web&rule=r&limit=5", 10 * hour).unwrap();
        assert_eq!(q.since_ms, Some(9 * hour));
        assert_eq!(q.min_severity, Some(Severity::Warning));
        assert_eq!(
            (q.text.as_deref(), q.rule.as_deref(), q.limit),
            (Some("Web"), Some("r"), 5)
        );
        let q = parse_query("since=1970-01-01T00:00:01Z", 0).unwrap();
        assert_eq!(q.since_ms, Some(1000));
        assert_eq!(parse_query("", 0).unwrap().limit, DEFAULT_LIMIT);
    }
}
