//! Cron schedules of rotation policies, always in UTC.
//!
//! Five fields, `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`, each `*`, a
//! number, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a list of
//! those separated by commas; day of week 0-7 (0 and 7 are Sunday). As in
//! Vixie cron, when both day fields are restricted (neither starts with
//! `*`) a day matches either; otherwise it matches both (so `*/2` in the
//! day of month is every other day, whatever the day of week says). `@hourly`, `@daily`,
//! `@weekly`, `@monthly` and `@yearly` stand for their usual expressions.
//! Names (`MON`, `JAN`) are not accepted, nor time zones: a schedule that
//! means local time would move with daylight saving.
//!
//! A schedule that never matches (`0 0 30 2 *`) is refused when parsed.

use time::{Date, OffsetDateTime};

/// A parsed schedule: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
}

/// How far ahead a match is looked for: 400 years, the Gregorian cycle
/// after which every date falls on the same weekday again (29 February on
/// a Monday can be 40 years apart around 2100).
const HORIZON_DAYS: u32 = 146_097;

fn field(text: &str, what: &str, min: u32, max: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| format!("{what}: step {s:?} is not a number"))?;
                if s == 0 || s > max {
                    return Err(format!("{what}: step {s} is out of 1-{max}"));
                }
                (r, Some(s))
            }
            None => (item, None),
        };
        let number = |s: &str| -> Result<u32, String> {
            let n: u32 = s
                .parse()
                .map_err(|_| format!("{what}: {s:?} is not a number (names are not accepted)"))?;
            if n < min || n > max {
                return Err(format!("{what}: {n} is out of {min}-{max}"));
            }
            Ok(n)
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("{what}: range {a}-{b} is backwards"));
            }
            (a, b)
        } else {
            let a = number(range)?;
            // `a/n`: from a to the end, every n.
            (a, if step.is_some() { max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    /// Parses a schedule; the error says which field is wrong and why.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            t if t.starts_with('@') => return Err(format!("unknown schedule {t}")),
            t => t,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "a schedule has 5 fields (minute hour day-of-month month day-of-week), not {}",
                f.len()
            ));
        }
        let mut weekdays = field(f[4], "day of week", 0, 7)? as u8;
        if weekdays & 0x80 != 0 {
            weekdays = (weekdays | 1) & 0x7f; // 7 is Sunday
        }
        let c = Cron {
            text: f.join(" "),
            minutes: field(f[0], "minute", 0, 59)?,
            hours: field(f[1], "hour", 0, 23)? as u32,
            days: field(f[2], "day of month", 1, 31)? as u32,
            months: field(f[3], "month", 1, 12)? as u16,
            weekdays,
            days_star: f[2].starts_with('*'),
            weekdays_star: f[4].starts_with('*'),
        };
        // 2000-01-01: any date fits, the horizon covers every leap cycle.
        if c.next_after(946_684_800).is_none() {
            return Err(format!("the schedule {} never matches a date", c.text));
        }
        Ok(c)
    }

    /// The schedule in one form (fields separated by one space; macros
    /// expanded).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << (d.month() as u8)) == 0 {
            return false;
        }
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().number_days_from_sunday()) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first matching minute strictly after `t` (Unix seconds, UTC),
    /// or none within the horizon.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let start = t.div_euclid(60).checked_add(1)?.checked_mul(60)?;
        let at = OffsetDateTime::from_unix_timestamp(start).ok()?;
        let mut date = at.date();
        let (mut from_h, mut from_m) = (at.hour() as u32, at.minute() as u32);
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(date) {
                for h in from_h..24 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    let m0 = if h == from_h { from_m } else { 0 };
                    if let Some(m) = (m0..60).find(|m| self.minutes & (1 << m) != 0) {
                        let when = date.with_hms(h as u8, m as u8, 0).ok()?.assume_utc();
                        return Some(when.unix_timestamp());
                    }
                }
            }
            date = date.next_day()?;
            (from_h, from_m) = (0, 0);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn next(expr: &str, after: OffsetDateTime) -> OffsetDateTime {
        let t = Cron::parse(expr)
            .unwrap()
            .next_after(after.unix_timestamp())
            .unwrap();
        OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    #[test]
    fn next_matches_are_found_in_utc() {
        let t = datetime!(2026-12-04 18:25:30 UTC);
        assert_eq!(next("* * * * *", t), datetime!(2026-12-04 18:26 UTC));
        assert_eq!(next("0 3 * * *", t), datetime!(2026-12-05 03:00 UTC));
        assert_eq!(next("*/15 * * * *", t), datetime!(2026-12-04 18:30 UTC));
        assert_eq!(next("30 18 * * *", t), datetime!(2026-12-04 18:30 UTC));
        assert_eq!(next("20 18 * * *", t), datetime!(2026-12-05 18:20 UTC));
        assert_eq!(next("26 18 4 12 *", t), datetime!(2026-12-04 18:26 UTC));
        // Strictly after: a match at `t` itself is not the next one.
        let on = datetime!(2026-12-05 03:00 UTC);
        assert_eq!(next("0 3 * * *", on), datetime!(2026-12-06 03:00 UTC));
        // 2026-12-04 is a Friday; Sunday is 0 and 7.
        assert_eq!(next("0 0 * * 0", t), datetime!(2026-12-06 00:00 UTC));
        assert_eq!(next("0 0 * * 7", t), datetime!(2026-12-06 00:00 UTC));
        assert_eq!(next("0 9 * * 1-5", t), datetime!(2026-12-07 09:00 UTC));
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(next("0 0 1 * 1", t), datetime!(2026-12-07 00:00 UTC));
        assert_eq!(
            next("0 0 1 * 1", datetime!(2026-12-28 12:00 UTC)),
            datetime!(2027-01-01 00:00 UTC)
        );
        // Month ends, leap days and macros.
        assert_eq!(next("0 0 31 * *", t), datetime!(2026-12-31 00:00 UTC));
        assert_eq!(next("0 0 29 2 *", t), datetime!(2028-02-29 00:00 UTC));
        assert_eq!(next("@monthly", t), datetime!(2027-01-01 00:00 UTC));
        assert_eq!(next("@weekly", t), datetime!(2026-12-06 00:00 UTC));
        assert_eq!(
            next("5,10-12/2 1 * * *", t),
            datetime!(2026-12-05 01:05 UTC)
        );
        assert_eq!(next("50/5 * * * *", t), datetime!(2026-12-04 18:50 UTC));
        assert_eq!(next("0 0 1 1 *", t), datetime!(2027-01-01 00:00 UTC));
        // A step in a day field restricts it (`*` only means "any" when it
        // is the whole field).
        assert_eq!(next("0 0 */2 * *", t), datetime!(2026-12-05 00:00 UTC));
        assert_eq!(
            next("0 0 */2 * *", datetime!(2026-12-05 12:00 UTC)),
            datetime!(2026-12-07 00:00 UTC)
        );
        assert_eq!(next("0 0 */10 * 1", t), datetime!(2026-12-21 00:00 UTC));
        // (Sunday, Wednesday and Saturday; 2026-12-05 is a Saturday.)
        assert_eq!(next("0 0 * * */3", t), datetime!(2026-12-05 00:00 UTC));
        // Both restricted: a February day that is the 29th or a Monday.
        assert_eq!(next("0 0 29 2 1", t), datetime!(2027-02-01 00:00 UTC));
        // A starred step: the 1st (or 30th) of February that is a Sunday.
        assert_eq!(next("0 0 */29 2 */7", t), datetime!(2032-02-01 00:00 UTC));
    }

    #[test]
    fn bad_schedules_are_refused_with_their_field() {
        for (bad, says) in [
            ("", "5 fields"),
            ("* * * *", "5 fields"),
            ("* * * * * *", "5 fields"),
            ("60 * * * *", "minute: 60"),
            ("* 24 * * *", "hour: 24"),
            ("* * 0 * *", "day of month: 0"),
            ("* * * 13 *", "month: 13"),
            ("* * * * 8", "day of week: 8"),
            ("* * * JAN *", "names"),
            ("*/0 * * * *", "step 0"),
            ("5-1 * * * *", "backwards"),
            ("-1 * * * *", "not a number"),
            ("0 0 30 2 *", "never matches"),
            ("0 0 31 4,6,9,11 *", "never matches"),
            ("@reboot", "unknown schedule"),
        ] {
            let e = Cron::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert_eq!(Cron::parse("  0   3 * *  * ").unwrap().text(), "0 3 * * *");
        assert_eq!(Cron::parse("@daily").unwrap().text(), "0 0 * * *");
    }
}
