//! `ProxmoxIsoConfig` → the form parameters of `POST /nodes/{node}/qemu`, as the Packer plugin
//! builds them (behaviour reference §2.4), plus the small pure helpers the finishing steps need
//! (cloud-init slot, ISO slots, unused disks).

use kiln_config::model::{Bus, Disk, IsoConfig, NetworkAdapter, ProxmoxIsoConfig};
use std::collections::BTreeSet;

pub type Params = Vec<(String, String)>;

/// (slot like `scsi0`, index into the input list).
pub type SlotList = Vec<(String, usize)>;

/// One ISO to attach: its bus slot request and the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoAttach {
    pub bus: Bus,
    pub index: Option<u32>,
    /// `local:iso/x.iso`
    pub volid: String,
}

impl IsoAttach {
    /// The boot ISO: `ide2` unless configured otherwise.
    pub fn boot(cfg: &IsoConfig, volid: String) -> IsoAttach {
        let bus = cfg.r#type.bus();
        let index = cfg
            .index
            .as_deref()
            .and_then(|i| i.parse().ok())
            .or(if bus == Bus::Ide { Some(2) } else { None });
        IsoAttach { bus, index, volid }
    }

    pub fn additional(cfg: &IsoConfig, volid: String) -> IsoAttach {
        IsoAttach {
            bus: cfg.r#type.bus(),
            index: cfg.index.as_deref().and_then(|i| i.parse().ok()),
            volid,
        }
    }
}

/// Where each disk and ISO goes: static ISOs first, then disks at the lowest free index of their
/// bus, then ISOs without an index. Returns (slot, value) for disks and ISOs.
pub fn assign_slots(disks: &[Disk], isos: &[IsoAttach]) -> Result<(SlotList, SlotList), String> {
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut iso_slots: Vec<Option<String>> = vec![None; isos.len()];
    for (k, iso) in isos.iter().enumerate() {
        if let Some(i) = iso.index {
            if i > iso.bus.max_index() {
                return Err(format!(
                    "ISO index {} is out of range for bus {}",
                    iso.bus.slot(i),
                    iso.bus
                ));
            }
            let slot = iso.bus.slot(i);
            if !used.insert(slot.clone()) {
                return Err(format!("two ISOs configured on {slot}"));
            }
            iso_slots[k] = Some(slot);
        }
    }
    let next_free = |bus: Bus, used: &mut BTreeSet<String>| -> Result<String, String> {
        for i in 0..=bus.max_index() {
            let s = bus.slot(i);
            if !used.contains(&s) {
                used.insert(s.clone());
                return Ok(s);
            }
        }
        Err(format!(
            "storage enumeration reached {bus} index {}, too many {bus} devices configured",
            bus.max_index() + 1
        ))
    };
    let mut disk_slots = Vec::new();
    for (k, d) in disks.iter().enumerate() {
        disk_slots.push((next_free(d.r#type, &mut used)?, k));
    }
    let mut isos_out = Vec::new();
    for (k, iso) in isos.iter().enumerate() {
        let slot = match iso_slots[k].take() {
            Some(s) => s,
            None => next_free(iso.bus, &mut used)?,
        };
        isos_out.push((slot, k));
    }
    Ok((disk_slots, isos_out))
}

/// `20G` → GiB (rounded up), as PVE's `<pool>:<GiB>` allocation needs; the rule validate checks
/// ([`kiln_config::model::size::ByteSize`]).
pub fn disk_size_gib(size: &str) -> Result<u64, String> {
    kiln_config::model::size::ByteSize::parse(size)
        .map(kiln_config::model::size::ByteSize::gib_ceil)
        .map_err(|m| format!("disk_size {size:?} {m}"))
}

fn disk_value(d: &Disk) -> Result<String, String> {
    let bus = d.r#type;
    let mut v = format!("{}:{}", d.storage_pool, disk_size_gib(&d.disk_size)?);
    if let Some(a) = d.asyncio {
        v.push_str(&format!(",aio={a}"));
    }
    if d.exclude_from_backup {
        v.push_str(",backup=0");
    }
    v.push_str(&format!(",cache={}", d.cache_mode));
    if d.discard {
        v.push_str(",discard=on");
    }
    v.push_str(&format!(",format={}", d.format));
    if d.io_thread && matches!(bus, Bus::Scsi | Bus::Virtio) {
        v.push_str(",iothread=1");
    }
    v.push_str(",replicate=0");
    if d.ssd && bus != Bus::Virtio {
        v.push_str(",ssd=1");
    }
    Ok(v)
}

/// `repeatable` MAC: `00:18:59:` + low 3 bytes of `(vmid << 5) | index`.
pub fn repeatable_mac(vmid: u32, index: usize) -> String {
    let x = (u64::from(vmid) << 5) | (index as u64 & 0x1f);
    format!(
        "00:18:59:{:02X}:{:02X}:{:02X}",
        (x >> 16) & 0xff,
        (x >> 8) & 0xff,
        x & 0xff
    )
}

fn net_value(n: &NetworkAdapter, vmid: u32, index: usize) -> String {
    let model = n.model;
    let mut v = match n.mac_address.as_deref().filter(|m| !m.is_empty()) {
        Some("repeatable") => format!("{model}={}", repeatable_mac(vmid, index)),
        Some(mac) => format!("{model}={}", mac.to_uppercase()),
        None => model.to_string(),
    };
    v.push_str(&format!(",bridge={}", n.bridge));
    if let Some(t) = n.vlan_tag.as_deref().filter(|t| !t.is_empty()) {
        v.push_str(&format!(",tag={t}"));
    }
    if n.firewall {
        v.push_str(",firewall=1");
    }
    if let Some(m) = n.mtu.filter(|m| *m > 0) {
        v.push_str(&format!(",mtu={m}"));
    }
    if let Some(q) = n.packet_queues.filter(|q| *q > 0) {
        v.push_str(&format!(",queues={q}"));
    }
    v
}

fn b01(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// When the VM's boot order cannot reach the boot ISO, say so: PVE starts QEMU with
/// `-boot strict=on`, so the firmware tries only the devices `boot` lists (legacy `[acdn]`: `c` is
/// the disk, `d` the CD-ROMs), and the installer never starts. Several corpus templates have
/// `boot = "c"` (the plugin's documentation calls `c` the CD-ROM) or `order=scsi0;net0`.
pub fn boot_order_warning(params: &Params, boot_iso_volid: Option<&str>) -> Option<String> {
    let boot = params
        .iter()
        .find(|(k, _)| k == "boot")
        .map(|(_, v)| v.as_str())?;
    let iso = boot_iso_volid?;
    let slot = params
        .iter()
        .find(|(k, v)| k != "boot" && v.split(',').next() == Some(iso) && v.contains("media=cdrom"))
        .map(|(k, _)| k.as_str())?;
    let order = boot
        .split(',')
        .find_map(|p| p.strip_prefix("order="))
        .map(|o| o.split(';').map(str::trim).collect::<Vec<_>>());
    match order {
        Some(list) if !list.contains(&slot) => {
            // the user's order with the ISO after the first device (the empty disk falls through)
            // (and without devices the VM does not have: PVE refuses those)
            let mut fixed: Vec<&str> = list
                .iter()
                .copied()
                .filter(|d| !d.is_empty() && params.iter().any(|(k, _)| k == d))
                .collect();
            fixed.insert(fixed.len().min(1), slot);
            Some(format!(
                "boot = \"{boot}\" does not list the boot ISO's drive {slot}: PVE boots only the devices in the order, so the installer will not start. Add it, e.g. boot = \"order={}\"",
                fixed.join(";")
            ))
        }
        Some(_) => None,
        None => {
            // the first hard disk, as PVE's `bootdisk` default
            let disk = params
                .iter()
                .find(|(k, v)| Bus::parse_slot(k).is_some() && !v.contains("media=cdrom"))
                .map(|(k, _)| format!("{k};"))
                .unwrap_or_default();
            kiln_config::model::legacy_boot_letters(boot)
                .is_some_and(|l| !l.contains('d'))
            .then(|| format!(
                "boot = \"{boot}\" is PVE's legacy order, in which c is the disk and d the CD-ROM: the boot ISO on {slot} is not in it, so the installer will not start. Use e.g. boot = \"order={disk}{slot}\""
            ))
        }
    }
}

/// The create parameters (without `vmid`, which the client adds first).
pub fn create_params(
    cfg: &ProxmoxIsoConfig,
    vmid: u32,
    name: &str,
    isos: &[IsoAttach],
) -> Result<Params, String> {
    let mut p: Params = Vec::new();
    let mut add = |k: &str, v: String| p.push((k.to_string(), v));
    add("name", name.to_string());
    add("description", "kiln ephemeral build VM".to_string());
    add("agent", b01(cfg.qemu_agent));
    add("kvm", b01(!cfg.disable_kvm));
    add("onboot", b01(cfg.onboot));
    add("cores", cfg.cores.max(1).to_string());
    add("sockets", cfg.sockets.max(1).to_string());
    add("numa", b01(cfg.numa));
    add(
        "cpu",
        if cfg.cpu_type.is_empty() {
            "kvm64".into()
        } else {
            cfg.cpu_type.clone()
        },
    );
    add(
        "memory",
        if cfg.memory < 16 { 512 } else { cfg.memory }.to_string(),
    );
    if cfg.ballooning_minimum > 0 {
        add("balloon", cfg.ballooning_minimum.to_string());
    }
    add(
        "ostype",
        if cfg.os.is_empty() {
            "other".into()
        } else {
            cfg.os.clone()
        },
    );
    add(
        "scsihw",
        if cfg.scsi_controller.is_empty() {
            "lsi".into()
        } else {
            cfg.scsi_controller.clone()
        },
    );
    for (k, v) in [
        ("bios", &cfg.bios),
        ("machine", &cfg.machine),
        ("boot", &cfg.boot),
        ("args", &cfg.qemu_additional_args),
        ("tags", &cfg.tags),
        ("pool", &cfg.pool),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            add(k, v.to_string());
        }
    }
    let (disk_slots, iso_slots) = assign_slots(&cfg.disks, isos)?;
    for (slot, k) in &disk_slots {
        add(slot, disk_value(&cfg.disks[*k])?);
    }
    for (slot, k) in &iso_slots {
        add(slot, format!("{},media=cdrom", isos[*k].volid));
    }
    for (i, n) in cfg.network_adapters.iter().enumerate() {
        add(&format!("net{i}"), net_value(n, vmid, i));
    }
    let efi_pool = cfg
        .efi_config
        .as_ref()
        .and_then(|e| e.efi_storage_pool.clone())
        .or_else(|| cfg.efidisk.clone())
        .filter(|s| !s.is_empty());
    if let Some(pool) = efi_pool {
        let mut v = format!("{pool}:1");
        let e = cfg.efi_config.clone().unwrap_or_default();
        v.push_str(&format!(
            ",efitype={}",
            e.efi_type.unwrap_or_else(|| "4m".into())
        ));
        if let Some(f) = e.efi_format.filter(|f| !f.is_empty()) {
            v.push_str(&format!(",format={f}"));
        }
        v.push_str(&format!(",pre-enrolled-keys={}", b01(e.pre_enrolled_keys)));
        add("efidisk0", v);
    }
    if let Some(t) = &cfg.tpm_config {
        if let Some(pool) = t.tpm_storage_pool.as_deref().filter(|p| !p.is_empty()) {
            let ver = if t.tpm_version.is_empty() {
                "v2.0"
            } else {
                t.tpm_version.as_str()
            };
            add("tpmstate0", format!("{pool}:1,version={ver}"));
        }
    }
    if let Some(r) = &cfg.rng0 {
        let mut v = format!("source={}", r.source);
        if r.max_bytes > 0 {
            v.push_str(&format!(",max_bytes={}", r.max_bytes));
        }
        if r.period > 0 {
            v.push_str(&format!(",period={}", r.period));
        }
        add("rng0", v);
    }
    if let Some(vga) = &cfg.vga {
        if let Some(t) = vga.r#type.as_deref().filter(|t| !t.is_empty()) {
            let mut v = format!("type={t}");
            if let Some(m) = vga.memory.filter(|m| *m > 0) {
                v.push_str(&format!(",memory={m}"));
            }
            add("vga", v);
        }
    }
    for (i, pci) in cfg.pci_devices.iter().enumerate() {
        let mut parts: Vec<String> = Vec::new();
        if let Some(h) = &pci.host {
            parts.push(format!("host={h}"));
        }
        if let Some(m) = &pci.mapping {
            parts.push(format!("mapping={m}"));
        }
        parts.push(format!("pcie={}", b01(pci.pcie)));
        parts.push(format!("rombar={}", b01(!pci.hide_rombar)));
        parts.push(format!("x-vga={}", b01(pci.x_vga)));
        parts.push(format!("legacy-igd={}", b01(pci.legacy_igd)));
        for (k, v) in [
            ("device-id", &pci.device_id),
            ("vendor-id", &pci.vendor_id),
            ("sub-device-id", &pci.sub_device_id),
            ("sub-vendor-id", &pci.sub_vendor_id),
            ("mdev", &pci.mdev),
            ("romfile", &pci.romfile),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        add(&format!("hostpci{i}"), parts.join(","));
    }
    for (i, s) in cfg.serials.iter().enumerate() {
        add(&format!("serial{i}"), s.clone());
    }
    Ok(p)
}

/// First free slot of `bus` (for the cloud-init drive) given the VM's config keys.
pub fn first_free_slot<'a>(bus: Bus, keys: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let used: BTreeSet<&str> = keys.into_iter().collect();
    (0..=bus.max_index())
        .map(|i| bus.slot(i))
        .find(|s| !used.contains(s.as_str()))
}

/// The storage of the first disk (`local-lvm:vm-100-disk-0,…` → `local-lvm`).
pub fn storage_of(volume_value: &str) -> Option<String> {
    let first = volume_value.split(',').next()?;
    let (st, _) = first.split_once(':')?;
    Some(st.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_config::model::{CacheMode, DiskFormat, EfiConfig, NicModel, Vga};

    fn disk(t: Bus, size: &str) -> Disk {
        Disk {
            r#type: t,
            storage_pool: "local-lvm".into(),
            storage_pool_type: None,
            disk_size: size.into(),
            format: DiskFormat::Raw,
            cache_mode: CacheMode::None,
            io_thread: false,
            asyncio: None,
            discard: false,
            ssd: false,
            exclude_from_backup: false,
        }
    }

    fn get<'a>(p: &'a Params, k: &str) -> Option<&'a str> {
        p.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn packer_like_create_body() {
        let mut cfg = ProxmoxIsoConfig {
            memory: 2048,
            cores: 2,
            os: "l26".into(),
            scsi_controller: "virtio-scsi-single".into(),
            bios: Some("ovmf".into()),
            machine: Some("q35".into()),
            boot: Some("order=scsi0;ide2".into()),
            tags: Some("a;b".into()),
            vga: Some(Vga {
                r#type: Some("virtio".into()),
                memory: Some(32),
            }),
            efi_config: Some(EfiConfig {
                efi_storage_pool: Some("local-lvm".into()),
                efi_type: None,
                efi_format: Some("raw".into()),
                pre_enrolled_keys: true,
            }),
            serials: vec!["socket".into()],
            ..ProxmoxIsoConfig::default()
        };
        let mut d = disk(Bus::Scsi, "20G");
        d.io_thread = true;
        d.discard = true;
        d.ssd = true;
        cfg.disks = vec![d, disk(Bus::Virtio, "512M")];
        cfg.network_adapters = vec![NetworkAdapter {
            bridge: "vmbr0".into(),
            model: NicModel::Virtio,
            mac_address: Some("repeatable".into()),
            vlan_tag: Some("10".into()),
            firewall: true,
            mtu: Some(1),
            packet_queues: Some(2),
        }];
        let boot = IsoAttach::boot(&cfg.boot_iso, "local:iso/u.iso".into());
        let p = create_params(&cfg, 9000, "tpl", &[boot]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get(&p, "name"), Some("tpl"));
        assert_eq!(get(&p, "agent"), Some("1"));
        assert_eq!(get(&p, "kvm"), Some("1"));
        assert_eq!(get(&p, "memory"), Some("2048"));
        assert_eq!(get(&p, "scsihw"), Some("virtio-scsi-single"));
        assert_eq!(
            get(&p, "scsi0"),
            Some("local-lvm:20,cache=none,discard=on,format=raw,iothread=1,replicate=0,ssd=1")
        );
        assert_eq!(
            get(&p, "virtio0"),
            Some("local-lvm:1,cache=none,format=raw,replicate=0")
        );
        assert_eq!(get(&p, "ide2"), Some("local:iso/u.iso,media=cdrom"));
        assert_eq!(
            get(&p, "net0"),
            Some("virtio=00:18:59:04:65:00,bridge=vmbr0,tag=10,firewall=1,mtu=1,queues=2")
        );
        assert_eq!(
            get(&p, "efidisk0"),
            Some("local-lvm:1,efitype=4m,format=raw,pre-enrolled-keys=1")
        );
        assert_eq!(get(&p, "vga"), Some("type=virtio,memory=32"));
        assert_eq!(get(&p, "serial0"), Some("socket"));
        assert_eq!(get(&p, "boot"), Some("order=scsi0;ide2"));
        assert_eq!(get(&p, "tags"), Some("a;b"));
        assert_eq!(get(&p, "pool"), None, "empty values are not sent");
    }

    #[test]
    fn slots_static_isos_first_then_disks_then_dynamic_isos() {
        let isos = vec![
            IsoAttach {
                bus: Bus::Ide,
                index: Some(0),
                volid: "a".into(),
            },
            IsoAttach {
                bus: Bus::Ide,
                index: None,
                volid: "b".into(),
            },
        ];
        let (d, i) =
            assign_slots(&[disk(Bus::Ide, "1G"), disk(Bus::Scsi, "1G")], &isos).unwrap_or_default();
        assert_eq!(d, vec![("ide1".to_string(), 0), ("scsi0".to_string(), 1)]);
        assert_eq!(i, vec![("ide0".to_string(), 0), ("ide2".to_string(), 1)]);
        let too_many = vec![disk(Bus::Ide, "1G"); 5];
        assert!(assign_slots(&too_many, &[])
            .unwrap_err()
            .contains("too many ide"));
    }

    #[test]
    fn sizes_and_helpers() {
        assert_eq!(disk_size_gib("20G"), Ok(20));
        assert_eq!(disk_size_gib("1T"), Ok(1024));
        assert_eq!(disk_size_gib("1536M"), Ok(2));
        assert!(disk_size_gib("20GB").is_err());
        assert_eq!(
            first_free_slot(Bus::Ide, ["ide0", "ide2"]),
            Some("ide1".into())
        );
        assert_eq!(
            storage_of("local-lvm:vm-100-disk-0,size=8G"),
            Some("local-lvm".into())
        );
        assert_eq!(repeatable_mac(100, 1), "00:18:59:00:0C:81");
    }

    #[test]
    fn a_boot_order_that_misses_the_boot_iso_is_reported() {
        let p = |boot: &str| -> Params {
            vec![
                ("boot".into(), boot.into()),
                ("scsi0".into(), "local-lvm:8".into()),
                ("ide2".into(), "local:iso/u.iso,media=cdrom".into()),
            ]
        };
        let iso = Some("local:iso/u.iso");
        let w = boot_order_warning(&p("order=scsi0;net0"), iso).unwrap_or_default();
        assert!(w.contains("does not list the boot ISO's drive ide2"), "{w}");
        // net0 is not in these params: the hint leaves out what the VM does not have
        assert!(w.contains("e.g. boot = \"order=scsi0;ide2\""), "{w}");
        let mut with_net = p("order=scsi0;net0");
        with_net.push(("net0".into(), "virtio,bridge=vmbr0".into()));
        let w = boot_order_warning(&with_net, iso).unwrap_or_default();
        assert!(w.contains("e.g. boot = \"order=scsi0;ide2;net0\""), "{w}");
        let w = boot_order_warning(&p("c"), iso).unwrap_or_default();
        assert!(w.contains("legacy order"), "{w}");
        assert!(w.contains("e.g. boot = \"order=scsi0;ide2\""), "{w}");
        let virtio: Params = vec![
            ("boot".into(), "c".into()),
            ("virtio0".into(), "local-lvm:8".into()),
            ("scsi0".into(), "local:iso/u.iso,media=cdrom".into()),
        ];
        let w = boot_order_warning(&virtio, iso).unwrap_or_default();
        assert!(w.contains("e.g. boot = \"order=virtio0;scsi0\""), "{w}");
        for ok in [
            "order=scsi0;ide2",
            "order=ide2;scsi0;net0",
            "cdn",
            "dc",
            "legacy=cd",
        ] {
            assert_eq!(boot_order_warning(&p(ok), iso), None, "{ok}");
        }
        // no boot key (PVE's default boots the CD-ROM), or no boot ISO: nothing to say
        let no_boot: Params = vec![("ide2".into(), "local:iso/u.iso,media=cdrom".into())];
        assert_eq!(boot_order_warning(&no_boot, iso), None);
        assert_eq!(boot_order_warning(&p("order=scsi0"), None), None);
    }
}
