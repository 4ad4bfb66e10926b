//! Date and time functions: timestamp, formatdate, timeadd, timecmp, and Packer's legacy_isotime /
//! legacy_strftime. [`go_time_format`] (Go reference-layout formatting, as `{{ isotime "2006-01-02" }}`) is public
//! for the Go-template fields resolved at build time.

use hcl::Value;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::{arg_str, arity, failed, int, Func, FuncContext, Res};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("timestamp", timestamp),
    ("formatdate", formatdate),
    ("timeadd", timeadd),
    ("timecmp", timecmp),
    ("legacy_isotime", legacy_isotime),
    ("legacy_strftime", legacy_strftime),
];

/// Format `t` with a Go reference layout (`"2006-01-02T15:04:05Z07:00"`), as Go's `time.Format`.
pub fn go_time_format(layout: &str, t: OffsetDateTime) -> String {
    const TOKENS: &[&str] = &[
        "January",
        "Jan",
        "Monday",
        "Mon",
        "MST",
        "2006",
        "002",
        "01",
        "02",
        "03",
        "04",
        "05",
        "06",
        "15",
        "__2",
        "_2",
        "1",
        "2",
        "3",
        "4",
        "5",
        "PM",
        "pm",
        "-07:00:00",
        "-070000",
        "-07:00",
        "-0700",
        "-07",
        "Z07:00:00",
        "Z070000",
        "Z07:00",
        "Z0700",
        "Z07",
    ];
    let month = usize::from(u8::from(t.month())) - 1;
    let wday = usize::from(t.weekday().number_days_from_monday());
    let h12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    let off = t.offset();
    let (oh, om, os) = off.as_hms();
    let sign = if off.is_negative() { '-' } else { '+' };
    let (oh, om, os) = (oh.unsigned_abs(), om.unsigned_abs(), os.unsigned_abs());
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("_2006") {
            out.push('_');
            out.push_str(&format!("{:04}", t.year()));
            rest = r;
            continue;
        }
        // fractional seconds: .000 / ,000 (fixed) or .999 (trailing zeros trimmed)
        if let Some(sep) = rest.chars().next().filter(|c| *c == '.' || *c == ',') {
            let digits = &rest[1..];
            let n0 = digits.chars().take_while(|c| *c == '0').count();
            let n9 = digits.chars().take_while(|c| *c == '9').count();
            let n = n0.max(n9);
            if n > 0 && !digits[n..].starts_with(|c: char| c.is_ascii_digit()) {
                let frac = format!("{:09}", t.nanosecond());
                let frac = &frac[..n.min(9)];
                if n0 > 0 {
                    out.push(sep);
                    out.push_str(frac);
                } else {
                    let trimmed = frac.trim_end_matches('0');
                    if !trimmed.is_empty() {
                        out.push(sep);
                        out.push_str(trimmed);
                    }
                }
                rest = &digits[n..];
                continue;
            }
        }
        let Some(tok) = TOKENS.iter().find(|tok| rest.starts_with(**tok)) else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        let utc_z = off.is_utc() && tok.starts_with('Z');
        let s = match *tok {
            "January" => MONTHS[month].to_string(),
            "Jan" => MONTHS[month][..3].to_string(),
            "Monday" => DAYS[wday].to_string(),
            "Mon" => DAYS[wday][..3].to_string(),
            "MST" => {
                if off.is_utc() {
                    "UTC".to_string()
                } else {
                    format!("{sign}{oh:02}{om:02}")
                }
            }
            "2006" => format!("{:04}", t.year()),
            "06" => format!("{:02}", t.year().rem_euclid(100)),
            "002" => format!("{:03}", t.ordinal()),
            "__2" => format!("{:>3}", t.ordinal()),
            "01" => format!("{:02}", month + 1),
            "1" => (month + 1).to_string(),
            "02" => format!("{:02}", t.day()),
            "_2" => format!("{:>2}", t.day()),
            "2" => t.day().to_string(),
            "15" => format!("{:02}", t.hour()),
            "03" => format!("{h12:02}"),
            "3" => h12.to_string(),
            "04" => format!("{:02}", t.minute()),
            "4" => t.minute().to_string(),
            "05" => format!("{:02}", t.second()),
            "5" => t.second().to_string(),
            "PM" => (if t.hour() < 12 { "AM" } else { "PM" }).to_string(),
            "pm" => (if t.hour() < 12 { "am" } else { "pm" }).to_string(),
            _ if utc_z => "Z".to_string(),
            "-07:00:00" | "Z07:00:00" => format!("{sign}{oh:02}:{om:02}:{os:02}"),
            "-070000" | "Z070000" => format!("{sign}{oh:02}{om:02}{os:02}"),
            "-07:00" | "Z07:00" => format!("{sign}{oh:02}:{om:02}"),
            "-0700" | "Z0700" => format!("{sign}{oh:02}{om:02}"),
            _ => format!("{sign}{oh:02}"),
        };
        out.push_str(&s);
        rest = &rest[tok.len()..];
    }
    out
}

/// Packer's `legacy_isotime(layout)`: the build's "now" (UTC) in a Go layout.
fn legacy_isotime(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    arity(name, &args, 0, Some(1))?;
    let layout = match args.first() {
        Some(v) => arg_str(name, 0, v)?,
        None => "2006-01-02T15:04:05Z07:00".to_string(),
    };
    Ok(Value::String(go_time_format(
        &layout,
        ctx.now.to_offset(UtcOffset::UTC),
    )))
}

/// Packer's `legacy_strftime(format)`: the build's "now" (UTC) with C strftime directives.
fn legacy_strftime(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let fmt = arg_str(name, 0, &args[0])?;
    let t = ctx.now.to_offset(UtcOffset::UTC);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            return Err(failed(name, "format ends with a lone %"));
        };
        let layout = match d {
            'Y' => "2006",
            'y' => "06",
            'm' => "01",
            'd' => "02",
            'e' => "_2",
            'H' => "15",
            'I' => "03",
            'M' => "04",
            'S' => "05",
            'p' => "PM",
            'b' | 'h' => "Jan",
            'B' => "January",
            'a' => "Mon",
            'A' => "Monday",
            'j' => "002",
            'Z' => "MST",
            'z' => "-0700",
            'F' => "2006-01-02",
            'T' => "15:04:05",
            'D' => "01/02/06",
            'R' => "15:04",
            '%' => {
                out.push('%');
                continue;
            }
            other => {
                return Err(failed(
                    name,
                    format!("unsupported strftime directive %{other}"),
                ))
            }
        };
        out.push_str(&go_time_format(layout, t));
    }
    Ok(Value::String(out))
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// `timestamp()`: `ctx.now` in RFC 3339, UTC, whole seconds (`2026-11-26T03:04:05Z`).
fn timestamp(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    arity(name, &args, 0, Some(0))?;
    Ok(Value::String(rfc3339(ctx.now.to_offset(UtcOffset::UTC))))
}

fn parse_ts(name: &str, s: &str) -> Result<OffsetDateTime, super::FuncError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        failed(
            name,
            format!(
                "not a valid RFC 3339 timestamp: \"{s}\" (expected e.g. \"2026-01-02T15:04:05Z\")"
            ),
        )
    })
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn offset_str(off: UtcOffset, colon: bool) -> String {
    let secs = off.whole_seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.abs();
    if colon {
        format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    } else {
        format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
    }
}

/// `formatdate(spec, timestamp)` with Terraform's spec: YYYY YY MMMM MMM MM M DD D EEEE EEE hh h HH H AA aa
/// mm m ss s ZZZZZ ZZZZ ZZZ Z, literals in single quotes (`''` is a quote).
fn formatdate(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let spec = arg_str(name, 0, &args[0])?;
    let t = parse_ts(name, &arg_str(name, 1, &args[1])?)?;
    let chars: Vec<char> = spec.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(failed(name, "unterminated literal '' in format spec")),
                    Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                        out.push('\'');
                        j += 2;
                    }
                    Some('\'') => break,
                    Some(ch) => {
                        out.push(*ch);
                        j += 1;
                    }
                }
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && chars[j] == c {
            j += 1;
        }
        let tok: String = chars[i..j].iter().collect();
        i = j;
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        let s = match tok.as_str() {
            "YYYY" => format!("{:04}", t.year()),
            "YY" => format!("{:02}", t.year().rem_euclid(100)),
            "MMMM" => MONTHS[usize::from(u8::from(t.month())) - 1].to_string(),
            "MMM" => MONTHS[usize::from(u8::from(t.month())) - 1][..3].to_string(),
            "MM" => format!("{:02}", u8::from(t.month())),
            "M" => u8::from(t.month()).to_string(),
            "DD" => format!("{:02}", t.day()),
            "D" => t.day().to_string(),
            "EEEE" => DAYS[usize::from(t.weekday().number_days_from_monday())].to_string(),
            "EEE" => DAYS[usize::from(t.weekday().number_days_from_monday())][..3].to_string(),
            "hh" => format!("{:02}", t.hour()),
            "h" => t.hour().to_string(),
            "HH" => format!("{hour12:02}"),
            "H" => hour12.to_string(),
            "AA" => (if t.hour() < 12 { "AM" } else { "PM" }).to_string(),
            "aa" => (if t.hour() < 12 { "am" } else { "pm" }).to_string(),
            "mm" => format!("{:02}", t.minute()),
            "m" => t.minute().to_string(),
            "ss" => format!("{:02}", t.second()),
            "s" => t.second().to_string(),
            "ZZZZZ" => offset_str(t.offset(), true),
            "ZZZZ" => offset_str(t.offset(), false),
            "ZZZ" => {
                if t.offset().is_utc() {
                    "UTC".to_string()
                } else {
                    offset_str(t.offset(), false)
                }
            }
            "Z" => {
                if t.offset().is_utc() {
                    "Z".to_string()
                } else {
                    offset_str(t.offset(), true)
                }
            }
            other => {
                return Err(failed(
                    name,
                    format!("invalid date format verb \"{other}\"; put literal letters in single quotes, e.g. '{other}'"),
                ))
            }
        };
        out.push_str(&s);
    }
    Ok(Value::String(out))
}

/// Parse a Go duration (`"1h30m"`, `"-10m"`, `"1.5h"`, `"300ms"`) by the loader's one parser
/// of Go's `time.ParseDuration` (the one every duration key and `PACKER_KEY_INTERVAL` use).
fn parse_duration(name: &str, s: &str) -> Result<time::Duration, super::FuncError> {
    let nanos = crate::load::ebody::parse_go_duration(s).map_err(|m| failed(name, m))?;
    // parse_go_duration keeps within Go's int64 nanoseconds
    let nanos = i64::try_from(nanos).map_err(|_| {
        failed(
            name,
            format!("duration \"{s}\" is out of range (at most about 292 years)"),
        )
    })?;
    Ok(time::Duration::nanoseconds(nanos))
}

/// `timeadd(timestamp, duration)`.
fn timeadd(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let t = parse_ts(name, &arg_str(name, 0, &args[0])?)?;
    let d = parse_duration(name, &arg_str(name, 1, &args[1])?)?;
    let r = t
        .checked_add(d)
        .ok_or_else(|| failed(name, "resulting time is out of range"))?;
    Ok(Value::String(rfc3339(r)))
}

/// `timecmp(a, b)`: -1, 0 or 1.
fn timecmp(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let a = parse_ts(name, &arg_str(name, 0, &args[0])?)?;
    let b = parse_ts(name, &arg_str(name, 1, &args[1])?)?;
    Ok(int(match a.cmp(&b) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::call;
    use super::super::testutil::*;

    #[test]
    fn timestamp_is_ctx_now_utc() {
        ok("timestamp", &[], "\"2026-11-26T03:04:05Z\"");
        let mut cx = ctx();
        cx.now = time::macros::datetime!(2026-01-02 10:00:00.5 +02:00);
        assert_eq!(
            call("timestamp", vec![], &cx).ok(),
            Some(s("2026-01-02T08:00:00Z"))
        );
        err("timestamp", &["1"]);
    }

    #[test]
    fn formatdate_cases() {
        let ts = "\"2018-01-02T23:12:01Z\"";
        ok(
            "formatdate",
            &["\"DD MMM YYYY hh:mm ZZZ\"", ts],
            "\"02 Jan 2018 23:12 UTC\"",
        );
        ok(
            "formatdate",
            &["\"EEEE, DD-MMM-YY hh:mm:ss ZZZ\"", ts],
            "\"Tuesday, 02-Jan-18 23:12:01 UTC\"",
        );
        ok(
            "formatdate",
            &["\"EEE, DD MMM YYYY hh:mm:ss ZZZ\"", ts],
            "\"Tue, 02 Jan 2018 23:12:01 UTC\"",
        );
        ok("formatdate", &["\"MMM DD, YYYY\"", ts], "\"Jan 02, 2018\"");
        ok("formatdate", &["\"HH:mmaa\"", ts], "\"11:12pm\"");
        ok("formatdate", &["\"H AA M/D\"", ts], "\"11 PM 1/2\"");
        ok(
            "formatdate",
            &["\"YYYYMMDDhhmmss\"", ts],
            "\"20180102231201\"",
        );
        ok(
            "formatdate",
            &["\"YYYY-MM-DD'T'hh:mm:ssZ\"", ts],
            "\"2018-01-02T23:12:01Z\"",
        );
        ok("formatdate", &["\"h 'o''clock'\"", ts], "\"23 o'clock\"");
        ok("formatdate", &["\"MMMM\"", ts], "\"January\"");
        let off = "\"2018-01-02T23:12:01+05:30\"";
        ok(
            "formatdate",
            &["\"ZZZZZ|ZZZZ|ZZZ|Z\"", off],
            "\"+05:30|+0530|+0530|+05:30\"",
        );
        err("formatdate", &["\"YYYY-xx\"", ts]);
        err("formatdate", &["\"'abc\"", ts]);
        err("formatdate", &["\"YYYY\"", "\"2018-01-02\""]);
        err("formatdate", &["\"YYYY\""]);
    }

    #[test]
    fn timeadd_cases() {
        ok(
            "timeadd",
            &["\"2017-11-22T00:00:00Z\"", "\"10m\""],
            "\"2017-11-22T00:10:00Z\"",
        );
        ok(
            "timeadd",
            &["\"2017-11-22T00:00:00Z\"", "\"-1h30m\""],
            "\"2017-11-21T22:30:00Z\"",
        );
        ok(
            "timeadd",
            &["\"2017-11-22T00:00:00Z\"", "\"1.5h\""],
            "\"2017-11-22T01:30:00Z\"",
        );
        err("timeadd", &["\"2017-11-22T00:00:00Z\"", "\"10x\""]);
        err("timeadd", &["\"2017-11-22T00:00:00Z\"", "\"\""]);
        err("timeadd", &["\"yesterday\"", "\"1h\""]);
    }

    #[test]
    fn go_layouts() {
        let t = time::macros::datetime!(2026-01-02 15:04:05.120 UTC);
        assert_eq!(
            super::go_time_format("2006-01-02 15:04", t),
            "2026-01-02 15:04"
        );
        assert_eq!(
            super::go_time_format("Mon Jan _2 03:04:05PM MST 2006", t),
            "Fri Jan  2 03:04:05PM UTC 2026"
        );
        assert_eq!(
            super::go_time_format("2006-01-02T15:04:05.000Z07:00", t),
            "2026-01-02T15:04:05.120Z"
        );
        assert_eq!(
            super::go_time_format("05.999 002 January Monday", t),
            "05.12 002 January Friday"
        );
        let o = time::macros::datetime!(2026-01-02 15:04:05 -07:30);
        assert_eq!(
            super::go_time_format("Z07:00 -0700 MST", o),
            "-07:30 -0730 -0730"
        );
        assert_eq!(super::go_time_format("1/2/06 3pm", o), "1/2/26 3pm");
    }

    #[test]
    fn legacy_isotime_and_strftime() {
        ok(
            "legacy_isotime",
            &["\"2006-01-02 15:04\""],
            "\"2026-11-26 03:04\"",
        );
        ok("legacy_isotime", &[], "\"2026-11-26T03:04:05Z\"");
        err("legacy_isotime", &["[]"]);
        ok(
            "legacy_strftime",
            &["\"%Y%m%d-%H%M%S %% %b\""],
            "\"20261126-030405 % Nov\"",
        );
        err("legacy_strftime", &["\"%Q\""]);
        err("legacy_strftime", &["\"%\""]);
        err("legacy_strftime", &[]);
    }

    #[test]
    fn timecmp_cases() {
        ok(
            "timecmp",
            &["\"2017-11-22T00:00:00Z\"", "\"2017-11-22T01:00:00+01:00\""],
            "0",
        );
        ok(
            "timecmp",
            &["\"2017-11-22T00:00:00Z\"", "\"2017-11-22T00:00:01Z\""],
            "-1",
        );
        ok(
            "timecmp",
            &["\"2017-11-22T00:00:02Z\"", "\"2017-11-22T00:00:01Z\""],
            "1",
        );
        err("timecmp", &["\"x\"", "\"2017-11-22T00:00:01Z\""]);
    }
}
