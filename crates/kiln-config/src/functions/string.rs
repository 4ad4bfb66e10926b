//! String functions: lower, upper, title, trim*, chomp, substr, strrev, split, join, replace, indent,
//! format, formatlist, regex, regexall, startswith, endswith, strcontains.

use hcl::Value;
use regex::Regex;

use super::{
    arg_bool, arg_int, arg_list, arg_num, arg_str, arity, failed, num_to_string, Func, FuncContext,
    Res,
};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("lower", lower),
    ("upper", upper),
    ("title", title),
    ("trimspace", trimspace),
    ("trim", trim),
    ("trimprefix", trimprefix),
    ("trimsuffix", trimsuffix),
    ("chomp", chomp),
    ("substr", substr),
    ("strrev", strrev),
    ("split", split),
    ("join", join),
    ("replace", replace),
    ("indent", indent),
    ("format", format),
    ("formatlist", formatlist),
    ("regex", regex_fn),
    ("regexall", regexall),
    ("regex_replace", regex_replace),
    ("startswith", startswith),
    ("endswith", endswith),
    ("strcontains", strcontains),
];

fn one_str(name: &str, args: &[Value]) -> Result<String, super::FuncError> {
    arity(name, args, 1, Some(1))?;
    arg_str(name, 0, &args[0])
}

fn lower(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(one_str(name, &args)?.to_lowercase()))
}

fn upper(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(one_str(name, &args)?.to_uppercase()))
}

/// Go's `strings.Title`: upper-case every letter that starts a word.
fn title(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let s = one_str(name, &args)?;
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for ch in s.chars() {
        // Go's isSeparator: ASCII letters, digits and '_' join words; other ASCII and spaces separate them.
        let is_word = if ch.is_ascii() {
            ch.is_ascii_alphanumeric() || ch == '_'
        } else {
            !ch.is_whitespace()
        };
        if is_word && !prev_letter {
            out.extend(ch.to_uppercase());
        } else {
            out.push(ch);
        }
        prev_letter = is_word;
    }
    Ok(Value::String(out))
}

fn trimspace(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(one_str(name, &args)?.trim().to_string()))
}

fn two_str(name: &str, args: &[Value]) -> Result<(String, String), super::FuncError> {
    arity(name, args, 2, Some(2))?;
    Ok((arg_str(name, 0, &args[0])?, arg_str(name, 1, &args[1])?))
}

/// `trim(str, cutset)`: remove any of the characters in cutset from both ends.
fn trim(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (s, cut) = two_str(name, &args)?;
    Ok(Value::String(
        s.trim_matches(|c| cut.contains(c)).to_string(),
    ))
}

fn trimprefix(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (s, p) = two_str(name, &args)?;
    Ok(Value::String(
        s.strip_prefix(p.as_str()).unwrap_or(&s).to_string(),
    ))
}

fn trimsuffix(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (s, p) = two_str(name, &args)?;
    Ok(Value::String(
        s.strip_suffix(p.as_str()).unwrap_or(&s).to_string(),
    ))
}

/// Remove all trailing newline sequences (`\n`, `\r\n`, `\r`).
fn chomp(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let s = one_str(name, &args)?;
    Ok(Value::String(s.trim_end_matches(['\n', '\r']).to_string()))
}

/// `substr(str, offset, length)`: character based; negative offset counts from the end; length -1 = rest.
fn substr(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 3, Some(3))?;
    let s = arg_str(name, 0, &args[0])?;
    let mut offset = arg_int(name, 1, &args[1])?;
    let length = arg_int(name, 2, &args[2])?;
    let chars: Vec<char> = s.chars().collect();
    let total = chars.len() as i64;
    if offset < 0 {
        offset += total;
        if offset < 0 {
            return Err(failed(name, "offset is out of range for the string"));
        }
    }
    if offset > total {
        return Err(failed(
            name,
            "offset is greater than the length of the string",
        ));
    }
    if length < -1 {
        return Err(failed(
            name,
            "length must be -1 (the rest of the string) or a non-negative number",
        ));
    }
    let end = if length == -1 {
        total
    } else {
        offset.saturating_add(length).min(total)
    };
    Ok(Value::String(
        chars[offset as usize..end as usize].iter().collect(),
    ))
}

fn strrev(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(one_str(name, &args)?.chars().rev().collect()))
}

/// `split(separator, str)` (Go `strings.Split`).
fn split(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (sep, s) = two_str(name, &args)?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str())
            .map(|p| Value::String(p.to_string()))
            .collect()
    };
    Ok(Value::Array(parts))
}

/// `join(separator, list...)`.
fn join(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, None)?;
    let sep = arg_str(name, 0, &args[0])?;
    let mut items = Vec::new();
    for (i, l) in args.iter().enumerate().skip(1) {
        for el in arg_list(name, i, l)? {
            if el.is_null() {
                return Err(failed(name, "cannot join a null element"));
            }
            items.push(arg_str(name, i, &el)?);
        }
    }
    let total: u128 = items.iter().map(|s| s.len() as u128).sum::<u128>()
        + (items.len().saturating_sub(1) as u128) * sep.len() as u128;
    super::check_size(name, total, super::MAX_STRING_BYTES, "bytes")?;
    Ok(Value::String(items.join(&sep)))
}

/// `replace(str, substr, replacement)`; a `/…/` substr is an RE2 regex (`$1` references groups).
fn replace(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 3, Some(3))?;
    let s = arg_str(name, 0, &args[0])?;
    let sub = arg_str(name, 1, &args[1])?;
    let rep = arg_str(name, 2, &args[2])?;
    if sub.len() > 1 && sub.starts_with('/') && sub.ends_with('/') {
        let re = compile(name, &sub[1..sub.len() - 1])?;
        return Ok(Value::String(re.replace_all(&s, rep.as_str()).into_owned()));
    }
    if !sub.is_empty() || !rep.is_empty() {
        let n = if sub.is_empty() {
            s.chars().count() as u128 + 1
        } else {
            s.matches(sub.as_str()).count() as u128
        };
        super::check_size(
            name,
            s.len() as u128 + n * rep.len() as u128,
            super::MAX_STRING_BYTES,
            "bytes",
        )?;
    }
    Ok(Value::String(s.replace(&sub, &rep)))
}

/// `indent(n, str)`: prefix every line but the first with n spaces.
fn indent(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let n = arg_int(name, 0, &args[0])?;
    if n < 0 {
        return Err(failed(name, "the number of spaces must not be negative"));
    }
    let s = arg_str(name, 1, &args[1])?;
    let lines = s.matches('\n').count() as u128;
    super::check_size(
        name,
        s.len() as u128 + lines * n as u128,
        super::MAX_STRING_BYTES,
        "bytes",
    )?;
    if lines == 0 {
        return Ok(Value::String(s));
    }
    let pad = " ".repeat(n as usize);
    Ok(Value::String(s.replace('\n', &format!("\n{pad}"))))
}

fn startswith(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (s, p) = two_str(name, &args)?;
    Ok(Value::Bool(s.starts_with(&p)))
}

fn endswith(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (s, p) = two_str(name, &args)?;
    Ok(Value::Bool(s.ends_with(&p)))
}

fn strcontains(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (s, p) = two_str(name, &args)?;
    Ok(Value::Bool(s.contains(&p)))
}

// ---------------------------------------------------------------------------------------------
// format

/// `format(spec, args...)` with Terraform's verbs: `%%`, `%v`, `%#v`, `%t`, `%s`, `%q`, `%d`, `%b`, `%o`, `%x`,
/// `%X`, `%e`, `%E`, `%f`, `%g`, `%G`, flags `+ - # 0 space`, width, precision and `%[n]` argument indexes.
fn format(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    let spec = arg_str(name, 0, &args[0])?;
    Ok(Value::String(format_impl(name, &spec, &args[1..])?))
}

fn format_impl(name: &str, spec: &str, args: &[Value]) -> Result<String, super::FuncError> {
    let chars: Vec<char> = spec.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut next_arg = 0usize;
    let mut max_used = 0usize;
    while i < chars.len() {
        let ch = chars[i];
        if ch != '%' {
            out.push(ch);
            i += 1;
            continue;
        }
        i += 1;
        if i >= chars.len() {
            return Err(failed(name, "format string ends with an incomplete verb"));
        }
        if chars[i] == '%' {
            out.push('%');
            i += 1;
            continue;
        }
        let mut flags = Flags::default();
        while i < chars.len() && matches!(chars[i], '+' | '-' | '#' | '0' | ' ') {
            match chars[i] {
                '+' => flags.plus = true,
                '-' => flags.minus = true,
                '#' => flags.sharp = true,
                '0' => flags.zero = true,
                _ => flags.space = true,
            }
            i += 1;
        }
        if i < chars.len() && chars[i] == '[' {
            let start = i + 1;
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            if i >= chars.len() {
                return Err(failed(name, "unterminated argument index in format string"));
            }
            let idx: usize = chars[start..i]
                .iter()
                .collect::<String>()
                .parse()
                .map_err(|_| failed(name, "invalid argument index in format string"))?;
            if idx == 0 {
                return Err(failed(name, "argument index in format string starts at 1"));
            }
            next_arg = idx - 1;
            i += 1;
        }
        let mut width = None;
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        if i > start {
            let digits: String = chars[start..i].iter().collect();
            width = Some(format_number(name, &digits, "width")?);
        }
        let mut prec = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            prec = Some(if digits.is_empty() {
                0
            } else {
                format_number(name, &digits, "precision")?
            });
        }
        if i >= chars.len() {
            return Err(failed(name, "format string ends with an incomplete verb"));
        }
        let verb = chars[i];
        i += 1;
        let Some(arg) = args.get(next_arg) else {
            return Err(failed(
                name,
                format!("not enough arguments for %{verb} in format string"),
            ));
        };
        next_arg += 1;
        max_used = max_used.max(next_arg);
        let body = format_verb(name, verb, &flags, prec, arg)?;
        out.push_str(&pad(
            body,
            width,
            &flags,
            matches!(
                verb,
                'd' | 'b' | 'o' | 'x' | 'X' | 'e' | 'E' | 'f' | 'g' | 'G'
            ),
        ));
        super::check_size(name, out.len() as u128, super::MAX_STRING_BYTES, "bytes")?;
    }
    if max_used < args.len() {
        return Err(failed(
            name,
            format!("too many arguments; only {max_used} used by format string"),
        ));
    }
    Ok(out)
}

/// A width or precision of a format verb, at most [`MAX_FORMAT_WIDTH`].
fn format_number(name: &str, digits: &str, what: &str) -> Result<usize, super::FuncError> {
    match digits.parse::<usize>() {
        Ok(n) if n <= MAX_FORMAT_WIDTH => Ok(n),
        _ => Err(failed(
            name,
            format!(
                "the {what} {digits} in the format string is more than kiln's limit of {MAX_FORMAT_WIDTH} (see \"Limits on hostile templates\" in the README)"
            ),
        )),
    }
}

/// Largest width or precision of a `format` verb (Go has none; 1 MiB of padding is far beyond
/// any real template and keeps `format("%99999999999d", 1)` from aborting on allocation).
pub const MAX_FORMAT_WIDTH: usize = 1 << 20;

#[derive(Default)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
}

fn pad(body: String, width: Option<usize>, flags: &Flags, numeric: bool) -> String {
    let Some(w) = width else { return body };
    let len = body.chars().count();
    if len >= w {
        return body;
    }
    let fill = w - len;
    if flags.minus {
        format!("{body}{}", " ".repeat(fill))
    } else if flags.zero && numeric {
        let (sign, digits) = match body.chars().next() {
            Some(c @ ('+' | '-' | ' ')) => (c.to_string(), body[1..].to_string()),
            _ => (String::new(), body),
        };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{body}", " ".repeat(fill))
    }
}

fn sign_prefix(neg: bool, flags: &Flags) -> &'static str {
    if neg {
        "-"
    } else if flags.plus {
        "+"
    } else if flags.space {
        " "
    } else {
        ""
    }
}

fn format_verb(
    name: &str,
    verb: char,
    flags: &Flags,
    prec: Option<usize>,
    arg: &Value,
) -> Result<String, super::FuncError> {
    if arg.is_null() && verb != 'v' {
        return Err(failed(
            name,
            format!("unsupported value for %{verb}: null value cannot be formatted"),
        ));
    }
    match verb {
        'v' => {
            if flags.sharp {
                return Ok(super::encoding::to_json_string(arg));
            }
            Ok(match arg {
                Value::Null => "null".to_string(),
                Value::String(s) => s.clone(),
                Value::Number(n) => {
                    let s = num_to_string(n);
                    let neg = s.starts_with('-');
                    format!("{}{}", sign_prefix(neg, flags), s.trim_start_matches('-'))
                }
                Value::Bool(b) => b.to_string(),
                other => super::encoding::to_json_string(other),
            })
        }
        't' => Ok(arg_bool(name, 1, arg)?.to_string()),
        's' => {
            let s = match arg {
                Value::Array(_) | Value::Object(_) => {
                    return Err(failed(
                        name,
                        "unsupported value for %s: a string is required",
                    ));
                }
                other => arg_str(name, 1, other)?,
            };
            Ok(match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s,
            })
        }
        'q' => {
            let s = match arg {
                Value::Array(_) | Value::Object(_) => {
                    return Err(failed(
                        name,
                        "unsupported value for %q: a string is required",
                    ));
                }
                other => arg_str(name, 1, other)?,
            };
            Ok(super::encoding::to_json_string(&Value::String(s)))
        }
        'd' | 'b' | 'o' | 'x' | 'X' => {
            let n = arg_num(name, 1, arg)?;
            let Some(i) = n.as_i64() else {
                return Err(failed(
                    name,
                    format!(
                        "unsupported value for %{verb}: an integer is required, got {}",
                        num_to_string(&n)
                    ),
                ));
            };
            let mag = i.unsigned_abs();
            let digits = match verb {
                'd' => mag.to_string(),
                'b' => format!("{mag:b}"),
                'o' => format!("{mag:o}"),
                'x' => format!("{mag:x}"),
                _ => format!("{mag:X}"),
            };
            Ok(format!("{}{digits}", sign_prefix(i < 0, flags)))
        }
        'e' | 'E' | 'f' | 'g' | 'G' => {
            let f = arg_num(name, 1, arg)?.as_f64().unwrap_or(0.0);
            let mag = f.abs();
            let body = match verb {
                'f' => format!("{:.*}", prec.unwrap_or(6), mag),
                'e' | 'E' => {
                    let s = exp_format(mag, prec.unwrap_or(6));
                    if verb == 'E' {
                        s.to_uppercase()
                    } else {
                        s
                    }
                }
                _ => {
                    let s = match prec {
                        Some(p) => {
                            let p = p.max(1);
                            let exp = if mag == 0.0 {
                                0
                            } else {
                                mag.log10().floor() as i64
                            };
                            if exp < -4 || exp >= p as i64 {
                                exp_format(mag, p - 1)
                            } else {
                                let decimals = (p as i64 - 1 - exp).max(0) as usize;
                                let s = format!("{mag:.decimals$}");
                                if s.contains('.') {
                                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                                } else {
                                    s
                                }
                            }
                        }
                        None => {
                            let exp = if mag == 0.0 {
                                0
                            } else {
                                mag.log10().floor() as i64
                            };
                            if !(-4..21).contains(&exp) {
                                shortest_exp(mag)
                            } else {
                                format!("{mag}")
                            }
                        }
                    };
                    if verb == 'G' {
                        s.to_uppercase()
                    } else {
                        s
                    }
                }
            };
            Ok(format!(
                "{}{body}",
                sign_prefix(f.is_sign_negative() && f != 0.0, flags)
            ))
        }
        other => Err(failed(name, format!("unsupported format verb %{other}"))),
    }
}

/// Go-style `%e`: `1.500000e+00`.
fn exp_format(x: f64, prec: usize) -> String {
    let s = format!("{x:.prec$e}");
    go_exponent(&s)
}

fn shortest_exp(x: f64) -> String {
    go_exponent(&format!("{x:e}"))
}

fn go_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s.to_string(),
    }
}

/// `formatlist(spec, args...)`: list arguments are iterated in step (same length), others repeated.
fn formatlist(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    let spec = arg_str(name, 0, &args[0])?;
    let rest = &args[1..];
    let mut len: Option<usize> = None;
    for a in rest {
        if let Value::Array(l) = a {
            match len {
                Some(n) if n != l.len() => {
                    return Err(failed(
                        name,
                        format!(
                            "all list arguments must have the same length ({n} vs {})",
                            l.len()
                        ),
                    ));
                }
                _ => len = Some(l.len()),
            }
        }
    }
    let n = len.unwrap_or(1);
    let mut out = Vec::with_capacity(n);
    let mut total = 0u128;
    for i in 0..n {
        let row: Vec<Value> = rest
            .iter()
            .map(|a| match a {
                Value::Array(l) => l[i].clone(),
                other => other.clone(),
            })
            .collect();
        let line = format_impl(name, &spec, &row)?;
        total += line.len() as u128;
        super::check_size(name, total, super::MAX_STRING_BYTES, "bytes")?;
        out.push(Value::String(line));
    }
    Ok(Value::Array(out))
}

// ---------------------------------------------------------------------------------------------
// regex

fn compile(name: &str, pat: &str) -> Result<Regex, super::FuncError> {
    Regex::new(pat).map_err(|e| failed(name, format!("invalid regular expression pattern: {e}")))
}

fn match_value(name: &str, re: &Regex, caps: &regex::Captures<'_>) -> Res {
    let names: Vec<Option<&str>> = re.capture_names().skip(1).collect();
    if names.is_empty() {
        return Ok(Value::String(
            caps.get(0).map(|m| m.as_str()).unwrap_or("").to_string(),
        ));
    }
    let named = names.iter().filter(|n| n.is_some()).count();
    if named > 0 && named < names.len() {
        return Err(failed(
            name,
            "pattern cannot mix both named and unnamed capture groups",
        ));
    }
    let get = |i: usize| {
        caps.get(i + 1)
            .map(|m| Value::String(m.as_str().to_string()))
            .unwrap_or(Value::Null)
    };
    if named == 0 {
        return Ok(Value::Array((0..names.len()).map(get).collect()));
    }
    let mut obj = hcl::Map::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(n) = n {
            obj.insert((*n).to_string(), get(i));
        }
    }
    obj.sort_keys();
    Ok(Value::Object(obj))
}

/// `regex(pattern, str)`: the first match (string, list of groups, or object of named groups).
fn regex_fn(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (pat, s) = two_str(name, &args)?;
    let re = compile(name, &pat)?;
    match re.captures(&s) {
        Some(caps) => match_value(name, &re, &caps),
        None => Err(failed(
            name,
            "pattern did not match any part of the given string",
        )),
    }
}

/// `regexall(pattern, str)`: every match, as a list.
fn regexall(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let (pat, s) = two_str(name, &args)?;
    let re = compile(name, &pat)?;
    let mut out = Vec::new();
    for caps in re.captures_iter(&s) {
        out.push(match_value(name, &re, &caps)?);
    }
    Ok(Value::Array(out))
}

/// Packer's `regex_replace(str, pattern, replacement)`: every match replaced (`$1`, `${name}` expand).
fn regex_replace(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 3, Some(3))?;
    let s = arg_str(name, 0, &args[0])?;
    let re = compile(name, &arg_str(name, 1, &args[1])?)?;
    let rep = arg_str(name, 2, &args[2])?;
    Ok(Value::String(re.replace_all(&s, rep.as_str()).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::FuncError;

    #[test]
    fn case() {
        ok("lower", &["\"HeLLo\""], "\"hello\"");
        ok("upper", &["\"pve-ssd1\""], "\"PVE-SSD1\"");
        ok("title", &["\"hello world-foo\""], "\"Hello World-Foo\"");
        ok("title", &["\"it's élan_x\""], "\"It'S Élan_x\"");
        err("lower", &["{a = 1}"]);
        err("upper", &["null"]);
    }

    #[test]
    fn trims() {
        ok("trimspace", &["\"  a b \\n\""], "\"a b\"");
        ok("trim", &["\"?!hello?!\"", "\"!?\""], "\"hello\"");
        ok("trimprefix", &["\"helloworld\"", "\"hello\""], "\"world\"");
        ok("trimprefix", &["\"helloworld\"", "\"x\""], "\"helloworld\"");
        ok("trimsuffix", &["\"helloworld\"", "\"world\""], "\"hello\"");
        ok("chomp", &["\"hello\\n\\r\\n\""], "\"hello\"");
        ok("chomp", &["\"a\\nb\""], "\"a\\nb\"");
        err("trim", &["\"a\""]);
        err("chomp", &["[]"]);
    }

    #[test]
    fn substr_cases() {
        ok("substr", &["\"hello world\"", "1", "4"], "\"ello\"");
        ok("substr", &["\"hello world\"", "-5", "-1"], "\"world\"");
        ok("substr", &["\"hello\"", "0", "100"], "\"hello\"");
        ok("substr", &["\"héllo\"", "1", "1"], "\"é\"");
        ok("substr", &["\"abc\"", "3", "1"], "\"\"");
        err("substr", &["\"abc\"", "4", "1"]);
        err("substr", &["\"abc\"", "0", "-2"]);
        err("substr", &["\"abc\"", "0.5", "1"]);
    }

    #[test]
    fn strrev_split_join() {
        ok("strrev", &["\"abc\""], "\"cba\"");
        ok(
            "split",
            &["\",\"", "\"a,b,,c\""],
            "[\"a\", \"b\", \"\", \"c\"]",
        );
        ok("split", &["\",\"", "\"\""], "[\"\"]");
        ok("join", &["\", \"", "[\"a\", \"b\"]"], "\"a, b\"");
        ok("join", &["\"-\"", "[\"a\"]", "[\"b\", 1]"], "\"a-b-1\"");
        ok("join", &["\",\"", "[]"], "\"\"");
        err("join", &["\",\""]);
        err("join", &["\",\"", "[null]"]);
        err("split", &["\",\"", "[]"]);
    }

    #[test]
    fn replace_cases() {
        ok(
            "replace",
            &["\"1 + 2 + 3\"", "\"+\"", "\"-\""],
            "\"1 - 2 - 3\"",
        );
        ok(
            "replace",
            &["\"hello world\"", "\"/w.*d/\"", "\"everybody\""],
            "\"hello everybody\"",
        );
        ok(
            "replace",
            &["\"v1.2.3\"", "\"/v(\\\\d+)\\\\..*/\"", "\"major $1\""],
            "\"major 1\"",
        );
        ok("replace", &["\"a/b\"", "\"/\"", "\"_\""], "\"a_b\"");
        assert!(matches!(
            err("replace", &["\"a\"", "\"/(/\"", "\"x\""]),
            FuncError::Failed { .. }
        ));
        err("replace", &["\"a\"", "\"b\""]);
    }

    #[test]
    fn indent_cases() {
        ok("indent", &["2", "\"a\\nb\\nc\""], "\"a\\n  b\\n  c\"");
        ok("indent", &["4", "\"one\""], "\"one\"");
        err("indent", &["-1", "\"a\""]);
        err("indent", &["\"x\"", "\"a\""]);
    }

    #[test]
    fn starts_ends() {
        ok("startswith", &["\"hello\"", "\"he\""], "true");
        ok("startswith", &["\"hello\"", "\"lo\""], "false");
        ok("endswith", &["\"hello\"", "\"lo\""], "true");
        ok("strcontains", &["\"hello\"", "\"ell\""], "true");
        err("endswith", &["\"a\""]);
    }

    #[test]
    fn format_cases() {
        ok(
            "format",
            &["\"Hello, %s!\"", "\"Ander\""],
            "\"Hello, Ander!\"",
        );
        ok(
            "format",
            &["\"There are %d lights\"", "4"],
            "\"There are 4 lights\"",
        );
        ok(
            "format",
            &["\"%v-%v-%v\"", "\"a\"", "1", "true"],
            "\"a-1-true\"",
        );
        ok("format", &["\"%#v\"", "\"a\""], "\"\\\"a\\\"\"");
        ok(
            "format",
            &["\"%#v\"", "{b = 1, a = [true]}"],
            "\"{\\\"a\\\":[true],\\\"b\\\":1}\"",
        );
        ok("format", &["\"%q\"", "\"x\""], "\"\\\"x\\\"\"");
        ok(
            "format",
            &["\"%5d|%-5d|%05d\"", "42", "42", "-42"],
            "\"   42|42   |-0042\"",
        );
        ok(
            "format",
            &["\"%+d %x %X %o %b\"", "5", "255", "255", "8", "5"],
            "\"+5 ff FF 10 101\"",
        );
        ok("format", &["\"%.2f\"", "3.14159"], "\"3.14\"");
        ok("format", &["\"%f\"", "1"], "\"1.000000\"");
        ok("format", &["\"%e\"", "1500"], "\"1.500000e+03\"");
        ok("format", &["\"%g\"", "0.5"], "\"0.5\"");
        ok("format", &["\"%.3s\"", "\"abcdef\""], "\"abc\"");
        ok("format", &["\"%[2]s %[1]s\"", "\"a\"", "\"b\""], "\"b a\"");
        ok("format", &["\"100%%\""], "\"100%\"");
        ok("format", &["\"%t\"", "\"true\""], "\"true\"");
        ok("format", &["\"%s\"", "1.5"], "\"1.5\"");
        ok("format", &["\"%v\"", "null"], "\"null\"");
        err("format", &["\"%s %s\"", "\"a\""]);
        err("format", &["\"%s\"", "\"a\"", "\"b\""]);
        err("format", &["\"%d\"", "1.5"]);
        err("format", &["\"%d\"", "\"x\""]);
        err("format", &["\"%s\"", "null"]);
        err("format", &["\"%s\"", "[1]"]);
        err("format", &["\"%y\"", "1"]);
        err("format", &["\"abc%\""]);
    }

    #[test]
    fn formatlist_cases() {
        ok(
            "formatlist",
            &["\"Hello, %s!\"", "[\"a\", \"b\"]"],
            "[\"Hello, a!\", \"Hello, b!\"]",
        );
        ok(
            "formatlist",
            &["\"%s, %s!\"", "\"Salutations\"", "[\"a\", \"b\"]"],
            "[\"Salutations, a!\", \"Salutations, b!\"]",
        );
        ok("formatlist", &["\"x/%s\"", "[]"], "[]");
        ok("formatlist", &["\"x\""], "[\"x\"]");
        err("formatlist", &["\"%s%s\"", "[\"a\"]", "[\"b\", \"c\"]"]);
    }

    #[test]
    fn regex_cases() {
        ok(
            "regex",
            &["\"[a-z]+\"", "\"53453453.345345aaabbbccc23454\""],
            "\"aaabbbccc\"",
        );
        ok(
            "regex",
            &[
                "\"(\\\\d\\\\d\\\\d\\\\d)-(\\\\d\\\\d)-(\\\\d\\\\d)\"",
                "\"2019-02-01\"",
            ],
            "[\"2019\", \"02\", \"01\"]",
        );
        ok(
            "regex",
            &[
                "\"^(?:(?P<scheme>[^:/?#]+):)?(?://(?P<authority>[^/?#]*))?\"",
                "\"https://terraform.io/docs/\"",
            ],
            "{authority = \"terraform.io\", scheme = \"https\"}",
        );
        ok("regex", &["\"(a)?(b)\"", "\"b\""], "[null, \"b\"]");
        ok(
            "regex",
            &["\"^\\\\d+\\\\.\\\\d+$\"", "\"24.04\""],
            "\"24.04\"",
        );
        err("regex", &["\"[a-z]+\"", "\"1234\""]);
        err("regex", &["\"(\"", "\"x\""]);
        err("regex", &["\"(?P<a>x)(y)\"", "\"xy\""]);
    }

    #[test]
    fn regex_replace_cases() {
        ok(
            "regex_replace",
            &["\"hello world\"", "\"o(.)\"", "\"0$1\""],
            "\"hell0 w0rld\"",
        );
        ok("regex_replace", &["\"abc\"", "\"x\"", "\"y\""], "\"abc\"");
        err("regex_replace", &["\"abc\"", "\"(\"", "\"y\""]);
        err("regex_replace", &["\"abc\""]);
    }

    #[test]
    fn regexall_cases() {
        ok(
            "regexall",
            &["\"[a-z]+\"", "\"1234abcd5678efgh9\""],
            "[\"abcd\", \"efgh\"]",
        );
        ok("regexall", &["\"[a-z]+\"", "\"123\""], "[]");
        ok(
            "regexall",
            &["\"(\\\\d)([a-z])\"", "\"1a2b\""],
            "[[\"1\", \"a\"], [\"2\", \"b\"]]",
        );
        err("regexall", &["\"[\"", "\"x\""]);
    }
}
