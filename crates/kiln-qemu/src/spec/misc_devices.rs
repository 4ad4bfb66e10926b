//! Devices without a family of their own: SMBIOS type 1 and the VM UUID (`smbios1`), the display
//! adapter (`vga`), the memory balloon (`balloon`), the watchdog (`watchdog`) and the virtio RNG
//! (`rng0`).

use super::{parse_uint, push, PropString, SpecError};
use std::collections::BTreeMap;
use std::path::Path;

/// `-uuid` and `-smbios type=1,…` from `smbios1`.
pub(super) fn smbios_args(c: &BTreeMap<String, String>) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    if let Some(v) = c.get("smbios1") {
        let p = PropString::parse("smbios1", v, None)?;
        let b64 = p.bool("smbios1", "base64")?.unwrap_or(false);
        let mut s = String::from("type=1");
        for (k, val) in &p.parts {
            match k.as_str() {
                "base64" => {}
                "uuid" => {
                    push(&mut a, &["-uuid", val]);
                    s.push_str(&format!(",uuid={val}"));
                }
                "family" | "manufacturer" | "product" | "serial" | "sku" | "version" => {
                    let text = if b64 {
                        decode_base64(val).ok_or_else(|| SpecError::Invalid {
                            key: "smbios1".into(),
                            msg: format!("{k} is not valid base64"),
                        })?
                    } else {
                        val.clone()
                    };
                    s.push_str(&format!(",{k}={}", text.replace(',', ",,")));
                }
                _ => {
                    return Err(SpecError::Invalid {
                        key: "smbios1".into(),
                        msg: format!("invalid key in comma-separated list property: {k}"),
                    })
                }
            }
        }
        push(&mut a, &["-smbios", &s]);
    }
    Ok(a)
}

/// The display adapter for `vga` (none for `none` and `serialN`).
pub(super) fn vga_args(c: &BTreeMap<String, String>) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    let vga = match c.get("vga") {
        Some(v) => PropString::parse("vga", v, Some("type"))?,
        None => PropString::default(),
    };
    let vga_type = vga.get("type").unwrap_or("std");
    let vgamem = vga
        .get("memory")
        .map(|m| parse_uint("vga", m))
        .transpose()?;
    let vga_dev = match vga_type {
        "std" => Some("VGA"),
        "cirrus" => Some("cirrus-vga"),
        "vmware" => Some("vmware-svga"),
        "qxl" | "qxl2" | "qxl3" | "qxl4" => Some("qxl-vga"),
        "virtio" | "virtio-gl" => Some("virtio-vga"),
        "none" | "serial0" | "serial1" | "serial2" | "serial3" => None,
        other => {
            return Err(SpecError::Invalid {
                key: "vga".into(),
                msg: format!("unknown type '{other}'"),
            })
        }
    };
    if let Some(dev) = vga_dev {
        let mut d = format!("{dev},id=vga");
        if let (Some(m), "VGA" | "cirrus-vga" | "vmware-svga") = (vgamem, dev) {
            d.push_str(&format!(",vgamem_mb={m}"));
        }
        push(&mut a, &["-device", &d]);
    }
    Ok(a)
}

/// The virtio balloon, present unless `balloon: 0`.
pub(super) fn balloon_args(c: &BTreeMap<String, String>) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    let balloon = c
        .get("balloon")
        .map(|v| parse_uint("balloon", v))
        .transpose()?;
    if balloon != Some(0) {
        push(&mut a, &["-device", "virtio-balloon-pci,id=balloon0"]);
    }
    Ok(a)
}

/// The watchdog device and its action (`watchdog`).
pub(super) fn watchdog_args(c: &BTreeMap<String, String>) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    if let Some(v) = c.get("watchdog") {
        let p = PropString::parse("watchdog", v, Some("model"))?;
        let model = p.get("model").unwrap_or("i6300esb");
        if !["i6300esb", "ib700"].contains(&model) {
            return Err(SpecError::Invalid {
                key: "watchdog".into(),
                msg: format!("model '{model}'"),
            });
        }
        push(&mut a, &["-device", model]);
        if let Some(action) = p.get("action") {
            push(&mut a, &["-watchdog-action", action]);
        }
    }
    Ok(a)
}

/// The virtio RNG and its host entropy source (`rng0`).
pub(super) fn rng_args(c: &BTreeMap<String, String>) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    if let Some(v) = c.get("rng0") {
        let p = PropString::parse("rng0", v, Some("source"))?;
        let source = p.get("source").unwrap_or("/dev/urandom");
        if !["/dev/urandom", "/dev/random", "/dev/hwrng"].contains(&source) {
            return Err(SpecError::Invalid {
                key: "rng0".into(),
                msg: format!("source '{source}'"),
            });
        }
        let source = if source == "/dev/hwrng" && !Path::new(source).exists() {
            "/dev/urandom"
        } else {
            source
        };
        let mut dev = "virtio-rng-pci,rng=rng0,id=rng0".to_string();
        if let Some(m) = p.get("max_bytes") {
            dev.push_str(&format!(",max-bytes={}", parse_uint("rng0", m)?));
        }
        if let Some(m) = p.get("period") {
            dev.push_str(&format!(",period={}", parse_uint("rng0", m)?));
        }
        push(
            &mut a,
            &[
                "-object",
                &format!("rng-random,filename={source},id=rng0"),
                "-device",
                &dev,
            ],
        );
    }
    Ok(a)
}

fn decode_base64(s: &str) -> Option<String> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for b in s.bytes() {
        if b == b'=' {
            break;
        }
        let v = T.iter().position(|t| *t == b)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}
