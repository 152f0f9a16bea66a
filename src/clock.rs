//! The time: now, in the store's milliseconds or the providers' seconds, and as RFC 3339.

/// Whole seconds since the Unix epoch, as providers count time.
pub fn now_s() -> i64 {
    now_ms() / 1000
}

/// Milliseconds since the Unix epoch: the store's only time representation (portable
/// across SQLite and Postgres, and unambiguous).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-12-02T01:25:49.948Z` for a time in ms since the epoch (no fraction on a whole
/// second); empty if out of range.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(super::rfc3339(1_796_174_749_000), "2026-12-02T01:25:49Z");
        assert_eq!(
            super::rfc3339(1_796_174_749_948),
            "2026-12-02T01:25:49.948Z"
        );
    }
}
