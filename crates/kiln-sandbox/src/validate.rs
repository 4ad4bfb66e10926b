//! Parameter validation, as pve-common's `JSONSchema::validate` / `check_prop` does it.
//!
//! Per property: required/unknown → type (`0|1` booleans at top level) → `format` (named formats from
//! `formats.json`, property strings for inline `format` objects) → `pattern` → lengths → min/max →
//! `enum` → `requires`. The first failing check of a property is its error (PVE stops there too);
//! errors of all properties are collected and returned together (400 `Parameter verification failed.`).

use crate::schema::{Endpoint, Schema};
use indexmap::IndexMap;
use regex::Regex;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};

pub type Errors = IndexMap<String, String>;

pub const MSG_MISSING: &str = "property is missing and it is not optional";
pub const MSG_UNKNOWN: &str =
    "property is not defined in schema and the schema does not allow additional properties";

/// Compile (and cache) a Perl-flavoured, implicitly anchored pattern.
pub fn perl_regex(pat: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = guard.get(pat) {
        return r.clone();
    }
    let fixed = pat
        .replace("(?^i:", "(?i:")
        .replace("(?^:", "(?:")
        .replace("{,", "{0,");
    let r = Regex::new(&format!("^(?:{fixed})$")).ok();
    guard.insert(pat.to_string(), r.clone());
    r
}

fn re_match(pat: &str, v: &str) -> bool {
    perl_regex(pat).map(|r| r.is_match(v)).unwrap_or(true)
}

/// Render a JSON scalar as PVE would see it on the wire.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

fn is_int(s: &str) -> bool {
    re_match(r"[+-]?\d+", s)
}
fn is_number(s: &str) -> bool {
    re_match(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", s)
}

/// Validate `params` against `ep`. On success the params are normalised: scalars become strings
/// (booleans `"0"`/`"1"`), `-list` strings given as arrays are joined with `,`, array params are arrays.
pub fn validate(ep: &Endpoint, params: &mut IndexMap<String, Value>) -> Result<(), Errors> {
    let mut errors = Errors::new();
    if !ep.additional_properties {
        for k in params.keys() {
            if !ep.params.contains_key(k) {
                errors.insert(k.clone(), MSG_UNKNOWN.to_string());
            }
        }
    }
    for (name, schema) in &ep.params {
        match params.get_mut(name) {
            None => {
                if !is_optional(schema) {
                    errors.insert(name.clone(), MSG_MISSING.to_string());
                }
            }
            Some(v) => {
                if let Err(e) = check_prop(name, schema, v, false) {
                    errors.insert(name.clone(), e);
                }
            }
        }
    }
    for (name, schema) in &ep.params {
        if params.contains_key(name) {
            if let Some(req) = schema.get("requires").and_then(Value::as_str) {
                if !params.contains_key(req) && !errors.contains_key(req) {
                    errors.insert(
                        req.to_string(),
                        format!("missing property required by '{name}'"),
                    );
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

pub fn is_optional(schema: &Value) -> bool {
    match schema.get("optional") {
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "1",
        _ => false,
    }
}

fn num_of(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Check one value. `in_propstring`: booleans accept on/off/yes/no/true/false.
pub fn check_prop(
    name: &str,
    schema: &Value,
    v: &mut Value,
    in_propstring: bool,
) -> Result<(), String> {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    // ---- type
    match ty {
        "boolean" => {
            let ok = match v {
                Value::Bool(b) => Some(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(0) => Some(false),
                    Some(1) => Some(true),
                    _ => None,
                },
                Value::String(s) => {
                    if in_propstring {
                        match s.to_ascii_lowercase().as_str() {
                            "1" | "on" | "yes" | "true" => Some(true),
                            "0" | "off" | "no" | "false" => Some(false),
                            _ => None,
                        }
                    } else {
                        match s.as_str() {
                            "1" => Some(true),
                            "0" => Some(false),
                            _ => None,
                        }
                    }
                }
                _ => None,
            };
            match ok {
                Some(b) => {
                    *v = Value::String(if b { "1" } else { "0" }.to_string());
                    return Ok(());
                }
                None => {
                    return Err(format!(
                        "type check ('boolean') failed - got '{}'",
                        scalar_text(v).unwrap_or_default()
                    ))
                }
            }
        }
        "integer" | "number" => {
            let s = match scalar_text(v) {
                Some(s) if !matches!(v, Value::Bool(_)) => s,
                _ => return Err(format!("type check ('{ty}') failed")),
            };
            let ok = if ty == "integer" {
                is_int(&s)
            } else {
                is_number(&s)
            };
            if !ok {
                return Err(format!("type check ('{ty}') failed - got '{s}'"));
            }
            *v = Value::String(s);
        }
        "array" => {
            if !v.is_array() {
                *v = Value::Array(vec![v.clone()]);
            }
            if let (Some(items), Value::Array(arr)) = (schema.get("items"), &mut *v) {
                for item in arr.iter_mut() {
                    check_prop(name, items, item, in_propstring)?;
                }
            }
            return Ok(());
        }
        "object" => {
            if !v.is_object() {
                return Err("type check ('object') failed".to_string());
            }
            return Ok(());
        }
        "null" => return Ok(()),
        _ => {
            // string (and 'any')
            if let Value::Array(a) = v {
                let is_list = schema
                    .get("format")
                    .and_then(Value::as_str)
                    .map(|f| f.ends_with("-list"))
                    .unwrap_or(false);
                if is_list {
                    let joined: Vec<String> = a.iter().filter_map(scalar_text).collect();
                    *v = Value::String(joined.join(","));
                } else {
                    return Err(format!("type check ('{ty}') failed - got ARRAY"));
                }
            }
            match scalar_text(v) {
                Some(s) => *v = Value::String(s),
                None => return Err(format!("type check ('{ty}') failed")),
            }
        }
    }
    let s = scalar_text(v).unwrap_or_default();
    // ---- format
    if let Some(f) = schema.get("format") {
        let res = match f {
            Value::String(fname) => check_named_format(name, fname, &s),
            Value::Object(sub) => check_property_string(name, sub, &s).map(|_| ()),
            _ => Ok(()),
        };
        if let Err(e) = res {
            return Err(format!("invalid format - {e}"));
        }
    }
    // ---- pattern
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        if !re_match(p, &s) {
            return Err("value does not match the regex pattern".to_string());
        }
    }
    // ---- lengths
    if ty == "string" {
        let len = s.chars().count() as f64;
        if let Some(max) = num_of(schema.get("maxLength")) {
            if len > max {
                return Err(format!(
                    "value may only be {} characters long",
                    fmt_num(max)
                ));
            }
        }
        if let Some(min) = num_of(schema.get("minLength")) {
            if len < min {
                return Err(format!(
                    "value must be at least {} characters long",
                    fmt_num(min)
                ));
            }
        }
    }
    // ---- min / max (only numeric-looking values)
    if is_number(&s) {
        if let Ok(x) = s.parse::<f64>() {
            if let Some(min) = num_of(schema.get("minimum")) {
                if x < min {
                    return Err(format!(
                        "value must have a minimum value of {}",
                        fmt_num(min)
                    ));
                }
            }
            if let Some(max) = num_of(schema.get("maximum")) {
                if x > max {
                    return Err(format!(
                        "value must have a maximum value of {}",
                        fmt_num(max)
                    ));
                }
            }
        }
    }
    // ---- enum
    if let Some(Value::Array(list)) = schema.get("enum") {
        let names: Vec<String> = list.iter().filter_map(scalar_text).collect();
        if !names.contains(&s) {
            return Err(format!(
                "value '{s}' does not have a value in the enumeration '{}'",
                names.join(", ")
            ));
        }
    }
    Ok(())
}

/// Parse a property string against its sub-schema (`format` object), as `parse_property_string`.
/// Returns the parsed key → value map (aliases resolved, booleans normalised to 0/1).
pub fn check_property_string(
    param: &str,
    format: &Map<String, Value>,
    data: &str,
) -> Result<IndexMap<String, String>, String> {
    let default_key = format
        .iter()
        .find(|(_, s)| {
            s.get("default_key")
                .map(|d| d == 1 || d == true)
                .unwrap_or(false)
        })
        .map(|(k, _)| k.clone());
    let mut res: IndexMap<String, String> = IndexMap::new();
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = part.split_once('=') {
            if k.is_empty() || v.is_empty() {
                return Err("missing value in comma-separated list property\n".to_string());
            }
            let mut k = k.to_string();
            if res.contains_key(&k) {
                return Err(format!(
                    "duplicate key in comma-separated list property: {k}\n"
                ));
            }
            let mut schema = format.get(&k);
            if let Some(alias) = schema.and_then(|s| s.get("alias")).and_then(Value::as_str) {
                if let Some(ka) = schema
                    .and_then(|s| s.get("keyAlias"))
                    .and_then(Value::as_str)
                {
                    if res.contains_key(ka) {
                        return Err(format!("key alias '{ka}' is already defined\n"));
                    }
                    res.insert(ka.to_string(), k.clone());
                }
                k = alias.to_string();
                schema = format.get(&k);
            }
            if schema.is_none() {
                return Err(format!(
                    "invalid key in comma-separated list property: {k}\n"
                ));
            }
            res.insert(k, v.to_string());
        } else {
            match &default_key {
                Some(dk) => {
                    if res.contains_key(dk) {
                        return Err(format!(
                            "duplicate key in comma-separated list property: {dk}\n"
                        ));
                    }
                    res.insert(dk.clone(), part.to_string());
                }
                None => {
                    return Err(
                        "value without key, but schema does not define a default key\n".to_string(),
                    )
                }
            }
        }
    }
    let mut errs: Vec<String> = Vec::new();
    for (k, schema) in format {
        if schema.get("alias").is_some() {
            continue;
        }
        match res.get_mut(k) {
            None => {
                if !is_optional(schema) {
                    errs.push(format!("{param}.{k}: {MSG_MISSING}"));
                }
            }
            Some(val) => {
                let mut v = Value::String(val.clone());
                match check_prop(&format!("{param}.{k}"), schema, &mut v, true) {
                    Ok(()) => {
                        if let Some(s) = scalar_text(&v) {
                            *val = s;
                        }
                    }
                    Err(e) => errs.push(format!("{param}.{k}: {}", e.trim_end())),
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(res)
    } else {
        Err(format!("format error\n{}\n", errs.join("\n")))
    }
}

/// Sub-schemas of the named property-string formats the apidoc does not inline (`formats.json`).
fn named_property_format(name: &str) -> Option<Map<String, Value>> {
    let v = match name {
        "pve-qm-boot" => json!({
            "legacy": {"type": "string", "pattern": "[acdn]{1,4}", "default_key": 1, "optional": 1},
            "order": {"type": "string", "format": "pve-qm-bootdev-list", "optional": 1}
        }),
        "pve-qm-ipconfig" => json!({
            "ip": {"type": "string", "format": "pve-ipv4-config", "optional": 1},
            "gw": {"type": "string", "format": "ipv4", "optional": 1, "requires": "ip"},
            "ip6": {"type": "string", "format": "pve-ipv6-config", "optional": 1},
            "gw6": {"type": "string", "format": "ipv6", "optional": 1, "requires": "ip6"}
        }),
        "pve-vm-cpu-conf" => json!({
            "cputype": {"type": "string", "default_key": 1, "optional": 1, "pattern": "[a-zA-Z0-9_.\\-]+"},
            "flags": {"type": "string", "optional": 1, "pattern": "(?:[+-][a-zA-Z0-9\\-_.]+;?)*"},
            "hidden": {"type": "boolean", "optional": 1},
            "hv-vendor-id": {"type": "string", "optional": 1, "pattern": "[a-zA-Z0-9]{1,12}"},
            "phys-bits": {"type": "string", "optional": 1, "pattern": "(\\d+|host)"},
            "guest-phys-bits": {"type": "integer", "optional": 1, "minimum": 32, "maximum": 64},
            "reported-model": {"type": "string", "optional": 1},
            "level": {"type": "integer", "optional": 1}
        }),
        "pve-qm-cicustom" => json!({
            "meta": {"type": "string", "format": "pve-volume-id", "optional": 1},
            "network": {"type": "string", "format": "pve-volume-id", "optional": 1},
            "user": {"type": "string", "format": "pve-volume-id", "optional": 1},
            "vendor": {"type": "string", "format": "pve-volume-id", "optional": 1}
        }),
        "pve-qm-ide" => {
            return Schema::get()
                .property_formats
                .get("pve-qm-ide")?
                .as_object()
                .cloned()
        }
        _ => return None,
    };
    v.as_object().cloned()
}

fn formats_entry(name: &str) -> Option<&'static Value> {
    Schema::get().formats.get(name)
}

fn ipv4_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, p)) => {
            ip.parse::<Ipv4Addr>().is_ok() && p.parse::<u8>().map(|p| p <= 32).unwrap_or(false)
        }
        None => false,
    }
}
fn ipv6_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, p)) => {
            ip.parse::<Ipv6Addr>().is_ok() && p.parse::<u8>().map(|p| p <= 128).unwrap_or(false)
        }
        None => false,
    }
}

/// Check a named `format`. The error text is what PVE's format check dies with.
pub fn check_named_format(param: &str, name: &str, v: &str) -> Result<(), String> {
    if let Some(base) = name.strip_suffix("-list") {
        let parts: Vec<&str> = if v.contains('\0') {
            v.split('\0').collect()
        } else {
            v.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .collect()
        };
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            check_named_format(param, base, p)?;
        }
        return Ok(());
    }
    if let Some(base) = name.strip_suffix("-opt") {
        if v.is_empty() {
            return Ok(());
        }
        return check_named_format(param, base, v);
    }
    if let Some(sub) = named_property_format(name) {
        return check_property_string(param, &sub, v).map(|_| ());
    }
    let fail = |msg: &str| Err(format!("{}\n", msg.replace("<v>", v)));
    match name {
        "pve-storage-id" => {
            if v.len() < 2 {
                return fail("storage ID '<v>' cannot be shorter than 2 characters");
            }
            if !re_match(r"(?i)[a-z][a-z0-9\-_.]*[a-z0-9]", v) {
                return fail("storage ID '<v>' contains illegal characters");
            }
            Ok(())
        }
        "pve-volume-id-or-qm-path" => {
            if v == "none" || v == "cdrom" || v.starts_with('/') {
                return Ok(());
            }
            check_named_format(param, "pve-volume-id", v)
        }
        "pve-volume-id-or-absolute-path" => {
            if v.starts_with('/') {
                return Ok(());
            }
            check_named_format(param, "pve-volume-id", v)
        }
        "pve-qm-bootdev" => {
            let ok = re_match(
                r"(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|net([0-9]|[12][0-9]|3[01])|usb([0-9]|1[0-3])|hostpci([0-9]|1[0-5]))",
                v,
            );
            if ok {
                Ok(())
            } else {
                fail("invalid boot device '<v>'")
            }
        }
        "pve-qm-bootdisk" => {
            if re_match(
                r"(ide[0-3]|sata[0-5]|scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5]))",
                v,
            ) {
                Ok(())
            } else {
                fail("invalid boot disk '<v>'")
            }
        }
        "pve-ipv4-config" => {
            if v == "dhcp" || ipv4_cidr(v) {
                Ok(())
            } else {
                fail("ipv4 config '<v>' is not valid")
            }
        }
        "pve-ipv6-config" => {
            if v == "dhcp" || v == "auto" || ipv6_cidr(v) {
                Ok(())
            } else {
                fail("ipv6 config '<v>' is not valid")
            }
        }
        "ipv4" => v
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .or_else(|_| fail("value does not look like a valid IPv4 address")),
        "ipv6" => v
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .or_else(|_| fail("value does not look like a valid IPv6 address")),
        "ip" => v
            .parse::<std::net::IpAddr>()
            .map(|_| ())
            .or_else(|_| fail("value does not look like a valid IP address")),
        "address" => {
            if v.parse::<std::net::IpAddr>().is_ok() {
                return Ok(());
            }
            check_named_format(param, "dns-name", v)
                .or_else(|_| fail("value does not look like a valid address: <v>"))
        }
        "CIDR" => {
            if ipv4_cidr(v) || ipv6_cidr(v) {
                Ok(())
            } else {
                fail("value does not look like a valid CIDR network")
            }
        }
        "pve-storage-content" => {
            let ok = formats_entry(name)
                .and_then(|f| f.get("enum"))
                .and_then(Value::as_array)
                .map(|a| a.iter().any(|x| x.as_str() == Some(v)))
                .unwrap_or(true);
            if ok {
                Ok(())
            } else {
                fail("invalid content type '<v>'")
            }
        }
        "pve-cpuset" => {
            if re_match(r"\d+(-\d+)?(,\d+(-\d+)?)*", v) {
                Ok(())
            } else {
                fail("unable to parse cpuset option")
            }
        }
        "pve-hotplug-features" => {
            if v == "0" || v == "1" || re_match(r"((network|disk|cpu|memory|usb|cloudinit),?)+", v)
            {
                Ok(())
            } else {
                fail("unable to parse hotplug option")
            }
        }
        _ => {
            let Some(entry) = formats_entry(name) else {
                return Ok(());
            };
            let Some(re) = entry.get("regex").and_then(Value::as_str) else {
                return Ok(());
            };
            // formats.json regexes are already anchored with ^...$
            let inner = re.trim_start_matches("(?i)");
            let ci = re.starts_with("(?i)");
            let inner = inner.strip_prefix('^').unwrap_or(inner);
            let inner = inner.strip_suffix('$').unwrap_or(inner);
            let pat = if ci {
                format!("(?i:{inner})")
            } else {
                inner.to_string()
            };
            if let Some(min) = entry.get("min_length").and_then(Value::as_u64) {
                if (v.len() as u64) < min {
                    return fail(
                        entry
                            .get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("invalid value"),
                    );
                }
            }
            if re_match(&pat, v) {
                Ok(())
            } else {
                let msg = entry
                    .get("error")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("value '{v}' does not match format '{name}'"));
                fail(&msg)
            }
        }
    }
}

/// Parse a config value that is a property string (disk, net, …) using the create schema.
pub fn parse_config_property(key: &str, value: &str) -> Option<IndexMap<String, String>> {
    let ep = Schema::get().endpoint("POST", "/nodes/{node}/qemu")?;
    let schema = ep.params.get(key)?;
    match schema.get("format")? {
        Value::Object(sub) => check_property_string(key, sub, value).ok(),
        Value::String(n) => check_property_string(key, &named_property_format(n)?, value).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> &'static Endpoint {
        Schema::get()
            .endpoint("POST", "/nodes/{node}/qemu")
            .expect("create endpoint")
    }

    fn run(pairs: &[(&str, &str)]) -> Result<IndexMap<String, Value>, Errors> {
        let mut p: IndexMap<String, Value> = IndexMap::new();
        p.insert("node".into(), json!("pve"));
        for (k, v) in pairs {
            p.insert(k.to_string(), json!(v));
        }
        validate(create(), &mut p).map(|_| p)
    }

    #[test]
    fn pve_sample_param_error() {
        let e = run(&[("vmid", "abc"), ("cores", "0"), ("foo", "1")]).unwrap_err();
        assert_eq!(e["vmid"], "type check ('integer') failed - got 'abc'");
        assert_eq!(e["cores"], "value must have a minimum value of 1");
        assert_eq!(e["foo"], MSG_UNKNOWN);
    }

    #[test]
    fn vmid_format_before_minimum() {
        let e = run(&[("vmid", "42")]).unwrap_err();
        assert_eq!(
            e["vmid"],
            "invalid format - value does not look like a valid VM ID\n"
        );
    }

    #[test]
    fn booleans_top_level_strict_propstring_lenient() {
        let e = run(&[("vmid", "100"), ("onboot", "true")]).unwrap_err();
        assert_eq!(e["onboot"], "type check ('boolean') failed - got 'true'");
        run(&[
            ("vmid", "100"),
            (
                "net0",
                "virtio=72:E6:B2:99:2D:00,bridge=vmbr0,firewall=false",
            ),
        ])
        .unwrap();
        run(&[
            ("vmid", "100"),
            (
                "scsi0",
                "media=disk,size=8G,file=local-lvm:vm-101-disk-0,iothread=false,format=raw",
            ),
        ])
        .unwrap();
    }

    #[test]
    fn enum_and_property_strings() {
        let e = run(&[("vmid", "100"), ("ostype", "linux")]).unwrap_err();
        assert_eq!(
            e["ostype"],
            "value 'linux' does not have a value in the enumeration 'other, wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris'"
        );
        let e = run(&[("vmid", "9000"), ("net0", "virtio,bridge=vmbr0,speed=10")]).unwrap_err();
        assert_eq!(
            e["net0"],
            "invalid format - invalid key in comma-separated list property: speed\n"
        );
        let e = run(&[("vmid", "9000"), ("net0", "virtio,tag=5000")]).unwrap_err();
        assert!(
            e["net0"].contains("net0.tag: value must have a maximum value of 4094"),
            "{}",
            e["net0"]
        );
        let e = run(&[("vmid", "9000"), ("cdrom", "local:iso/x.iso,media=floppy")]).unwrap_err();
        assert!(
            e["cdrom"].starts_with("invalid format - format error"),
            "{}",
            e["cdrom"]
        );
        run(&[
            ("vmid", "9000"),
            ("boot", "order=scsi0;ide2;net0"),
            ("ipconfig0", "ip=dhcp"),
        ])
        .unwrap();
        let e = run(&[("vmid", "9000"), ("boot", "order=scsi0;floppy0")]).unwrap_err();
        assert!(
            e["boot"].contains("invalid boot device 'floppy0'"),
            "{}",
            e["boot"]
        );
        let e = run(&[("vmid", "9000"), ("storage", "1x")]).unwrap_err();
        assert_eq!(
            e["storage"],
            "invalid format - storage ID '1x' contains illegal characters\n"
        );
    }

    #[test]
    fn sendkey_missing_key() {
        let ep = Schema::get()
            .endpoint("PUT", "/nodes/{node}/qemu/{vmid}/sendkey")
            .unwrap();
        let mut p = IndexMap::new();
        p.insert("node".to_string(), json!("pve"));
        p.insert("vmid".to_string(), json!("100"));
        let e = validate(ep, &mut p).unwrap_err();
        assert_eq!(e["key"], MSG_MISSING);
    }
}
