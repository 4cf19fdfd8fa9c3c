//! What makes an object an audit event: the audit identity (`kind: Event` with an
//! `audit.k8s.io` apiVersion) or, without it (EventList items have no kind; some log
//! pipelines keep the kind and drop the apiVersion), the five fields every audit event
//! has; and timestamps that parse.

use super::event::Event;
use crate::clock::parse_time_ms;

/// The API group of audit events: `audit.k8s.io/v1` and `v1beta1` today, and whatever
/// version comes next (its fields are read by name, unknown ones skipped).
const AUDIT_GROUP: &str = "audit.k8s.io/";

/// The longest part of a bad value quoted in a reason.
const QUOTE_CHARS: usize = 40;

/// `Ok` when `event` is an audit event, else why not, naming what is missing or wrong.
pub(super) fn check(event: &Event) -> Result<(), String> {
    identity(event)?;
    timestamps(event)
}

fn identity(event: &Event) -> Result<(), String> {
    let (kind, version) = (event.kind.as_str(), event.api_version.as_str());
    let audit_version = version.starts_with(AUDIT_GROUP);
    match kind {
        "Event" if audit_version => Ok(()),
        "" | "Event" if audit_version || version.is_empty() => required_fields(event),
        "Event" => Err(format!(
            "not an audit event: kind Event with apiVersion `{}` (a Kubernetes Event, not audit.k8s.io/v1 or v1beta1)",
            quote(version)
        )),
        _ => Err(format!(
            "not an audit event: kind `{}` apiVersion `{}` (expected kind Event, apiVersion audit.k8s.io/v1 or v1beta1)",
            quote(kind),
            quote(version)
        )),
    }
}

/// Without the full audit identity (EventList items have no kind; some log pipelines drop
/// the apiVersion), the fields every audit event has must be there.
fn required_fields(event: &Event) -> Result<(), String> {
    let missing: Vec<&str> = [
        ("auditID", &event.audit_id),
        ("stage", &event.stage),
        ("verb", &event.verb),
        ("requestURI", &event.request_uri),
        ("level", &event.level),
    ]
    .into_iter()
    .filter(|(_, value)| value.is_empty())
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "not an audit event: no kind Event with apiVersion audit.k8s.io/v1 or v1beta1, and missing {}",
        missing.join(", ")
    ))
}

fn timestamps(event: &Event) -> Result<(), String> {
    for (name, value) in [
        ("stageTimestamp", &event.stage_timestamp),
        (
            "requestReceivedTimestamp",
            &event.request_received_timestamp,
        ),
        ("timestamp", &event.timestamp),
    ] {
        if !value.is_empty() && parse_time_ms(value).is_none() {
            return Err(format!(
                "{name}: `{}` is not an RFC 3339 time (e.g. 2024-05-01T10:00:00.123456Z)",
                quote(value)
            ));
        }
    }
    Ok(())
}

/// At most `QUOTE_CHARS` characters of `value`, marked when cut.
fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Event {
        Event {
            audit_id: "a-1".to_owned(),
            stage: "ResponseComplete".to_owned(),
            verb: "get".to_owned(),
            request_uri: "/api/v1/pods".to_owned(),
            level: "Metadata".to_owned(),
            stage_timestamp: "2024-05-01T10:00:00.123456Z".to_owned(),
            ..Event::default()
        }
    }

    #[test]
    fn an_event_list_item_needs_the_five_fields() {
        assert_eq!(check(&item()), Ok(()));
        let mut e = item();
        e.audit_id.clear();
        e.level.clear();
        let reason = check(&e).unwrap_err();
        assert!(reason.ends_with("missing auditID, level"), "{reason}");
        assert!(
            check(&Event::default())
                .unwrap_err()
                .contains("missing auditID, stage, verb, requestURI, level")
        );
    }

    #[test]
    fn the_audit_identity_is_enough_and_other_kinds_are_named() {
        let e = Event {
            kind: "Event".to_owned(),
            api_version: "audit.k8s.io/v1beta1".to_owned(),
            ..Event::default()
        };
        assert_eq!(check(&e), Ok(()));
        let core = Event {
            api_version: "v1".to_owned(),
            ..e.clone()
        };
        assert!(check(&core).unwrap_err().contains("apiVersion `v1`"));
        let deployment = Event {
            kind: "Deployment".to_owned(),
            api_version: "apps/v1".to_owned(),
            ..item()
        };
        let reason = check(&deployment).unwrap_err();
        assert!(
            reason.contains("kind `Deployment` apiVersion `apps/v1`"),
            "{reason}"
        );
        let bare = Event {
            api_version: String::new(),
            ..e
        };
        assert!(check(&bare).unwrap_err().contains("missing auditID"));
        let kind_only = Event {
            kind: "Event".to_owned(),
            ..item()
        };
        assert_eq!(
            check(&kind_only),
            Ok(()),
            "Falco's traces have kind Event and no apiVersion"
        );
    }

    #[test]
    fn timestamps_must_be_rfc3339_with_an_optional_fraction() {
        let mut e = item();
        e.request_received_timestamp = "2024-05-01T10:00:00Z".to_owned();
        assert_eq!(check(&e), Ok(()));
        e.stage_timestamp = "yesterday at noon".to_owned();
        assert_eq!(
            check(&e).unwrap_err(),
            "stageTimestamp: `yesterday at noon` is not an RFC 3339 time (e.g. 2024-05-01T10:00:00.123456Z)"
        );
        let mut e = item();
        e.timestamp = "2024-05-01 10:00:00".to_owned();
        assert!(check(&e).unwrap_err().starts_with("timestamp: "));
        e.timestamp = "x".repeat(100);
        assert!(
            check(&e)
                .unwrap_err()
                .contains(&format!("`{}…`", "x".repeat(40)))
        );
    }
}
