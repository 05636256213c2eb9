//! RFC 3339 timestamps without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-22T20:09:27.123Z` for a point in time (UTC, milliseconds).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Writes `2026-11-22T20:09:27.123456Z` (UTC, microseconds): the log
/// lines' timestamp, digit by digit (it is on every request's path).
pub fn write_rfc3339_micros(out: &mut impl std::fmt::Write, t: SystemTime) -> std::fmt::Result {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    let fields: [(u64, u32, char); 7] = [
        (y.clamp(0, 9999) as u64, 4, '-'),
        (m.into(), 2, '-'),
        (day.into(), 2, 'T'),
        (rem / 3600, 2, ':'),
        (rem % 3600 / 60, 2, ':'),
        (rem % 60, 2, '.'),
        (d.subsec_micros().into(), 6, 'Z'),
    ];
    for (n, width, then) in fields {
        for p in (0..width).rev() {
            out.write_char(char::from(b'0' + (n / 10u64.pow(p) % 10) as u8))?;
        }
        out.write_char(then)?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch for an RFC 3339 timestamp
/// (`2026-11-22T20:09:27Z`, `2026-11-22T20:09:27.5+08:00`); `None` when it
/// is not one. Fractions beyond milliseconds are truncated.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(num_of);
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits].chars().chain("00".chars()).take(3).collect();
        millis = ms.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num_of(&rest[1..3])?, num_of(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_secs;
    Some(secs * 1000 + millis)
}

fn num_of(t: &str) -> Option<i64> {
    t.bytes()
        .all(|c| c.is_ascii_digit())
        .then(|| t.parse().ok())
        .flatten()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) to days since 1970-01-01, Howard Hinnant's algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_378_167_123);
        assert_eq!(rfc3339(t), "2026-11-22T20:09:27.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn log_timestamps_have_microseconds() {
        let mut s = String::new();
        write_rfc3339_micros(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_795_378_167_123_456),
        )
        .unwrap();
        assert_eq!(s, "2026-11-22T20:09:27.123456Z");
        s.clear();
        write_rfc3339_micros(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)).unwrap();
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
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
            "2026-11-22T20:09:27+0800",
            "2026-11-22T20:09:27Zjunk",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
