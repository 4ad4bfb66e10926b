//! Encoding functions: jsonencode, jsondecode, yamlencode, yamldecode, base64encode, base64decode,
//! textencodebase64, textdecodebase64, urlencode.

use base64::Engine as _;
use hcl::{Map, Number, Value};

use super::{arg_str, arity, failed, Func, FuncContext, Res};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("jsonencode", jsonencode),
    ("jsondecode", jsondecode),
    ("yamlencode", yamlencode),
    ("yamldecode", yamldecode),
    ("base64encode", base64encode),
    ("base64decode", base64decode),
    ("textencodebase64", textencodebase64),
    ("textdecodebase64", textdecodebase64),
    ("urlencode", urlencode),
    ("csvdecode", csvdecode),
];

/// HCL value → JSON value, object keys sorted as cty does.
pub(crate) fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                serde_json::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                serde_json::Value::from(u)
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0))
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            }
        }
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let mut m = serde_json::Map::new();
            for k in keys {
                m.insert(k.clone(), to_json(&o[k]));
            }
            serde_json::Value::Object(m)
        }
    }
}

/// JSON value → HCL value.
pub(crate) fn from_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Number(Number::from(i))
            } else if let Some(u) = n.as_u64() {
                Value::Number(Number::from(u))
            } else {
                n.as_f64()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k, from_json(v));
            }
            Value::Object(m)
        }
    }
}

/// Compact JSON with Go's HTML-safe escaping (`<`, `>`, `&`, U+2028, U+2029), as Terraform's jsonencode.
pub(crate) fn to_json_string(v: &Value) -> String {
    let raw = serde_json::to_string(&to_json(v)).unwrap_or_else(|_| "null".to_string());
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn jsonencode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    Ok(Value::String(to_json_string(&args[0])))
}

fn jsondecode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let s = arg_str(name, 0, &args[0])?;
    let v: serde_json::Value =
        serde_json::from_str(&s).map_err(|e| failed(name, format!("invalid JSON: {e}")))?;
    Ok(from_json(v))
}

fn yamlencode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let s = serde_saphyr::to_string(&to_json(&args[0]))
        .map_err(|e| failed(name, format!("cannot encode as YAML: {e}")))?;
    Ok(Value::String(s))
}

fn yamldecode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let s = arg_str(name, 0, &args[0])?;
    if s.trim().is_empty() {
        return Ok(Value::Null);
    }
    // YAML 1.2 core schema (as go-yaml v3 / cty): `yes`, `on`, `y` stay strings.
    let mut opts = serde_saphyr::Options::default();
    opts.strict_booleans = true;
    let v: serde_json::Value = serde_saphyr::from_str_with_options(&s, opts)
        .map_err(|e| failed(name, format!("invalid YAML: {e}")))?;
    Ok(from_json(v))
}

fn base64encode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let s = arg_str(name, 0, &args[0])?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes()),
    ))
}

fn decode_b64(name: &str, s: &str) -> Result<Vec<u8>, super::FuncError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| failed(name, format!("the given value is not valid base64: {e}")))
}

fn base64decode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let bytes = decode_b64(name, &arg_str(name, 0, &args[0])?)?;
    String::from_utf8(bytes).map(Value::String).map_err(|_| {
        failed(
            name,
            "the decoded result is not valid UTF-8; use filebase64 for binary data",
        )
    })
}

fn encoding_name(name: &str, enc: &str) -> Result<&'static str, super::FuncError> {
    match enc.to_ascii_uppercase().replace('_', "-").as_str() {
        "UTF-8" | "UTF8" => Ok("UTF-8"),
        "UTF-16LE" => Ok("UTF-16LE"),
        "UTF-16BE" => Ok("UTF-16BE"),
        "ISO-8859-1" | "LATIN1" => Ok("ISO-8859-1"),
        _ => Err(failed(name, format!("unsupported encoding \"{enc}\" (kiln supports UTF-8, UTF-16LE, UTF-16BE, ISO-8859-1)"))),
    }
}

fn textencodebase64(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let s = arg_str(name, 0, &args[0])?;
    let enc = encoding_name(name, &arg_str(name, 1, &args[1])?)?;
    let bytes: Vec<u8> = match enc {
        "UTF-16LE" => s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
        "UTF-16BE" => s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect(),
        "ISO-8859-1" => s
            .chars()
            .map(|c| {
                u8::try_from(c as u32).map_err(|_| {
                    failed(
                        name,
                        format!("character {c:?} cannot be encoded as ISO-8859-1"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        _ => s.into_bytes(),
    };
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

fn textdecodebase64(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let bytes = decode_b64(name, &arg_str(name, 0, &args[0])?)?;
    let enc = encoding_name(name, &arg_str(name, 1, &args[1])?)?;
    let s = match enc {
        "UTF-16LE" | "UTF-16BE" => {
            if bytes.len() % 2 != 0 {
                return Err(failed(name, "odd number of bytes for UTF-16"));
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| {
                    if enc == "UTF-16LE" {
                        u16::from_le_bytes([c[0], c[1]])
                    } else {
                        u16::from_be_bytes([c[0], c[1]])
                    }
                })
                .collect();
            String::from_utf16(&units).map_err(|_| failed(name, "invalid UTF-16 data"))?
        }
        "ISO-8859-1" => bytes.iter().map(|b| *b as char).collect(),
        _ => String::from_utf8(bytes)
            .map_err(|_| failed(name, "the decoded bytes are not valid UTF-8"))?,
    };
    Ok(Value::String(s))
}

/// Go's `url.QueryEscape`.
fn urlencode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let s = arg_str(name, 0, &args[0])?;
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(Value::String(out))
}

/// Split CSV text (RFC 4180: quoted fields, `""` escapes, newlines inside quotes) into records.
fn parse_csv(name: &str, text: &str) -> Result<Vec<Vec<String>>, super::FuncError> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => in_quotes = false,
                other => field.push(other),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => in_quotes = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            other => field.push(other),
        }
    }
    if in_quotes {
        return Err(failed(name, "unterminated quoted field"));
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// `csvdecode(str)`: a list of objects keyed by the header row.
fn csvdecode(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let rows = parse_csv(name, &arg_str(name, 0, &args[0])?)?;
    let mut it = rows.into_iter();
    let Some(header) = it.next() else {
        return Err(failed(name, "missing header line"));
    };
    let mut out = Vec::new();
    for (i, r) in it.enumerate() {
        if r.len() != header.len() {
            return Err(failed(
                name,
                format!(
                    "line {}: wrong number of fields ({} instead of {})",
                    i + 2,
                    r.len(),
                    header.len()
                ),
            ));
        }
        let mut obj = Map::new();
        for (k, v) in header.iter().zip(r) {
            obj.insert(k.clone(), Value::String(v));
        }
        out.push(Value::Object(obj));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn json() {
        ok(
            "jsonencode",
            &["{b = [1, 2.5, true, null], a = \"x\"}"],
            r#""{\"a\":\"x\",\"b\":[1,2.5,true,null]}""#,
        );
        ok("jsonencode", &["\"<&>\""], r#""\"\\u003c\\u0026\\u003e\"""#);
        ok("jsonencode", &["1"], r#""1""#);
        err("jsonencode", &[]);
        ok(
            "jsondecode",
            &[r#""{\"hello\": \"world\", \"n\": [1, 1.5]}""#],
            "{hello = \"world\", n = [1, 1.5]}",
        );
        ok("jsondecode", &[r#""true""#], "true");
        err("jsondecode", &[r#""{bad""#]);
    }

    #[test]
    fn yaml() {
        ok(
            "yamldecode",
            &["\"a: 1\\nb: [x, y, yes]\\nc: true\\n\""],
            "{a = 1, b = [\"x\", \"y\", \"yes\"], c = true}",
        );
        ok("yamldecode", &["\"\""], "null");
        err("yamldecode", &["\"a: [\""]);
        let out = c("yamlencode", &["{b = 1, a = [\"x\"]}"]).expect("yamlencode");
        let s = match out {
            hcl::Value::String(s) => s,
            other => panic!("{other:?}"),
        };
        assert!(
            s.find("a").unwrap_or(99) < s.find("b").unwrap_or(0),
            "sorted keys: {s}"
        );
        let round = super::super::call("yamldecode", vec![hcl::Value::String(s)], &ctx())
            .expect("round trip");
        assert_eq!(round, v("{a = [\"x\"], b = 1}"));
        err("yamlencode", &[]);
    }

    #[test]
    fn base64() {
        ok("base64encode", &["\"Hello World\""], "\"SGVsbG8gV29ybGQ=\"");
        ok("base64decode", &["\"SGVsbG8gV29ybGQ=\""], "\"Hello World\"");
        err("base64decode", &["\"not base64!\""]);
        err("base64decode", &["\"/w==\""]);
        ok(
            "textencodebase64",
            &["\"Hello World\"", "\"UTF-16LE\""],
            "\"SABlAGwAbABvACAAVwBvAHIAbABkAA==\"",
        );
        ok(
            "textdecodebase64",
            &["\"SABlAGwAbABvACAAVwBvAHIAbABkAA==\"", "\"UTF-16LE\""],
            "\"Hello World\"",
        );
        ok("textencodebase64", &["\"é\"", "\"ISO-8859-1\""], "\"6Q==\"");
        err("textencodebase64", &["\"x\"", "\"EBCDIC\""]);
    }

    #[test]
    fn csv() {
        ok(
            "csvdecode",
            &["\"a,b,c\\n1,2,3\\n4,\\\"x,\\\"\\\"y\\\",6\\n\""],
            "[{a = \"1\", b = \"2\", c = \"3\"}, {a = \"4\", b = \"x,\\\"y\", c = \"6\"}]",
        );
        ok("csvdecode", &["\"a,b\""], "[]");
        err("csvdecode", &["\"a,b\\n1\""]);
        err("csvdecode", &["\"\""]);
        err("csvdecode", &["\"a\\n\\\"x\""]);
    }

    #[test]
    fn url() {
        ok("urlencode", &["\"Hello World?\""], "\"Hello+World%3F\"");
        ok("urlencode", &["\"a/b\""], "\"a%2Fb\"");
        err("urlencode", &["[]"]);
    }
}
