//! Property tests for `klaxon::audit::decode`, the decoder every webhook request and
//! replayed log goes through:
//!
//! - (a) arbitrary input (random bytes with invalid UTF-8 and NUL up to 64 KiB, and a
//!   "token soup" of JSON fragments) never panics, and every error has a line ≥ 1 inside
//!   the input and a non-empty reason;
//! - (b) one mutation (truncate, flip/replace/insert/delete a byte, duplicate a line) of a
//!   valid JSON-lines log or EventList never panics, and events and errors account for the
//!   input as the decoder documents: a bad line or item costs only itself, an invalid
//!   document is one error, and every intact line or item still decodes to its event;
//! - (c) round trip: events with arbitrary strings (unicode, control characters, NUL) in
//!   auditID, verb, stage, user.username, objectRef.namespace/name, sourceIPs, annotations
//!   and an arbitrary JSON requestObject, serialized as a compact or pretty EventList, a
//!   JSON array or JSON lines, decode to the same events, with origins at their positions;
//! - (d) "JSON bombs" (`[[[…]]]`, `{"a":{"a":…}}` and mixtures, 10,000 and 1,000,000 deep,
//!   top-level, as an EventList item, inside requestObject/responseObject, in JSON lines)
//!   give the documented error or event without panicking or overflowing the stack.
//!
//! The checks in (a) and (b) share one oracle, [`check_accounting`], which states what the
//! decoder's documentation promises for any input (see the comments on it).
//!
//! Case counts (stated on each block): 512 + 768 + 1024 + 256 + 512 + 64 + 64 = 3,200 cases.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use klaxon::audit::{Decoded, Event, Location, ObjectReference, decode};
use klaxon::rules::ScriptEvent;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The reason the decoder gives for JSON that is not an object or array.
const NOT_AUDIT: &str = "expected an audit EventList, Event, array of events or JSON lines";

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Any string: any `char` at all (proptest's `char` favours ASCII, Latin-1 and special
/// characters, and reaches every plane: control characters, NUL, `\n`, quotes, backslashes,
/// astral planes), or one of a few strings that matter to JSON and to the decoder.
fn text() -> impl Strategy<Value = String> {
    const TRICKY: &[&str] = &[
        "",
        "EventList",
        "Event",
        "\"",
        "\\",
        "\\u0000",
        "\0",
        "\n",
        "\r\n",
        "\u{2028}\u{2029}",
        "\u{feff}",
        "ü",
        "🦀 ∑ 日本",
        "{\"a\":[1]}\n{",
        "system:serviceaccount:kube-system:default",
        "::1",
    ];
    prop_oneof![
        1 => select(TRICKY).prop_map(str::to_owned),
        3 => vec(any::<char>(), 0..16).prop_map(String::from_iter),
    ]
}

/// A JSON value without floats (serde_json without `float_roundtrip` may be off by one
/// ULP, which is serde_json's business, not the decoder's).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any string but the empty one (the fields every audit event has are never empty).
fn present(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// An EventList item (no kind/apiVersion) with arbitrary strings in the fields scripts read;
/// the five fields every audit event has are present.
fn event() -> impl Strategy<Value = Event> {
    (
        (text(), text(), text(), text(), text(), text()),
        proptest::option::of((text(), text(), text())),
        vec(text(), 0..3),
        vec(text(), 0..3),
        btree_map(text(), text(), 0..4),
        // A top-level `null` requestObject reads back as absent, so it is not generated.
        proptest::option::of(json_value().prop_filter("not null", |v| !v.is_null())),
    )
        .prop_map(
            |(
                (audit_id, verb, stage, username, level, uri),
                object_ref,
                ips,
                groups,
                notes,
                body,
            )| {
                let mut e = Event {
                    audit_id: present(audit_id),
                    verb: present(verb),
                    stage: present(stage),
                    level: present(level),
                    request_uri: present(uri),
                    source_ips: ips,
                    annotations: notes,
                    request_object: body.map(|v| serde_json::value::to_raw_value(&v).unwrap()),
                    ..Event::default()
                };
                e.user.username = username;
                e.user.groups = groups;
                e.object_ref = object_ref.map(|(resource, namespace, name)| ObjectReference {
                    resource,
                    namespace,
                    name,
                    ..ObjectReference::default()
                });
                e
            },
        )
}

/// The same event as a log line: with kind and apiVersion, as the log backend writes it.
fn as_log_event(event: &Event) -> Event {
    Event {
        kind: "Event".to_owned(),
        api_version: "audit.k8s.io/v1".to_owned(),
        ..event.clone()
    }
}

fn value_of(event: &Event) -> Value {
    serde_json::to_value(event).expect("an Event always serializes")
}

/// A decoded event as JSON to compare with the originals. A mutation can leave a body
/// the decoder keeps as raw text but serde_json cannot read back as a value (a number out
/// of range, `16e1775183924142871`): such an event equals no original.
fn decoded_value(event: &Event) -> Value {
    serde_json::to_value(event)
        .unwrap_or_else(|err| Value::String(format!("unreadable decoded event: {err}")))
}

fn event_list(items: &[Event], pretty: bool) -> Vec<u8> {
    let list = serde_json::json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "metadata": {},
        "items": items,
    });
    if pretty {
        serde_json::to_vec_pretty(&list).unwrap()
    } else {
        serde_json::to_vec(&list).unwrap()
    }
}

fn json_lines(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend(serde_json::to_vec(&as_log_event(e)).unwrap());
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// The oracle: what the decoder promises for any input
// ---------------------------------------------------------------------------------------

/// Lines and items whose events are known exactly: a line byte-identical to a generated
/// log line (or compact EventList), or an item byte-identical to a generated item.
#[derive(Default)]
struct Known {
    /// Trimmed line → its events and whether they are items of a list on that line.
    lines: HashMap<Vec<u8>, (Vec<Value>, bool)>,
    /// Raw text of an EventList/array item → its event.
    items: HashMap<String, Value>,
}

impl Known {
    fn of_lines(events: &[Event]) -> Self {
        let mut known = Known::default();
        for e in events {
            let e = as_log_event(e);
            known
                .lines
                .insert(serde_json::to_vec(&e).unwrap(), (vec![value_of(&e)], false));
        }
        known
    }

    fn of_list(items: &[Event]) -> Self {
        let mut known = Known::default();
        let values: Vec<Value> = items.iter().map(value_of).collect();
        for pretty in [false, true] {
            let text = event_list(items, pretty);
            let ListProbe { items: raw } = serde_json::from_slice(&text).unwrap();
            for (raw, value) in raw.unwrap().iter().zip(&values) {
                known.items.insert(raw.get().to_owned(), value.clone());
            }
        }
        known.lines.insert(event_list(items, false), (values, true));
        known
    }
}

/// The `items` of an object, read the way the decoder reads an EventList's items.
#[derive(Deserialize)]
struct ListProbe<'a> {
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

/// The `kind` of an object, read the way the decoder's `EventList` reads it.
#[derive(Deserialize)]
struct KindProbe {
    #[serde(default)]
    kind: String,
}

/// What kind of JSON a document or line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Json {
    /// Not well-formed: serde_json cannot even skip over it.
    Invalid,
    /// Well-formed for serde_json's skipping (which neither checks UTF-8 inside strings nor
    /// pairs `\uD800`-style surrogate escapes) but not as a value: a string holds invalid
    /// UTF-8 or an unpaired surrogate escape.
    Unrepresentable,
    /// Well-formed, and every string is Unicode (any depth).
    Valid,
}

fn classify(text: &[u8]) -> Json {
    if serde_json::from_slice::<IgnoredAny>(text).is_err() {
        return Json::Invalid;
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(_) => Json::Valid,
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => Json::Valid,
        Err(_) => Json::Unrepresentable,
    }
}

fn kind_is_event_list(text: &[u8]) -> bool {
    matches!(serde_json::from_slice::<KindProbe>(text), Ok(p) if p.kind == "EventList")
}

/// The documented JSON-lines rule (`is_json_lines` in src/audit/decode.rs): more than one
/// non-empty line, the first not opening an array, either the first is `{…}` on its own
/// line or the second starts with `{`, and the whole input is not one JSON value.
fn documented_json_lines(body: &[u8]) -> bool {
    let mut lines = body
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty());
    let (Some(first), Some(second)) = (lines.next(), lines.next()) else {
        return false;
    };
    let looks_like_lines = !first.starts_with(b"[")
        && ((first.starts_with(b"{") && first.ends_with(b"}")) || second.starts_with(b"{"));
    // One whole value (e.g. an EventList with one item per line) is a document.
    looks_like_lines && classify(body) == Json::Invalid
}

/// What the decoder produced, grouped by line.
struct Outcomes<'a> {
    decoded: &'a Decoded,
}

impl Outcomes<'_> {
    /// Events (with their origins) and errors whose line is `line`.
    fn at(&self, line: usize) -> (Vec<(Location, Value)>, Vec<&klaxon::audit::DecodeError>) {
        let events = self
            .decoded
            .origins
            .iter()
            .zip(&self.decoded.events)
            .filter(|(o, _)| o.line == line)
            .map(|(o, e)| (*o, decoded_value(e)))
            .collect();
        let errors = self
            .decoded
            .errors
            .iter()
            .filter(|e| e.location.line == line)
            .collect();
        (events, errors)
    }
}

/// Invariants that hold for every input.
fn check_generic(input: &[u8], d: &Decoded) -> Result<(), TestCaseError> {
    let lines = 1 + input.iter().filter(|b| **b == b'\n').count();
    prop_assert_eq!(
        d.events.len(),
        d.origins.len(),
        "origins run parallel to events"
    );
    for err in &d.errors {
        prop_assert!(
            (1..=lines).contains(&err.location.line),
            "error line {} outside 1..={lines}: {err}",
            err.location.line
        );
        prop_assert!(!err.reason.is_empty(), "empty reason: {err:?}");
    }
    for origin in &d.origins {
        prop_assert!(
            (1..=lines).contains(&origin.line),
            "origin {origin} outside 1..={lines}"
        );
    }
    // Events come in input order.
    let keys: Vec<(usize, usize)> = d
        .origins
        .iter()
        .map(|o| (o.line, o.item.unwrap_or(0)))
        .collect();
    prop_assert!(keys.is_sorted(), "origins out of order: {:?}", d.origins);
    Ok(())
}

/// The items of a valid list (EventList items or array) at `line`: each item is one event
/// at `item(line, i)` or one error with `item: Some(i)`, never both, never neither; an item
/// byte-identical to a known item decodes to exactly that event.
fn check_items(
    items: &[&RawValue],
    line: usize,
    events: &[(Location, Value)],
    errors: &[&klaxon::audit::DecodeError],
    known: &Known,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        events.len() + errors.len(),
        items.len(),
        "each of the {} items gives one event or one error",
        items.len()
    );
    let mut covered = vec![0u8; items.len()];
    for (origin, value) in events {
        prop_assert_eq!(origin.line, line);
        let Some(i) = origin.item else {
            return Err(TestCaseError::fail(format!(
                "item origin without index: {origin:?}"
            )));
        };
        prop_assert!(i < items.len());
        covered[i] += 1;
        if let Some(expected) = known.items.get(items[i].get()) {
            prop_assert_eq!(value, expected, "intact item {} decodes to its event", i);
        }
    }
    for err in errors {
        prop_assert!(
            err.location.line >= line,
            "item error before its list: {err}"
        );
        let Some(i) = err.location.item else {
            return Err(TestCaseError::fail(format!(
                "item error without index: {err}"
            )));
        };
        prop_assert!(i < items.len());
        covered[i] += 1;
        prop_assert!(
            !known.items.contains_key(items[i].get()),
            "intact item {i} reported as an error: {err}"
        );
    }
    prop_assert!(
        covered.iter().all(|c| *c == 1),
        "items covered {:?}",
        covered
    );
    Ok(())
}

/// Checks `decode(input)` against the decoder's documented behaviour:
///
/// - document mode (the JSON-lines rule does not hold): an invalid document is exactly one
///   error and no event; a valid list (array, or object with an `items` array) gives one
///   event or error per item; a valid object without items is one event or error, or
///   nothing when it is an empty EventList; other JSON is one error;
/// - JSON-lines mode: each non-empty line is judged on its own, the same way: an invalid
///   line is exactly one error at that line; a line that is not a list is one event or one
///   error at that line; nothing is reported on a blank line or outside the input;
/// - a line or item byte-identical to a known one decodes to exactly its known events.
fn check_accounting(input: &[u8], known: &Known) -> Result<Decoded, TestCaseError> {
    let d = decode(input);
    check_generic(input, &d)?;
    let body = input.strip_prefix(BOM).unwrap_or(input);
    let out = Outcomes { decoded: &d };
    if documented_json_lines(body) {
        let mut nonblank = Vec::new();
        for (index, line) in body.split(|b| *b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if !line.is_empty() {
                nonblank.push(index + 1);
                check_unit(line, index + 1, true, &out, known)?;
            }
        }
        for o in &d.origins {
            prop_assert!(nonblank.contains(&o.line), "event on a blank line: {o}");
        }
        for e in &d.errors {
            prop_assert!(
                nonblank.contains(&e.location.line),
                "error on a blank line: {e}"
            );
        }
    } else {
        let doc = body.trim_ascii_start();
        let doc_line = 1 + body[..body.len() - doc.len()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        if doc.is_empty() {
            prop_assert!(d.events.is_empty() && d.errors.is_empty());
        } else {
            check_unit(doc, doc_line, false, &out, known)?;
            // Nothing is reported before the document starts.
            prop_assert!(d.origins.iter().all(|o| o.line >= doc_line));
            prop_assert!(d.errors.iter().all(|e| e.location.line >= doc_line));
        }
    }
    Ok(d)
}

/// One line (in JSON-lines mode) or the whole document starting at `line`.
fn check_unit(
    text: &[u8],
    line: usize,
    lines_mode: bool,
    out: &Outcomes<'_>,
    known: &Known,
) -> Result<(), TestCaseError> {
    let (events, errors) = if lines_mode {
        out.at(line)
    } else {
        (
            out.decoded
                .origins
                .iter()
                .copied()
                .zip(out.decoded.events.iter().map(decoded_value))
                .collect(),
            out.decoded.errors.iter().collect(),
        )
    };
    if lines_mode && let Some((expected, is_list)) = known.lines.get(text) {
        prop_assert!(
            errors.is_empty(),
            "intact line {line} has errors: {errors:?}"
        );
        let values: Vec<&Value> = events.iter().map(|(_, v)| v).collect();
        prop_assert_eq!(values, expected.iter().collect::<Vec<_>>());
        for (i, (origin, _)) in events.iter().enumerate() {
            let want = if *is_list {
                Location::item(line, i)
            } else {
                Location::line(line)
            };
            prop_assert_eq!(*origin, want);
        }
        return Ok(());
    }
    match classify(text) {
        Json::Valid => {}
        // An item with an unpaired surrogate escape costs only itself (tests/it/decode.rs);
        // invalid UTF-8 makes the text invalid JSON anyway. Only the generic checks apply.
        Json::Unrepresentable => return Ok(()),
        Json::Invalid => {
            prop_assert!(events.is_empty(), "invalid JSON at line {line} gave events");
            prop_assert_eq!(
                errors.len(),
                1,
                "invalid JSON at line {} is one error",
                line
            );
            prop_assert!(errors[0].location.line >= line && errors[0].location.item.is_none());
            if lines_mode {
                prop_assert_eq!(errors[0].location.line, line);
            }
            return Ok(());
        }
    }
    match text[0] {
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_slice(text).unwrap();
            check_items(&items, line, &events, &errors, known)?;
        }
        b'{' if lines_mode => {
            // A line that is not an EventList is one Event or one error.
            if !kind_is_event_list(text) {
                prop_assert_eq!(
                    events.len() + errors.len(),
                    1,
                    "line {} is one outcome",
                    line
                );
                for (origin, _) in &events {
                    prop_assert_eq!(*origin, Location::line(line));
                }
                for err in &errors {
                    prop_assert_eq!(err.location.line, line);
                    prop_assert!(err.location.item.is_none());
                }
            }
        }
        b'{' => match serde_json::from_slice::<ListProbe<'_>>(text) {
            Ok(ListProbe { items: Some(items) }) => {
                check_items(&items, line, &events, &errors, known)?;
            }
            Ok(ListProbe { items: None }) => {
                // An EventList without items is empty; any other object is one Event.
                let want = usize::from(!kind_is_event_list(text));
                prop_assert_eq!(events.len() + errors.len(), want);
                for (origin, _) in &events {
                    prop_assert_eq!(*origin, Location::line(line));
                }
            }
            Err(_) => {
                // `items` is not a list: the document is one error.
                prop_assert!(events.is_empty());
                prop_assert_eq!(errors.len(), 1);
            }
        },
        _ => {
            prop_assert!(events.is_empty());
            prop_assert_eq!(errors.len(), 1);
            prop_assert_eq!(&errors[0].reason, NOT_AUDIT);
            prop_assert_eq!(errors[0].location, Location::line(line));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (a) Arbitrary input
// ---------------------------------------------------------------------------------------

/// Random bytes: mostly short, some up to 4 KiB, some up to 64 KiB; plus a few fixed
/// prefixes (BOM, `{`, `[`) so the interesting branches are reached.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![
        8 => vec(any::<u8>(), 0..256),
        3 => vec(any::<u8>(), 0..4096),
        1 => vec(any::<u8>(), 0..=65_536),
    ];
    let prefix = select(vec![&b""[..], BOM, b"{", b"[", b"\n", b"{}\n", b"{\"a\":"]);
    (prefix, body).prop_map(|(p, b)| [p, &b].concat())
}

/// JSON fragments glued at random: reaches every branch of the decoder (lists, lines,
/// lenient lists, bad items, non-audit JSON, blank lines, CR LF, BOM, NUL, invalid UTF-8).
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\n",
        "\r\n",
        " ",
        "\t",
        "\u{c}",
        "\0",
        "\u{feff}",
        "null",
        "0",
        "-1",
        "1e999",
        "true",
        "\"EventList\"",
        "\"kind\":",
        "\"items\":",
        "\"auditID\":",
        "\"verb\":",
        "\"user\":",
        "\"requestObject\":",
        "\"annotations\":",
        "\"x\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "{\"kind\":\"EventList\",\"items\":[",
        "{\"kind\":\"EventList\"}",
        "{\"auditID\":\"a\",\"verb\":\"get\"}",
        "{\"auditID\":\"b\",\"user\":{\"username\":\"ü\"}}",
        "{\"auditID\":\"c\",\"verb\":0}",
        "{\"kind\":\"Event\",\"auditID\":\"d\"}",
        "[{\"auditID\":\"e\"},{\"verb\":[]}]",
    ];
    let token = prop_oneof![
        10 => select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 1..4),
    ];
    vec(token, 0..48).prop_map(|ts| ts.concat())
}

proptest! {
    // 512 cases: random bytes up to 64 KiB (about 1 in 12 is 4 KiB..64 KiB).
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_are_accounted_for(input in random_bytes()) {
        check_accounting(&input, &Known::default())?;
    }
}

proptest! {
    // 768 cases: concatenations of up to 48 JSON fragments.
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn json_fragments_never_panic_and_are_accounted_for(input in token_soup()) {
        check_accounting(&input, &Known::default())?;
    }
}

// ---------------------------------------------------------------------------------------
// (b) Mutations of valid input
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only the bytes before the index.
    Truncate(Index),
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Replace one byte by another (often a structural character).
    Replace(Index, u8),
    /// Insert a byte (index over len + 1).
    Insert(Index, u8),
    /// Delete one byte.
    Delete(Index),
    /// Repeat one `\n`-separated line right after itself.
    DuplicateLine(Index),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        2 => any::<u8>(),
        3 => select(b"\n{}[]\",:\\ 0\x00\xff".to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::DuplicateLine),
    ]
}

impl Mutation {
    /// Applies the mutation to a non-empty input.
    fn apply(&self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        match self {
            Mutation::Truncate(i) => out.truncate(i.index(input.len())),
            Mutation::Flip(i, mask) => out[i.index(input.len())] ^= mask,
            Mutation::Replace(i, b) => out[i.index(input.len())] = *b,
            Mutation::Insert(i, b) => out.insert(i.index(input.len() + 1), *b),
            Mutation::Delete(i) => {
                out.remove(i.index(input.len()));
            }
            Mutation::DuplicateLine(i) => {
                let mut lines: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
                let at = i.index(lines.len());
                lines.insert(at, lines[at]);
                out = lines.join(&b'\n');
            }
        }
        out
    }
}

/// How many decoded events equal one of `originals`.
fn surviving(d: &Decoded, originals: &[Value]) -> usize {
    d.events
        .iter()
        .filter(|e| originals.contains(&decoded_value(e)))
        .count()
}

proptest! {
    // 1024 cases: one mutation of a 3..7-line JSON-lines log.
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn mutated_json_lines_lose_only_the_lines_they_touch(
        events in vec(event(), 3..8),
        m in mutation(),
    ) {
        let input = m.apply(&json_lines(&events));
        let d = check_accounting(&input, &Known::of_lines(&events))?;
        // One mutation touches at most two lines (deleting or replacing a `\n` merges two);
        // every other line is intact and decodes, as long as the input is still JSON lines.
        if documented_json_lines(&input) && !matches!(m, Mutation::Truncate(_)) {
            let originals: Vec<Value> = events.iter().map(|e| value_of(&as_log_event(e))).collect();
            let kept = surviving(&d, &originals);
            prop_assert!(
                kept >= events.len() - 2,
                "{kept} of {} lines survived {m:?}; errors: {:?}",
                events.len(),
                d.errors
            );
        }
    }
}

proptest! {
    // 256 cases: one mutation of a compact or pretty EventList of 1..5 items.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_event_lists_lose_at_most_one_item(
        items in vec(event(), 1..6),
        pretty in any::<bool>(),
        m in mutation(),
    ) {
        let input = m.apply(&event_list(&items, pretty));
        let d = check_accounting(&input, &Known::of_list(&items))?;
        // Still a valid EventList with all its items: one bad item costs only itself.
        let still_list = !documented_json_lines(&input)
            && classify(&input) == Json::Valid
            && matches!(
                serde_json::from_slice::<ListProbe<'_>>(&input),
                Ok(ListProbe { items: Some(ref raw) }) if raw.len() == items.len()
            );
        if still_list {
            let originals: Vec<Value> = items.iter().map(value_of).collect();
            prop_assert!(
                surviving(&d, &originals) >= items.len() - 1,
                "{m:?} cost more than one item: {:?}",
                d.errors
            );
        }
        // Invalid JSON in one document is exactly one error and no event.
        if !documented_json_lines(&input) && !input.trim_ascii().is_empty() && classify(input.trim_ascii_start()) == Json::Invalid {
            prop_assert!(d.events.is_empty());
            prop_assert_eq!(d.errors.len(), 1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// (c) Round trip
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Shape {
    EventList {
        pretty: bool,
    },
    Array,
    /// JSON lines; blank (whitespace-only) lines before each event, CR LF or LF, and
    /// whether the last line ends with a newline.
    Lines {
        blanks: Vec<u8>,
        crlf: bool,
        trailing: bool,
    },
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        any::<bool>().prop_map(|pretty| Shape::EventList { pretty }),
        Just(Shape::Array),
        (vec(0..3u8, 8), any::<bool>(), any::<bool>()).prop_map(|(blanks, crlf, trailing)| {
            Shape::Lines {
                blanks,
                crlf,
                trailing,
            }
        }),
    ]
}

/// Serializes `events` in `shape`; returns the input, the expected events and origins.
fn serialize(events: &[Event], shape: &Shape) -> (Vec<u8>, Vec<Value>, Vec<Location>) {
    match shape {
        Shape::EventList { pretty } => (
            event_list(events, *pretty),
            events.iter().map(value_of).collect(),
            (0..events.len()).map(|i| Location::item(1, i)).collect(),
        ),
        Shape::Array => (
            serde_json::to_vec(events).unwrap(),
            events.iter().map(value_of).collect(),
            (0..events.len()).map(|i| Location::item(1, i)).collect(),
        ),
        Shape::Lines {
            blanks,
            crlf,
            trailing,
        } => {
            let eol: &[u8] = if *crlf { b"\r\n" } else { b"\n" };
            let mut input = Vec::new();
            let mut origins = Vec::new();
            let mut line = 1;
            for (i, e) in events.iter().enumerate() {
                for _ in 0..blanks[i % blanks.len()] {
                    input.extend_from_slice(b" \t");
                    input.extend_from_slice(eol);
                    line += 1;
                }
                origins.push(Location::line(line));
                input.extend(serde_json::to_vec(&as_log_event(e)).unwrap());
                if i + 1 < events.len() || *trailing {
                    input.extend_from_slice(eol);
                }
                line += 1;
            }
            let expected = events.iter().map(|e| value_of(&as_log_event(e))).collect();
            (input, expected, origins)
        }
    }
}

proptest! {
    // 512 cases: 0..5 events with arbitrary strings, in one of four shapes.
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn events_round_trip_through_every_shape(events in vec(event(), 0..6), shape in shape()) {
        let (input, expected, origins) = serialize(&events, &shape);
        let d = decode(&input);
        prop_assert!(d.errors.is_empty(), "errors: {:?}", d.errors);
        prop_assert_eq!(d.events.len(), expected.len());
        for ((got, want), orig) in d.events.iter().zip(&expected).zip(&events) {
            // Field by field for the fields scripts read, then the whole event.
            prop_assert_eq!(&got.audit_id, &orig.audit_id);
            prop_assert_eq!(&got.verb, &orig.verb);
            prop_assert_eq!(&got.stage, &orig.stage);
            prop_assert_eq!(&got.user.username, &orig.user.username);
            prop_assert_eq!(&got.source_ips, &orig.source_ips);
            prop_assert_eq!(&got.annotations, &orig.annotations);
            prop_assert_eq!(
                got.object_ref.as_ref().map(|r| (&r.namespace, &r.name)),
                orig.object_ref.as_ref().map(|r| (&r.namespace, &r.name))
            );
            prop_assert_eq!(
                got.request_object.as_ref().map(|r| serde_json::from_str::<Value>(r.get()).unwrap()),
                orig.request_object.as_ref().map(|r| serde_json::from_str::<Value>(r.get()).unwrap())
            );
            prop_assert_eq!(&value_of(got), want);
        }
        prop_assert_eq!(d.origins, origins);
    }
}

// ---------------------------------------------------------------------------------------
// (d) Deep nesting
// ---------------------------------------------------------------------------------------

/// `depth` nested containers around `0`; `objects[i]` picks `{"a":…}` or `[…]` at level i.
fn nested(objects: &[bool]) -> String {
    let mut out = String::new();
    for &o in objects {
        out.push_str(if o { "{\"a\":" } else { "[" });
    }
    out.push('0');
    for &o in objects.iter().rev() {
        out.push(if o { '}' } else { ']' });
    }
    out
}

fn array_bomb(depth: usize) -> String {
    nested(&vec![false; depth])
}

fn object_bomb(depth: usize) -> String {
    nested(&vec![true; depth])
}

/// serde_json (without `unbounded_depth`, which nothing in the build enables) refuses to
/// build a value deeper than 128, but skips (`IgnoredAny`) and captures (`RawValue`) any
/// depth without recursing. The decoder relies on exactly this.
#[test]
fn serde_json_limits_recursion_when_building_values_only() {
    for bomb in [array_bomb(10_000), object_bomb(10_000)] {
        let err = serde_json::from_str::<Value>(&bomb).unwrap_err();
        assert!(
            err.to_string().contains("recursion limit exceeded"),
            "{err}"
        );
        assert!(serde_json::from_str::<IgnoredAny>(&bomb).is_ok());
        assert_eq!(
            serde_json::from_str::<&RawValue>(&bomb).unwrap().get(),
            bomb
        );
    }
}

/// A top-level array bomb is a JSON array whose single item is not an event (an array, not
/// an object): one error for item 0, no event.
#[test]
fn array_bomb_is_one_item_error() {
    for depth in [10_000, 1_000_000] {
        let d = decode(array_bomb(depth).as_bytes());
        assert!(d.events.is_empty());
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert_eq!(d.errors[0].location, Location::item(1, 0));
        assert_eq!(
            d.errors[0].reason,
            "not an audit event: an array, not an object"
        );
    }
}

/// A top-level object bomb is an object whose only key is unknown: the decoder (tolerant
/// of unknown fields, never recursing into them) finds no audit event in it and says
/// which fields are missing.
#[test]
fn object_bomb_is_not_an_audit_event() {
    for depth in [10_000, 1_000_000] {
        let d = decode(object_bomb(depth).as_bytes());
        assert!(d.events.is_empty(), "{:?}", d.events);
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].location, Location::line(1));
        assert!(
            d.errors[0]
                .reason
                .ends_with("missing auditID, stage, verb, requestURI, level"),
            "{}",
            d.errors[0].reason
        );
    }
}

/// A bomb in `requestObject`/`responseObject` is kept as raw JSON, so the event decodes;
/// when a script reads it, serde_json's recursion limit makes it `()` instead of a crash.
#[test]
fn bomb_in_request_object_decodes_and_reads_as_absent() {
    for bomb in [
        array_bomb(10_000),
        object_bomb(10_000),
        array_bomb(1_000_000),
    ] {
        let input = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"deep","requestObject":{bomb},"responseObject":{bomb}}}"#
        );
        let d = decode(input.as_bytes());
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(d.events.len(), 1);
        let event = &d.events[0];
        assert_eq!(event.audit_id, "deep");
        assert_eq!(event.request_object.as_ref().unwrap().get(), bomb);
        assert_eq!(event.response_object.as_ref().unwrap().get(), bomb);
        let script_event = ScriptEvent::new(Arc::new(event.clone()));
        assert!(script_event.request_object().is_none());
        assert!(script_event.response_object().is_none());
    }
}

/// A bomb where the Event has a typed field is a type error for that field only.
#[test]
fn bomb_in_typed_fields_is_a_type_error() {
    let bomb = object_bomb(10_000);
    for (field, reason) in [
        (
            "annotations",
            "annotations.k: invalid type: map, expected a string",
        ),
        (
            "user",
            "user.username: invalid type: map, expected a string",
        ),
        (
            "sourceIPs",
            "sourceIPs[0]: invalid type: map, expected a string",
        ),
    ] {
        let value = match field {
            // user.username, sourceIPs[0]: a bomb where a string is expected.
            "user" => format!(r#"{{"username":{bomb}}}"#),
            "sourceIPs" => format!("[{bomb}]"),
            _ => format!(r#"{{"k":{bomb}}}"#),
        };
        let input = format!(r#"{{"auditID":"x","{field}":{value}}}"#);
        let d = decode(input.as_bytes());
        assert!(d.events.is_empty(), "{field}");
        assert_eq!(d.errors.len(), 1, "{field}: {:?}", d.errors);
        assert_eq!(d.errors[0].reason, reason, "{field}");
    }
}

/// Bombs as EventList items and as JSON lines cost only their own item or line.
#[test]
fn bombs_cost_only_their_item_or_line() {
    let (arr, obj) = (array_bomb(10_000), object_bomb(10_000));
    let item =
        |id: &str| format!(r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"{id}"}}"#);
    let (a, b) = (item("a"), item("b"));
    let list = format!(r#"{{"kind":"EventList","items":[{a},{arr},{obj},{b}]}}"#);
    let d = decode(list.as_bytes());
    let ids: Vec<&str> = d.events.iter().map(|e| e.audit_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(d.origins, [Location::item(1, 0), Location::item(1, 3)]);
    let items: Vec<Option<usize>> = d.errors.iter().map(|e| e.location.item).collect();
    assert_eq!(items, [Some(1), Some(2)], "{:?}", d.errors);

    let lines = format!("{a}\n{arr}\n{obj}\n{b}\n");
    let d = decode(lines.as_bytes());
    let ids: Vec<&str> = d.events.iter().map(|e| e.audit_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(d.origins, [Location::line(1), Location::line(4)]);
    let at: Vec<Location> = d.errors.iter().map(|e| e.location).collect();
    assert_eq!(
        at,
        [Location::item(2, 0), Location::line(3)],
        "{:?}",
        d.errors
    );
}

proptest! {
    // 64 cases: mixed `[`/`{"a":` nesting, 1..20,000 deep, top-level.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mixed_bombs_give_the_documented_outcome(levels in vec(any::<bool>(), 1..20_000)) {
        let d = check_accounting(nested(&levels).as_bytes(), &Known::default())?;
        // An object with one unknown key, or an array of one item (an object with one
        // unknown key, or an array): never an audit event, always one error.
        prop_assert!(d.events.is_empty());
        prop_assert_eq!(d.errors.len(), 1);
    }
}

proptest! {
    // 64 cases: the same bombs inside requestObject, 1..20,000 deep.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mixed_bombs_in_request_object_decode(levels in vec(any::<bool>(), 1..20_000)) {
        let bomb = nested(&levels);
        let input = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"deep","requestObject":{bomb}}}"#
        );
        let d = decode(input.as_bytes());
        prop_assert!(d.errors.is_empty(), "{:?}", d.errors);
        prop_assert_eq!(d.events.len(), 1);
        let raw = d.events[0].request_object.as_ref().map(|r| r.get().to_owned());
        prop_assert_eq!(raw.as_deref(), Some(bomb.as_str()));
        // Shallow bodies are readable; deep ones read as absent (serde_json's limit is 128).
        let readable = ScriptEvent::new(Arc::new(d.events[0].clone())).request_object().is_some();
        if levels.len() <= 100 {
            prop_assert!(readable);
        } else if levels.len() > 200 {
            prop_assert!(!readable);
        }
    }
}

/// Generated inputs are what the tests think they are (guards the generators).
#[test]
fn generators_produce_documented_shapes() {
    let e = Event {
        audit_id: "a\nb\0ü".to_owned(),
        annotations: BTreeMap::from([("k".to_owned(), "\u{2028}".to_owned())]),
        ..Event::default()
    };
    let lines = json_lines(&[e.clone(), e.clone()]);
    assert!(documented_json_lines(&lines));
    assert_eq!(lines.iter().filter(|b| **b == b'\n').count(), 2);
    assert!(!documented_json_lines(&event_list(
        &[e.clone(), e.clone()],
        true
    )));
    assert!(!documented_json_lines(&event_list(
        std::slice::from_ref(&e),
        false
    )));
    assert_eq!(Known::of_list(&[e]).items.len(), 2);
}
