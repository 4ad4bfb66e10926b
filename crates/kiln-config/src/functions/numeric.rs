//! Numeric functions: min, max, abs, ceil, floor, parseint, pow, signum, log.

use hcl::Value;

use super::{
    arg_f64, arg_int, arg_num, arg_str, arity, failed, float, int, Func, FuncContext, Res,
};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("min", min),
    ("max", max),
    ("abs", abs),
    ("ceil", ceil),
    ("floor", floor),
    ("parseint", parseint),
    ("pow", pow),
    ("signum", signum),
    ("log", log),
];

fn wrap(name: &str, f: f64) -> Res {
    float(f).map_err(|m| failed(name, m))
}

fn extreme(name: &str, args: &[Value], pick_max: bool) -> Res {
    if args.is_empty() {
        return Err(failed(name, "must pass at least one number"));
    }
    let mut best = arg_num(name, 0, &args[0])?;
    for (i, a) in args.iter().enumerate().skip(1) {
        let n = arg_num(name, i, a)?;
        let (x, y) = (n.as_f64().unwrap_or(0.0), best.as_f64().unwrap_or(0.0));
        if (pick_max && x > y) || (!pick_max && x < y) {
            best = n;
        }
    }
    Ok(Value::Number(best))
}

fn min(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    extreme(name, &args, false)
}

fn max(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    extreme(name, &args, true)
}

fn abs(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let n = arg_num(name, 0, &args[0])?;
    match n.as_i64() {
        Some(i) => Ok(int(i
            .checked_abs()
            .ok_or_else(|| failed(name, "number out of range"))?)),
        None => wrap(name, n.as_f64().unwrap_or(0.0).abs()),
    }
}

fn ceil(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    wrap(name, arg_f64(name, 0, &args[0])?.ceil())
}

fn floor(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    wrap(name, arg_f64(name, 0, &args[0])?.floor())
}

fn pow(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    wrap(
        name,
        arg_f64(name, 0, &args[0])?.powf(arg_f64(name, 1, &args[1])?),
    )
}

fn signum(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let f = arg_f64(name, 0, &args[0])?;
    Ok(int(if f > 0.0 {
        1
    } else if f < 0.0 {
        -1
    } else {
        0
    }))
}

fn log(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let x = arg_f64(name, 0, &args[0])?;
    let b = arg_f64(name, 1, &args[1])?;
    wrap(name, x.ln() / b.ln())
}

/// `parseint(str, base)`, base 2..=62 (digits 0-9, a-z, A-Z as in Go's big.Int).
fn parseint(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let s = arg_str(name, 0, &args[0])?;
    let base = arg_int(name, 1, &args[1])?;
    if !(2..=62).contains(&base) {
        return Err(failed(
            name,
            "base must be a whole number between 2 and 62 inclusive",
        ));
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(&s)),
    };
    if digits.is_empty() {
        return Err(failed(
            name,
            format!("cannot parse \"{s}\" as a base {base} integer"),
        ));
    }
    let mut acc: i64 = 0;
    for ch in digits.chars() {
        let d = match ch {
            '0'..='9' => ch as i64 - '0' as i64,
            'a'..='z' => ch as i64 - 'a' as i64 + 10,
            'A'..='Z' if base <= 36 => ch as i64 - 'A' as i64 + 10,
            'A'..='Z' => ch as i64 - 'A' as i64 + 36,
            _ => {
                return Err(failed(
                    name,
                    format!("cannot parse \"{s}\" as a base {base} integer"),
                ))
            }
        };
        if d >= base {
            return Err(failed(
                name,
                format!("cannot parse \"{s}\" as a base {base} integer"),
            ));
        }
        acc = acc
            .checked_mul(base)
            .and_then(|a| a.checked_add(d))
            .ok_or_else(|| failed(name, "number out of range"))?;
    }
    Ok(int(if neg { -acc } else { acc }))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn min_max() {
        ok("min", &["12", "54", "3"], "3");
        ok("max", &["12", "54", "3"], "54");
        ok("max", &["1.5", "\"2\""], "2");
        err("min", &[]);
        err("max", &["\"a\""]);
    }

    #[test]
    fn abs_ceil_floor() {
        ok("abs", &["-12.4"], "12.4");
        ok("abs", &["-3"], "3");
        ok("abs", &["0"], "0");
        err("abs", &["[]"]);
        ok("ceil", &["5.1"], "6");
        ok("ceil", &["5"], "5");
        ok("floor", &["4.9"], "4");
        ok("floor", &["-1.5"], "-2");
        err("floor", &["\"x\""]);
        assert!(matches!(c("ceil", &["1.2"]), Ok(hcl::Value::Number(n)) if n.is_u64()));
    }

    #[test]
    fn parseint_cases() {
        ok("parseint", &["\"100\"", "10"], "100");
        ok("parseint", &["\"FF\"", "16"], "255");
        ok("parseint", &["\"-10\"", "16"], "-16");
        ok("parseint", &["\"1011111011101111\"", "2"], "48879");
        ok("parseint", &["\"aA\"", "62"], "656");
        err("parseint", &["\"12\"", "2"]);
        err("parseint", &["\"1\"", "1"]);
        err("parseint", &["\"\"", "10"]);
    }

    #[test]
    fn pow_signum_log() {
        ok("pow", &["3", "2"], "9");
        ok("signum", &["-13"], "-1");
        ok("signum", &["0"], "0");
        ok("log", &["16", "2"], "4");
        err("pow", &["1"]);
    }
}
