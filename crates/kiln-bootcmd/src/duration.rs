//! Go's `time.ParseDuration`, the one parser of durations in kiln: every duration key of a
//! template (`boot_wait`, `ssh_timeout`, …), `PACKER_KEY_INTERVAL`, `timeadd()` and the
//! boot command's `<wait1m30s>` (kiln-config re-exports it).

/// Go's `time.ParseDuration`: `300ms`, `-1.5h`, `2h45m`; "0" alone is allowed.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let orig = s;
    let s = s.trim();
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration \"{orig}\""));
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return Err(format!(
                "invalid duration \"{orig}\": expected a number, e.g. \"10s\" or \"1m30s\""
            ));
        }
        let num: f64 = rest[..n]
            .parse()
            .map_err(|_| format!("invalid duration \"{orig}\""))?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        rest = &rest[u..];
        let mult: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "invalid duration \"{orig}\": missing unit (use ns, us, ms, s, m or h)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration \"{orig}\": unknown unit \"{other}\""
                ))
            }
        };
        total += num * mult;
    }
    // Go's limit: a duration is an int64 of nanoseconds (about 292 years)
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(format!(
            "invalid duration \"{orig}\": out of range (at most about 292 years)"
        ));
    }
    let n = total.round() as i128;
    Ok(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Ok(10_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("5ms"), Ok(5_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("250us"), Ok(250_000));
        assert_eq!(parse_go_duration("250µs"), Ok(250_000));
        assert_eq!(parse_go_duration("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        for bad in ["10", "5x", "", "-", "1s-2s", "s", "1e20s", "99999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
