//! Cron schedules for `heartbeat.schedule`: the five fields of crontab(5)
//! (`minute hour day month weekday`, with `*`, lists, ranges, steps, month
//! and day names, and the `@daily`-style shorthands), and the next time one
//! fires, in UTC or in the zone ward runs in.
//!
//! Owns the cron syntax and the calendar arithmetic. Never reads a clock
//! (callers pass the time to start from) and does no I/O; the local zone
//! goes through libc's `localtime_r`/`mktime`, which read `TZ` (else
//! `/etc/localtime`) as cron itself does. Named zones are not supported.
//!
//! Day matching follows Vixie cron, which every Linux cron derives from:
//! when both the day-of-month and the weekday field are restricted (neither
//! starts with `*`), a day matches if *either* does; otherwise both must.

use std::fmt;

/// A parsed 5-field cron expression: one bit per allowed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, 0 = Sunday.
    weekdays: u8,
    /// The day-of-month field starts with `*`.
    any_day: bool,
    /// The weekday field starts with `*`.
    any_weekday: bool,
}

/// Which clock a schedule is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The zone ward runs in (`TZ`, else `/etc/localtime`), as cron does.
    Local,
    Utc,
}

impl Zone {
    /// `local` or `UTC` (any case); `None` for anything else.
    pub fn parse(s: &str) -> Option<Zone> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Some(Zone::Local),
            "utc" => Some(Zone::Utc),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Zone::Local => "local",
            Zone::Utc => "UTC",
        }
    }

    /// `2024-05-01 03:00 UTC` (or `local`), for messages.
    pub fn format(self, unix_secs: i64) -> String {
        match calendar(self).civil(unix_secs) {
            Some(c) => format!(
                "{:04}-{:02}-{:02} {:02}:{:02} {}",
                c.year,
                c.month,
                c.day,
                c.hour,
                c.minute,
                self.as_str()
            ),
            None => format!("@{unix_secs}"),
        }
    }
}

/// Why an expression was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    /// Byte offset in the expression of the part at fault.
    pub at: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names for `min`, `min + 1`, ...
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    Field {
        name: "weekday",
        min: 0,
        // 7 is Sunday too.
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

const SHAPE: &str =
    "five fields: minute hour day-of-month month weekday, e.g. `0 3 * * *` (03:00 every day)";

/// The longest a search looks ahead: a February 29 can be eight years away
/// (2096 to 2104).
const HORIZON_DAYS: i64 = 9 * 366;

fn err(at: usize, message: String, hint: Option<&str>) -> CronError {
    CronError {
        at,
        message,
        hint: hint.map(str::to_string),
    }
}

impl Cron {
    /// Parse a crontab schedule: five fields, or `@hourly`, `@daily`
    /// (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`).
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let trimmed = expr.trim_start();
        let lead = expr.len() - trimmed.len();
        if let Some(word) = trimmed.strip_prefix('@') {
            let word = word.trim_end();
            let same = match word.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                "reboot" => {
                    return Err(err(
                        lead,
                        "`@reboot` is not a time of day: it never falls due".into(),
                        Some("leave out `schedule` for a job that runs once at boot"),
                    ))
                }
                _ => return Err(err(
                    lead,
                    format!("unknown shorthand `@{word}`"),
                    Some(
                        "use `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` or five fields",
                    ),
                )),
            };
            return Cron::parse(same);
        }
        let fields = split_fields(expr);
        if fields.len() != 5 {
            let (at, what) = match fields.get(5) {
                Some(&(at, _)) => (at, "too many fields"),
                None => (lead, "too few fields"),
            };
            let hint = if fields.len() == 6 {
                format!("{SHAPE}; ward's schedules have no seconds or year field")
            } else {
                SHAPE.to_string()
            };
            return Err(err(
                at,
                format!("{what}: `{}` has {}", expr.trim(), fields.len()),
                Some(&hint),
            ));
        }
        let mut bits = [0u64; 5];
        for (i, &(at, text)) in fields.iter().enumerate() {
            bits[i] = parse_field(&FIELDS[i], text, at)?;
        }
        // Sunday is 0 and 7.
        let weekdays = ((bits[4] | (bits[4] >> 7)) & 0x7f) as u8;
        let cron = Cron {
            minutes: bits[0],
            hours: bits[1] as u32,
            days: bits[2] as u32,
            months: bits[3] as u16,
            weekdays,
            any_day: fields[2].1.starts_with('*'),
            any_weekday: fields[4].1.starts_with('*'),
        };
        if !cron.can_fire() {
            return Err(err(
                fields[2].0,
                format!(
                    "day `{}` never falls in month `{}`: this schedule never fires",
                    fields[2].1, fields[3].1
                ),
                Some("February has 29 days at most; April, June, September and November 30"),
            ));
        }
        Ok(cron)
    }

    /// Some date matches (only a day-of-month that no chosen month has fails).
    fn can_fire(&self) -> bool {
        if !(self.any_day || self.any_weekday) {
            return true;
        }
        (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=days_in_month(2000, m)).any(|d| self.days & (1 << d) != 0)
        })
    }

    fn day_matches(&self, month: u32, day: u32, weekday: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.days & (1 << day) != 0;
        let dow = self.weekdays & (1 << weekday) != 0;
        if self.any_day || self.any_weekday {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` (Unix seconds) at which this
    /// schedule fires in `zone`, in Unix seconds. `None` only when nothing
    /// fires within nine years (never, for what [`Cron::parse`] accepts) or
    /// the zone cannot convert the time.
    pub fn next_after(&self, after: i64, zone: Zone) -> Option<i64> {
        self.next_in(after, calendar(zone).as_ref())
    }

    fn next_in(&self, after: i64, cal: &dyn Calendar) -> Option<i64> {
        let start = after.div_euclid(60) * 60 + 60;
        let first = cal.civil(start)?;
        let first_day = days_from_civil(first.year, first.month, first.day);
        for day in first_day..first_day + HORIZON_DAYS {
            let (year, month, dom) = civil_from_days(day);
            if !self.day_matches(month, dom, weekday(day)) {
                continue;
            }
            for hour in bits(u64::from(self.hours), 23) {
                for minute in bits(self.minutes, 59) {
                    // Earlier on the first day is past (a repeated hour fires once).
                    if day == first_day && (hour, minute) < (first.hour, first.minute) {
                        continue;
                    }
                    let civil = Civil {
                        year,
                        month,
                        day: dom,
                        hour,
                        minute,
                    };
                    if let Some(t) = cal
                        .resolve(civil)
                        .into_iter()
                        .flatten()
                        .find(|&t| t >= start)
                    {
                        return Some(t);
                    }
                }
            }
        }
        None
    }
}

/// The fields of `expr` with their byte offsets.
fn split_fields(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in expr.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &expr[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &expr[s..]));
    }
    out
}

/// One field (`*`, `1,5`, `1-5`, `*/15`, `mon-fri`, ...) as a bit set.
fn parse_field(f: &Field, text: &str, at: usize) -> Result<u64, CronError> {
    let mut set = 0u64;
    let mut offset = at;
    for part in text.split(',') {
        set |= parse_part(f, part, offset)?;
        offset += part.len() + 1;
    }
    Ok(set)
}

fn parse_part(f: &Field, part: &str, at: usize) -> Result<u64, CronError> {
    if part.is_empty() {
        return Err(err(
            at,
            format!("empty list item in the {} field", f.name),
            Some("separate values with commas and no spaces: `1,15`"),
        ));
    }
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => {
            let s_at = at + r.len() + 1;
            let step: u32 = s.parse().map_err(|_| {
                err(
                    s_at,
                    format!("step `{s}` is not a number in the {} field", f.name),
                    Some("write a step as `*/15` or `0-30/5`"),
                )
            })?;
            if step == 0 {
                return Err(err(
                    s_at,
                    format!("step `0` in the {} field", f.name),
                    Some("a step is at least 1: `*/1` is every value"),
                ));
            }
            (r, Some(step))
        }
        None => (part, None),
    };
    let (lo, hi) = if range == "*" {
        (f.min, f.max)
    } else if let Some((a, b)) = range.split_once('-') {
        let lo = value(f, a, at)?;
        let hi = value(f, b, at + a.len() + 1)?;
        if lo > hi {
            return Err(err(
                at,
                format!("range `{range}` runs backwards in the {} field", f.name),
                Some("write the smaller value first, or use two ranges: `22-23,0-2`"),
            ));
        }
        (lo, hi)
    } else {
        let v = value(f, range, at)?;
        // `5/10` means from 5 to the end, every 10 (Vixie cron).
        (v, if step.is_some() { f.max } else { v })
    };
    let step = step.unwrap_or(1) as usize;
    Ok((lo..=hi).step_by(step).fold(0, |acc, v| acc | (1u64 << v)))
}

fn value(f: &Field, text: &str, at: usize) -> Result<u32, CronError> {
    let v = if let Ok(n) = text.parse::<u32>() {
        n
    } else if let Some(i) = f.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        f.min + i as u32
    } else {
        let unsupported = ["L", "W", "#", "?"].iter().any(|c| text.contains(c));
        let hint = if unsupported {
            "`L`, `W`, `#` and `?` are not standard cron and not supported".to_string()
        } else if f.names.is_empty() {
            format!("use numbers {}-{}", f.min, f.max)
        } else {
            format!(
                "use numbers {}-{} or names like `{}`",
                f.min, f.max, f.names[1]
            )
        };
        return Err(err(
            at,
            format!("`{text}` is not a valid {}", f.name),
            Some(&hint),
        ));
    };
    if v < f.min || v > f.max {
        return Err(err(
            at,
            format!("{} `{v}` is out of range {}-{}", f.name, f.min, f.max),
            None,
        ));
    }
    Ok(v)
}

/// The values set in `set`, up to `max`.
fn bits(set: u64, max: u32) -> impl Iterator<Item = u32> {
    (0..=max).filter(move |v| set & (1u64 << v) != 0)
}

/// A wall-clock minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
}

/// A time zone's two conversions.
trait Calendar {
    /// The wall-clock minute at `t` (Unix seconds).
    fn civil(&self, t: i64) -> Option<Civil>;
    /// The instants showing `c` on the wall, earliest first: one, two in a
    /// repeated hour, or, for a time skipped by a DST change, the time the
    /// zone normalises it to (shifted by the change, as `mktime` does).
    fn resolve(&self, c: Civil) -> [Option<i64>; 2];
}

fn calendar(zone: Zone) -> Box<dyn Calendar> {
    match zone {
        Zone::Utc => Box::new(Utc),
        Zone::Local => Box::new(Local),
    }
}

struct Utc;

impl Calendar for Utc {
    fn civil(&self, t: i64) -> Option<Civil> {
        Some(utc_civil(t))
    }

    fn resolve(&self, c: Civil) -> [Option<i64>; 2] {
        [Some(utc_unix(c)), None]
    }
}

fn utc_civil(t: i64) -> Civil {
    let (year, month, day) = civil_from_days(t.div_euclid(86_400));
    let secs = t.rem_euclid(86_400) as u32;
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs % 3600 / 60,
    }
}

fn utc_unix(c: Civil) -> i64 {
    days_from_civil(c.year, c.month, c.day) * 86_400
        + i64::from(c.hour) * 3600
        + i64::from(c.minute) * 60
}

/// The zone of the process, through libc.
struct Local;

// `time_t` is 64 bits here, 32 on some older targets: keep the conversions.
#[allow(clippy::useless_conversion)]
impl Calendar for Local {
    fn civil(&self, t: i64) -> Option<Civil> {
        let t: libc::time_t = t.try_into().ok()?;
        // SAFETY: `tm` is plain data; localtime_r writes it and returns a
        // pointer to it, or null on failure.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return None;
        }
        Some(Civil {
            year: i64::from(tm.tm_year) + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
        })
    }

    fn resolve(&self, c: Civil) -> [Option<i64>; 2] {
        let mktime = |isdst: i32| -> Option<i64> {
            // SAFETY: `tm` is plain data (a null `tm_zone` is allowed);
            // mktime reads and normalises it.
            let mut tm: libc::tm = unsafe { std::mem::zeroed() };
            tm.tm_year = i32::try_from(c.year - 1900).ok()?;
            tm.tm_mon = c.month as i32 - 1;
            tm.tm_mday = c.day as i32;
            tm.tm_hour = c.hour as i32;
            tm.tm_min = c.minute as i32;
            tm.tm_isdst = isdst;
            match unsafe { libc::mktime(&mut tm) } {
                -1 => None,
                t => Some(i64::from(t)),
            }
        };
        // Standard and daylight time both, kept when they show `c` again.
        let found = [0, 1]
            .into_iter()
            .filter_map(mktime)
            .filter(|&t| self.civil(t) == Some(c))
            .collect();
        earliest_two(found, || mktime(-1))
    }
}

/// The two earliest of `found`, or `skipped()` when it is empty.
fn earliest_two(mut found: Vec<i64>, skipped: impl FnOnce() -> Option<i64>) -> [Option<i64>; 2] {
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [] => [skipped(), None],
        [one] => [Some(*one), None],
        [a, b, ..] => [Some(*a), Some(*b)],
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 0 = Sunday (1970-01-01 was a Thursday).
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Unix seconds of a UTC wall time.
    fn at(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        utc_unix(Civil {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
        })
    }

    fn next(expr: &str, after: i64) -> i64 {
        Cron::parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .next_after(after, Zone::Utc)
            .unwrap_or_else(|| panic!("{expr} never fires"))
    }

    #[test]
    fn calendar_arithmetic_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
            assert!(d <= days_in_month(y, m));
        }
        // 2024-05-10 was a Friday.
        assert_eq!(weekday(days_from_civil(2024, 5, 10)), 5);
        assert!(is_leap(2000) && is_leap(2024) && !is_leap(2100) && !is_leap(2023));
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let c = Cron::parse("*/15 9-17 1,15 jan-mar,DEC mon-fri").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(c.hours, (9..=17).fold(0, |a, h| a | 1 << h));
        assert_eq!(c.days, 1 << 1 | 1 << 15);
        assert_eq!(c.months, 1 << 1 | 1 << 2 | 1 << 3 | 1 << 12);
        assert_eq!(c.weekdays, 0b0011_1110);
        assert!(!c.any_day && !c.any_weekday);
        // 7 is Sunday, as is 0; `5/20` runs from 5 to the end.
        assert_eq!(
            Cron::parse("0 0 * * 7").unwrap(),
            Cron::parse("0 0 * * 0").unwrap()
        );
        assert_eq!(Cron::parse("0 0 * * 5-7").unwrap().weekdays, 0b0110_0001);
        assert_eq!(
            Cron::parse("5/20 * * * *").unwrap().minutes,
            1 << 5 | 1 << 25 | 1 << 45
        );
        assert_eq!(
            Cron::parse("0-10/5 * * * *").unwrap().minutes,
            1 | 1 << 5 | 1 << 10
        );
        // Spaces and tabs of any length separate fields.
        assert_eq!(
            Cron::parse("  0\t3  * *   * ").unwrap(),
            Cron::parse("0 3 * * *").unwrap()
        );
    }

    #[test]
    fn shorthands() {
        for (short, long) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@HOURLY", "0 * * * *"),
        ] {
            assert_eq!(Cron::parse(short), Cron::parse(long), "{short}");
        }
    }

    #[test]
    fn errors_point_at_the_part_at_fault() {
        let cases: &[(&str, usize, &str)] = &[
            ("0 25 * * *", 2, "hour `25` is out of range 0-23"),
            ("60 * * * *", 0, "minute `60` is out of range 0-59"),
            ("0 0 0 * *", 4, "day of month `0` is out of range 1-31"),
            ("0 0 * 13 *", 6, "month `13` is out of range 1-12"),
            ("0 0 * * 8", 8, "weekday `8` is out of range 0-7"),
            ("*/0 * * * *", 2, "step `0` in the minute field"),
            (
                "0 */x * * *",
                4,
                "step `x` is not a number in the hour field",
            ),
            (
                "0 5-1 * * *",
                2,
                "range `5-1` runs backwards in the hour field",
            ),
            ("0 1-x * * *", 4, "`x` is not a valid hour"),
            ("0 0 * foo *", 6, "`foo` is not a valid month"),
            (
                "0 0 * * mon,,fri",
                12,
                "empty list item in the weekday field",
            ),
            ("0 0 L * *", 4, "`L` is not a valid day of month"),
            ("0 0 * * 5#3", 8, "`5#3` is not a valid weekday"),
            ("0 0 * *", 0, "too few fields: `0 0 * *` has 4"),
            ("0 0 3 * * *", 10, "too many fields: `0 0 3 * * *` has 6"),
            ("", 0, "too few fields: `` has 0"),
            (
                "@reboot",
                0,
                "`@reboot` is not a time of day: it never falls due",
            ),
            ("  @often", 2, "unknown shorthand `@often`"),
            (
                "0 0 30 2 *",
                4,
                "day `30` never falls in month `2`: this schedule never fires",
            ),
            (
                "0 0 31 apr,jun *",
                4,
                "day `31` never falls in month `apr,jun`: this schedule never fires",
            ),
        ];
        for &(expr, at, message) in cases {
            let e = Cron::parse(expr).expect_err(expr);
            assert_eq!((e.at, e.message.as_str()), (at, message), "{expr}");
        }
        let six = Cron::parse("0 0 3 * * *").unwrap_err();
        assert!(six.hint.unwrap().contains("no seconds"));
        let l = Cron::parse("0 0 L * *").unwrap_err();
        assert!(l.hint.unwrap().contains("not supported"));
        // A weekday alternative makes a day that no month has harmless.
        assert!(Cron::parse("0 0 30 2 mon").is_ok());
        assert!(Cron::parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn next_fire_times_in_utc() {
        let cases: &[(&str, i64, i64)] = &[
            // Strictly after: at 03:00 exactly, the next is tomorrow's.
            (
                "0 3 * * *",
                at(2024, 1, 1, 2, 59) + 30,
                at(2024, 1, 1, 3, 0),
            ),
            ("0 3 * * *", at(2024, 1, 1, 3, 0), at(2024, 1, 2, 3, 0)),
            (
                "*/15 * * * *",
                at(2024, 1, 1, 10, 7),
                at(2024, 1, 1, 10, 15),
            ),
            (
                "* * * * *",
                at(2024, 1, 1, 10, 7) + 59,
                at(2024, 1, 1, 10, 8),
            ),
            ("@hourly", at(2024, 1, 1, 23, 30), at(2024, 1, 2, 0, 0)),
            // Month ends and the year's end.
            ("0 0 31 * *", at(2024, 4, 15, 0, 0), at(2024, 5, 31, 0, 0)),
            ("0 0 1 1 *", at(2024, 12, 31, 23, 59), at(2025, 1, 1, 0, 0)),
            // February 29: the next leap year, and 2100 is not one.
            ("0 0 29 2 *", at(2024, 3, 1, 0, 0), at(2028, 2, 29, 0, 0)),
            ("0 0 29 2 *", at(2096, 3, 1, 0, 0), at(2104, 2, 29, 0, 0)),
            // Weekdays: Friday 10:00 -> Monday 09:00; Sunday as 0 and 7.
            ("0 9 * * 1-5", at(2024, 5, 10, 10, 0), at(2024, 5, 13, 9, 0)),
            ("0 0 * * 7", at(2024, 5, 10, 0, 0), at(2024, 5, 12, 0, 0)),
            (
                "0 0 * * sat,sun",
                at(2024, 5, 12, 0, 0),
                at(2024, 5, 18, 0, 0),
            ),
            // Both day fields restricted: either matches (Friday 6th before the 13th).
            ("0 0 13 * fri", at(2024, 9, 1, 0, 0), at(2024, 9, 6, 0, 0)),
            // A `*`-led day field: both must match (the 11th of a month that is a Monday).
            (
                "0 0 */10 * mon",
                at(2024, 1, 1, 0, 0),
                at(2024, 3, 11, 0, 0),
            ),
            // Month names, and the last minute of the year.
            (
                "0 0 1 jan,jul *",
                at(2024, 2, 1, 0, 0),
                at(2024, 7, 1, 0, 0),
            ),
            (
                "59 23 31 12 *",
                at(2024, 1, 1, 0, 0),
                at(2024, 12, 31, 23, 59),
            ),
        ];
        for &(expr, after, want) in cases {
            assert_eq!(
                next(expr, after),
                want,
                "{expr} after {} gave {}",
                Zone::Utc.format(after),
                Zone::Utc.format(next(expr, after))
            );
        }
    }

    /// A zone at UTC+1 that moves to UTC+2 at `spring` (02:00 local becomes
    /// 03:00) and back at `autumn` (03:00 local becomes 02:00 again), with
    /// `mktime`'s normalisation of skipped times.
    struct TwoOffsets {
        spring: i64,
        autumn: i64,
    }

    impl TwoOffsets {
        fn offset(&self, t: i64) -> i64 {
            if t >= self.spring && t < self.autumn {
                7200
            } else {
                3600
            }
        }
    }

    impl Calendar for TwoOffsets {
        fn civil(&self, t: i64) -> Option<Civil> {
            Some(utc_civil(t + self.offset(t)))
        }

        fn resolve(&self, c: Civil) -> [Option<i64>; 2] {
            let wall = utc_unix(c);
            let found = [wall - 7200, wall - 3600]
                .into_iter()
                .filter(|&t| t + self.offset(t) == wall)
                .collect();
            // Skipped: read with the offset before the change, as mktime does.
            earliest_two(found, || Some(wall - 3600))
        }
    }

    fn two_offsets() -> TwoOffsets {
        // 2024-03-31 01:00 UTC (02:00 local) and 2024-10-27 01:00 UTC (03:00 local).
        TwoOffsets {
            spring: at(2024, 3, 31, 1, 0),
            autumn: at(2024, 10, 27, 1, 0),
        }
    }

    #[test]
    fn daylight_saving_changes() {
        let z = two_offsets();
        let local = |y, mo, d, h, mi, offset: i64| at(y, mo, d, h, mi) - offset;
        let cron = |e: &str| Cron::parse(e).unwrap();
        // 02:30 does not exist on the spring day: it falls to 03:30 summer time.
        assert_eq!(
            cron("30 2 * * *").next_in(local(2024, 3, 31, 1, 0, 3600), &z),
            Some(local(2024, 3, 31, 3, 30, 7200))
        );
        // The day after, 02:30 exists again.
        assert_eq!(
            cron("30 2 * * *").next_in(local(2024, 3, 31, 12, 0, 7200), &z),
            Some(local(2024, 4, 1, 2, 30, 7200))
        );
        // 03:00 every day is one hour of UTC earlier in summer.
        assert_eq!(
            cron("0 3 * * *").next_in(local(2024, 3, 30, 12, 0, 3600), &z),
            Some(local(2024, 3, 31, 3, 0, 7200))
        );
        // 02:30 happens twice in autumn: the first one fires...
        let first = local(2024, 10, 27, 2, 30, 7200);
        assert_eq!(
            cron("30 2 * * *").next_in(local(2024, 10, 27, 1, 0, 7200), &z),
            Some(first)
        );
        // ...and not the repeat an hour later: the next is the day after.
        assert_eq!(
            cron("30 2 * * *").next_in(first, &z),
            Some(local(2024, 10, 28, 2, 30, 3600))
        );
        // Every minute goes on through the repeated hour in real time.
        let second_hour = local(2024, 10, 27, 2, 10, 3600);
        assert_eq!(
            cron("* * * * *").next_in(second_hour, &z),
            Some(second_hour + 60)
        );
    }

    #[test]
    fn local_zone_agrees_with_libc() {
        let t = at(2024, 6, 15, 12, 34) + 17;
        // Zones move by whole minutes: the next minute is the next minute.
        assert_eq!(
            Cron::parse("* * * * *").unwrap().next_after(t, Zone::Local),
            Some(at(2024, 6, 15, 12, 35))
        );
        let top = Cron::parse("0 * * * *")
            .unwrap()
            .next_after(t, Zone::Local)
            .unwrap();
        let c = Local.civil(top).unwrap();
        assert_eq!(c.minute, 0);
        assert!(top > t && top - t <= 3600, "{}", Zone::Local.format(top));
        assert_eq!(Local.resolve(c)[0], Some(top));
        assert_eq!(
            Zone::Utc.format(at(2024, 5, 1, 3, 0)),
            "2024-05-01 03:00 UTC"
        );
        assert_eq!(Zone::parse(" utc "), Some(Zone::Utc));
        assert_eq!(Zone::parse("Local"), Some(Zone::Local));
        assert_eq!(Zone::parse("Europe/Berlin"), None);
    }

    /// Holds in any zone (run with `TZ=Europe/Berlin` or `TZ=America/New_York`
    /// to walk libc's DST changes): a daily 02:30 fires once a day at minute
    /// 30, and every minute is every minute.
    #[test]
    fn local_zone_through_a_year() {
        let daily = Cron::parse("30 2 * * *").unwrap();
        let every = Cron::parse("* * * * *").unwrap();
        let mut t = at(2024, 1, 1, 0, 0);
        let mut prev = None;
        while t < at(2025, 1, 1, 0, 0) {
            let r = daily.next_after(t, Zone::Local).unwrap();
            assert!(r > t && r - t <= 26 * 3600, "{}", Zone::Local.format(t));
            assert_eq!(Local.civil(r).unwrap().minute, 30);
            if let Some(p) = prev {
                assert!(r - p >= 22 * 3600, "{} then {}", p, r);
            }
            prev = Some(r);
            assert_eq!(every.next_after(t, Zone::Local), Some(t / 60 * 60 + 60));
            t = r + 1;
        }
    }

    /// The minute-by-minute meaning of a schedule, to check the search against.
    fn fires_at(c: &Cron, t: i64) -> bool {
        let w = utc_civil(t);
        c.minutes & (1 << w.minute) != 0
            && c.hours & (1 << w.hour) != 0
            && c.day_matches(w.month, w.day, weekday(t.div_euclid(86_400)))
    }

    fn field(max: u32, names_from: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            (names_from..=max).prop_map(|v| v.to_string()),
            (names_from..=max, names_from..=max).prop_map(|(a, b)| format!(
                "{}-{}",
                a.min(b),
                a.max(b)
            )),
            (1..=max.max(1)).prop_map(|s| format!("*/{s}")),
            proptest::collection::vec(names_from..=max, 1..4).prop_map(|v| v
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn next_fire_is_the_first_matching_minute(
            minute in field(59, 0),
            hour in field(23, 0),
            day in field(31, 1),
            month in field(12, 1),
            weekday in field(7, 0),
            after in at(2000, 1, 1, 0, 0)..at(2090, 1, 1, 0, 0),
        ) {
            let expr = format!("{minute} {hour} {day} {month} {weekday}");
            let Ok(c) = Cron::parse(&expr) else { return Ok(()) };
            let got = c.next_after(after, Zone::Utc).expect("fires");
            prop_assert!(got > after && got % 60 == 0, "{expr}");
            prop_assert!(fires_at(&c, got), "{expr}: {}", Zone::Utc.format(got));
            // Nothing fires in between (checked minute by minute, up to a year).
            let mut t = after.div_euclid(60) * 60 + 60;
            while t < got.min(after + 366 * 86_400) {
                prop_assert!(!fires_at(&c, t), "{expr}: missed {}", Zone::Utc.format(t));
                t += 60;
            }
        }
    }
}
