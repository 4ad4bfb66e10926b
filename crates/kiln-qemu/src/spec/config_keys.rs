//! Which config keys [`qemu_args`](super::qemu_args) accepts: the keys that do not change what the
//! guest sees, and the refusal of everything the sandbox cannot emulate (passthrough, NUMA, raw
//! `args`, …) or does not know.

use super::{is_indexed, unsupported, SpecError};
use std::collections::BTreeMap;

/// Keys that do not change what the guest sees (or are handled elsewhere: cloud-init keys go into
/// the cloud-init ISO, `reboot` is handled by the VM runtime).
const IGNORED_KEYS: &[&str] = &[
    "name",
    "description",
    "tags",
    "ostype",
    "onboot",
    "startup",
    "protection",
    "template",
    "lock",
    "meta",
    "digest",
    "vmgenid",
    "hotplug",
    "cpulimit",
    "cpuunits",
    "affinity",
    "shares",
    "hugepages",
    "keephugepages",
    "keyboard",
    "tablet",
    "numa",
    "vcpus",
    "migrate_downtime",
    "migrate_speed",
    "spice_enhancements",
    "hookscript",
    "bootdisk",
    "boot",
    "cdrom",
    "ciuser",
    "cipassword",
    "citype",
    "cicustom",
    "ciupgrade",
    "sshkeys",
    "nameserver",
    "searchdomain",
    "reboot",
    "vmstatestorage",
    "tdf",
    "parent",
    "snaptime",
    "runningmachine",
    "runningcpu",
    "running-nets-host-mtu",
];

/// Refuse config keys the sandbox cannot emulate (`Unsupported`) or does not know (`Invalid`).
pub(super) fn refuse_unsupported_keys(c: &BTreeMap<String, String>) -> Result<(), SpecError> {
    for k in c.keys() {
        let known = IGNORED_KEYS.contains(&k.as_str())
            || [
                "memory",
                "balloon",
                "cores",
                "sockets",
                "cpu",
                "machine",
                "bios",
                "efidisk0",
                "tpmstate0",
                "scsihw",
                "vga",
                "agent",
                "smbios1",
                "kvm",
                "acpi",
                "freeze",
                "localtime",
                "startdate",
                "watchdog",
                "rng0",
                "args",
            ]
            .contains(&k.as_str())
            || ["ide", "sata", "scsi", "virtio"]
                .iter()
                .any(|p| k.strip_prefix(p).is_some_and(|n| n.parse::<u32>().is_ok()))
            || is_indexed(k, "net", 31).is_some()
            || is_indexed(k, "ipconfig", 31).is_some()
            || is_indexed(k, "serial", 3).is_some()
            || is_indexed(k, "unused", 255).is_some();
        if known {
            continue;
        }
        let what = if k.starts_with("hostpci") {
            "PCI passthrough"
        } else if k.starts_with("usb") {
            "USB passthrough"
        } else if k.starts_with("parallel") {
            "parallel ports"
        } else if k.starts_with("virtiofs") {
            "virtiofs"
        } else if k == "audio0" {
            "audio devices"
        } else if k == "ivshmem" {
            "shared memory devices"
        } else if k == "amd-sev" || k == "intel-tdx" {
            "confidential computing"
        } else if k == "arch" {
            "non-x86 guests"
        } else if k.starts_with("numa") {
            "NUMA topology"
        } else {
            return Err(SpecError::Invalid {
                key: k.clone(),
                msg: "unknown VM config key".into(),
            });
        };
        return Err(unsupported(k, what));
    }
    if let Some(a) = c.get("args") {
        if !a.trim().is_empty() {
            return Err(unsupported("args", "arbitrary QEMU arguments"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::spec::test_support::{args, spec};
    use crate::spec::{qemu_args, SpecError};

    #[test]
    fn refusals_are_clear() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("hostpci0", "0000:01:00.0")], "PCI passthrough"),
            (&[("usb0", "host=1234:5678")], "USB"),
            (&[("args", "-device foo")], "arbitrary QEMU arguments"),
            (&[("cpu", "custom-mine")], "custom CPU model"),
            (&[("ide2", "cdrom,media=cdrom")], "host CD-ROM"),
            (&[("serial0", "/dev/ttyS0")], "host serial device"),
            (&[("machine", "virt")], "ARM"),
            (&[("machine", "q35,viommu=intel")], "IOMMU"),
        ];
        for (cfg, needle) in cases {
            match qemu_args(&spec(cfg)) {
                Err(e @ SpecError::Unsupported { .. }) => {
                    assert!(e.to_string().contains(needle), "{cfg:?}: {e}");
                    assert!(e.to_string().contains("not supported by the kiln sandbox"));
                }
                other => panic!("{cfg:?}: {other:?}"),
            }
        }
        assert!(matches!(
            qemu_args(&spec(&[("scsi0", "local-lvm:vm-100-missing")])),
            Err(SpecError::MissingVolume { .. })
        ));
        assert!(matches!(
            qemu_args(&spec(&[("frobnicate", "1")])),
            Err(SpecError::Invalid { .. })
        ));
        assert!(matches!(
            qemu_args(&spec(&[("scsi0", "local-lvm:vm-100-disk-0,bogus=1")])),
            Err(SpecError::Invalid { .. })
        ));
        // harmless keys are accepted
        args(&[
            ("ostype", "l26"),
            ("onboot", "1"),
            ("tags", "a;b"),
            ("description", "x"),
            ("numa", "0"),
            ("tablet", "1"),
            ("hotplug", "disk,network"),
            ("ciuser", "ubuntu"),
            ("ipconfig0", "ip=dhcp"),
            ("unused0", "local-lvm:vm-100-disk-9"),
            ("meta", "creation-qemu=9.2.0,ctime=1"),
            ("vmgenid", "1234"),
        ]);
    }
}
