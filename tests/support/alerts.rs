//! Which alerts reached a target: the alert ids (titles like `rel-00042`) that the Slack
//! stand-in's messages carry, single alerts and digests alike.

use std::collections::BTreeMap;

use serde_json::Value;

/// How many messages carried each id that starts with `prefix` (digits follow it). A
/// message names an alert in its blocks (a digest's header repeats its first one: each
/// message counts an id once).
pub fn delivered(messages: &[Value], prefix: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in messages {
        let blocks = message["blocks"].to_string();
        let mut ids: Vec<String> = ids_in(&blocks, prefix);
        ids.sort();
        ids.dedup();
        for id in ids {
            *counts.entry(id).or_default() += 1;
        }
    }
    counts
}

/// Every `prefix` followed by digits in `text`.
fn ids_in(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push(format!("{prefix}{}", &after[..digits]));
        }
        rest = &after[digits..];
    }
    out
}

/// The ids `rel-00000` … for `n` events.
pub fn expected(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}
