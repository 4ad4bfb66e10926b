//! The HCL2 function library (Packer / Terraform / go-cty stdlib semantics).
//!
//! Public surface used by the evaluator:
//! - [`FuncContext`]: what a call may see (cwd for relative paths, whether `env()` is allowed, the build's "now").
//! - [`exists`]: is `name` a function kiln knows? This includes functions kiln deliberately rejects
//!   (`vault`, `aws_secretsmanager`, `consul_key`), so that calling them yields a [`FuncError::NotSupported`]
//!   with a hint rather than "unknown function".
//! - [`call`]: call a function with already-evaluated arguments.
//! - [`names`]: every known function name (for "did you mean" suggestions).
//! - [`go_time_format`]: Go reference-layout time formatting (for `{{ isotime "2006-01-02" }}` fields).
//!
//! `can`, `try` and `templatefile` are special forms handled by the evaluator, not here.
//!
//! Value model: HCL has no separate list/set/tuple or map/object at the `hcl::Value` level, so lists, sets
//! and tuples are `Value::Array`, maps and objects are `Value::Object`. Arguments are converted the way cty
//! converts them: a number or bool is accepted where a string is expected (`upper(1)` → `"1"`), a numeric string
//! where a number is expected, `"true"`/`"false"` where a bool is expected. Integral results are integers
//! (`length()` returns `3`, not `3.0`). Where cty returns objects with sorted attributes (`keys`, `values`,
//! `jsonencode`, `yamlencode`) kiln sorts keys too.

use std::path::PathBuf;

use hcl::{Number, Value};

mod collection;
mod crypto;
mod datetime;
mod encoding;
mod environment;
mod filesystem;
mod network;
mod numeric;
mod string;

pub use datetime::go_time_format;
pub(crate) use filesystem::read_file_capped;

/// What a function call may observe.
#[derive(Debug, Clone)]
pub struct FuncContext {
    /// Directory relative paths (`file("x")`, `abspath("x")`) resolve against: Packer uses the process cwd.
    pub cwd: PathBuf,
    /// `env()` is only allowed in variable defaults (as in Packer).
    pub allow_env: bool,
    /// The build's "now" (`timestamp()` returns it, RFC 3339 UTC).
    pub now: time::OffsetDateTime,
}

/// A function call failed.
#[derive(Debug, thiserror::Error)]
pub enum FuncError {
    #[error("call to unknown function \"{name}\"")]
    Unknown { name: String },
    #[error("function \"{name}\" expects {expected} argument(s), got {got}")]
    Arity {
        name: String,
        expected: String,
        got: usize,
    },
    #[error("invalid argument {arg} to \"{name}\": expected {expected}, got {got}")]
    Type {
        name: String,
        arg: usize,
        expected: String,
        got: String,
    },
    #[error("function \"{name}\" failed: {msg}")]
    Failed { name: String, msg: String },
    #[error("function \"{name}\" is not supported by kiln: {hint}")]
    NotSupported { name: String, hint: String },
}

pub(crate) type Res = Result<Value, FuncError>;
pub(crate) type Func = fn(&str, Vec<Value>, &FuncContext) -> Res;

const TABLES: &[&[(&str, Func)]] = &[
    string::FUNCS,
    collection::FUNCS,
    numeric::FUNCS,
    network::FUNCS,
    encoding::FUNCS,
    crypto::FUNCS,
    filesystem::FUNCS,
    datetime::FUNCS,
    environment::FUNCS,
];

fn lookup_fn(name: &str) -> Option<Func> {
    TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
}

/// Is `name` a known function?
pub fn exists(name: &str) -> bool {
    lookup_fn(name).is_some()
}

/// Every known function name, sorted.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = TABLES
        .iter()
        .flat_map(|t| t.iter())
        .map(|(n, _)| *n)
        .collect();
    v.sort_unstable();
    v
}

/// Call function `name` with evaluated `args`.
pub fn call(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Result<Value, FuncError> {
    match lookup_fn(name) {
        Some(f) => f(name, args, ctx),
        None => Err(FuncError::Unknown {
            name: name.to_string(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// limits: a real template never meets them, a hostile one must get an error instead of a crash,
// an allocation abort or a hang (README "Limits on hostile templates")

/// Largest string a function may produce (and `format` width, `indent` padding…): 64 MiB.
pub const MAX_STRING_BYTES: usize = 64 << 20;
/// Largest file `file`, `filebase64` and `templatefile` read: 64 MiB. (`filesha256` & co. stream
/// and have no size limit.)
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Most elements a function may produce (`setproduct`, `split`, …).
pub const MAX_ITEMS: usize = 1_000_000;
/// Most directory entries `fileset` visits.
pub const MAX_FILESET_ENTRIES: usize = 100_000;

/// Refuse a result of `n` bytes (or items, `what` says which) over `limit` before allocating it.
pub(crate) fn check_size(name: &str, n: u128, limit: usize, what: &str) -> Result<(), FuncError> {
    if n > limit as u128 {
        return Err(failed(
            name,
            format!(
                "the result would have {n} {what}, more than kiln's limit of {limit} (see \"Limits on hostile templates\" in the README)"
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// helpers shared by the families

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

pub(crate) fn failed(name: &str, msg: impl Into<String>) -> FuncError {
    FuncError::Failed {
        name: name.to_string(),
        msg: msg.into(),
    }
}

pub(crate) fn type_err(name: &str, arg: usize, expected: &str, v: &Value) -> FuncError {
    FuncError::Type {
        name: name.to_string(),
        arg: arg + 1,
        expected: expected.to_string(),
        got: type_name(v).to_string(),
    }
}

/// Check the argument count: `min..=max` (`max = None`: variadic).
pub(crate) fn arity(
    name: &str,
    args: &[Value],
    min: usize,
    max: Option<usize>,
) -> Result<(), FuncError> {
    let ok = args.len() >= min && max.is_none_or(|m| args.len() <= m);
    if ok {
        return Ok(());
    }
    let expected = match max {
        Some(m) if m == min => m.to_string(),
        Some(m) => format!("{min} to {m}"),
        None => format!("at least {min}"),
    };
    Err(FuncError::Arity {
        name: name.to_string(),
        expected,
        got: args.len(),
    })
}

/// Format a number as cty does when converting it to a string.
pub(crate) fn num_to_string(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    // Rust's Display gives the shortest round-trip form without an exponent, like big.Float 'f' -1.
    format!("{f}")
}

/// A string argument (numbers and bools convert, as cty does).
pub(crate) fn arg_str(name: &str, idx: usize, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(num_to_string(n)),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(failed(
            name,
            format!("argument {} must not be null", idx + 1),
        )),
        other => Err(type_err(name, idx, "string", other)),
    }
}

/// Parse a string as a cty number.
pub(crate) fn parse_number(s: &str) -> Option<Number> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Number::from(i));
    }
    let f: f64 = t.parse().ok()?;
    Number::from_f64(f)
}

/// A number argument (numeric strings convert).
pub(crate) fn arg_num(name: &str, idx: usize, v: &Value) -> Result<Number, FuncError> {
    match v {
        Value::Number(n) => Ok(*n),
        Value::String(s) => parse_number(s).ok_or_else(|| {
            failed(
                name,
                format!("argument {}: cannot convert \"{s}\" to a number", idx + 1),
            )
        }),
        Value::Null => Err(failed(
            name,
            format!("argument {} must not be null", idx + 1),
        )),
        other => Err(type_err(name, idx, "number", other)),
    }
}

pub(crate) fn arg_f64(name: &str, idx: usize, v: &Value) -> Result<f64, FuncError> {
    Ok(arg_num(name, idx, v)?.as_f64().unwrap_or(0.0))
}

/// A whole-number argument.
pub(crate) fn arg_int(name: &str, idx: usize, v: &Value) -> Result<i64, FuncError> {
    let n = arg_num(name, idx, v)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    Err(failed(
        name,
        format!(
            "argument {} must be a whole number, got {}",
            idx + 1,
            num_to_string(&n)
        ),
    ))
}

/// A bool argument (`"true"`/`"false"` convert).
pub(crate) fn arg_bool(name: &str, idx: usize, v: &Value) -> Result<bool, FuncError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        Value::Null => Err(failed(
            name,
            format!("argument {} must not be null", idx + 1),
        )),
        other => Err(type_err(name, idx, "bool", other)),
    }
}

/// A list/set/tuple argument.
pub(crate) fn arg_list(name: &str, idx: usize, v: &Value) -> Result<Vec<Value>, FuncError> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        Value::Null => Err(failed(
            name,
            format!("argument {} must not be null", idx + 1),
        )),
        other => Err(type_err(name, idx, "list", other)),
    }
}

/// A map/object argument.
pub(crate) fn arg_map(
    name: &str,
    idx: usize,
    v: &Value,
) -> Result<hcl::Map<String, Value>, FuncError> {
    match v {
        Value::Object(o) => Ok(o.clone()),
        Value::Null => Err(failed(
            name,
            format!("argument {} must not be null", idx + 1),
        )),
        other => Err(type_err(name, idx, "map", other)),
    }
}

/// Equality as cty compares values after unification: numbers by value, `1 == "1"` after conversion.
pub(crate) fn val_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            parse_number(s).and_then(|p| p.as_f64()) == n.as_f64()
        }
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => {
            s == &x.to_string()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| val_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| val_eq(v, w)))
        }
        _ => a == b,
    }
}

pub(crate) fn int(i: i64) -> Value {
    Value::Number(Number::from(i))
}

pub(crate) fn float(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| "result is not a finite number".to_string())
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn ctx() -> FuncContext {
        FuncContext {
            cwd: std::env::temp_dir(),
            allow_env: false,
            now: time::macros::datetime!(2026-11-26 03:04:05 UTC),
        }
    }

    /// Parse an HCL expression into a value (`v("[1, \"a\"]")`).
    pub fn v(expr: &str) -> Value {
        let body: Value = hcl::from_str(&format!("x = {expr}\n")).expect("test expression parses");
        match body {
            Value::Object(mut o) => o.swap_remove("x").expect("x"),
            _ => panic!("not an object"),
        }
    }

    pub fn s(x: &str) -> Value {
        Value::String(x.to_string())
    }

    /// Call with arguments given as HCL expressions.
    pub fn c(name: &str, args: &[&str]) -> Res {
        call(name, args.iter().map(|a| v(a)).collect(), &ctx())
    }

    /// Call and expect success, comparing with an HCL expression.
    pub fn ok(name: &str, args: &[&str], want: &str) {
        match c(name, args) {
            Ok(got) => assert_eq!(got, v(want), "{name}({args:?})"),
            Err(e) => panic!("{name}({args:?}) failed: {e}"),
        }
    }

    pub fn err(name: &str, args: &[&str]) -> FuncError {
        match c(name, args) {
            Ok(got) => panic!("{name}({args:?}) should fail, got {got:?}"),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn unknown_function() {
        assert!(!exists("nope"));
        assert!(matches!(c("nope", &[]), Err(FuncError::Unknown { .. })));
    }

    #[test]
    fn names_include_corpus_functions() {
        for f in [
            "timestamp",
            "file",
            "formatdate",
            "contains",
            "regex",
            "abspath",
            "format",
            "merge",
            "lookup",
            "length",
            "concat",
            "alltrue",
            "compact",
            "join",
            "env",
            "replace",
            "flatten",
            "distinct",
            "lower",
            "trimspace",
            "anytrue",
            "substr",
            "jsonencode",
            "formatlist",
            "chomp",
            "vault",
            "yamldecode",
            "keys",
            "bcrypt",
            "coalesce",
            "split",
            "uuidv4",
            "indent",
            "sha256",
            "sha512",
            "base64encode",
            "basename",
            "dirname",
            "upper",
        ] {
            assert!(exists(f), "{f}");
        }
        assert!(
            names().windows(2).all(|w| w[0] < w[1]),
            "no duplicate names"
        );
    }

    /// Every function is exercised by a unit test (a call `ok("name"`, `err("name"`, `c("name"` or
    /// `call("name"` in one of the family files).
    #[test]
    fn every_function_has_a_test() {
        let sources = [
            include_str!("string.rs"),
            include_str!("collection.rs"),
            include_str!("numeric.rs"),
            include_str!("encoding.rs"),
            include_str!("crypto.rs"),
            include_str!("filesystem.rs"),
            include_str!("datetime.rs"),
            include_str!("environment.rs"),
            include_str!("network.rs"),
        ];
        let tests: String = sources
            .iter()
            .filter_map(|s| s.split("#[cfg(test)]").nth(1))
            .collect();
        let missing: Vec<&str> = names()
            .into_iter()
            .filter(|n| {
                !["ok(", "err(", "c(", "call("]
                    .iter()
                    .any(|p| tests.contains(&format!("{p}\"{n}\"")))
                    && !tests.contains(&format!("\"{n}\","))
                    && !tests.contains(&format!("\"{n}\"]"))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "functions without a unit test: {missing:?}"
        );
    }

    #[test]
    fn arity_errors() {
        assert!(matches!(err("upper", &[]), FuncError::Arity { .. }));
        assert!(matches!(
            err("upper", &["\"a\"", "\"b\""]),
            FuncError::Arity { .. }
        ));
    }

    #[test]
    fn conversions() {
        ok("upper", &["1"], "\"1\"");
        ok("abs", &["\"-2\""], "2");
        assert!(matches!(
            err("upper", &["[1]"]),
            FuncError::Type { arg: 1, .. }
        ));
        assert!(val_eq(&v("1"), &v("\"1\"")));
        assert!(val_eq(&v("1.0"), &v("1")));
        assert!(!val_eq(&v("[1]"), &v("[2]")));
    }
}
