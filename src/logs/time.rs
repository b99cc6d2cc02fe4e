//! RFC 3339 UTC timestamps for log lines: formatting from `SystemTime` and
//! parsing the prefix back.
//!
//! Owns the one timestamp format ward writes (`2026-01-02T03:04:05.678Z`,
//! 24 bytes, followed by one space). Must never allocate per call or read
//! the local time zone: log lines are always UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of a formatted timestamp, without the space that follows it in a line.
pub const TIMESTAMP_LEN: usize = 24;

/// Format `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision).
///
/// Times before 1970 are clamped to the epoch.
pub fn format_rfc3339(t: SystemTime) -> [u8; TIMESTAMP_LEN] {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem / 60) % 60, rem % 60);

    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut out[0..4], year.clamp(0, 9999) as u64);
    put_digits(&mut out[5..7], u64::from(month));
    put_digits(&mut out[8..10], u64::from(day));
    put_digits(&mut out[11..13], hh);
    put_digits(&mut out[14..16], mm);
    put_digits(&mut out[17..19], ss);
    put_digits(&mut out[20..23], u64::from(millis));
    out
}

/// Parse a timestamp written by [`format_rfc3339`] at the start of `line`.
///
/// Returns the time and the rest of the line after the single separating
/// space, or `None` when the line does not start with a ward timestamp.
pub fn parse_prefix(line: &[u8]) -> Option<(SystemTime, &[u8])> {
    if line.len() < TIMESTAMP_LEN + 1 || line[TIMESTAMP_LEN] != b' ' {
        return None;
    }
    let ts = &line[..TIMESTAMP_LEN];
    let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
    for (c, s) in ts.iter().zip(shape) {
        let ok = if *s == b'd' {
            c.is_ascii_digit()
        } else {
            c == s
        };
        if !ok {
            return None;
        }
    }
    let num = |r: std::ops::Range<usize>| {
        ts[r]
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4) as i64, num(5..7) as u32, num(8..10) as u32);
    let (hh, mm, ss, ms) = (num(11..13), num(14..16), num(17..19), num(20..23));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if days < 0 {
        return None;
    }
    let secs = days as u64 * 86_400 + hh * 3600 + mm * 60 + ss;
    let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms);
    Some((t, &line[TIMESTAMP_LEN + 1..]))
}

fn put_digits(dst: &mut [u8], mut v: u64) {
    for slot in dst.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_known_instants() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.005Z"),
            (1_709_210_096, 999, "2024-02-29T12:34:56.999Z"),
            (4_102_444_799, 123, "2099-12-31T23:59:59.123Z"),
        ];
        for (secs, ms, want) in cases {
            let got = format_rfc3339(at(secs, ms));
            assert_eq!(std::str::from_utf8(&got).unwrap(), want);
        }
    }

    #[test]
    fn parse_round_trips_over_many_days() {
        let mut secs = 0u64;
        while secs < 5_000_000_000 {
            let t = at(secs, secs % 1000);
            let mut line = format_rfc3339(t).to_vec();
            line.extend_from_slice(b" hello");
            let (back, rest) = parse_prefix(&line).expect("parses");
            assert_eq!(back, t);
            assert_eq!(rest, b"hello");
            secs += 86_400 * 7 + 3_601;
        }
    }

    #[test]
    fn parse_rejects_other_lines() {
        for line in [
            &b"hello world"[..],
            b"2024-02-29T12:34:56.999Z",
            b"2024-02-29T12:34:56.999Zx",
            b"2024-13-29T12:34:56.999Z x",
            b"2024-02-29 12:34:56.999Z x",
        ] {
            assert!(
                parse_prefix(line).is_none(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
