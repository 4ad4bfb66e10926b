//! Wire types: errors with PVE's status/reason/body, replies, parameters and form decoding.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use indexmap::IndexMap;
use serde_json::{json, Value};

/// An API error, rendered the way pve-http-server renders it.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// 400 `Parameter verification failed.` with `errors`.
    Params(IndexMap<String, String>),
    /// Handler error (`die`): status + message (reason = first line).
    Status(u16, String),
    /// Status with an empty body (401s, 595/596).
    Empty(u16, String),
    /// Close the connection without answering (fault injection).
    Drop,
}

impl ApiError {
    pub fn e500(msg: impl Into<String>) -> Self {
        ApiError::Status(500, msg.into())
    }
    pub fn param(name: &str, msg: impl Into<String>) -> Self {
        let mut m = IndexMap::new();
        m.insert(name.to_string(), msg.into());
        ApiError::Params(m)
    }
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Params(_) => 400,
            ApiError::Status(s, _) | ApiError::Empty(s, _) => *s,
            ApiError::Drop => 0,
        }
    }
    /// Message for logs / the events file.
    pub fn message(&self) -> String {
        match self {
            ApiError::Params(_) => "Parameter verification failed.".to_string(),
            ApiError::Status(_, m) | ApiError::Empty(_, m) => m.clone(),
            ApiError::Drop => "connection dropped".to_string(),
        }
    }
}

/// A successful reply: `data` plus optional siblings (`total`).
#[derive(Debug, Clone)]
pub struct Reply {
    pub data: Value,
    pub extra: Vec<(String, Value)>,
}

impl Reply {
    pub fn data(v: Value) -> Self {
        Reply {
            data: v,
            extra: Vec::new(),
        }
    }
    pub fn null() -> Self {
        Reply::data(Value::Null)
    }
}

pub type ApiResult = Result<Reply, ApiError>;

fn base_response(status: u16, reason: &str) -> hyper::http::response::Builder {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("Server", "pve-api-daemon/3.0")
        .header("Cache-Control", "max-age=0")
        .header("Pragma", "no-cache")
        .header("Expires", httpdate_now());
    let reason: String = reason
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect();
    if let Ok(r) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
        b = b.extension(r);
    }
    b
}

pub fn httpdate_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    now.format(&fmt).unwrap_or_default()
}

fn json_response(status: u16, reason: &str, body: &Value) -> Response<Full<Bytes>> {
    let text = serde_json::to_vec(body).unwrap_or_default();
    base_response(status, reason)
        .header("Content-Type", "application/json;charset=UTF-8")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

pub fn render_ok(r: &Reply) -> Response<Full<Bytes>> {
    let mut body = serde_json::Map::new();
    body.insert("data".into(), r.data.clone());
    for (k, v) in &r.extra {
        body.insert(k.clone(), v.clone());
    }
    json_response(200, "OK", &Value::Object(body))
}

pub fn render_err(e: &ApiError) -> Response<Full<Bytes>> {
    match e {
        ApiError::Params(errors) => json_response(
            400,
            "Parameter verification failed.",
            &json!({"data": null, "message": "Parameter verification failed.\n", "errors": errors}),
        ),
        ApiError::Status(status, msg) => {
            let first = msg.lines().next().unwrap_or("").to_string();
            let mut m = msg.clone();
            if *status != 501 && !m.ends_with('\n') {
                m.push('\n');
            }
            json_response(*status, &first, &json!({"data": null, "message": m}))
        }
        ApiError::Empty(status, reason) => base_response(*status, reason)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        ApiError::Drop => Response::new(Full::new(Bytes::new())),
    }
}

/// Decode an `application/x-www-form-urlencoded` string as pve-http-server does: pairs split on `&`
/// and `;`, each pair on the first `=`, `+` = space; a repeated key becomes an array.
pub fn decode_urlencoded(s: &str, into: &mut IndexMap<String, Value>) {
    for pair in s.split(['&', ';']) {
        if pair.is_empty() {
            continue;
        }
        let mut it = pair.splitn(3, '=');
        let k = unescape(it.next().unwrap_or(""));
        let v = unescape(it.next().unwrap_or(""));
        if k.is_empty() || k == "_dc" {
            continue;
        }
        match into.get_mut(&k) {
            Some(Value::Array(a)) => a.push(Value::String(v)),
            Some(old) => {
                let prev = old.take();
                *old = Value::Array(vec![prev, Value::String(v)]);
            }
            None => {
                into.insert(k, Value::String(v));
            }
        }
    }
}

fn unescape(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Validated request parameters (all scalars are strings after validation).
#[derive(Debug, Clone, Default)]
pub struct Params(pub IndexMap<String, Value>);

impl Params {
    pub fn str(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(Value::as_str)
    }
    pub fn string(&self, k: &str) -> String {
        self.str(k).unwrap_or_default().to_string()
    }
    pub fn flag(&self, k: &str) -> bool {
        self.str(k) == Some("1")
    }
    pub fn int(&self, k: &str) -> Option<i64> {
        self.str(k)
            .and_then(|s| s.trim_start_matches('+').parse().ok())
    }
    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
    pub fn vmid(&self) -> u32 {
        self.int("vmid").unwrap_or(0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_quirks() {
        let mut m = IndexMap::new();
        decode_urlencoded(
            "a=1;b=x+y&command=ls&command=-l&boot=order%3Dscsi0%3Bide2&_dc=5&c=a=b",
            &mut m,
        );
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x y");
        assert_eq!(m["command"], json!(["ls", "-l"]));
        assert_eq!(m["boot"], "order=scsi0;ide2");
        assert_eq!(m["c"], "a");
        assert!(!m.contains_key("_dc"));
    }
}
