//! `STATE/events.jsonl`: one JSON object per line for every request, VM lifecycle change and key sent.

use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Parameter names whose values never reach the log.
pub const SECRET_PARAMS: &[&str] = &[
    "password",
    "cipassword",
    "new-password",
    "otp",
    "tfa-challenge",
    "ticket",
    "content",
    "input-data",
];

pub struct Events {
    file: Mutex<Option<File>>,
}

pub fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Mask secret values in a parameter map.
pub fn mask(params: &indexmap::IndexMap<String, Value>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in params {
        let masked = if SECRET_PARAMS.contains(&k.as_str()) {
            json!("***")
        } else {
            v.clone()
        };
        m.insert(k.clone(), masked);
    }
    Value::Object(m)
}

impl Events {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(state_dir.join("events.jsonl"))?;
        Ok(Events {
            file: Mutex::new(Some(f)),
        })
    }

    pub fn disabled() -> Self {
        Events {
            file: Mutex::new(None),
        }
    }

    /// Append an event; `kind` is `request`, `vm`, `key`, `task`, …
    pub fn log(&self, kind: &str, mut fields: Value) {
        if let Value::Object(m) = &mut fields {
            m.insert("time".into(), json!(timestamp()));
            m.insert("event".into(), json!(kind));
        }
        let mut line = serde_json::to_string(&fields).unwrap_or_default();
        line.push('\n');
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = g.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
