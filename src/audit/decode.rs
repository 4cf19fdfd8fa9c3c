//! Decoding of audit input by shape, not by version: an EventList, a single Event,
//! a JSON array of events, or JSON lines (the apiserver's log backend format); gzip'd or
//! not; and the cloud envelopes of `envelope.rs` around any of them.
//!
//! Only audit events are taken (`recognize.rs`). A bad line or item is reported with its
//! position and a short reason naming the field; the rest of the input still decodes.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::envelope::{self, is_object, strip_position};
use super::event::{Event, EventList};
use super::recognize;

/// How deep envelopes and gzip may nest (Firehose → gzip → subscription message → event is 3).
const MAX_DEPTH: u8 = 6;

/// Most bytes gzip'd parts of one input may inflate to, all together.
const INFLATE_LIMIT: usize = 256 << 20;

/// The events of one input and the problems found in it.
#[derive(Debug)]
pub struct Decoded {
    /// Events in input order.
    pub events: Vec<Event>,
    /// Where each event came from, parallel to `events`.
    pub origins: Vec<Location>,
    /// One entry per line or item that could not be decoded.
    pub errors: Vec<DecodeError>,
    /// Records an envelope marks as something else than audit events (other AKS log
    /// categories, other EKS log streams, CloudWatch control messages), left out.
    pub skipped: usize,
    depth: u8,
    inflate_left: usize,
}

impl Default for Decoded {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            origins: Vec::new(),
            errors: Vec::new(),
            skipped: 0,
            depth: 0,
            inflate_left: INFLATE_LIMIT,
        }
    }
}

impl Decoded {
    fn push(&mut self, event: Event, origin: Location) {
        self.events.push(event);
        self.origins.push(origin);
    }

    /// Takes an event when it is an audit event, else records why not.
    pub(super) fn take(&mut self, event: Event, origin: Location) {
        match recognize::check(&event) {
            Ok(()) => self.push(event, origin),
            Err(reason) => self.errors.push(DecodeError {
                location: origin,
                reason,
            }),
        }
    }

    /// Decodes an envelope's payload (`bytes`, perhaps gzip'd) like any input; its events
    /// and errors are placed at `location`, errors prefixed with `field` (the envelope and
    /// the field the payload is in) and, in a payload of many lines, the line.
    pub(super) fn decode_payload(&mut self, bytes: &[u8], location: Location, field: &str) {
        if self.depth >= MAX_DEPTH {
            self.errors.push(DecodeError {
                location,
                reason: format!("{field}: envelopes nested more than {MAX_DEPTH} deep"),
            });
            return;
        }
        let mut inner = Decoded {
            depth: self.depth + 1,
            inflate_left: self.inflate_left,
            ..Decoded::default()
        };
        decode_into(bytes, &mut inner);
        self.inflate_left = inner.inflate_left;
        self.skipped += inner.skipped;
        for event in inner.events {
            self.push(event, location);
        }
        for err in inner.errors {
            let line = match err.location.line {
                1 => String::new(),
                l => format!(" line {l}"),
            };
            self.errors.push(DecodeError {
                location,
                reason: format!("{field}{line}: {}", err.reason),
            });
        }
    }
}

/// Where in the input an event or a problem is: line (1-based), column, and EventList/array item (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line of the input.
    pub line: usize,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// 0-based index of the item in an EventList or array, when the problem is in one item.
    pub item: Option<usize>,
}

impl Location {
    /// The start of a line.
    pub fn line(line: usize) -> Self {
        Self {
            line,
            column: None,
            item: None,
        }
    }

    /// An item of the list that starts on `line`.
    pub fn item(line: usize, item: usize) -> Self {
        Self {
            line,
            column: None,
            item: Some(item),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(c) = self.column {
            write!(f, " column {c}")?;
        }
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        Ok(())
    }
}

/// A line or item that is not an audit event, with a short reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct DecodeError {
    /// Where the problem is.
    pub location: Location,
    /// What is wrong, e.g. `invalid type: integer `0`, expected a string`.
    pub reason: String,
}

impl DecodeError {
    fn from_json(err: &serde_json::Error, line_offset: usize, item: Option<usize>) -> Self {
        let reason = strip_position(err);
        let reason = if err.is_syntax() || err.is_eof() {
            format!("invalid JSON: {reason}")
        } else {
            reason.to_owned()
        };
        let (line, column) = match err.line() {
            0 => (line_offset.max(1), None),
            l => (line_offset + l - 1, Some(err.column())),
        };
        Self {
            location: Location { line, column, item },
            reason,
        }
    }
}

/// Decodes any supported audit input. Never fails as a whole: problems are listed in `errors`.
pub fn decode(input: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    decode_into(input, &mut out);
    out
}

fn decode_into(input: &[u8], out: &mut Decoded) {
    if input.starts_with(&GZIP_MAGIC) {
        match inflate(input, &mut out.inflate_left) {
            Ok(inflated) => out.decode_payload(&inflated, Location::line(1), "gzip"),
            Err(reason) => out.errors.push(DecodeError {
                location: Location::line(1),
                reason,
            }),
        }
        return;
    }
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    if is_json_lines(input) {
        for (index, line) in input.split(|b| *b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if !line.is_empty() {
                decode_line(line, index + 1, out);
            }
        }
    } else {
        decode_document(input, out);
    }
}

/// The first bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Inflates gzip (one member or several), charging `left`; an error past it.
fn inflate(gz: &[u8], left: &mut usize) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let limit = u64::try_from(*left).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(gz)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip: {e}"))?;
    if out.len() > *left {
        return Err(format!(
            "gzip: inflates past {} MiB, the most one input may inflate to",
            INFLATE_LIMIT >> 20
        ));
    }
    *left -= out.len();
    Ok(out)
}

/// JSON lines: more than one non-empty line, the first not opening an array, and either
/// the first is a whole object on its own or the second starts a new object (so a cut or
/// garbled first line does not hide the rest). A pretty-printed object's second line
/// starts with a key, never with `{`.
fn is_json_lines(input: &[u8]) -> bool {
    let mut lines = input
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty());
    let (Some(first), Some(second)) = (lines.next(), lines.next()) else {
        return false;
    };
    let looks_like_lines = !first.starts_with(b"[")
        && ((first.starts_with(b"{") && first.ends_with(b"}")) || second.starts_with(b"{"));
    // An EventList with one item per line looks the same: one whole value is a document.
    looks_like_lines && serde_json::from_slice::<serde::de::IgnoredAny>(input).is_err()
}

/// The reason given for input that is JSON but not an object or array.
const NOT_AUDIT: &str = "expected an audit EventList, Event, array of events or JSON lines";

/// A whole document; the apiserver's EventList is tried first as it is the common case.
/// Leading blank lines are skipped so that positions count from the document's first line.
fn decode_document(input: &[u8], out: &mut Decoded) {
    let input_start = input.len() - input.trim_ascii_start().len();
    let line_no = 1 + input[..input_start].iter().filter(|b| **b == b'\n').count();
    let doc = &input[input_start..];
    match doc.first() {
        None => {}
        Some(b'[') => decode_array(doc, line_no, out),
        Some(b'{') => decode_document_at(doc, line_no, out),
        Some(_) => out.errors.push(DecodeError {
            location: Location::line(line_no),
            reason: NOT_AUDIT.to_owned(),
        }),
    }
}

/// One JSON line: usually an Event, sometimes a whole EventList.
fn decode_line(line: &[u8], line_no: usize, out: &mut Decoded) {
    if line.starts_with(b"[") {
        decode_array(line, line_no, out);
        return;
    }
    if !line.starts_with(b"{") {
        let reason = match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            Ok(_) => NOT_AUDIT.to_owned(),
            Err(err) => DecodeError::from_json(&err, line_no, None).reason,
        };
        out.errors.push(DecodeError {
            location: Location::line(line_no),
            reason,
        });
        return;
    }
    match serde_json::from_slice::<Event>(line) {
        Ok(event) if event.kind == "EventList" => decode_document_at(line, line_no, out),
        // An EventList line whose `kind` we never reached still decodes as a list.
        Err(_) if looks_like_list(line) => decode_document_at(line, line_no, out),
        parsed => decode_object(line, parsed, Location::line(line_no), out, |err| {
            DecodeError::from_json(err, line_no, None)
        }),
    }
}

/// One object that is not an EventList: an audit event, an envelope, or an error naming
/// what is missing or wrong (for JSON that is no Event, at the position serde_json gives).
fn decode_object(
    input: &[u8],
    parsed: Result<Event, serde_json::Error>,
    at: Location,
    out: &mut Decoded,
    json_error: impl FnOnce(&serde_json::Error) -> DecodeError,
) {
    match parsed {
        Ok(event) if recognize::check(&event).is_ok() => out.push(event, at),
        _ if envelope::open(input, at, out) => {}
        Ok(event) => out.take(event, at),
        Err(err) => {
            let mut e = json_error(&err);
            e.reason = if err.is_data() && !is_object(input) {
                format!("not an audit event: {}, not an object", json_type(input))
            } else {
                with_field(input, e.reason, &err)
            };
            out.errors.push(e);
        }
    }
}

/// What kind of JSON value `input` starts.
fn json_type(input: &[u8]) -> &'static str {
    match input.trim_ascii_start().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// `reason` prefixed with the path of the field it is about (`user.groups[0]: …`), for
/// errors in the data rather than in the JSON syntax.
fn with_field(input: &[u8], reason: String, err: &serde_json::Error) -> String {
    if !err.is_data() {
        return reason;
    }
    let mut de = serde_json::Deserializer::from_slice(input);
    match serde_path_to_error::deserialize::<_, Event>(&mut de) {
        Err(e) if e.path().to_string() != "." => format!("{}: {reason}", e.path()),
        _ => reason,
    }
}

/// An object that may be an EventList or a single Event.
fn decode_document_at(input: &[u8], line_no: usize, out: &mut Decoded) {
    match serde_json::from_slice::<EventList>(input) {
        Ok(EventList {
            items: Some(items), ..
        }) => {
            for (i, event) in items.into_iter().enumerate() {
                out.take(event, Location::item(line_no, i));
            }
        }
        Ok(list) if list.kind == "EventList" => {}
        Ok(_) => decode_object(
            input,
            serde_json::from_slice::<Event>(input),
            Location::line(line_no),
            out,
            |err| DecodeError::from_json(err, line_no, None),
        ),
        // A bad item (a wrong type, or a string serde_json refuses such as an unpaired
        // surrogate escape) costs only itself when the list itself is well formed.
        Err(err) => {
            if !decode_lenient_list(input, line_no, out) {
                out.errors.push(DecodeError::from_json(&err, line_no, None));
            }
        }
    }
}

fn looks_like_list(input: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        kind: Option<&'a str>,
    }
    matches!(
        serde_json::from_slice::<Probe<'_>>(input),
        Ok(Probe {
            kind: Some("EventList")
        })
    )
}

/// An EventList with a bad item: decode item by item so one bad item costs only itself.
/// Returns false, recording nothing, when the list itself is not well formed.
fn decode_lenient_list(input: &[u8], line_no: usize, out: &mut Decoded) -> bool {
    #[derive(Deserialize)]
    struct RawList<'a> {
        #[serde(borrow, default)]
        items: Option<Vec<&'a RawValue>>,
    }
    match serde_json::from_slice::<RawList<'_>>(input) {
        Ok(RawList { items: Some(items) }) => {
            decode_items(input, &items, line_no, out);
            true
        }
        Ok(RawList { items: None }) => false,
        Err(_) => false,
    }
}

fn decode_array(input: &[u8], line_no: usize, out: &mut Decoded) {
    match serde_json::from_slice::<Vec<&RawValue>>(input) {
        Ok(items) => decode_items(input, &items, line_no, out),
        Err(err) => out.errors.push(DecodeError::from_json(&err, line_no, None)),
    }
}

/// Decodes the items of a list one by one; a bad item's line is its line in `input`.
fn decode_items(input: &[u8], items: &[&RawValue], line_no: usize, out: &mut Decoded) {
    for (index, raw) in items.iter().enumerate() {
        let text = raw.get();
        let parsed = serde_json::from_str::<Event>(text);
        decode_object(
            text.as_bytes(),
            parsed,
            Location::item(line_no, index),
            out,
            |err| {
                let offset = (text.as_ptr() as usize).saturating_sub(input.as_ptr() as usize);
                let before = input.get(..offset).unwrap_or_default();
                let item_line = line_no + before.iter().filter(|b| **b == b'\n').count();
                let mut e = DecodeError::from_json(err, item_line, Some(index));
                e.location.column = Some(err.column()).filter(|_| err.line() > 1);
                e
            },
        );
    }
}
