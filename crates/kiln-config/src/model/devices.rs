//! The closed sets of values of the device keys — disk bus, CD-ROM bus, NIC model, disk format,
//! cache mode, asynchronous I/O — parsed once by the loader; the build writes PVE parameters from
//! these, never from strings.
//!
//! The sets are PVE's (`POST /nodes/{node}/qemu`, the `enum`s of `net[n]` `model` and of the
//! `ide/sata/scsi/virtio[n]` `format`, `cache`, `aio` properties, identical in PVE 8.4 and 9.1),
//! and Packer's proxmox plugin's where it checks more (ISOs are not attached on virtio).

macro_rules! choice {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* $var),+
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The value as written in a template and sent to PVE.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$var => $text),+
                }
            }

            /// Exactly one of the names (case-sensitive, as Packer and PVE compare them).
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$var),)+
                    _ => None,
                }
            }

            /// `a, b or c`, for messages.
            pub fn names() -> String {
                let all: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                match all.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    _ => all.join(""),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    };
}

choice! {
    /// A storage bus of the VM (`disks { type }`; ISOs and the cloud-init drive use [`CdromBus`]).
    Bus {
        Scsi = "scsi",
        Sata = "sata",
        Virtio = "virtio",
        Ide = "ide",
    }
}

impl Bus {
    /// The highest device index PVE accepts on the bus (`ide0`–`ide3`, `sata0`–`sata5`,
    /// `scsi0`–`scsi30`, `virtio0`–`virtio15`).
    pub fn max_index(self) -> u32 {
        match self {
            Bus::Ide => 3,
            Bus::Sata => 5,
            Bus::Scsi => 30,
            Bus::Virtio => 15,
        }
    }

    /// The PVE config key of device `index` on the bus (`scsi0`).
    pub fn slot(self, index: u32) -> String {
        format!("{}{index}", self.name())
    }

    /// A PVE config key naming a drive slot (`scsi0`, `ide2`) → its bus and index; `None` for
    /// any other key (`efidisk0`, `net0`, `scsihw`) or an index beyond the bus.
    pub fn parse_slot(key: &str) -> Option<(Bus, u32)> {
        let split = key.find(|c: char| c.is_ascii_digit())?;
        let (bus, idx) = key.split_at(split);
        let bus = Bus::parse(bus)?;
        if !idx.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let i: u32 = idx.parse().ok()?;
        (i <= bus.max_index()).then_some((bus, i))
    }
}

choice! {
    /// The bus of a CD-ROM drive: an ISO (`boot_iso`/`additional_iso_files { type }`) or the
    /// cloud-init drive (`cloud_init_disk_type`). Packer's plugin refuses virtio for both.
    #[derive(Default)]
    CdromBus {
        #[default]
        Ide = "ide",
        Sata = "sata",
        Scsi = "scsi",
    }
}

impl CdromBus {
    pub fn bus(self) -> Bus {
        match self {
            CdromBus::Ide => Bus::Ide,
            CdromBus::Sata => Bus::Sata,
            CdromBus::Scsi => Bus::Scsi,
        }
    }
}

choice! {
    /// `network_adapters { model }`: PVE's `net[n]` models (PVE 8.4 and 9.1 accept the same 14).
    NicModel {
        Rtl8139 = "rtl8139",
        Ne2kPci = "ne2k_pci",
        E1000 = "e1000",
        Pcnet = "pcnet",
        Virtio = "virtio",
        Ne2kIsa = "ne2k_isa",
        I82551 = "i82551",
        I82557b = "i82557b",
        I82559er = "i82559er",
        Vmxnet3 = "vmxnet3",
        E1000_82540em = "e1000-82540em",
        E1000_82544gc = "e1000-82544gc",
        E1000_82545em = "e1000-82545em",
        E1000e = "e1000e",
    }
}

choice! {
    /// `disks { format }`: PVE's drive formats. (The plugin's documentation also names `cow`,
    /// which PVE refuses.)
    DiskFormat {
        Raw = "raw",
        Qcow = "qcow",
        Qed = "qed",
        Qcow2 = "qcow2",
        Vmdk = "vmdk",
        Cloop = "cloop",
    }
}

choice! {
    /// `disks { cache_mode }`.
    CacheMode {
        None = "none",
        Writethrough = "writethrough",
        Writeback = "writeback",
        Unsafe = "unsafe",
        Directsync = "directsync",
    }
}

choice! {
    /// `disks { asyncio }` (PVE's `aio`).
    AsyncIo {
        Native = "native",
        Threads = "threads",
        IoUring = "io_uring",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Bus::ALL {
            assert_eq!(Bus::parse(b.name()), Some(*b));
        }
        for m in NicModel::ALL {
            assert_eq!(NicModel::parse(&m.to_string()), Some(*m));
        }
        assert_eq!(NicModel::ALL.len(), 14);
        assert_eq!(NicModel::parse("E1000"), None);
        assert_eq!(DiskFormat::parse("cow"), None);
        assert_eq!(AsyncIo::parse("io_uring"), Some(AsyncIo::IoUring));
        assert_eq!(CdromBus::names(), "ide, sata or scsi");
        assert_eq!(
            serde_json::to_value(NicModel::E1000_82540em).ok(),
            Some(serde_json::json!("e1000-82540em"))
        );
    }

    #[test]
    fn slots() {
        assert_eq!(Bus::parse_slot("scsi0"), Some((Bus::Scsi, 0)));
        assert_eq!(Bus::parse_slot("ide2"), Some((Bus::Ide, 2)));
        assert_eq!(Bus::parse_slot("virtio15"), Some((Bus::Virtio, 15)));
        for k in [
            "virtio16", "ide4", "scsihw", "efidisk0", "net0", "scsi", "scsi1a", "ide-1",
        ] {
            assert_eq!(Bus::parse_slot(k), None, "{k}");
        }
        assert_eq!(Bus::Sata.slot(5), "sata5");
        assert_eq!(CdromBus::Scsi.bus().max_index(), 30);
    }
}
