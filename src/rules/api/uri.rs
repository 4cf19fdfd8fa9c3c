//! The request URI's query parameters: `event.uri_param(name)` and `event.uri_params()`,
//! decoded as a form would be.
//!
//! Owns the query parsing; calls `event`.

use rhai::{Array, Dynamic, Engine, ImmutableString, Map};

use super::convert::{dyn_text, text};
use super::event::ScriptEvent;

/// Registers `uri_param` and `uri_params` on `Event`.
pub(super) fn register(engine: &mut Engine) {
    engine
        .register_fn("uri_param", |e: &mut ScriptEvent, name: &str| {
            uri_param(e, name)
        })
        .register_fn("uri_params", |e: &mut ScriptEvent| uri_params(e));
}

/// The decoded `name=value` pairs of the request URI's query, in order.
fn query_pairs(e: &ScriptEvent) -> impl Iterator<Item = (String, String)> + '_ {
    let uri = e.event().request_uri.as_str();
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// `event.uri_param(name)`: the first value of query parameter `name`, else `""`.
fn uri_param(e: &ScriptEvent, name: &str) -> ImmutableString {
    query_pairs(e)
        .find(|(k, _)| k == name)
        .map_or_else(ImmutableString::new, |(_, v)| text(&v))
}

/// `event.uri_params()`: every query parameter, name → array of its decoded values.
fn uri_params(e: &ScriptEvent) -> Map {
    let mut out = Map::new();
    for (k, v) in query_pairs(e) {
        let values = out
            .entry(k.into())
            .or_insert_with(|| Dynamic::from_array(Array::new()));
        if let Some(mut values) = values.write_lock::<Array>() {
            values.push(dyn_text(&v));
        }
    }
    out
}
