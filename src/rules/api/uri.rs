//! The request URI's query parameters: `event.uri_param(name)` and `event.uri_params()`,
//! decoded as a form would be.
//!
//! Owns the query parsing; calls `event`.

use rhai::plugin::*;
use rhai::{Array, Dynamic, ImmutableString, Map};

use super::convert::{dyn_text, text};
use super::event::ScriptEvent;

/// `uri_param` and `uri_params` on `Event`, with the doc comments the engine's metadata
/// carries.
#[export_module]
pub(super) mod functions {
    use super::*;
    use crate::rules::api::event::functions::Event;

    /// The first value of query parameter `name` of `requestURI`, decoded as a form would
    /// be; `""` when absent.
    #[rhai_fn(pure)]
    pub fn uri_param(e: &mut Event, name: &str) -> ImmutableString {
        super::uri_param(e, name)
    }

    /// Every query parameter of `requestURI`: name → array of its decoded values, in order.
    #[rhai_fn(pure)]
    pub fn uri_params(e: &mut Event) -> Map {
        super::uri_params(e)
    }
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
