//! RFC 3339 timestamps at the edges (API answers, exports, query
//! parameters), through jiff.

use std::sync::LazyLock;
use std::time::SystemTime;

use jiff::Timestamp;
use jiff::fmt::temporal::DateTimePrinter;

/// Always three fraction digits, so the answers sort as text too.
static MILLIS: LazyLock<DateTimePrinter> =
    LazyLock::new(|| DateTimePrinter::new().precision(Some(3)));

/// `2026-11-22T20:09:27.123Z` for a point in time (UTC, milliseconds).
pub fn rfc3339(t: SystemTime) -> String {
    let ts = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    MILLIS.timestamp_to_string(&ts)
}

/// Milliseconds since the Unix epoch of a timestamp with an offset
/// (`2026-11-22T20:09:27Z`, `2026-11-22T20:09:27.5+08:00`); `None` when it
/// is not one. jiff also reads the ISO 8601 forms around RFC 3339 (`+0800`,
/// no seconds); a leap second reads as :59. Fractions beyond milliseconds
/// are cut.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

/// Milliseconds since the Unix epoch (0 on a clock before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_378_167_123);
        assert_eq!(rfc3339(t), "2026-11-22T20:09:27.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for ms in [0_i64, 951_782_400_000, 1_795_378_167_123, 4_102_444_800_000] {
            let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
            assert_eq!(parse_rfc3339_ms(&rfc3339(t)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T20:09:27+08:00"),
            parse_rfc3339_ms("2026-11-22T12:09:27Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T20:09:27.5Z").map(|v| v % 1000),
            Some(500)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-02-30T00:00:00Z",
            "2026-11-22T20:09:27",
            "x026-11-22T20:09:27Z",
            "2026-11-22T20:09:27.Z",
            "2026-11-22T20:09:27Zjunk",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
