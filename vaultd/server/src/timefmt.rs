//! Time formatting shared by the audit entries and the API's JSON bodies.

/// RFC 3339 UTC time for a unix timestamp.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// A unix timestamp (whole seconds) from an RFC 3339 time with an offset
/// (`2026-12-03T09:30:00Z`, `…+01:00`); None for anything else.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    if s.len() > 64 {
        return None;
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| d.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_refuses_what_is_not_one() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:10+01:00"), Some(10));
        assert_eq!(parse_rfc3339(&rfc3339(1_800_000_000)), Some(1_800_000_000));
        for bad in ["", "10", "1970-01-01", "1970-01-01T00:00:10", "yesterday"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
