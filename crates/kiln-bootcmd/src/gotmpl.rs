//! A small Go `text/template` interpolator for the strings Packer
//! interpolates itself (boot commands, `execute_command`, …).
//!
//! Supported: `{{ .Field }}` (any whitespace inside the braces), trim markers
//! `{{- … -}}`, comments `{{/* … */}}`, string literals (`{{ "{{" }}` prints
//! `{{`, as in Go), function calls with string/field arguments and simple
//! pipes (`{{ .Name | lower }}`), integer literals. Functions: `timestamp`,
//! `isotime ["<Go layout>"]`, `uuid`, `upper`, `lower`, `replace`, `replace_all`,
//! `split`, `clean_resource_name`, `pwd`,
//! `user "x"` and `env "X"` (when the [`Lookup`] allows them), plus whatever
//! [`Lookup::function`] provides (`build_name`, …).
//!
//! Unlike Go, an unknown field is an error with its byte offset; nothing is
//! ever rendered as `<no value>`.

use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// Where template values come from.
pub trait Lookup {
    /// Value of `.Name` (`HTTPIP`, `HTTPPort`, `Vars`, `Path`, …).
    fn field(&self, name: &str) -> Option<String>;
    /// `{{ user "x" }}`: `None` if user variables are not available here,
    /// `Some(None)` if this one is undefined.
    fn user(&self, _name: &str) -> Option<Option<String>> {
        None
    }
    /// Whether `{{ env "X" }}` may be used here (Packer allows it only in
    /// variable defaults of JSON templates).
    fn env_allowed(&self) -> bool {
        false
    }
    /// The build's start time, used by `timestamp` and `isotime` (all calls
    /// in one build see the same instant, as in Packer).
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
    /// Extra functions (`build_name`, …). `None` = unknown function.
    fn function(&self, _name: &str, _args: &[String]) -> Option<Result<String, String>> {
        None
    }
    /// Names of the fields available (for "did you mean" hints).
    fn field_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A template that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template error at byte {offset}: {message}")]
pub struct TemplateError {
    /// Byte offset in the template.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

fn err(offset: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        offset,
        message: message.into(),
    }
}

/// A ready-made [`Lookup`]: fields, optional user variables, env permission,
/// fixed time, extra constant functions.
#[derive(Debug, Clone, Default)]
pub struct Data {
    fields: BTreeMap<String, String>,
    user_vars: Option<BTreeMap<String, String>>,
    allow_env: bool,
    now: Option<OffsetDateTime>,
    functions: BTreeMap<String, String>,
}

impl Data {
    /// Empty data.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a field (`.HTTPIP`).
    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.fields.insert(name.to_string(), value.to_string());
        self
    }
    /// Make `{{ user "x" }}` available with these variables.
    pub fn with_user_vars(mut self, vars: BTreeMap<String, String>) -> Self {
        self.user_vars = Some(vars);
        self
    }
    /// Allow `{{ env "X" }}`.
    pub fn allow_env(mut self, allow: bool) -> Self {
        self.allow_env = allow;
        self
    }
    /// Fix the time used by `timestamp`/`isotime`.
    pub fn at(mut self, now: OffsetDateTime) -> Self {
        self.now = Some(now);
        self
    }
    /// A constant function without arguments (`build_name`).
    pub fn with_function(mut self, name: &str, value: impl ToString) -> Self {
        self.functions.insert(name.to_string(), value.to_string());
        self
    }
}

impl Lookup for Data {
    fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name).cloned()
    }
    fn user(&self, name: &str) -> Option<Option<String>> {
        self.user_vars.as_ref().map(|u| u.get(name).cloned())
    }
    fn env_allowed(&self) -> bool {
        self.allow_env
    }
    fn now(&self) -> OffsetDateTime {
        self.now.unwrap_or_else(OffsetDateTime::now_utc)
    }
    fn function(&self, name: &str, args: &[String]) -> Option<Result<String, String>> {
        let v = self.functions.get(name)?;
        if args.is_empty() {
            Some(Ok(v.clone()))
        } else {
            Some(Err(format!("{name} takes no arguments")))
        }
    }
    fn field_names(&self) -> Vec<String> {
        self.fields.keys().cloned().collect()
    }
}

impl Lookup for BTreeMap<String, String> {
    fn field(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn field_names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

impl Lookup for HashMap<String, String> {
    fn field(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn field_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.keys().cloned().collect();
        v.sort();
        v
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(String),
    Str(String),
    Ident(String),
    Pipe,
    Dot,
}

/// Tokenise the inside of an action. `base` is the byte offset of `src`.
fn lex(src: &str, base: usize) -> Result<Vec<(Tok, usize)>, TemplateError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = base + i;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'|' {
            out.push((Tok::Pipe, at));
            i += 1;
        } else if c == b'.' {
            let s = i + 1;
            let mut j = s;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j == s {
                out.push((Tok::Dot, at));
            } else {
                if j < b.len() && b[j] == b'.' {
                    return Err(err(
                        at,
                        format!("nested field {:?} is not supported", &src[i..]),
                    ));
                }
                out.push((Tok::Field(src[s..j].to_string()), at));
            }
            i = j;
        } else if c == b'"' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                let Some(&d) = b.get(j) else {
                    return Err(err(at, "unterminated string"));
                };
                match d {
                    b'"' => break,
                    b'\\' => {
                        let e = b
                            .get(j + 1)
                            .copied()
                            .ok_or_else(|| err(at, "unterminated string"))?;
                        match e {
                            b'n' => s.push('\n'),
                            b't' => s.push('\t'),
                            b'r' => s.push('\r'),
                            b'\\' => s.push('\\'),
                            b'"' => s.push('"'),
                            b'\'' => s.push('\''),
                            _ => {
                                return Err(err(
                                    base + j,
                                    format!("unsupported escape \\{}", e as char),
                                ))
                            }
                        }
                        j += 2;
                    }
                    _ => {
                        let ch = src[j..].chars().next().unwrap_or('\0');
                        s.push(ch);
                        j += ch.len_utf8();
                    }
                }
            }
            out.push((Tok::Str(s), at));
            i = j + 1;
        } else if c == b'`' {
            let end = src[i + 1..]
                .find('`')
                .ok_or_else(|| err(at, "unterminated raw string"))?;
            out.push((Tok::Str(src[i + 1..i + 1 + end].to_string()), at));
            i = i + 1 + end + 1;
        } else if c.is_ascii_digit()
            || (c == b'-' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            // integer literal (Go prints it as is; used as `split`/`replace` index)
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'.') {
                return Err(err(at, format!("unsupported number {:?}", &src[i..])));
            }
            out.push((Tok::Str(src[i..j].to_string()), at));
            i = j;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            out.push((Tok::Ident(src[i..j].to_string()), at));
            i = j;
        } else {
            let ch = src[i..].chars().next().unwrap_or('\0');
            return Err(err(at, format!("unexpected {ch:?} in template action")));
        }
    }
    Ok(out)
}

fn field_value(name: &str, at: usize, data: &dyn Lookup) -> Result<String, TemplateError> {
    data.field(name).ok_or_else(|| {
        let names = data.field_names();
        let mut m = format!("unknown field .{name}");
        if let Some(best) = names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(name))
            .or_else(|| {
                names
                    .iter()
                    .find(|n| n.to_lowercase().contains(&name.to_lowercase()))
            })
        {
            m.push_str(&format!(" (did you mean .{best}?)"));
        } else if !names.is_empty() {
            m.push_str(&format!(
                "; available here: {}",
                names
                    .iter()
                    .map(|n| format!(".{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        err(at, m)
    })
}

fn call(
    name: &str,
    args: &[String],
    at: usize,
    data: &dyn Lookup,
) -> Result<String, TemplateError> {
    let want = |n: usize| -> Result<(), TemplateError> {
        if args.len() == n {
            Ok(())
        } else {
            Err(err(
                at,
                format!("{name} expects {n} argument(s), got {}", args.len()),
            ))
        }
    };
    match name {
        "timestamp" => {
            want(0)?;
            Ok(data.now().unix_timestamp().to_string())
        }
        "isotime" => {
            let layout = match args.len() {
                0 => "2006-01-02T15:04:05Z07:00",
                1 => args[0].as_str(),
                _ => {
                    return Err(err(
                        at,
                        "isotime expects at most 1 argument (a Go time layout)",
                    ))
                }
            };
            Ok(go_time_format(layout, data.now()))
        }
        "uuid" => {
            want(0)?;
            Ok(uuid::Uuid::new_v4().to_string())
        }
        "upper" => {
            want(1)?;
            Ok(args[0].to_uppercase())
        }
        "lower" => {
            want(1)?;
            Ok(args[0].to_lowercase())
        }
        "replace" | "replace_all" => {
            // Packer: replace old new n s / replace_all old new s
            if name == "replace" {
                want(4)?;
                let n: i64 = args[2]
                    .parse()
                    .map_err(|_| err(at, "replace: 3rd argument must be a number"))?;
                if n < 0 {
                    Ok(args[3].replace(&args[0], &args[1]))
                } else {
                    Ok(args[3].replacen(&args[0], &args[1], n as usize))
                }
            } else {
                want(3)?;
                Ok(args[2].replace(&args[0], &args[1]))
            }
        }
        "split" => {
            // Packer: split string separator index
            want(3)?;
            let idx: usize = args[2]
                .parse()
                .map_err(|_| err(at, "split: 3rd argument must be a non-negative index"))?;
            args[0]
                .split(args[1].as_str())
                .nth(idx)
                .map(str::to_string)
                .ok_or_else(|| err(at, format!("split: index {idx} out of range")))
        }
        "clean_resource_name" => {
            want(1)?;
            Ok(args[0]
                .to_lowercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect())
        }
        "pwd" if data.function("pwd", args).is_none() => {
            want(0)?;
            std::env::current_dir()
                .map(|p| p.display().to_string())
                .map_err(|e| err(at, format!("pwd: {e}")))
        }
        "user" => {
            want(1)?;
            match data.user(&args[0]) {
                None => Err(err(at, "user variables are not available here")),
                Some(None) => Err(err(at, format!("undefined user variable {:?}", args[0]))),
                Some(Some(v)) => Ok(v),
            }
        }
        "env" => {
            want(1)?;
            if !data.env_allowed() {
                return Err(err(
                    at,
                    "env is only allowed in variable defaults; use a variable (var.x / {{ user `x` }})",
                ));
            }
            Ok(std::env::var(&args[0]).unwrap_or_default())
        }
        other => match data.function(other, args) {
            Some(Ok(v)) => Ok(v),
            Some(Err(m)) => Err(err(at, m)),
            None => Err(err(at, format!("unknown function {other:?}"))),
        },
    }
}

/// Evaluate one action's tokens.
fn eval(toks: &[(Tok, usize)], at: usize, data: &dyn Lookup) -> Result<String, TemplateError> {
    if toks.is_empty() {
        return Err(err(at, "empty action {{}}"));
    }
    let mut prev: Option<String> = None;
    for cmd in toks.split(|(t, _)| *t == Tok::Pipe) {
        let Some((head, hat)) = cmd.first() else {
            return Err(err(at, "empty command in pipeline"));
        };
        let mut args = Vec::new();
        for (t, a) in &cmd[1..] {
            args.push(match t {
                Tok::Str(s) => s.clone(),
                Tok::Field(f) => field_value(f, *a, data)?,
                _ => return Err(err(*a, "arguments must be strings or .Fields")),
            });
        }
        let v =
            match head {
                Tok::Field(f) => {
                    if !args.is_empty() || prev.is_some() {
                        return Err(err(*hat, format!(".{f} is not a function")));
                    }
                    field_value(f, *hat, data)?
                }
                Tok::Str(s) => {
                    if !args.is_empty() || prev.is_some() {
                        return Err(err(*hat, "a string cannot take arguments"));
                    }
                    s.clone()
                }
                Tok::Ident(name) => {
                    if let Some(p) = prev.take() {
                        args.push(p);
                    }
                    call(name, &args, *hat, data)?
                }
                Tok::Dot => return Err(err(
                    *hat,
                    "{{ . }} (the whole data) cannot be rendered; name a field like {{ .HTTPIP }}",
                )),
                Tok::Pipe => unreachable_pipe(*hat)?,
            };
        prev = Some(v);
    }
    Ok(prev.unwrap_or_default())
}

fn unreachable_pipe(at: usize) -> Result<String, TemplateError> {
    Err(err(at, "unexpected |"))
}

/// Render `template` with `data`.
pub fn render(template: &str, data: &dyn Lookup) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    let mut trim_next = false;
    while i < template.len() {
        let Some(rel) = template[i..].find("{{") else {
            let text = &template[i..];
            out.push_str(if trim_next { text.trim_start() } else { text });
            break;
        };
        let text = &template[i..i + rel];
        let text = if trim_next { text.trim_start() } else { text };
        let open = i + rel;
        let mut inner_start = open + 2;
        // `{{- ` trims preceding whitespace (Go requires a space after the dash)
        let tb = template.as_bytes();
        if tb.get(inner_start) == Some(&b'-')
            && tb
                .get(inner_start + 1)
                .is_some_and(|c| c.is_ascii_whitespace())
        {
            out.push_str(text.trim_end());
            inner_start += 2;
        } else {
            out.push_str(text);
        }
        // find the closing }} outside string literals
        let close = find_close(template, inner_start)
            .ok_or_else(|| err(open, "unclosed action: missing }}"))?;
        let mut inner_end = close;
        trim_next = false;
        if close >= 2
            && tb[close - 1] == b'-'
            && tb[close - 2].is_ascii_whitespace()
            && close > inner_start
        {
            trim_next = true;
            inner_end = close - 1;
        }
        let inner = &template[inner_start..inner_end.max(inner_start)];
        let trimmed = inner.trim();
        if trimmed.starts_with("/*") {
            if !trimmed.ends_with("*/") {
                return Err(err(open, "unterminated comment"));
            }
        } else {
            let toks = lex(inner, inner_start)?;
            if let Some((Tok::Ident(kw), a)) = toks.first() {
                if matches!(
                    kw.as_str(),
                    "if" | "range" | "with" | "define" | "template" | "block" | "end" | "else"
                ) {
                    return Err(err(
                        *a,
                        format!("{{{{ {kw} }}}} blocks are not supported in this field"),
                    ));
                }
            }
            out.push_str(&eval(&toks, open, data)?);
        }
        i = close + 2;
    }
    Ok(out)
}

fn find_close(t: &str, from: usize) -> Option<usize> {
    let b = t.as_bytes();
    let mut i = from;
    let mut in_str: Option<u8> = None;
    let mut in_comment = false;
    while i + 1 < b.len() || (i < b.len() && in_str.is_some()) {
        let c = b[i];
        if in_comment {
            if b[i..].starts_with(b"*/") {
                in_comment = false;
                i += 2;
                continue;
            }
        } else if let Some(q) = in_str {
            if c == b'\\' && q == b'"' {
                i += 2;
                continue;
            }
            if c == q {
                in_str = None;
            }
        } else if b[i..].starts_with(b"/*") {
            in_comment = true;
            i += 2;
            continue;
        } else if c == b'"' || c == b'`' {
            in_str = Some(c);
        } else if b[i..].starts_with(b"}}") {
            return Some(i);
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------- Go time

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

/// Format `t` with a Go reference-time layout (`2006-01-02T15:04:05Z07:00`,
/// `Jan _2 15:04:05.000`, …).
pub fn go_time_format(layout: &str, t: OffsetDateTime) -> String {
    let mut out = String::new();
    let b = layout.as_bytes();
    let mut i = 0;
    let month = u8::from(t.month()) as usize;
    let hour = t.hour();
    let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let off = t.offset().whole_seconds();
    let zone = |out: &mut String, z: bool, colon: bool, secs: bool, short: bool| {
        if z && off == 0 {
            out.push('Z');
            return;
        }
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.unsigned_abs();
        let (hh, mm, ss) = (a / 3600, (a / 60) % 60, a % 60);
        out.push(sign);
        out.push_str(&format!("{hh:02}"));
        if short {
            return;
        }
        if colon {
            out.push(':');
        }
        out.push_str(&format!("{mm:02}"));
        if secs {
            if colon {
                out.push(':');
            }
            out.push_str(&format!("{ss:02}"));
        }
    };
    while i < b.len() {
        let r = &layout[i..];
        let starts = |p: &str| r.starts_with(p);
        macro_rules! emit {
            ($len:expr, $s:expr) => {{
                let s: String = $s.into();
                out.push_str(&s);
                i += $len;
                continue;
            }};
        }
        match b[i] {
            b'J' if starts("January") => emit!(7, MONTHS[month - 1]),
            b'J' if starts("Jan") => emit!(3, MONTHS[month - 1][..3]),
            b'M' if starts("Monday") => emit!(
                6,
                DAYS[t.weekday().number_days_from_monday() as usize].to_string()
            ),
            b'M' if starts("Mon") => emit!(
                3,
                DAYS[t.weekday().number_days_from_monday() as usize][..3].to_string()
            ),
            b'M' if starts("MST") => {
                if off == 0 {
                    emit!(3, "UTC")
                } else {
                    let mut s = String::new();
                    zone(&mut s, false, false, false, false);
                    emit!(3, s)
                }
            }
            b'0' if starts("002") => emit!(3, format!("{:03}", t.ordinal())),
            b'0' if b.get(i + 1).is_some_and(|c| (b'1'..=b'6').contains(c)) => {
                let s = match b[i + 1] {
                    b'1' => format!("{month:02}"),
                    b'2' => format!("{:02}", t.day()),
                    b'3' => format!("{h12:02}"),
                    b'4' => format!("{:02}", t.minute()),
                    b'5' => format!("{:02}", t.second()),
                    _ => format!("{:02}", t.year().rem_euclid(100)),
                };
                emit!(2, s)
            }
            b'1' if starts("15") => emit!(2, format!("{hour:02}")),
            b'1' => emit!(1, month.to_string()),
            b'2' if starts("2006") => emit!(4, format!("{:04}", t.year())),
            b'2' => emit!(1, t.day().to_string()),
            b'_' if starts("_2006") => emit!(5, format!("_{:04}", t.year())),
            b'_' if starts("__2") => emit!(3, format!("{:>3}", t.ordinal())),
            b'_' if starts("_2") => emit!(2, format!("{:>2}", t.day())),
            b'3' => emit!(1, h12.to_string()),
            b'4' => emit!(1, t.minute().to_string()),
            b'5' => emit!(1, t.second().to_string()),
            b'P' if starts("PM") => emit!(2, if hour >= 12 { "PM" } else { "AM" }),
            b'p' if starts("pm") => emit!(2, if hour >= 12 { "pm" } else { "am" }),
            b'-' | b'Z' => {
                let z = b[i] == b'Z';
                let rest = &r[1..];
                let forms = [
                    ("070000", false, true, false, 7),
                    ("07:00:00", true, true, false, 9),
                    ("0700", false, false, false, 5),
                    ("07:00", true, false, false, 6),
                    ("07", false, false, true, 3),
                ];
                if let Some((_, colon, secs, short, len)) =
                    forms.iter().find(|f| rest.starts_with(f.0))
                {
                    let mut s = String::new();
                    zone(&mut s, z, *colon, *secs, *short);
                    emit!(*len, s)
                }
                out.push(b[i] as char);
                i += 1;
            }
            b'.' | b',' if b.get(i + 1).is_some_and(|c| *c == b'0' || *c == b'9') => {
                let d = b[i + 1];
                let mut j = i + 1;
                while j < b.len() && b[j] == d {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    out.push(b[i] as char);
                    i += 1;
                    continue;
                }
                let n = j - i - 1;
                let nanos = format!("{:09}", t.nanosecond());
                let digits = &nanos[..n.min(9)];
                if d == b'0' {
                    out.push(b[i] as char);
                    out.push_str(digits);
                } else {
                    let trimmed = digits.trim_end_matches('0');
                    if !trimmed.is_empty() {
                        out.push(b[i] as char);
                        out.push_str(trimmed);
                    }
                }
                i = j;
            }
            _ => {
                let ch = r.chars().next().unwrap_or('\0');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn data() -> Data {
        Data::new()
            .with("HTTPIP", "10.0.2.2")
            .with("HTTPPort", 8888)
            .at(datetime!(2026-03-04 05:06:07.089 UTC))
    }

    #[test]
    fn fields_and_whitespace() {
        let d = data();
        assert_eq!(
            render("http://{{ .HTTPIP }}:{{.HTTPPort}}/", &d).unwrap(),
            "http://10.0.2.2:8888/"
        );
        assert_eq!(render("{{   .HTTPIP\t}}", &d).unwrap(), "10.0.2.2");
        assert_eq!(
            render("no actions <enter>", &d).unwrap(),
            "no actions <enter>"
        );
        assert_eq!(render("", &d).unwrap(), "");
    }

    #[test]
    fn unknown_field_has_offset() {
        let e = render("ab {{ .HTTPPIP }}", &data()).unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(e.message.contains(".HTTPPIP"), "{e}");
        assert!(
            e.message.contains(".HTTPIP") || e.message.contains("available"),
            "{e}"
        );
        let e = render("x{{ .Name }}", &data()).unwrap_err();
        assert_eq!(e.offset, 4);
        let e = render("{{ .httpip }}", &data()).unwrap_err();
        assert!(e.message.contains("did you mean .HTTPIP"), "{e}");
    }

    #[test]
    fn escapes_and_trim() {
        let d = data();
        assert_eq!(
            render(r#"{{"{{"}} .HTTPIP }}"#, &d).unwrap(),
            "{{ .HTTPIP }}"
        );
        assert_eq!(render("{{`{{`}}", &d).unwrap(), "{{");
        assert_eq!(render("a  {{- .HTTPPort -}}  b", &d).unwrap(), "a8888b");
        assert_eq!(render("a {{/* note */}}b", &d).unwrap(), "a b");
        assert_eq!(render(r#"{{ "a}}b" }}"#, &d).unwrap(), "a}}b");
    }

    #[test]
    fn functions() {
        let d = data();
        assert_eq!(render("{{ timestamp }}", &d).unwrap(), "1772600767");
        assert_eq!(
            render(r#"{{ isotime "2006-01-02" }}"#, &d).unwrap(),
            "2026-03-04"
        );
        assert_eq!(render("{{ isotime }}", &d).unwrap(), "2026-03-04T05:06:07Z");
        assert_eq!(
            render(r#"{{isotime "20060102-150405"}}"#, &d).unwrap(),
            "20260304-050607"
        );
        assert_eq!(
            render(
                r#"{{ isotime "Jan _2 3:04PM .000 Monday MST -07:00" }}"#,
                &d
            )
            .unwrap(),
            "Mar  4 5:06AM .089 Wednesday UTC +00:00"
        );
        assert_eq!(render("{{ uuid }}", &d).unwrap().len(), 36);
        assert_eq!(render("{{ .HTTPIP | upper }}", &d).unwrap(), "10.0.2.2");
        assert_eq!(render(r#"{{ lower "ABC" }}"#, &d).unwrap(), "abc");
        assert_eq!(
            render(r#"{{ replace_all "." "-" .HTTPIP }}"#, &d).unwrap(),
            "10-0-2-2"
        );
        let e = render(r#"{{ user "x" }}"#, &d).unwrap_err();
        assert!(e.message.contains("not available"), "{e}");
        let mut u = BTreeMap::new();
        u.insert("x".to_string(), "1".to_string());
        let d2 = data().with_user_vars(u);
        assert_eq!(render("{{ user `x` }}", &d2).unwrap(), "1");
        assert!(render(r#"{{ user "y" }}"#, &d2).is_err());
        assert!(render(r#"{{ env "HOME" }}"#, &d).is_err());
        assert!(render(
            r#"{{ env "KILN_SURELY_UNSET_VAR" }}"#,
            &data().allow_env(true)
        )
        .unwrap()
        .is_empty());
        let e = render("{{ nope }}", &d).unwrap_err();
        assert!(e.message.contains("unknown function"), "{e}");
        assert_eq!(
            render(
                "{{ build_name }}",
                &data().with_function("build_name", "ubuntu")
            )
            .unwrap(),
            "ubuntu"
        );
    }

    #[test]
    fn numbers_split_replace_clean() {
        let d = data();
        assert_eq!(render("{{ 12 }}", &d).unwrap(), "12");
        assert_eq!(render(r#"{{ split .HTTPIP "." 3 }}"#, &d).unwrap(), "2");
        assert!(render(r#"{{ split .HTTPIP "." 4 }}"#, &d).is_err());
        assert_eq!(
            render(r#"{{ replace "." "-" 1 .HTTPIP }}"#, &d).unwrap(),
            "10-0.2.2"
        );
        assert_eq!(
            render(r#"{{ clean_resource_name "Ubuntu 24.04_X" }}"#, &d).unwrap(),
            "ubuntu-24-04-x"
        );
    }

    #[test]
    fn errors() {
        let d = data();
        for (t, off) in [
            ("{{ .HTTPIP", 0),
            ("x {{ }}", 2),
            ("{{ if .X }}", 3),
            ("{{ . }}", 3),
            ("{{ \"abc }}", 0),
            ("{{ 1x }}", 3),
        ] {
            let e = render(t, &d).unwrap_err();
            assert_eq!(e.offset, off, "{t}: {e}");
        }
    }

    #[test]
    fn go_layouts() {
        let t = datetime!(2026-11-26 17:05:09.5 +02:00);
        assert_eq!(
            go_time_format("2006-01-02 15:04:05", t),
            "2026-11-26 17:05:09"
        );
        assert_eq!(
            go_time_format("02 Jan 06 15:04 -0700", t),
            "26 Nov 26 17:05 +0200"
        );
        assert_eq!(
            go_time_format("2006-01-02T15:04:05Z07:00", t),
            "2026-11-26T17:05:09+02:00"
        );
        assert_eq!(go_time_format("3:04:05.999 pm", t), "5:05:09.5 pm");
        assert_eq!(
            go_time_format("January 2, 2006 (002)", t),
            "November 26, 2026 (330)"
        );
        assert_eq!(go_time_format("Mon Z07", t), "Thu +02");
    }
}
