//! Disks and CD-ROMs (`ideN`, `sataN`, `scsiN`, `virtioN`, the deprecated `cdrom`): drive
//! property strings, image formats, the `-drive`/`-device` pairs with their controllers
//! (`scsihw`, AHCI, iothreads), and cloud-init drive detection.

use super::{esc, unsupported, PropString, SpecError, VmSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// True if a drive value is a PVE cloud-init drive (`local-lvm:vm-100-cloudinit`,
/// `local:100/vm-100-cloudinit.qcow2`, `local-lvm:cloudinit` at creation).
pub fn is_cloudinit_drive(value: &str) -> bool {
    let file = value.split(',').next().unwrap_or("");
    let file = file.strip_prefix("file=").unwrap_or(file);
    let file = file.strip_prefix("volume=").unwrap_or(file);
    // qemu-server: m@[:/](?:vm-\d+-)?cloudinit(?:\.(raw|qcow2|…))?$@
    let Some(pos) = file.rfind([':', '/']) else {
        return false;
    };
    let mut name = &file[pos + 1..];
    for ext in [".raw", ".qcow2", ".qcow", ".qed", ".vmdk", ".cloop"] {
        if let Some(n) = name.strip_suffix(ext) {
            name = n;
            break;
        }
    }
    if name == "cloudinit" {
        return true;
    }
    name.strip_prefix("vm-")
        .and_then(|r| r.strip_suffix("-cloudinit"))
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bus {
    Ide,
    Sata,
    Scsi,
    Virtio,
}

impl Bus {
    fn name(self) -> &'static str {
        match self {
            Bus::Ide => "ide",
            Bus::Sata => "sata",
            Bus::Scsi => "scsi",
            Bus::Virtio => "virtio",
        }
    }
    fn max(self) -> u32 {
        match self {
            Bus::Ide => 3,
            Bus::Sata => 5,
            Bus::Scsi => 30,
            Bus::Virtio => 15,
        }
    }
}

const DRIVE_OPTS: &[&str] = &[
    "file",
    "volume",
    "media",
    "cache",
    "discard",
    "iothread",
    "ssd",
    "format",
    "serial",
    "snapshot",
    "ro",
    "aio",
    "detect_zeroes",
    "size",
    "backup",
    "replicate",
    "shared",
    "rerror",
    "werror",
    "wwn",
    "model",
    "vendor",
    "product",
    "queues",
    "import-from",
    "scsiblock",
    "iops",
    "iops_max",
    "iops_max_length",
    "iops_rd",
    "iops_rd_max",
    "iops_rd_max_length",
    "iops_wr",
    "iops_wr_max",
    "iops_wr_max_length",
    "mbps",
    "mbps_max",
    "mbps_rd",
    "mbps_rd_max",
    "mbps_wr",
    "mbps_wr_max",
    "bps",
    "bps_max_length",
    "bps_rd",
    "bps_rd_max_length",
    "bps_wr",
    "bps_wr_max_length",
    "iops_max_length",
    "cyls",
    "heads",
    "secs",
    "trans",
];

#[derive(Debug)]
pub(super) struct Drive {
    pub(super) key: String,
    bus: Bus,
    index: u32,
    pub(super) cdrom: bool,
    /// host file, None = empty drive
    path: Option<PathBuf>,
    format: Option<String>,
    opts: PropString,
}

pub(crate) fn image_format(path: &Path, explicit: Option<&str>) -> String {
    if let Some(f) = explicit {
        return f.to_string();
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "qcow2" => return "qcow2".into(),
        "raw" | "iso" | "img" | "fd" => return "raw".into(),
        "vmdk" => return "vmdk".into(),
        "qed" => return "qed".into(),
        _ => {}
    }
    let mut magic = [0u8; 4];
    let ok = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok();
    match (ok, &magic) {
        (true, b"QFI\xfb") => "qcow2".into(),
        (true, b"KDMV") => "vmdk".into(),
        (true, b"QED\0") => "qed".into(),
        _ => "raw".into(),
    }
}

fn parse_drive(
    spec: &VmSpec,
    key: &str,
    bus: Bus,
    index: u32,
    value: &str,
) -> Result<Drive, SpecError> {
    let opts = PropString::parse(key, value, Some("file"))?;
    for (k, _) in &opts.parts {
        if !DRIVE_OPTS.contains(&k.as_str()) {
            return Err(SpecError::Invalid {
                key: key.into(),
                msg: format!("invalid key in comma-separated list property: {k}"),
            });
        }
    }
    for k in ["cyls", "heads", "secs", "trans"] {
        if opts.get(k).is_some() {
            return Err(unsupported(key, format!("disk geometry option '{k}'")));
        }
    }
    let file = opts
        .get("file")
        .or_else(|| opts.get("volume"))
        .ok_or_else(|| SpecError::Invalid {
            key: key.into(),
            msg: "no file/volume given".into(),
        })?
        .to_string();
    let media_cdrom = match opts.get("media") {
        None | Some("disk") => false,
        Some("cdrom") => true,
        Some(m) => {
            return Err(SpecError::Invalid {
                key: key.into(),
                msg: format!("media '{m}' (expected disk or cdrom)"),
            })
        }
    };
    let cloudinit = is_cloudinit_drive(&file);
    let cdrom = media_cdrom || cloudinit || file == "none" || file == "cdrom";
    if bus == Bus::Virtio && cdrom {
        return Err(SpecError::Invalid {
            key: key.into(),
            msg: "virtio drives cannot be CD-ROMs".into(),
        });
    }
    let path = if file == "none" {
        None
    } else if file == "cdrom" {
        return Err(unsupported(key, "host CD-ROM passthrough ('cdrom')"));
    } else if cloudinit {
        Some((spec.volume_path)(&file).unwrap_or_else(|| spec.paths().cloudinit_iso))
    } else if file.starts_with('/') {
        if file.starts_with("/dev/") {
            return Err(unsupported(
                key,
                format!("host device passthrough '{file}'"),
            ));
        }
        Some(PathBuf::from(&file))
    } else {
        match (spec.volume_path)(&file) {
            Some(p) => Some(p),
            None => {
                return Err(SpecError::MissingVolume {
                    key: key.into(),
                    volume: file,
                })
            }
        }
    };
    let format = match (&path, cloudinit) {
        (Some(_), true) => Some("raw".to_string()),
        (Some(p), false) => Some(image_format(p, opts.get("format"))),
        (None, _) => None,
    };
    Ok(Drive {
        key: key.into(),
        bus,
        index,
        cdrom,
        path,
        format,
        opts,
    })
}

pub(super) fn collect_drives(spec: &VmSpec) -> Result<Vec<Drive>, SpecError> {
    let mut drives = Vec::new();
    for (k, v) in &spec.config {
        for bus in [Bus::Ide, Bus::Sata, Bus::Scsi, Bus::Virtio] {
            let Some(n) = k.strip_prefix(bus.name()) else {
                continue;
            };
            let Ok(index) = n.parse::<u32>() else {
                continue;
            };
            if index > bus.max() || n.starts_with('0') && n.len() > 1 {
                return Err(SpecError::Invalid {
                    key: k.clone(),
                    msg: format!("{} index out of range 0..={}", bus.name(), bus.max()),
                });
            }
            drives.push(parse_drive(spec, k, bus, index, v)?);
        }
    }
    // deprecated `cdrom` = ide2 with media=cdrom
    if let Some(v) = spec.config.get("cdrom") {
        if !spec.config.contains_key("ide2") {
            let mut d = parse_drive(spec, "ide2", Bus::Ide, 2, v)?;
            d.cdrom = true;
            drives.push(d);
        }
    }
    drives.sort_by_key(|d| (d.bus, d.index));
    Ok(drives)
}

/// `-drive`/`-device` pairs for the drives, with the SCSI/AHCI controllers and iothreads they
/// need, in drive order (see [`collect_drives`]).
pub(super) fn drive_args(
    c: &BTreeMap<String, String>,
    drives: &[Drive],
    bootidx: &BTreeMap<String, u32>,
    q35: bool,
) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    let scsihw = c.get("scsihw").map(String::as_str).unwrap_or("lsi");
    let scsi_dev = match scsihw {
        "lsi" => "lsi",
        "lsi53c810" => "lsi53c810",
        "virtio-scsi-pci" | "virtio-scsi-single" => "virtio-scsi-pci",
        "megasas" => "megasas",
        "pvscsi" => "pvscsi",
        other => {
            return Err(SpecError::Invalid {
                key: "scsihw".into(),
                msg: format!("unknown SCSI controller '{other}'"),
            })
        }
    };
    let scsi_maxdev = if scsihw.starts_with("lsi") { 7 } else { 256 };
    let mut scsi_controllers: Vec<u32> = Vec::new();
    let mut ahci = false;
    for d in drives {
        let id = &d.key;
        let drive_id = format!("drive-{id}");
        // -drive
        let mut dr = String::new();
        if let Some(p) = &d.path {
            dr.push_str(&format!("file={},", esc(p)));
        }
        dr.push_str(&format!("if=none,id={drive_id}"));
        if d.cdrom {
            dr.push_str(",media=cdrom");
        }
        if let Some(f) = &d.format {
            dr.push_str(&format!(",format={f}"));
        }
        let o = &d.opts;
        if !d.cdrom {
            // the host page cache is always used (cache=none needs O_DIRECT, which tmpfs and
            // some overlay file systems lack); the guest cannot tell the difference
            let cache = match o.get("cache") {
                Some("unsafe") => "unsafe",
                Some("writethrough") | Some("directsync") => "writethrough",
                Some("none") | Some("writeback") | None => "writeback",
                Some(other) => {
                    return Err(SpecError::Invalid {
                        key: id.clone(),
                        msg: format!("cache mode '{other}'"),
                    })
                }
            };
            dr.push_str(&format!(",cache={cache}"));
            match o.get("discard") {
                Some("on") => dr.push_str(",discard=unmap,detect-zeroes=unmap"),
                Some("ignore") | None => {}
                Some(other) => {
                    return Err(SpecError::Invalid {
                        key: id.clone(),
                        msg: format!("discard '{other}' (expected on or ignore)"),
                    })
                }
            }
            if o.bool(id, "snapshot")?.unwrap_or(false) {
                dr.push_str(",snapshot=on");
            }
            if let Some(e) = o.get("rerror") {
                dr.push_str(&format!(",rerror={e}"));
            }
            if let Some(e) = o.get("werror") {
                dr.push_str(&format!(",werror={e}"));
            }
        } else if d.path.is_some() {
            dr.push_str(",readonly=on");
        }
        if o.bool(id, "ro")?.unwrap_or(false) && !d.cdrom {
            dr.push_str(",readonly=on");
        }
        a.push("-drive".into());
        a.push(dr);

        // -device
        let ssd = o.bool(id, "ssd")?.unwrap_or(false);
        let iothread = o.bool(id, "iothread")?.unwrap_or(false);
        let mut dev = match d.bus {
            Bus::Ide => {
                let kind = if d.cdrom { "ide-cd" } else { "ide-hd" };
                if q35 {
                    // ICH9 AHCI: one unit per bus
                    format!("{kind},bus=ide.{},unit=0", d.index)
                } else {
                    format!("{kind},bus=ide.{},unit={}", d.index / 2, d.index % 2)
                }
            }
            Bus::Sata => {
                if !ahci {
                    ahci = true;
                    a.push("-device".into());
                    a.push("ahci,id=ahci0,multifunction=on".into());
                }
                let kind = if d.cdrom { "ide-cd" } else { "ide-hd" };
                format!("{kind},bus=ahci0.{}", d.index)
            }
            Bus::Scsi => {
                let kind = if d.cdrom { "scsi-cd" } else { "scsi-hd" };
                if scsihw == "virtio-scsi-single" {
                    let ctl = format!("virtioscsi{}", d.index);
                    let mut cdev = format!("virtio-scsi-pci,id={ctl}");
                    if iothread {
                        a.push("-object".into());
                        a.push(format!("iothread,id=iothread-{ctl}"));
                        cdev.push_str(&format!(",iothread=iothread-{ctl}"));
                    }
                    a.push("-device".into());
                    a.push(cdev);
                    format!("{kind},bus={ctl}.0,channel=0,scsi-id=0,lun=0")
                } else {
                    let ctl = d.index / scsi_maxdev;
                    if !scsi_controllers.contains(&ctl) {
                        scsi_controllers.push(ctl);
                        a.push("-device".into());
                        a.push(format!("{scsi_dev},id=scsihw{ctl}"));
                    }
                    if scsihw.starts_with("lsi") {
                        format!("{kind},bus=scsihw{ctl}.0,scsi-id={}", d.index % scsi_maxdev)
                    } else {
                        format!(
                            "{kind},bus=scsihw{ctl}.0,channel=0,scsi-id=0,lun={}",
                            d.index
                        )
                    }
                }
            }
            Bus::Virtio => {
                let mut v = String::from("virtio-blk-pci");
                if iothread {
                    a.push("-object".into());
                    a.push(format!("iothread,id=iothread-{id}"));
                    v.push_str(&format!(",iothread=iothread-{id}"));
                }
                v
            }
        };
        dev.push_str(&format!(",drive={drive_id},id={id}"));
        if ssd && !d.cdrom && matches!(d.bus, Bus::Scsi | Bus::Ide | Bus::Sata) {
            dev.push_str(",rotation_rate=1");
        }
        if let Some(s) = o.get("serial") {
            dev.push_str(&format!(",serial={}", s.replace(',', ",,")));
        }
        if let Some(w) = o.get("wwn") {
            dev.push_str(&format!(",wwn={w}"));
        }
        if let Some(b) = bootidx.get(id) {
            dev.push_str(&format!(",bootindex={b}"));
        }
        a.push("-device".into());
        a.push(dev);
    }
    Ok(a)
}

/// The cloud-init drive's volume id and where its ISO goes, if the config has one.
pub fn cloudinit_drive(spec: &VmSpec) -> Option<(String, String, PathBuf)> {
    for (k, v) in &spec.config {
        let is_drive = ["ide", "sata", "scsi"]
            .iter()
            .any(|p| k.strip_prefix(p).is_some_and(|n| n.parse::<u32>().is_ok()));
        if is_drive && is_cloudinit_drive(v) {
            let file = v.split(',').next().unwrap_or("");
            let file = file
                .strip_prefix("file=")
                .or_else(|| file.strip_prefix("volume="))
                .unwrap_or(file)
                .to_string();
            let path = (spec.volume_path)(&file).unwrap_or_else(|| spec.paths().cloudinit_iso);
            return Some((k.clone(), file, path));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::test_support::{args, spec, values};

    #[test]
    fn disk_buses_and_controllers() {
        let a = args(&[
            ("scsi0", "local-lvm:vm-100-disk-0"),
            ("scsi1", "local-lvm:vm-100-disk-1"),
            ("virtio0", "local-lvm:vm-100-disk-2,iothread=1"),
            ("sata0", "local-lvm:vm-100-disk-3,ssd=1"),
            ("sata1", "none,media=cdrom"),
            ("ide1", "/abs/disk.raw"),
        ]);
        let devs = values(&a, "-device");
        for d in [
            "lsi,id=scsihw0",
            "scsi-hd,bus=scsihw0.0,scsi-id=0,drive=drive-scsi0,id=scsi0",
            "scsi-hd,bus=scsihw0.0,scsi-id=1,drive=drive-scsi1,id=scsi1",
            "virtio-blk-pci,iothread=iothread-virtio0,drive=drive-virtio0,id=virtio0",
            "ahci,id=ahci0,multifunction=on",
            "ide-hd,bus=ahci0.0,drive=drive-sata0,id=sata0,rotation_rate=1",
            "ide-cd,bus=ahci0.1,drive=drive-sata1,id=sata1,bootindex=200",
            "ide-hd,bus=ide.0,unit=1,drive=drive-ide1,id=ide1,bootindex=100",
        ] {
            assert!(devs.contains(&d), "missing {d:?} in {devs:?}");
        }
        assert_eq!(devs.iter().filter(|d| d.starts_with("lsi,")).count(), 1);
        let drives = values(&a, "-drive");
        assert!(
            drives.contains(&"if=none,id=drive-sata1,media=cdrom"),
            "{drives:?}"
        );
        assert!(drives
            .iter()
            .any(|d| d.starts_with("file=/abs/disk.raw,if=none,id=drive-ide1,format=raw")));
        // legacy default boot order "cdn": first disk (ide, sata, scsi, virtio), then CD-ROMs

        let a = args(&[
            ("scsihw", "virtio-scsi-pci"),
            ("scsi3", "local-lvm:vm-100-disk-0"),
        ]);
        assert!(values(&a, "-device").contains(&"virtio-scsi-pci,id=scsihw0"));
        assert!(values(&a, "-device")
            .contains(&"scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=3,drive=drive-scsi3,id=scsi3,bootindex=100"));
        // q35: one unit per IDE bus
        let a = args(&[("machine", "q35"), ("ide2", "none,media=cdrom")]);
        assert!(values(&a, "-device")
            .iter()
            .any(|d| d.starts_with("ide-cd,bus=ide.2,unit=0")));
        // deprecated cdrom key = ide2
        let a = args(&[("cdrom", "local:iso/x.iso")]);
        assert!(values(&a, "-device")
            .iter()
            .any(|d| d.starts_with("ide-cd,bus=ide.1,unit=0,drive=drive-ide2,id=ide2")));
        // explicit formats and cache modes
        let a = args(&[("scsi0", "local:100/vm-100-disk-0.raw,cache=none,format=raw")]);
        assert!(values(&a, "-drive")[0].contains("format=raw,cache=writeback"));
        let a = args(&[(
            "virtio0",
            "local:100/vm-100-disk-0.qcow2,cache=unsafe,snapshot=1",
        )]);
        assert!(values(&a, "-drive")[0].contains("format=qcow2,cache=unsafe,snapshot=on"));
    }

    #[test]
    fn cloudinit_drive_detection() {
        for v in [
            "local-lvm:vm-100-cloudinit",
            "local-lvm:vm-100-cloudinit,media=cdrom",
            "local:100/vm-100-cloudinit.qcow2",
            "local-lvm:cloudinit",
            "file=local-lvm:vm-9000-cloudinit,media=cdrom",
        ] {
            assert!(is_cloudinit_drive(v), "{v}");
        }
        for v in [
            "local:iso/cloudinit-x.iso",
            "none,media=cdrom",
            "local-lvm:vm-100-disk-0",
            "cloudinit",
        ] {
            assert!(!is_cloudinit_drive(v), "{v}");
        }
        let s = spec(&[("ide2", "local-lvm:vm-100-cloudinit,media=cdrom")]);
        let (key, vol, path) = cloudinit_drive(&s).unwrap();
        assert_eq!(
            (key.as_str(), vol.as_str()),
            ("ide2", "local-lvm:vm-100-cloudinit")
        );
        assert_eq!(path, PathBuf::from("/st/local-lvm/vm-100-cloudinit.qcow2"));
    }
}
