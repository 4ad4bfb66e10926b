//! Tolerant deserializers for PVE's loosely typed JSON: numbers sent as
//! strings, booleans sent as `0`/`1`, `"1"`, `true` or `null`.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

struct LooseU64;

impl Visitor<'_> for LooseU64 {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an unsigned integer or a string holding one")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).ok())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v >= 0.0 && v.is_finite() {
            Ok(Some(v as u64))
        } else {
            Ok(None)
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(u64::from(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = t.parse::<u64>() {
            return Ok(Some(n));
        }
        if let Ok(f) = t.parse::<f64>() {
            return self.visit_f64(f);
        }
        Err(E::custom(format!("expected a number, got {v:?}")))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// `Option<u64>` from a number, a numeric string, a bool, or null.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(LooseU64)
}

/// `u64` from a number or numeric string; null/empty → 0.
pub fn u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(d.deserialize_any(LooseU64)?.unwrap_or(0))
}

/// `u32` (VM ids) from a number or numeric string.
pub fn u32_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = d.deserialize_any(LooseU64)?.unwrap_or(0);
    u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} out of range")))
}

/// `Option<u32>`.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match d.deserialize_any(LooseU64)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{v} out of range"))),
    }
}

struct LooseBool;

impl Visitor<'_> for LooseBool {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, 0/1, or a string holding one")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        Ok(v != 0)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        Ok(v != 0)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        Ok(v != 0.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "" | "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(E::custom(format!("expected a boolean, got {v:?}"))),
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// `bool` from `true`/`false`, `0`/`1`, `"0"`/`"1"`, or null (false).
pub fn bool_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(LooseBool)
}

struct LooseString;

impl Visitor<'_> for LooseString {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(if v { "1" } else { "0" }.to_string())
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
}

/// `String` from a string, number (decimal text) or boolean (`"1"`/`"0"`).
pub fn string_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(LooseString)
}

/// Turn any scalar JSON value into the text PVE would have sent on the form wire.
pub fn value_to_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::u64_lenient", default)]
        n: u64,
        #[serde(deserialize_with = "super::bool_lenient", default)]
        b: bool,
        #[serde(deserialize_with = "super::opt_u64", default)]
        o: Option<u64>,
    }

    #[test]
    fn tolerant() {
        let t: T = serde_json::from_str(r#"{"n":"2048","b":"1","o":null}"#).unwrap();
        assert_eq!((t.n, t.b, t.o), (2048, true, None));
        let t: T = serde_json::from_str(r#"{"n":7,"b":true,"o":"12"}"#).unwrap();
        assert_eq!((t.n, t.b, t.o), (7, true, Some(12)));
        let t: T = serde_json::from_str(r#"{"n":7.0,"b":0}"#).unwrap();
        assert_eq!((t.n, t.b, t.o), (7, false, None));
        assert!(serde_json::from_str::<T>(r#"{"n":"abc"}"#).is_err());
    }
}
