//! The event mix and the batch bodies built from it.
//!
//! About 85% of the events are Metadata-level reads (get, list, watch) by kubelets and
//! controllers, built from a fixed table of actors and resources; about 15% are writes
//! (create, update, patch, delete) with request and response bodies, taken from Falco's
//! audit traces (read from their directory by `traces`). Every template is serialised once, without its auditID and timestamps;
//! a batch is the templates' bytes with a fresh auditID and timestamps spliced in front,
//! so building a body costs little more than copying it.

use serde_json::{Map, Value, json};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

use klaxon::audit::Event;

use super::LoadgenError;
use super::traces::Traces;

/// The share of write events, in basis points: 1,500 of 10,000 (15%).
const WRITE_SHARE_BP: u64 = 1_500;
/// The verbs that make an event a write.
pub const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];
/// Fields spliced in per event, so removed from the templates (plus v1beta1's stale
/// `timestamp` and the per-line `kind` and `apiVersion` that EventList items do not carry).
const SPLICED: [&str; 6] = [
    "kind",
    "apiVersion",
    "auditID",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "timestamp",
];
/// The opening of every body, as the apiserver's batch webhook backend sends it.
const HEAD: &[u8] =
    br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#;
/// The closing of every body.
const TAIL: &[u8] = b"]}";
/// How long before `stageTimestamp` the request was received.
const RECEIVED_BEFORE: Duration = Duration::milliseconds(3);
/// `2026-11-20T10:15:02.131902Z`: RFC 3339 in UTC with microseconds, as the apiserver writes.
const STAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
/// Lower-case hexadecimal digits.
const HEX: &[u8; 16] = b"0123456789abcdef";
/// Hex digits of the per-event counter at the end of an auditID (48 bits).
const COUNTER_DIGITS: usize = 12;
/// `xxxxxxxx-xxxx-4xxx-yxxx-`: the per-run random part of every auditID.
const ID_PREFIX_LEN: usize = 24;

/// One pre-serialised event: its JSON object after the opening `{`, without the spliced fields.
#[derive(Debug, Clone)]
struct Template {
    rest: Box<[u8]>,
}

/// Builds EventList bodies of the mix; deterministic in its seed except for the per-run
/// auditID prefix and the timestamps, which are always fresh.
#[derive(Debug, Clone)]
pub struct Generator {
    reads: Vec<Template>,
    writes: Vec<Template>,
    seed: u64,
    batch_size: usize,
    id_prefix: [u8; ID_PREFIX_LEN],
    capacity: usize,
}

impl Generator {
    /// A generator of `batch_size`-event batches, its writes taken from `traces`, whose
    /// choice of events follows `seed`; the auditID prefix is random, so no two runs share
    /// an auditID. Traces without any write event are an error (the mix would be reads only).
    pub fn new(traces: &Traces, seed: u64, batch_size: usize) -> Result<Self, LoadgenError> {
        Self::with_run_id(traces, seed, batch_size, rand::random())
    }

    /// Like [`Generator::new`], with the auditID prefix derived from `run_id`.
    pub fn with_run_id(
        traces: &Traces,
        seed: u64,
        batch_size: usize,
        run_id: u64,
    ) -> Result<Self, LoadgenError> {
        let reads = read_templates();
        let writes = write_templates(traces);
        if writes.is_empty() {
            return Err(LoadgenError::NoWrites {
                dir: traces.dir().to_path_buf(),
            });
        }
        let capacity = body_capacity(&reads, &writes, batch_size);
        Ok(Self {
            reads,
            writes,
            seed,
            batch_size,
            id_prefix: id_prefix(run_id),
            capacity,
        })
    }

    /// Events per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The number of distinct read and write templates.
    pub fn template_counts(&self) -> (usize, usize) {
        (self.reads.len(), self.writes.len())
    }

    /// Batch number `seq`: its events are chosen by (seed, seq), its auditIDs are
    /// `seq × batch_size + i` after the run's prefix, and its timestamps are `now`
    /// (`stageTimestamp`) and 3 ms earlier (`requestReceivedTimestamp`).
    pub fn batch(&self, seq: u64, now: OffsetDateTime) -> Vec<u8> {
        let stamps = Stamps::at(now);
        let mut rng = SplitMix::new(self.seed ^ seq.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let first_id = seq.wrapping_mul(self.batch_size as u64);
        let mut out = Vec::with_capacity(self.capacity);
        out.extend_from_slice(HEAD);
        for i in 0..self.batch_size {
            if i > 0 {
                out.push(b',');
            }
            let template = self.pick(rng.next());
            self.push_event(&mut out, template, first_id.wrapping_add(i as u64), &stamps);
        }
        out.extend_from_slice(TAIL);
        out
    }

    /// A read about 85% of the time, else a write; uniform among the templates of its kind.
    /// (There are always reads and writes: reads are built from constants, and
    /// [`Generator::new`] refuses traces without writes.)
    fn pick(&self, draw: u64) -> &Template {
        let index = (draw & 0xFFFF_FFFF) as usize;
        let is_write = (draw >> 32) % 10_000 < WRITE_SHARE_BP;
        if is_write {
            &self.writes[index % self.writes.len()]
        } else {
            &self.reads[index % self.reads.len()]
        }
    }

    /// Appends one event: the spliced fields, then the template's own.
    fn push_event(&self, out: &mut Vec<u8>, template: &Template, id: u64, stamps: &Stamps) {
        out.extend_from_slice(br#"{"auditID":""#);
        out.extend_from_slice(&self.id_prefix);
        push_hex(out, id, COUNTER_DIGITS);
        out.extend_from_slice(br#"","requestReceivedTimestamp":""#);
        out.extend_from_slice(stamps.received.as_bytes());
        out.extend_from_slice(br#"","stageTimestamp":""#);
        out.extend_from_slice(stamps.stage.as_bytes());
        out.extend_from_slice(br#"","#);
        out.extend_from_slice(&template.rest);
    }
}

/// The two timestamps of a batch, formatted once.
struct Stamps {
    received: String,
    stage: String,
}

impl Stamps {
    fn at(now: OffsetDateTime) -> Self {
        let now = now.to_offset(UtcOffset::UTC);
        Self {
            received: stamp(now - RECEIVED_BEFORE),
            stage: stamp(now),
        }
    }
}

/// `time` as `2026-11-20T10:15:02.131902Z`; years outside 0–9999 cannot be written and
/// fall back to the epoch.
fn stamp(time: OffsetDateTime) -> String {
    time.format(STAMP)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
}

/// Appends the low `digits` hex digits of `n`.
fn push_hex(out: &mut Vec<u8>, n: u64, digits: usize) {
    for shift in (0..digits).rev() {
        out.push(HEX[((n >> (shift * 4)) & 0xF) as usize]);
    }
}

/// `xxxxxxxx-xxxx-4xxx-yxxx-` from `run_id`: a version-4 UUID's shape, its last group left
/// for the counter.
fn id_prefix(run_id: u64) -> [u8; ID_PREFIX_LEN] {
    let mut rng = SplitMix::new(run_id);
    let (a, b) = (rng.next(), rng.next());
    let mut text = Vec::with_capacity(ID_PREFIX_LEN);
    push_hex(&mut text, a >> 32, 8);
    text.push(b'-');
    push_hex(&mut text, a >> 16, 4);
    text.extend_from_slice(b"-4");
    push_hex(&mut text, b >> 52, 3);
    text.push(b'-');
    text.push(HEX[8 + ((b >> 48) & 0x3) as usize]);
    push_hex(&mut text, b >> 36, 3);
    text.push(b'-');
    let mut prefix = [b'0'; ID_PREFIX_LEN];
    prefix.copy_from_slice(&text);
    prefix
}

/// Bodies start with room for at most this much; larger ones grow as they are written.
const MAX_CAPACITY: usize = 64 << 20;

/// A batch's expected size: the templates' mean size weighted by the mix, plus the
/// spliced fields, times the batch size (at most [`MAX_CAPACITY`]).
fn body_capacity(reads: &[Template], writes: &[Template], batch_size: usize) -> usize {
    let mean = |t: &[Template]| t.iter().map(|t| t.rest.len()).sum::<usize>() / t.len().max(1);
    let per_event = (mean(reads) * 85 + mean(writes) * 15) / 100 + 128;
    (HEAD.len() + TAIL.len())
        .saturating_add(per_event.saturating_mul(batch_size))
        .min(MAX_CAPACITY)
}

/// SplitMix64: a small, fast, seedable generator (Steele, Lea and Flood, 2014).
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// An event as JSON without its spliced fields, kept only if it decodes as an [`Event`].
fn template(mut event: Map<String, Value>) -> Option<Template> {
    for key in SPLICED {
        event.remove(key);
    }
    let text = serde_json::to_string(&Value::Object(event)).ok()?;
    serde_json::from_str::<Event>(&text).ok()?;
    let rest = text.strip_prefix('{')?;
    (rest != "}").then(|| Template {
        rest: rest.as_bytes().into(),
    })
}

/// The write events of the Falco traces: every line that parses as a JSON object whose
/// verb is a write. Lines that do not parse (the traces include a malformed one) are skipped.
fn write_templates(traces: &Traces) -> Vec<Template> {
    traces
        .lines()
        .filter_map(|line| serde_json::from_str::<Map<String, Value>>(line).ok())
        .filter(|event| {
            event
                .get("verb")
                .and_then(Value::as_str)
                .is_some_and(|verb| WRITE_VERBS.contains(&verb))
        })
        .filter_map(template)
        .collect()
}

/// Who reads: kubelets, controllers and cluster add-ons.
struct Actor {
    username: &'static str,
    /// Empty for users without one (nodes, the controller-manager's own identity).
    uid: &'static str,
    groups: &'static [&'static str],
    /// `authentication.kubernetes.io/credential-id` of a bound service-account token; empty: none.
    credential: &'static str,
    user_agent: &'static str,
    source_ip: &'static str,
    /// The RBAC binding that allows it; empty: the Node authorizer (which gives no reason).
    binding: &'static str,
}

const NODE_GROUPS: &[&str] = &["system:nodes", "system:authenticated"];
const SA_GROUPS: &[&str] = &[
    "system:serviceaccounts",
    "system:serviceaccounts:kube-system",
    "system:authenticated",
];
const KCM_UA: &str = "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46";
const KUBELET_UA: &str = "kubelet/v1.31.2 (linux/amd64) kubernetes/5864a46";

const ACTORS: &[Actor] = &[
    kubelet("system:node:worker-1", "10.0.0.21"),
    kubelet("system:node:worker-2", "10.0.0.22"),
    kubelet("system:node:worker-3", "10.0.0.23"),
    controller(
        "replicaset-controller",
        "system:serviceaccount:kube-system:replicaset-controller",
        "e500bddf-37b0-4307-8f0f-4c3c2052e52b",
    ),
    controller(
        "deployment-controller",
        "system:serviceaccount:kube-system:deployment-controller",
        "0b1c6f7e-5a2d-4c1b-9e8f-3d2a1b0c9e8d",
    ),
    controller(
        "endpointslice-controller",
        "system:serviceaccount:kube-system:endpointslice-controller",
        "7f3e2d1c-0b9a-4876-a5b4-c3d2e1f0a9b8",
    ),
    controller(
        "generic-garbage-collector",
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "2c4e6a8b-1d3f-4b5a-8c7e-9f0a1b2c3d4e",
    ),
    Actor {
        username: "system:kube-controller-manager",
        uid: "",
        groups: &["system:authenticated"],
        credential: "",
        user_agent: "kube-controller-manager/v1.31.2 (linux/amd64) kubernetes/5864a46/shared-informers",
        source_ip: "10.0.0.10",
        binding: "system:kube-controller-manager",
    },
    Actor {
        username: "system:kube-scheduler",
        uid: "",
        groups: &["system:authenticated"],
        credential: "",
        user_agent: "kube-scheduler/v1.31.2 (linux/amd64) kubernetes/5864a46/scheduler",
        source_ip: "10.0.0.10",
        binding: "system:kube-scheduler",
    },
    Actor {
        username: "system:serviceaccount:kube-system:coredns",
        uid: "5d4c3b2a-1908-4f7e-b6d5-c4b3a2918f7e",
        groups: SA_GROUPS,
        credential: "JTI=8e7d6c5b-4a39-4281-b0f9-e8d7c6b5a493",
        user_agent: "coredns/v1.11.3 (linux/amd64) kubernetes/5864a46",
        source_ip: "10.244.1.7",
        binding: "system:coredns",
    },
];

const fn kubelet(username: &'static str, source_ip: &'static str) -> Actor {
    Actor {
        username,
        uid: "",
        groups: NODE_GROUPS,
        credential: "",
        user_agent: KUBELET_UA,
        source_ip,
        binding: "",
    }
}

const fn controller(name: &'static str, username: &'static str, uid: &'static str) -> Actor {
    Actor {
        username,
        uid,
        groups: SA_GROUPS,
        credential: "JTI=54a5054c-da2e-4003-9e0e-14ca778e6176",
        user_agent: KCM_UA,
        source_ip: "10.0.0.10",
        binding: name,
    }
}

/// What is read.
struct Resource {
    plural: &'static str,
    /// API group; empty for the core group.
    group: &'static str,
    /// The namespace it lives in when it has a usual one; `None` for cluster-scoped resources.
    home: Option<&'static str>,
    namespaced: bool,
    names: [&'static str; 2],
}

const RESOURCES: &[Resource] = &[
    namespaced("pods", "", ["api-5f6c8d9b7-x2kqz", "web-7d4b9c-8mzqp"]),
    Resource {
        plural: "nodes",
        group: "",
        home: None,
        namespaced: false,
        names: ["worker-1", "worker-2"],
    },
    namespaced("configmaps", "", ["kube-root-ca.crt", "app-config"]),
    namespaced("secrets", "", ["db-password", "registry-credentials"]),
    Resource {
        plural: "leases",
        group: "coordination.k8s.io",
        home: Some("kube-node-lease"),
        namespaced: true,
        names: ["worker-1", "worker-3"],
    },
    namespaced("endpoints", "", ["api", "kubernetes"]),
    namespaced("deployments", "apps", ["api", "web"]),
    namespaced(
        "events",
        "",
        ["api-5f6c8d9b7-x2kqz.1801b8f8c4a2", "web.1801b8f9d0e1"],
    ),
];

const fn namespaced(
    plural: &'static str,
    group: &'static str,
    names: [&'static str; 2],
) -> Resource {
    Resource {
        plural,
        group,
        home: None,
        namespaced: true,
        names,
    }
}

const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "payments",
    "shop",
    "monitoring",
    "ingress-nginx",
];

/// The kinds of read each (actor, resource) pair makes.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// A get of the resource's first name.
    Get,
    /// A get of its second name, sometimes answered 404.
    GetOther,
    /// A list.
    List,
    /// A watch, at its start.
    WatchStarted,
    /// A watch, at its end.
    WatchComplete,
}

const READS: [Read; 5] = [
    Read::Get,
    Read::GetOther,
    Read::List,
    Read::WatchStarted,
    Read::WatchComplete,
];

/// One template per actor, resource and kind of read.
fn read_templates() -> Vec<Template> {
    let mut out = Vec::with_capacity(ACTORS.len() * RESOURCES.len() * READS.len());
    for (a, actor) in ACTORS.iter().enumerate() {
        for (r, resource) in RESOURCES.iter().enumerate() {
            for (k, read) in READS.iter().enumerate() {
                let namespace = namespace_for(resource, a * 3 + r * 5 + k);
                let not_found = matches!(read, Read::GetOther) && (a + r) % 4 == 0;
                let event = read_event(actor, resource, *read, namespace, not_found);
                if let Value::Object(map) = event
                    && let Some(t) = template(map)
                {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// The resource's namespace: its home, else one of [`NAMESPACES`] by `spread`; `None` when
/// it is cluster-scoped.
fn namespace_for(resource: &Resource, spread: usize) -> Option<&'static str> {
    match (resource.namespaced, resource.home) {
        (false, _) => None,
        (true, Some(home)) => Some(home),
        (true, None) => Some(NAMESPACES[spread % NAMESPACES.len()]),
    }
}

/// One Metadata-level read event as the apiserver records it.
fn read_event(
    actor: &Actor,
    resource: &Resource,
    read: Read,
    namespace: Option<&str>,
    not_found: bool,
) -> Value {
    let name = match read {
        Read::Get => resource.names[0],
        Read::GetOther => resource.names[1],
        Read::List | Read::WatchStarted | Read::WatchComplete => "",
    };
    let (verb, stage, query) = match read {
        Read::Get | Read::GetOther => ("get", "ResponseComplete", "?timeout=10s"),
        Read::List => ("list", "ResponseComplete", "?limit=500&resourceVersion=0"),
        Read::WatchStarted => ("watch", "ResponseStarted", WATCH_QUERY),
        Read::WatchComplete => ("watch", "ResponseComplete", WATCH_QUERY),
    };
    let mut object_ref = json!({"resource": resource.plural, "apiVersion": "v1"});
    insert_nonempty(&mut object_ref, "namespace", namespace.unwrap_or(""));
    insert_nonempty(&mut object_ref, "name", name);
    insert_nonempty(&mut object_ref, "apiGroup", resource.group);
    json!({
        "level": "Metadata",
        "stage": stage,
        "requestURI": format!("{}{query}", request_path(resource, namespace, name)),
        "verb": verb,
        "user": user(actor),
        "sourceIPs": [actor.source_ip],
        "userAgent": actor.user_agent,
        "objectRef": object_ref,
        "responseStatus": response_status(resource, name, not_found),
        "annotations": {
            "authorization.k8s.io/decision": "allow",
            "authorization.k8s.io/reason": rbac_reason(actor),
        },
    })
}

const WATCH_QUERY: &str =
    "?allowWatchBookmarks=true&resourceVersion=4821120&timeout=9m12s&timeoutSeconds=552&watch=true";

/// `/api/v1/namespaces/NS/pods/NAME` or `/apis/GROUP/v1/…`.
fn request_path(resource: &Resource, namespace: Option<&str>, name: &str) -> String {
    let mut path = match resource.group {
        "" => "/api/v1".to_owned(),
        group => format!("/apis/{group}/v1"),
    };
    if let Some(ns) = namespace {
        path.push_str("/namespaces/");
        path.push_str(ns);
    }
    path.push('/');
    path.push_str(resource.plural);
    if !name.is_empty() {
        path.push('/');
        path.push_str(name);
    }
    path
}

fn user(actor: &Actor) -> Value {
    let mut user = json!({"username": actor.username, "groups": actor.groups});
    insert_nonempty(&mut user, "uid", actor.uid);
    if !actor.credential.is_empty() {
        user["extra"] = json!({"authentication.kubernetes.io/credential-id": [actor.credential]});
    }
    user
}

fn response_status(resource: &Resource, name: &str, not_found: bool) -> Value {
    if not_found {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("{} \"{name}\" not found", resource.plural),
            "reason": "NotFound",
            "details": {"name": name, "kind": resource.plural},
            "code": 404,
        })
    } else {
        json!({"metadata": {}, "code": 200})
    }
}

fn rbac_reason(actor: &Actor) -> String {
    match (actor.binding, actor.username.rsplit_once(':')) {
        ("", _) => String::new(),
        (binding, Some((_, sa))) if actor.username.starts_with("system:serviceaccount:") => {
            format!(
                "RBAC: allowed by ClusterRoleBinding \"system:controller:{binding}\" of ClusterRole \"system:controller:{binding}\" to ServiceAccount \"{sa}/kube-system\""
            )
        }
        (binding, _) => format!(
            "RBAC: allowed by ClusterRoleBinding \"{binding}\" of ClusterRole \"{binding}\" to User \"{}\"",
            actor.username
        ),
    }
}

fn insert_nonempty(object: &mut Value, key: &str, value: &str) {
    if !value.is_empty() {
        object[key] = Value::from(value);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde::Deserialize;
    use serde_json::value::RawValue;

    use klaxon::audit;

    use super::*;
    use crate::loadgen::{assert_names, test_generator, test_traces};

    const BATCH: usize = 400;

    #[derive(Deserialize)]
    struct RawList<'a> {
        #[serde(borrow)]
        items: Vec<&'a RawValue>,
    }

    fn is_write(event: &Event) -> bool {
        WRITE_VERBS.contains(&event.verb.as_str())
    }

    #[test]
    fn audit_ids_are_unique_across_many_batches() {
        let generator = test_generator(7, BATCH);
        let now = OffsetDateTime::now_utc();
        let mut ids = HashSet::new();
        for seq in 0..50 {
            let decoded = audit::decode(&generator.batch(seq, now));
            for event in decoded.events {
                assert_eq!(event.audit_id.len(), 36, "{}", event.audit_id);
                assert!(ids.insert(event.audit_id.clone()), "{}", event.audit_id);
            }
        }
        assert_eq!(ids.len(), 50 * BATCH);
    }

    #[test]
    fn two_runs_never_share_an_audit_id() {
        let now = OffsetDateTime::now_utc();
        let first = audit::decode(
            &Generator::with_run_id(test_traces(), 1, 10, 1)
                .unwrap()
                .batch(0, now),
        );
        let second = audit::decode(
            &Generator::with_run_id(test_traces(), 1, 10, 2)
                .unwrap()
                .batch(0, now),
        );
        let ids: HashSet<_> = first.events.iter().map(|e| &e.audit_id).collect();
        assert!(second.events.iter().all(|e| !ids.contains(&e.audit_id)));
    }

    #[test]
    fn bodies_decode_into_exactly_the_batch_with_fresh_timestamps() {
        let generator = test_generator(1, BATCH);
        let before = OffsetDateTime::now_utc();
        for seq in 0..10 {
            let body = generator.batch(seq, OffsetDateTime::now_utc());
            let typed: audit::EventList = serde_json::from_slice(&body).unwrap();
            assert_eq!(typed.kind, "EventList");
            assert_eq!(typed.items.map(|i| i.len()), Some(BATCH));
            let decoded = audit::decode(&body);
            assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
            assert_eq!(decoded.events.len(), BATCH);
            for event in &decoded.events {
                let stage = parse_time(&event.stage_timestamp);
                let received = parse_time(&event.request_received_timestamp);
                assert!(received < stage);
                assert!(stage >= before - Duration::milliseconds(1));
                assert!(stage <= OffsetDateTime::now_utc());
                assert_eq!(
                    event.stage_timestamp.len(),
                    "2026-11-20T10:15:02.131902Z".len()
                );
            }
        }
    }

    fn parse_time(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_mix_is_about_85_percent_reads_of_about_900_bytes() {
        let generator = test_generator(3, BATCH);
        let now = OffsetDateTime::now_utc();
        let (mut reads, mut writes, mut read_bytes) = (0usize, 0usize, 0usize);
        let mut writes_with_bodies = 0usize;
        let mut verbs = HashSet::new();
        let mut users = HashSet::new();
        let mut resources = HashSet::new();
        for seq in 0..50 {
            let body = generator.batch(seq, now);
            let raw: RawList = serde_json::from_slice(&body).unwrap();
            let decoded = audit::decode(&body);
            for (event, raw) in decoded.events.iter().zip(&raw.items) {
                verbs.insert(event.verb.clone());
                users.insert(event.user.username.clone());
                if let Some(r) = &event.object_ref {
                    resources.insert(r.resource.clone());
                }
                if is_write(event) {
                    writes += 1;
                    if event.request_object.is_some() && event.response_object.is_some() {
                        writes_with_bodies += 1;
                    }
                } else {
                    reads += 1;
                    read_bytes += raw.get().len();
                    assert_eq!(event.level, "Metadata");
                }
            }
        }
        let write_share = writes as f64 / (reads + writes) as f64;
        assert!((0.13..=0.17).contains(&write_share), "{write_share}");
        assert!(
            writes_with_bodies * 3 > writes,
            "{writes_with_bodies} of {writes}"
        );
        let mean = read_bytes / reads;
        eprintln!("write share {write_share:.3}, mean read size {mean} bytes");
        assert!((700..=1100).contains(&mean), "mean read size {mean}");
        for verb in ["get", "list", "watch", "create", "delete"] {
            assert!(verbs.contains(verb), "{verbs:?}");
        }
        assert!(users.contains("system:node:worker-1"));
        assert!(users.contains("system:serviceaccount:kube-system:replicaset-controller"));
        assert!(users.contains("system:kube-controller-manager"));
        assert!(resources.len() >= 8, "{resources:?}");
    }

    #[test]
    fn writes_come_from_every_usable_falco_trace_and_skip_malformed_lines() {
        let (reads, write_count) = test_generator(1, 1).template_counts();
        assert_eq!(reads, ACTORS.len() * RESOURCES.len() * READS.len());
        let writes = write_templates(test_traces());
        assert_eq!(writes.len(), write_count);
        let lines = test_traces()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        assert!(writes.len() >= 40, "{}", writes.len());
        assert!(writes.len() < lines, "{} of {lines}", writes.len());
        for t in &writes {
            let text = format!("{{{}", String::from_utf8_lossy(&t.rest));
            let event: Event = serde_json::from_str(&text).unwrap();
            assert!(WRITE_VERBS.contains(&event.verb.as_str()), "{}", event.verb);
            assert!(event.audit_id.is_empty() && event.stage_timestamp.is_empty());
        }
    }

    #[test]
    fn traces_without_a_write_event_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let read = r#"{"verb":"get","stage":"ResponseComplete","requestURI":"/api/v1/pods"}"#;
        std::fs::write(dir.path().join("reads.json"), format!("{read}\nnot json\n")).unwrap();
        let traces = Traces::load(dir.path()).unwrap();
        let err = Generator::new(&traces, 1, 10).unwrap_err();
        assert!(matches!(err, LoadgenError::NoWrites { .. }), "{err}");
        assert_names(&err, dir.path());
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let now = OffsetDateTime::now_utc();
        let summary = |generator: &Generator| -> Vec<(String, String)> {
            audit::decode(&generator.batch(4, now))
                .events
                .into_iter()
                .map(|e| (e.verb, e.request_uri))
                .collect()
        };
        let a = summary(&test_generator(11, 100));
        assert_eq!(a, summary(&test_generator(11, 100)));
        assert_ne!(a, summary(&test_generator(12, 100)));
    }

    #[test]
    fn audit_ids_are_uuid_shaped() {
        let generator = Generator::with_run_id(test_traces(), 5, 3, 99).unwrap();
        let decoded = audit::decode(&generator.batch(0x1234, OffsetDateTime::now_utc()));
        let id = &decoded.events[1].audit_id;
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(id.ends_with(&format!("{:012x}", 0x1234 * 3 + 1)), "{id}");
        assert_eq!(&id[14..15], "4");
    }
}
