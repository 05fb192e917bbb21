//! Dates and timestamps in the ISO forms Postgres prints under `DateStyle=ISO` (what Electric
//! forces and wal-ingest emits) plus the common ISO-8601 input spellings (`T`, `Z`, `+hh:mm`).
//! Hand-written because the evaluator needs Postgres' range (years beyond 9999, BC, infinity)
//! and only integer day/microsecond arithmetic, which date libraries restrict or do not expose.

/// Days since 1970-01-01; `i64::MIN`/`i64::MAX` stand for `-infinity`/`infinity`.
pub(crate) type Days = i64;
/// Microseconds since 2000-01-01 00:00:00 (UTC for timestamptz), Postgres' own epoch, which
/// is what lets its whole range (4714 BC to 294276 AD) fit in an i64; infinities as for [`Days`].
pub(crate) type Micros = i64;

pub(crate) const NEG_INF: i64 = i64::MIN;
pub(crate) const POS_INF: i64 = i64::MAX;
const USECS_PER_DAY: i64 = 86_400_000_000;
/// 2000-01-01 in days since 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
// Postgres' limits: dates from 4714-11-24 BC, timestamps to 294276 AD; keep well inside i64.
const MIN_YEAR: i64 = -4713;
const MAX_YEAR: i64 = 294_276;

/// Howard Hinnant's days_from_civil, proleptic Gregorian with astronomical years (1 BC = 0).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.i;
        let mut v: i64 = 0;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() && self.i - start < max {
            v = v * 10 + i64::from(self.s[self.i] - b'0');
            self.i += 1;
        }
        let n = self.i - start;
        (n >= min).then_some((v, n))
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn rest(&self) -> &[u8] {
        &self.s[self.i..]
    }
}

fn special(s: &str) -> Option<i64> {
    match s.trim().to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => Some(POS_INF),
        "-infinity" => Some(NEG_INF),
        _ => None,
    }
}

/// Parses `YYYY-MM-DD` (optionally followed by ` BC`) into days.
fn parse_ymd(c: &mut Cursor<'_>) -> Result<i64, String> {
    let (y, _) = c.digits(1, 7).ok_or("expected a year")?;
    if !c.eat(b'-') {
        return Err("expected YYYY-MM-DD".into());
    }
    let (m, _) = c.digits(1, 2).ok_or("expected a month")?;
    if !c.eat(b'-') {
        return Err("expected YYYY-MM-DD".into());
    }
    let (d, _) = c.digits(1, 2).ok_or("expected a day")?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) || y == 0 {
        return Err("date field value out of range".into());
    }
    Ok(y * 10_000 + m * 100 + d)
}

fn finish_date(ymd: i64, bc: bool) -> Result<i64, String> {
    let (mut y, m, d) = (ymd / 10_000, ymd / 100 % 100, ymd % 100);
    if bc {
        y = 1 - y;
    }
    if !(MIN_YEAR..=MAX_YEAR).contains(&y) {
        return Err("date out of range".into());
    }
    Ok(days_from_civil(y, m, d))
}

fn eat_bc(c: &mut Cursor<'_>) -> bool {
    c.skip_ws();
    let r = c.rest();
    if r.len() >= 2 && r[..2].eq_ignore_ascii_case(b"bc") {
        c.i += 2;
        true
    } else if r.len() >= 2 && r[..2].eq_ignore_ascii_case(b"ad") {
        c.i += 2;
        false
    } else {
        false
    }
}

pub(crate) fn parse_date(s: &str) -> Result<Days, String> {
    if let Some(v) = special(s) {
        return Ok(v);
    }
    let mut c = Cursor { s: s.trim().as_bytes(), i: 0 };
    let ymd = parse_ymd(&mut c)?;
    // A date input may carry a time part, which Postgres ignores.
    let mut bc = eat_bc(&mut c);
    if !bc && !c.rest().is_empty() {
        let _ = parse_time_and_zone(&mut c)?;
        bc = eat_bc(&mut c);
    }
    c.skip_ws();
    if !c.rest().is_empty() {
        return Err(format!("invalid input syntax for type date: \"{s}\""));
    }
    finish_date(ymd, bc)
}

/// Time of day in microseconds and the zone offset in seconds east of UTC, if one was given.
fn parse_time_and_zone(c: &mut Cursor<'_>) -> Result<(i64, Option<i64>), String> {
    if !(c.eat(b'T') || c.eat(b't')) {
        c.skip_ws();
    }
    if c.rest().is_empty() {
        return Ok((0, None));
    }
    let (h, _) = c.digits(1, 2).ok_or("expected a time")?;
    if !c.eat(b':') {
        return Err("expected HH:MM".into());
    }
    let (mi, _) = c.digits(2, 2).ok_or("expected minutes")?;
    let mut sec = 0;
    let mut frac_us = 0;
    if c.eat(b':') {
        sec = c.digits(2, 2).ok_or("expected seconds")?.0;
        if c.eat(b'.') {
            let start = c.i;
            while c.s.get(c.i).is_some_and(u8::is_ascii_digit) {
                c.i += 1;
            }
            let digits = &c.s[start..c.i];
            if digits.is_empty() {
                return Err("expected fractional seconds".into());
            }
            // Postgres rounds to microseconds, halves to even (it goes through rint()).
            let mut us: i64 = 0;
            for k in 0..6 {
                us = us * 10 + digits.get(k).map_or(0, |d| i64::from(d - b'0'));
            }
            let rest = digits.get(6..).unwrap_or(&[]);
            if let Some((&first, tail)) = rest.split_first() {
                let above_half = first > b'5' || (first == b'5' && tail.iter().any(|&d| d != b'0'));
                let half = first == b'5' && tail.iter().all(|&d| d == b'0');
                if above_half || (half && us % 2 == 1) {
                    us += 1;
                }
            }
            frac_us = us;
        }
    }
    let time = ((h * 60 + mi) * 60 + sec) * 1_000_000 + frac_us;
    if h > 24 || mi > 59 || sec > 59 || time > USECS_PER_DAY {
        return Err("date/time field value out of range".into());
    }
    c.skip_ws();
    let zone = if c.eat(b'Z') || c.eat(b'z') {
        Some(0)
    } else if c.rest().len() >= 3 && c.rest()[..3].eq_ignore_ascii_case(b"utc") {
        c.i += 3;
        Some(0)
    } else if let Some(&sign) = c.s.get(c.i).filter(|b| **b == b'+' || **b == b'-') {
        c.i += 1;
        let (zh, n) = c.digits(1, 4).ok_or("expected a zone offset")?;
        let (mut hours, mut mins, mut secs) = if n > 2 { (zh / 100, zh % 100, 0) } else { (zh, 0, 0) };
        if n <= 2 && c.eat(b':') {
            mins = c.digits(2, 2).ok_or("expected zone minutes")?.0;
            if c.eat(b':') {
                secs = c.digits(2, 2).ok_or("expected zone seconds")?.0;
            }
        }
        if hours > 15 || mins > 59 || secs > 59 {
            return Err("time zone displacement out of range".into());
        }
        hours = hours * 3600 + mins * 60 + secs;
        Some(if sign == b'-' { -hours } else { hours })
    } else {
        None
    };
    Ok((time, zone))
}

/// Parses a timestamp. `with_zone` selects timestamptz semantics: a missing zone means the
/// session zone, which Folio (like Electric) pins to UTC; timestamp ignores a given zone, as
/// Postgres does.
pub(crate) fn parse_timestamp(s: &str, with_zone: bool) -> Result<Micros, String> {
    if let Some(v) = special(s) {
        return Ok(v);
    }
    let bad = || {
        format!(
            "invalid input syntax for type {}: \"{s}\"",
            if with_zone { "timestamp with time zone" } else { "timestamp" }
        )
    };
    let mut c = Cursor { s: s.trim().as_bytes(), i: 0 };
    let ymd = parse_ymd(&mut c).map_err(|_| bad())?;
    let mut bc = eat_bc(&mut c);
    let (time, zone) = if bc {
        (0, None)
    } else {
        parse_time_and_zone(&mut c).map_err(|e| if e.contains("range") { e } else { bad() })?
    };
    if !bc {
        bc = eat_bc(&mut c);
    }
    c.skip_ws();
    if !c.rest().is_empty() {
        return Err(bad());
    }
    let days = finish_date(ymd, bc)? - PG_EPOCH_DAYS;
    let mut us = days.checked_mul(USECS_PER_DAY).and_then(|d| d.checked_add(time)).ok_or("timestamp out of range")?;
    if with_zone {
        us -= zone.unwrap_or(0) * 1_000_000;
    }
    Ok(us)
}

pub(crate) fn format_date(days: Days) -> String {
    match days {
        POS_INF => "infinity".into(),
        NEG_INF => "-infinity".into(),
        _ => {
            let (y, m, d) = civil_from_days(days);
            let (y, bc) = if y <= 0 { (1 - y, " BC") } else { (y, "") };
            format!("{y:04}-{m:02}-{d:02}{bc}")
        }
    }
}

/// Postgres' ISO output; timestamptz is shown in UTC (`+00`), the session zone Folio pins.
pub(crate) fn format_timestamp(us: Micros, with_zone: bool) -> String {
    match us {
        POS_INF => "infinity".into(),
        NEG_INF => "-infinity".into(),
        _ => {
            let days = us.div_euclid(USECS_PER_DAY) + PG_EPOCH_DAYS;
            let tod = us.rem_euclid(USECS_PER_DAY);
            let (y, m, d) = civil_from_days(days);
            let (y, bc) = if y <= 0 { (1 - y, " BC") } else { (y, "") };
            let secs = tod / 1_000_000;
            let frac = tod % 1_000_000;
            let mut out = format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
            if frac != 0 {
                let f = format!(".{frac:06}");
                out.push_str(f.trim_end_matches('0'));
            }
            if with_zone {
                out.push_str("+00");
            }
            out.push_str(bc);
            out
        }
    }
}

pub(crate) fn date_to_timestamp(days: Days) -> Result<Micros, String> {
    match days {
        POS_INF | NEG_INF => Ok(days),
        _ => (days - PG_EPOCH_DAYS).checked_mul(USECS_PER_DAY).ok_or_else(|| "date out of range for timestamp".into()),
    }
}

pub(crate) fn timestamp_to_date(us: Micros) -> Days {
    match us {
        POS_INF | NEG_INF => us,
        _ => us.div_euclid(USECS_PER_DAY) + PG_EPOCH_DAYS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_output() {
        for s in ["2024-02-29", "0001-01-01", "0044-03-15 BC", "12345-06-07", "1970-01-01"] {
            assert_eq!(format_date(parse_date(s).unwrap()), s);
        }
        for s in ["2024-02-29 13:14:15.5+00", "1999-12-31 23:59:59.999999+00", "0001-01-01 00:00:00+00 BC"] {
            assert_eq!(format_timestamp(parse_timestamp(s, true).unwrap(), true), s);
        }
    }

    #[test]
    fn zones_shift_timestamptz_only() {
        let utc = parse_timestamp("2024-01-01 00:00:00Z", true).unwrap();
        assert_eq!(parse_timestamp("2024-01-01T05:30:00+05:30", true).unwrap(), utc);
        assert_eq!(parse_timestamp("2024-01-01 00:00:00+05", false).unwrap(), utc);
        assert!(parse_timestamp("2024-13-01", true).is_err());
        assert!(parse_date("2023-02-29").is_err());
    }
}
