//! Decoding of audit input by shape, not by version: an EventList, a single Event,
//! a JSON array of events, or JSON lines (the apiserver's log backend format).
//!
//! A bad line or item is reported with its position and a short reason; the rest
//! of the input still decodes.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::event::{Event, EventList};

/// The events of one input and the problems found in it.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Events in input order.
    pub events: Vec<Event>,
    /// Where each event came from, parallel to `events`.
    pub origins: Vec<Location>,
    /// One entry per line or item that could not be decoded.
    pub errors: Vec<DecodeError>,
}

impl Decoded {
    fn push(&mut self, event: Event, origin: Location) {
        self.events.push(event);
        self.origins.push(origin);
    }

    fn push_items(&mut self, items: Vec<Event>, line: usize) {
        let first = self.events.len();
        self.events.extend(items);
        self.origins
            .extend((0..self.events.len() - first).map(|i| Location::item(line, i)));
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
        let full = err.to_string();
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let reason = full.strip_suffix(&suffix).unwrap_or(&full);
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
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut out = Decoded::default();
    if is_json_lines(input) {
        for (index, line) in input.split(|b| *b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if !line.is_empty() {
                decode_line(line, index + 1, &mut out);
            }
        }
    } else {
        decode_document(input, &mut out);
    }
    out
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
        Ok(event) => out.push(event, Location::line(line_no)),
        Err(err) => {
            // An EventList line whose `kind` we never reached still decodes as a list.
            if looks_like_list(line) {
                decode_document_at(line, line_no, out);
            } else {
                out.errors.push(DecodeError::from_json(&err, line_no, None));
            }
        }
    }
}

/// An object that may be an EventList or a single Event.
fn decode_document_at(input: &[u8], line_no: usize, out: &mut Decoded) {
    match serde_json::from_slice::<EventList>(input) {
        Ok(EventList {
            items: Some(items), ..
        }) => out.push_items(items, line_no),
        Ok(list) if list.kind == "EventList" => {}
        Ok(_) => decode_event(input, line_no, out),
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

fn decode_event(input: &[u8], line_no: usize, out: &mut Decoded) {
    match serde_json::from_slice::<Event>(input) {
        Ok(event) => out.push(event, Location::line(line_no)),
        Err(err) => out.errors.push(DecodeError::from_json(&err, line_no, None)),
    }
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
        match serde_json::from_str::<Event>(raw.get()) {
            Ok(event) => out.push(event, Location::item(line_no, index)),
            Err(err) => {
                let offset = (raw.get().as_ptr() as usize).saturating_sub(input.as_ptr() as usize);
                let before = input.get(..offset).unwrap_or_default();
                let item_line = line_no + before.iter().filter(|b| **b == b'\n').count();
                let mut e = DecodeError::from_json(&err, item_line, Some(index));
                if err.line() > 1 {
                    e.location.column = Some(err.column());
                } else {
                    e.location.column = None;
                }
                out.errors.push(e);
            }
        }
    }
}
