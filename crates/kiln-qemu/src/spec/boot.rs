//! Boot order: the `bootindex` of each disk, CD-ROM and NIC, from `boot: order=…` or the legacy
//! `boot: cdn` letters with `bootdisk`.

use super::drives::Drive;
use super::{PropString, SpecError};
use std::collections::BTreeMap;

/// device key → bootindex
pub(super) fn boot_indexes(
    config: &BTreeMap<String, String>,
    drives: &[Drive],
    nets: &[u32],
) -> Result<BTreeMap<String, u32>, SpecError> {
    let mut out = BTreeMap::new();
    let boot = match config.get("boot") {
        Some(v) => PropString::parse("boot", v, Some("legacy"))?,
        None => PropString::default(),
    };
    if let Some(order) = boot.get("order") {
        for (i, dev) in order.split(';').filter(|d| !d.is_empty()).enumerate() {
            out.insert(dev.to_string(), 100 + i as u32);
        }
        return Ok(out);
    }
    let legacy = boot.get("legacy").unwrap_or("cdn");
    if legacy.is_empty()
        || legacy.len() > 4
        || !legacy
            .bytes()
            .all(|b| matches!(b, b'a' | b'c' | b'd' | b'n'))
    {
        return Err(SpecError::Invalid {
            key: "boot".into(),
            msg: format!("legacy boot order '{legacy}' (expected up to 4 of a, c, d, n)"),
        });
    }
    let bootdisk = config
        .get("bootdisk")
        .cloned()
        .or_else(|| drives.iter().find(|d| !d.cdrom).map(|d| d.key.clone()));
    for (pos, c) in legacy.chars().enumerate() {
        let base = (pos as u32 + 1) * 100;
        match c {
            'c' => {
                if let Some(b) = &bootdisk {
                    if drives.iter().any(|d| d.key == *b && !d.cdrom) {
                        out.insert(b.clone(), base);
                    }
                }
            }
            'd' => {
                for (i, d) in drives.iter().filter(|d| d.cdrom).enumerate() {
                    out.insert(d.key.clone(), base + i as u32);
                }
            }
            'n' => {
                for (i, n) in nets.iter().enumerate() {
                    out.insert(format!("net{n}"), base + i as u32);
                }
            }
            _ => {} // floppy
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::spec::qemu_args;
    use crate::spec::test_support::{args, spec, values};

    #[test]
    fn boot_orders() {
        let base = [
            ("scsi0", "local-lvm:vm-100-disk-0"),
            ("ide2", "local:iso/x.iso,media=cdrom"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
        ];
        let idx = |boot: Option<&str>| -> Vec<(String, String)> {
            let mut cfg = base.to_vec();
            if let Some(b) = boot {
                cfg.push(("boot", b));
            }
            let mut v: Vec<(String, String)> = values(&args(&cfg), "-device")
                .iter()
                .filter_map(|d| {
                    let id = d.split(',').find_map(|p| p.strip_prefix("id="))?;
                    let b = d.split(',').find_map(|p| p.strip_prefix("bootindex="))?;
                    Some((id.to_string(), b.to_string()))
                })
                .collect();
            v.sort();
            v
        };
        let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = v
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            idx(Some("order=ide2;scsi0")),
            s(&[("scsi0", "101"), ("ide2", "100")])
        );
        assert_eq!(idx(Some("order=net0")), s(&[("net0", "100")]));
        assert_eq!(
            idx(None),
            s(&[("scsi0", "100"), ("ide2", "200"), ("net0", "300")])
        );
        assert_eq!(idx(Some("dc")), s(&[("scsi0", "200"), ("ide2", "100")]));
        assert_eq!(
            idx(Some("legacy=ncd")),
            s(&[("scsi0", "200"), ("ide2", "300"), ("net0", "100")])
        );
        assert!(qemu_args(&spec(&[("boot", "xyz")])).is_err());
    }
}
