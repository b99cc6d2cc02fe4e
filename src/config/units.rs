//! Small value parsers for config strings: durations, sizes, signal names.
//!
//! Pure functions over `&str`. Must never touch the file system, the
//! environment or TOML; errors are plain lowercase fragments the loader
//! places at the value.

use std::time::Duration;

use nix::sys::signal::Signal;

const NANOS_PER_MS: u128 = 1_000_000;
const NANOS_PER_S: u128 = 1_000 * NANOS_PER_MS;

/// Parse `"100ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`, `"1.5s"` or combinations
/// like `"1m30s"`. A bare number is rejected: the unit is never guessed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("duration `{text}` has no unit"));
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() {
            return Err(format!("invalid duration `{text}`: expected a number"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit = match unit.trim() {
            "ms" => NANOS_PER_MS,
            "s" | "sec" | "secs" => NANOS_PER_S,
            "m" | "min" | "mins" => 60 * NANOS_PER_S,
            "h" | "hr" | "hrs" => 3_600 * NANOS_PER_S,
            "d" | "day" | "days" => 86_400 * NANOS_PER_S,
            "" => return Err(format!("duration `{text}`: `{num}` has no unit")),
            other => return Err(format!("unknown unit `{other}` in duration `{text}`")),
        };
        total = total
            .checked_add(scale(num, per_unit).ok_or_else(|| invalid_number(num, text))?)
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
        rest = after;
    }
    let secs = u64::try_from(total / NANOS_PER_S)
        .map_err(|_| format!("duration `{text}` is too large"))?;
    Ok(Duration::new(secs, (total % NANOS_PER_S) as u32))
}

fn invalid_number(num: &str, text: &str) -> String {
    format!("invalid number `{num}` in `{text}`")
}

/// `num` (decimal, maybe with a fraction) times `per_unit`, in integer math.
fn scale(num: &str, per_unit: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(per_unit)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let denom = 10u128.pow(frac.len() as u32);
        value = value.checked_add(digits.checked_mul(per_unit)? / denom)?;
    }
    Some(value)
}

/// Parse a byte size: `"100"` (bytes), `"512KiB"`, `"10MiB"`, `"1GiB"`,
/// `"10MB"` (decimal), `"10k"`/`"10M"`/`"1G"` (binary). Units ignore case.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty size".into());
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    if num.is_empty() {
        return Err(format!("invalid size `{text}`: expected a number first"));
    }
    let num: u64 = num
        .parse()
        .map_err(|_| format!("size `{text}` is too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("unknown unit `{other}` in size `{text}`")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// Parse a signal name: `"TERM"`, `"SIGTERM"`, `"term"`, `"USR1"`...
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let text = s.trim();
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if bare.is_empty() || bare.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("signal `{text}` must be a name"));
    }
    format!("SIG{bare}")
        .parse::<Signal>()
        .map_err(|_| format!("unknown signal `{text}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Ok(ms(0)));
        assert_eq!(parse_duration("100ms"), Ok(ms(100)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h 2m 3s"), Ok(ms(3_723_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.1s"), Ok(ms(100)));
        assert_eq!(parse_duration(" 10s "), Ok(ms(10_000)));
    }

    #[test]
    fn bad_durations() {
        let e = parse_duration("30").unwrap_err();
        assert_eq!(e, "duration `30` has no unit");
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown unit `x`"));
        assert!(parse_duration("s")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("1..2s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1m30").unwrap_err().contains("no unit"));
        assert!(parse_duration("99999999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("10k"), Ok(10 * 1024));
        assert_eq!(parse_size("10 MiB"), Ok(10 * 1024 * 1024));
    }

    #[test]
    fn bad_sizes() {
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").unwrap_err().contains("expected a number"));
        assert!(parse_size("10 parsecs")
            .unwrap_err()
            .contains("unknown unit `parsecs`"));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("99999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn signals() {
        for (s, sig) in [
            ("TERM", Signal::SIGTERM),
            ("SIGTERM", Signal::SIGTERM),
            ("term", Signal::SIGTERM),
            ("sigint", Signal::SIGINT),
            ("HUP", Signal::SIGHUP),
            ("QUIT", Signal::SIGQUIT),
            ("KILL", Signal::SIGKILL),
            ("USR1", Signal::SIGUSR1),
            ("USR2", Signal::SIGUSR2),
            ("ABRT", Signal::SIGABRT),
            ("WINCH", Signal::SIGWINCH),
        ] {
            assert_eq!(parse_signal(s), Ok(sig), "{s}");
        }
        assert!(parse_signal("NOPE")
            .unwrap_err()
            .contains("unknown signal `NOPE`"));
        assert!(parse_signal("15").unwrap_err().contains("must be a name"));
        assert!(parse_signal("").is_err());
    }
}
