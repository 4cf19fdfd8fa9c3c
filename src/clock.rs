//! Time as klaxon counts it: milliseconds since the Unix epoch, read from the wall clock
//! (serve) or from an event's timestamp (dry-run, replay, tests), so every stage can take
//! the clock as a plain number. Calls nothing of the crate.

use std::time::Duration;

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn wall_clock_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    duration_ms(now)
}

/// An RFC 3339 timestamp (the audit event's `stageTimestamp`) in milliseconds since the epoch.
pub fn parse_time_ms(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Milliseconds since the epoch as RFC 3339 in UTC (`2026-12-03T18:00:00Z`; a fraction
/// only when there is one); out of range: the epoch.
pub fn format_time_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_and_without_fraction() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time_ms("1970-01-01T00:00:01.250000Z"), Some(1250));
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn formats_rfc3339_in_utc() {
        assert_eq!(format_time_ms(1000), "1970-01-01T00:00:01Z");
        assert_eq!(format_time_ms(1250), "1970-01-01T00:00:01.25Z");
        assert_eq!(
            parse_time_ms(&format_time_ms(1_796_320_800_123)),
            Some(1_796_320_800_123)
        );
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(duration_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_ms(Duration::MAX), i64::MAX);
    }
}
