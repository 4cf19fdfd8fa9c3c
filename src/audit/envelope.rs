//! The envelopes managed clusters' logging wraps audit events in, recognised by their keys
//! and opened wherever events are read:
//!
//! - AKS diagnostic settings (Event Hub messages, Storage blobs): `{"records":[…]}` or one
//!   record per line, each `{"category":"kube-audit"|"kube-audit-admin","properties":{"log":"<event>"}}`;
//!   records of other categories are skipped.
//! - EKS through CloudWatch Logs: what `aws logs filter-log-events` and `get-log-events`
//!   print (`{"events":[{"message":"<event>"}]}`), a subscription message
//!   (`{"messageType":"DATA_MESSAGE","logEvents":[…]}`; `CONTROL_MESSAGE` skipped), the
//!   Lambda form of one (`{"awslogs":{"data":"<base64 gzip>"}}`), and Amazon Data Firehose's
//!   HTTP endpoint delivery (`{"requestId":…,"records":[{"data":"<base64>"}]}`). Log events
//!   of streams other than `kube-apiserver-audit-…` are skipped.
//! - GKE through Cloud Logging: a `LogEntry` (`protoPayload` of `serviceName` `k8s.io`,
//!   mapped by `gke.rs`; entries of other services skipped) — alone, in `gcloud logging read`
//!   arrays, one per line in Cloud Storage sink files, or as the base64 data of a Pub/Sub
//!   push (`{"message":{"data":"<base64>"},"subscription":…}`).
//!
//! A payload (a log line, a base64 blob, gzip) is decoded like any input, so envelopes
//! nest (Firehose → gzip → subscription message → event). A broken envelope is reported
//! with the envelope and the field named; a bad record costs only itself.

use std::borrow::Cow;
use std::fmt::Display;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::decode::{DecodeError, Decoded, Location};

/// The envelope an object is, by its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Envelope {
    /// `{"requestId","timestamp","records":[{"data"}]}`.
    Firehose,
    /// `{"records":[…]}` of Azure resource logs.
    AksRecords,
    /// One Azure resource log record.
    AksRecord,
    /// `{"messageType","logEvents"}`.
    Subscription,
    /// `{"awslogs":{"data"}}`.
    Lambda,
    /// `{"events":[{"message"}]}`.
    LogsApi,
    /// `{"message":{"data"},"subscription"}`.
    PubSub,
    /// A Cloud Logging `LogEntry`.
    LogEntry,
}

impl Envelope {
    /// How errors name it.
    fn name(self) -> &'static str {
        match self {
            Envelope::Firehose => "Firehose delivery",
            Envelope::AksRecords | Envelope::AksRecord => "AKS diagnostic record",
            Envelope::Subscription => "CloudWatch Logs subscription message",
            Envelope::Lambda => "CloudWatch Logs Lambda event",
            Envelope::LogsApi => "CloudWatch Logs events",
            Envelope::PubSub => "Pub/Sub push",
            Envelope::LogEntry => "GKE LogEntry",
        }
    }
}

/// The keys that tell envelopes apart; everything else is skipped unread.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Probe<'a> {
    #[serde(borrow)]
    records: Option<&'a RawValue>,
    #[serde(rename = "requestId", borrow)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow)]
    events: Option<&'a RawValue>,
    #[serde(rename = "messageType", borrow)]
    message_type: Option<&'a RawValue>,
    #[serde(borrow)]
    awslogs: Option<&'a RawValue>,
    #[serde(rename = "protoPayload", borrow)]
    proto_payload: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    subscription: Option<&'a RawValue>,
    #[serde(borrow)]
    category: Option<&'a RawValue>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
}

impl Probe<'_> {
    fn envelope(&self) -> Option<Envelope> {
        let shapes = [
            (
                self.request_id.is_some() && self.records.is_some(),
                Envelope::Firehose,
            ),
            (self.records.is_some(), Envelope::AksRecords),
            (
                self.category.is_some() && self.properties.is_some(),
                Envelope::AksRecord,
            ),
            (self.message_type.is_some(), Envelope::Subscription),
            (self.awslogs.is_some(), Envelope::Lambda),
            (self.events.is_some(), Envelope::LogsApi),
            (self.proto_payload.is_some(), Envelope::LogEntry),
            (
                self.message.is_some() && self.subscription.is_some(),
                Envelope::PubSub,
            ),
        ];
        shapes.into_iter().find(|(is, _)| *is).map(|(_, e)| e)
    }
}

/// Opens `input` if it is an envelope, adding its events and errors to `out`; false, adding
/// nothing, when it is none.
pub(super) fn open(input: &[u8], at: Location, out: &mut Decoded) -> bool {
    if !is_object(input) {
        return false;
    }
    let Ok(probe) = serde_json::from_slice::<Probe<'_>>(input) else {
        return false;
    };
    let Some(envelope) = probe.envelope() else {
        return false;
    };
    let mut open = Opening { envelope, at, out };
    match envelope {
        Envelope::Firehose => open.firehose(input),
        Envelope::AksRecords => open.aks_records(input),
        Envelope::AksRecord => open.aks_record(input, "", at),
        Envelope::Subscription => open.subscription(input, ""),
        Envelope::Lambda => open.lambda(input),
        Envelope::LogsApi => open.logs_api(input),
        Envelope::PubSub => open.pubsub(input),
        Envelope::LogEntry => open.log_entry(input),
    }
    true
}

/// One envelope being opened.
struct Opening<'o> {
    envelope: Envelope,
    at: Location,
    out: &'o mut Decoded,
}

/// `records` (Firehose, AKS) or `events` / `logEvents` (CloudWatch): items read one by one.
#[derive(Deserialize)]
struct Items<'a> {
    #[serde(borrow, alias = "events", alias = "logEvents")]
    records: Vec<&'a RawValue>,
}

/// A Firehose record or the `awslogs` / Pub/Sub `message` object: base64 data.
#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Lambda<'a> {
    #[serde(borrow)]
    awslogs: Data<'a>,
}

#[derive(Deserialize)]
struct PubSubPush<'a> {
    #[serde(borrow)]
    message: Data<'a>,
}

#[derive(Deserialize)]
struct AksRecord<'a> {
    #[serde(borrow)]
    category: Cow<'a, str>,
    #[serde(borrow)]
    properties: AksProperties<'a>,
    #[serde(rename = "resourceId", borrow, default)]
    resource_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AksProperties<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Subscription<'a> {
    #[serde(rename = "messageType", borrow)]
    message_type: Cow<'a, str>,
    #[serde(rename = "logStream", borrow, default)]
    log_stream: Option<Cow<'a, str>>,
    #[serde(rename = "logGroup", borrow, default)]
    log_group: Option<Cow<'a, str>>,
}

/// A CloudWatch log event, from a subscription message or the Logs API.
#[derive(Deserialize)]
struct LogEvent<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(rename = "logStreamName", borrow, default)]
    log_stream_name: Option<Cow<'a, str>>,
}

/// The AKS diagnostic categories that carry audit events.
const AKS_AUDIT_CATEGORIES: [&str; 2] = ["kube-audit", "kube-audit-admin"];

/// EKS writes audit events to the log streams named `kube-apiserver-audit-<id>`.
const EKS_AUDIT_STREAM: &str = "kube-apiserver-audit";

impl Opening<'_> {
    fn fail(&mut self, location: Location, field: &str, problem: impl Display) {
        let field = if field.is_empty() {
            String::new()
        } else {
            format!("{field}: ")
        };
        self.out.errors.push(DecodeError {
            location,
            reason: format!("{}: {field}{problem}", self.envelope.name()),
        });
    }

    /// Where the `index`th record's events come from: its item of a top-level envelope.
    fn origin(&self, index: usize) -> Location {
        match self.at.item {
            Some(_) => self.at,
            None => Location::item(self.at.line, index),
        }
    }

    /// The envelope's list of records, or an error naming the envelope.
    fn items<'a>(&mut self, input: &'a [u8]) -> Option<Vec<&'a RawValue>> {
        match parse::<Items<'a>>(input) {
            Ok(items) => Some(items.records),
            Err(err) => {
                self.fail(self.at, "", err);
                None
            }
        }
    }

    fn payload(&mut self, bytes: &[u8], location: Location, field: &str) {
        let prefix = format!("{}: {field}", self.envelope.name());
        self.out.decode_payload(bytes, location, &prefix);
    }

    fn base64_payload(&mut self, data: &str, location: Location, field: &str) {
        match base64::engine::general_purpose::STANDARD.decode(data.trim_ascii()) {
            Ok(bytes) => self.payload(&bytes, location, field),
            Err(err) => self.fail(location, field, format_args!("not base64: {err}")),
        }
    }

    fn firehose(&mut self, input: &[u8]) {
        let Some(records) = self.items(input) else {
            return;
        };
        for (i, raw) in records.into_iter().enumerate() {
            let field = format!("records[{i}]");
            match parse::<Data<'_>>(raw.get().as_bytes()) {
                Ok(record) => {
                    self.base64_payload(&record.data, self.origin(i), &format!("{field}.data"));
                }
                Err(err) => self.fail(self.origin(i), &field, err),
            }
        }
    }

    fn aks_records(&mut self, input: &[u8]) {
        let Some(records) = self.items(input) else {
            return;
        };
        for (i, raw) in records.into_iter().enumerate() {
            self.aks_record(
                raw.get().as_bytes(),
                &format!("records[{i}]"),
                self.origin(i),
            );
        }
    }

    fn aks_record(&mut self, input: &[u8], field: &str, location: Location) {
        let record = match parse::<AksRecord<'_>>(input) {
            Ok(record) => record,
            Err(err) => return self.fail(location, field, err),
        };
        if !AKS_AUDIT_CATEGORIES.contains(&record.category.as_ref()) {
            self.out.skipped += 1;
            return;
        }
        let field = join(field, "properties.log");
        let first = self.out.events.len();
        self.payload(record.properties.log.as_bytes(), location, &field);
        let cluster = record.resource_id.as_deref().and_then(aks_cluster);
        self.name_cluster(first, cluster);
    }

    /// Names `cluster` on the events added since the `first`th, unless they name their own.
    fn name_cluster(&mut self, first: usize, cluster: Option<&str>) {
        let Some(cluster) = cluster.filter(|c| !c.is_empty()) else {
            return;
        };
        for event in self.out.events.iter_mut().skip(first) {
            if event.cluster.is_empty() {
                cluster.clone_into(&mut event.cluster);
            }
        }
    }

    fn subscription(&mut self, input: &[u8], field: &str) {
        let message = match parse::<Subscription<'_>>(input) {
            Ok(message) => message,
            Err(err) => return self.fail(self.at, field, err),
        };
        match message.message_type.as_ref() {
            "CONTROL_MESSAGE" => self.out.skipped += 1,
            "DATA_MESSAGE" => {
                let Some(events) = self.items(input) else {
                    return;
                };
                if message
                    .log_stream
                    .as_ref()
                    .is_some_and(|s| !s.starts_with(EKS_AUDIT_STREAM))
                {
                    self.out.skipped += events.len();
                    return;
                }
                let first = self.out.events.len();
                self.log_events(&events, &join(field, "logEvents"));
                let cluster = message.log_group.as_deref().and_then(eks_cluster);
                self.name_cluster(first, cluster);
            }
            other => self.fail(
                self.at,
                &join(field, "messageType"),
                format_args!("`{other}` is neither DATA_MESSAGE nor CONTROL_MESSAGE"),
            ),
        }
    }

    fn logs_api(&mut self, input: &[u8]) {
        if let Some(events) = self.items(input) {
            self.log_events(&events, "events");
        }
    }

    fn log_events(&mut self, events: &[&RawValue], field: &str) {
        for (i, raw) in events.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let event = match parse::<LogEvent<'_>>(raw.get().as_bytes()) {
                Ok(event) => event,
                Err(err) => {
                    self.fail(self.origin(i), &field, err);
                    continue;
                }
            };
            if event
                .log_stream_name
                .is_some_and(|s| !s.starts_with(EKS_AUDIT_STREAM))
            {
                self.out.skipped += 1;
                continue;
            }
            self.payload(
                event.message.as_bytes(),
                self.origin(i),
                &format!("{field}.message"),
            );
        }
    }

    fn lambda(&mut self, input: &[u8]) {
        match parse::<Lambda<'_>>(input) {
            Ok(event) => self.base64_payload(&event.awslogs.data, self.at, "awslogs.data"),
            Err(err) => self.fail(self.at, "", err),
        }
    }

    fn log_entry(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        match super::gke::event_from_log_entry(&text) {
            Ok(Some(event)) => self.out.take(event, self.at),
            Ok(None) => self.out.skipped += 1,
            Err(reason) => self.fail(self.at, "", reason),
        }
    }

    fn pubsub(&mut self, input: &[u8]) {
        match parse::<PubSubPush<'_>>(input) {
            Ok(push) => self.base64_payload(&push.message.data, self.at, "message.data"),
            Err(err) => self.fail(self.at, "", err),
        }
    }
}

/// The cluster of an AKS resource ID: `…/providers/Microsoft.ContainerService/managedClusters/NAME`
/// (diagnostic records write it in capitals).
fn aks_cluster(resource_id: &str) -> Option<&str> {
    let mut segments = resource_id.split('/');
    segments.find(|s| s.eq_ignore_ascii_case("managedClusters"))?;
    segments.next()
}

/// The cluster of an EKS control-plane log group: `/aws/eks/NAME/cluster`.
fn eks_cluster(log_group: &str) -> Option<&str> {
    log_group
        .strip_prefix("/aws/eks/")?
        .strip_suffix("/cluster")
        .filter(|name| !name.contains('/'))
}

fn join(field: &str, more: &str) -> String {
    if field.is_empty() {
        more.to_owned()
    } else {
        format!("{field}.{more}")
    }
}

/// Whether `input` is a JSON object (serde also reads structs from arrays).
pub(super) fn is_object(input: &[u8]) -> bool {
    input.trim_ascii_start().starts_with(b"{")
}

/// Deserializes `T` from an object, the error naming the field it is in.
fn parse<'a, T: Deserialize<'a>>(input: &'a [u8]) -> Result<T, String> {
    if !is_object(input) {
        return Err("expected an object".to_owned());
    }
    let mut de = serde_json::Deserializer::from_slice(input);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let reason = strip_position(&inner);
        if path == "." {
            reason
        } else {
            format!("{path}: {reason}")
        }
    })
}

/// serde_json's message without its ` at line L column C` (the position is the envelope's).
pub(super) fn strip_position(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_owned()
}
