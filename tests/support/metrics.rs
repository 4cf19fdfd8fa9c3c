//! Reading metrics in tests: counters through metrics-util's debugging recorder, and any
//! series from a running server's `/metrics` page.

use metrics_util::debugging::{DebugValue, Snapshotter};

/// The value of counter `name` whose labels include every `(key, value)` of `labels`.
pub fn counter(snapshotter: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == name)
        .filter(|(key, ..)| {
            labels
                .iter()
                .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// The value of `series` (a name, with its labels as rendered) on the `/metrics` page of
/// the server at `base` (`http://ADDR`); `None` when the page does not list it.
pub async fn scrape(base: &str, series: &str) -> Option<f64> {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200, "GET {base}/metrics");
    let page = response.text().await.unwrap();
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
