//! PVE VM config → QEMU command line.
//!
//! [`qemu_args`] is pure (it reads no files except, for a disk whose format is neither given nor
//! evident from its file name, the image header; and it calls [`VmSpec::volume_path`]). It mirrors
//! what `qemu-server` generates where the guest can see it (devices, buses, MACs, bootindex, SMBIOS
//! UUID, `-boot menu=on`) and substitutes what cannot run here (KVM-only CPU models under TCG, VNC).
//! Keys it cannot emulate faithfully are refused with [`SpecError::Unsupported`].
//!
//! [`qemu_args`] is a short orchestrator; each device family lives in its own module:
//!
//! * `machine` — machine type, accelerator, CPU model, SMP, memory, RTC;
//! * `firmware` — SeaBIOS/OVMF, the EFI vars drive (`efidisk0`), [`efivars_template`];
//! * `misc_devices` — SMBIOS, VGA, balloon, watchdog, RNG;
//! * `serial` — serial ports and the guest-agent channel;
//! * `drives` — disks, CD-ROMs, their controllers, the cloud-init drive;
//! * `boot` — `bootindex` from `boot`/`bootdisk`;
//! * `net` — NICs, MACs, tap devices;
//! * `kvm` — the KVM probe ([`kvm_usable`]): the only code here that uses `unsafe` or starts
//!   processes.
//!
//! This module keeps the types ([`VmSpec`], [`RunPaths`], [`SpecError`]) and PVE property-string
//! parsing; `config_keys` refuses the config keys the sandbox cannot emulate.

mod boot;
mod config_keys;
mod drives;
mod firmware;
mod kvm;
mod machine;
mod misc_devices;
mod net;
mod serial;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub(crate) use drives::image_format;
pub use drives::{cloudinit_drive, is_cloudinit_drive};
pub use firmware::{efivars_template, OVMF_DIR};
#[doc(hidden)]
pub use kvm::boot_probe;
pub use kvm::kvm_usable;
pub use net::{bridged_nets, links_down, tap_name};

/// Accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    Kvm,
    Tcg,
    /// KVM only if [`kvm_usable`] says it works, else TCG.
    #[default]
    Auto,
}

/// Maps a PVE volume id to a host path (see [`VmSpec::volume_path`]).
pub type VolumePathFn = Box<dyn Fn(&str) -> Option<PathBuf> + Send + Sync>;

/// What a VM is started from.
pub struct VmSpec {
    pub vmid: u32,
    /// VM name (PVE `name`, or `VM<vmid>` when unset); used for `-name`.
    pub name: String,
    /// PVE config keys exactly as stored (`scsi0` → `local-lvm:vm-100-disk-0,size=8G`, …).
    pub config: BTreeMap<String, String>,
    /// Map a PVE volume id (`local-lvm:vm-100-disk-0`, `local:iso/x.iso`) to its file, `None` if
    /// the volume does not exist. For the `cloudinit` volume the returned path is where the NoCloud
    /// ISO is written at start (when `None`, it goes to [`RunPaths::cloudinit_iso`]).
    pub volume_path: VolumePathFn,
    /// Per-VM runtime directory: sockets, serial log, pid file, temporary EFI vars. Keep it short:
    /// Unix socket paths are limited to 107 bytes.
    pub run_dir: PathBuf,
    pub accel: Accel,
}

impl fmt::Debug for VmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmSpec")
            .field("vmid", &self.vmid)
            .field("name", &self.name)
            .field("config", &self.config)
            .field("run_dir", &self.run_dir)
            .field("accel", &self.accel)
            .finish_non_exhaustive()
    }
}

impl VmSpec {
    /// The runtime paths of this VM.
    pub fn paths(&self) -> RunPaths {
        RunPaths::new(&self.run_dir)
    }
}

/// Files QEMU creates or uses in the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    pub run_dir: PathBuf,
    /// QMP socket (`-qmp unix:…`).
    pub qmp: PathBuf,
    /// Guest-agent socket (chardev of `org.qemu.guest_agent.0`), present when `agent` is enabled.
    pub qga: PathBuf,
    /// Everything the guest writes to its first serial port (appended across restarts).
    pub serial_log: PathBuf,
    /// `-pidfile`.
    pub pidfile: PathBuf,
    /// QEMU's stderr/stdout.
    pub qemu_log: PathBuf,
    /// EFI vars copy used when `bios: ovmf` has no `efidisk0` (PVE: "temporary efivars disk").
    pub efivars: PathBuf,
    /// Default location of the generated cloud-init ISO.
    pub cloudinit_iso: PathBuf,
    /// swtpm's control socket (`tpmstate0`).
    pub swtpm_socket: PathBuf,
    /// swtpm's pid file.
    pub swtpm_pid: PathBuf,
    /// The raw TPM state swtpm works on while the VM runs (see [`crate::tpm`]).
    pub tpm_state: PathBuf,
}

impl RunPaths {
    pub fn new(run_dir: &Path) -> Self {
        RunPaths {
            run_dir: run_dir.to_path_buf(),
            qmp: run_dir.join("qmp.sock"),
            qga: run_dir.join("qga.sock"),
            serial_log: run_dir.join("serial0.log"),
            pidfile: run_dir.join("qemu.pid"),
            qemu_log: run_dir.join("qemu.log"),
            efivars: run_dir.join("efivars.fd"),
            cloudinit_iso: run_dir.join("cloudinit.iso"),
            swtpm_socket: run_dir.join("swtpm.sock"),
            swtpm_pid: run_dir.join("swtpm.pid"),
            tpm_state: run_dir.join("tpmstate.raw"),
        }
    }

    /// Unix socket of serial port `n` when configured as `serialN: socket`.
    pub fn serial_socket(&self, n: u32) -> PathBuf {
        self.run_dir.join(format!("serial{n}.sock"))
    }
}

/// Why a config cannot be turned into a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A value does not parse.
    #[error("invalid value for '{key}': {msg}")]
    Invalid { key: String, msg: String },
    /// A key or option that would change the guest in a way the sandbox cannot emulate.
    #[error("'{key}' is not supported by the kiln sandbox: {msg}")]
    Unsupported { key: String, msg: String },
    /// A volume the config references does not exist.
    #[error("volume '{volume}' of '{key}' does not exist")]
    MissingVolume { key: String, volume: String },
    /// A file QEMU needs is missing (e.g. OVMF firmware).
    #[error("{what} not found at {path} (install the Debian package '{package}')")]
    MissingFile {
        what: String,
        path: PathBuf,
        package: String,
    },
    /// The run directory is so long that socket paths would not fit.
    #[error("run directory {0} is too long for Unix socket paths (max 107 bytes)")]
    RunDirTooLong(PathBuf),
}

// ---------------------------------------------------------------------------------------------
// property strings

/// A parsed PVE property string (`key=value,…`, the default key may be omitted).
#[derive(Debug, Default, Clone)]
pub(crate) struct PropString {
    pub(crate) parts: Vec<(String, String)>,
}

impl PropString {
    pub(crate) fn parse(
        key: &str,
        value: &str,
        default_key: Option<&str>,
    ) -> Result<Self, SpecError> {
        let mut parts: Vec<(String, String)> = Vec::new();
        for (i, part) in value.split(',').enumerate() {
            if part.is_empty() {
                continue;
            }
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => match default_key {
                    Some(d) if i == 0 => (d.to_string(), part.to_string()),
                    _ => {
                        return Err(SpecError::Invalid {
                            key: key.into(),
                            msg: format!("'{part}' is not key=value"),
                        })
                    }
                },
            };
            if parts.iter().any(|(pk, _)| *pk == k) {
                return Err(SpecError::Invalid {
                    key: key.into(),
                    msg: format!("duplicate key in comma-separated list property: {k}"),
                });
            }
            parts.push((k, v));
        }
        Ok(PropString { parts })
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    }

    fn bool(&self, key: &str, k: &str) -> Result<Option<bool>, SpecError> {
        self.get(k).map(|v| parse_bool(key, v)).transpose()
    }
}

/// The file of a VM-state volume (`efidisk0`, `tpmstate0`): an absolute path as written, else the
/// volume id resolved by [`VmSpec::volume_path`].
pub(crate) fn state_volume_path(
    spec: &VmSpec,
    key: &str,
    file: &str,
) -> Result<PathBuf, SpecError> {
    if file.starts_with('/') {
        return Ok(PathBuf::from(file));
    }
    (spec.volume_path)(file).ok_or_else(|| SpecError::MissingVolume {
        key: key.into(),
        volume: file.into(),
    })
}

fn parse_bool(key: &str, v: &str) -> Result<bool, SpecError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => Err(SpecError::Invalid {
            key: key.into(),
            msg: format!("'{v}' is not a boolean"),
        }),
    }
}

fn parse_uint(key: &str, v: &str) -> Result<u64, SpecError> {
    v.trim().parse::<u64>().map_err(|_| SpecError::Invalid {
        key: key.into(),
        msg: format!("'{v}' is not a non-negative integer"),
    })
}

fn unsupported(key: &str, msg: impl Into<String>) -> SpecError {
    SpecError::Unsupported {
        key: key.into(),
        msg: msg.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// the command line

fn is_indexed(key: &str, prefix: &str, max: u32) -> Option<u32> {
    let n = key.strip_prefix(prefix)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok().filter(|i| *i <= max)
}

/// Build the `qemu-system-x86_64` arguments (without the program name) for a spec.
pub fn qemu_args(spec: &VmSpec) -> Result<Vec<String>, SpecError> {
    let c = &spec.config;
    let paths = spec.paths();
    if paths.serial_socket(3).as_os_str().len() > 107 || paths.qmp.as_os_str().len() > 107 {
        return Err(SpecError::RunDirTooLong(spec.run_dir.clone()));
    }

    // refuse what cannot be emulated, before anything else
    config_keys::refuse_unsupported_keys(c)?;
    let kvm = machine::kvm_enabled(spec)?;

    let mut a = base_args(spec, &paths);

    // machine + accelerator
    let (machine_args, q35) = machine::machine_args(c, kvm)?;
    a.extend(machine_args);

    // firmware
    a.extend(firmware::firmware_args(spec, &paths)?);

    // TPM (swtpm is started by RunningVm before QEMU)
    if crate::tpm::tpm_state(spec)?.is_some() {
        a.extend(crate::tpm::qemu_args(&paths));
    }

    // smbios / uuid
    a.extend(misc_devices::smbios_args(c)?);

    // cpu, smp, memory
    a.extend(machine::cpu_memory_args(c, kvm)?);

    // RTC
    a.extend(machine::rtc_args(c)?);

    // PVE: SeaBIOS boot menu (eats keys in the first ~2.5 s, like on real PVE)
    push(&mut a, &["-boot", "menu=on,strict=on,reboot-timeout=1000"]);

    // VGA
    a.extend(misc_devices::vga_args(c)?);

    // serial ports; serial0 is always present and logged so tests can read the console
    a.extend(serial::serial_args(c, &paths)?);

    // guest agent
    a.extend(serial::agent_args(c, &paths)?);

    // balloon
    a.extend(misc_devices::balloon_args(c)?);

    // watchdog, rng
    a.extend(misc_devices::watchdog_args(c)?);
    a.extend(misc_devices::rng_args(c)?);

    // networks
    let nets = net::net_indexes(c);
    let drive_list = drives::collect_drives(spec)?;
    let bootidx = boot::boot_indexes(c, &drive_list, &nets)?;

    // disks and CD-ROMs
    a.extend(drives::drive_args(c, &drive_list, &bootidx, q35)?);

    // NICs
    a.extend(net::net_args(spec, &nets, &bootidx)?);

    Ok(a)
}

/// The fixed head of the command line: name, no defaults, QMP, pid file, no display, no reboot.
fn base_args(spec: &VmSpec, paths: &RunPaths) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let name = if spec.name.is_empty() {
        format!("VM{}", spec.vmid)
    } else {
        spec.name.clone()
    };
    push(
        &mut a,
        &[
            "-name",
            &format!("{},debug-threads=on", name.replace(',', ",,")),
        ],
    );
    push(&mut a, &["-nodefaults", "-no-user-config"]);
    push(
        &mut a,
        &[
            "-chardev",
            &format!(
                "socket,id=qmp,path={},server=on,wait=off",
                paths.qmp.display()
            ),
            "-mon",
            "chardev=qmp,mode=control",
        ],
    );
    push(&mut a, &["-pidfile", &paths.pidfile.display().to_string()]);
    push(&mut a, &["-display", "none"]);
    push(&mut a, &["-no-reboot"]);
    a
}

fn push(a: &mut Vec<String>, args: &[&str]) {
    a.extend(args.iter().map(|s| s.to_string()));
}

/// Escape a path for a QEMU option value (`,` → `,,`).
fn esc(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::test_support::{args, spec, values};

    #[test]
    fn minimal_config_has_the_pve_basics() {
        let a = args(&[]);
        let s = a.join(" ");
        for frag in [
            "-name test,debug-threads=on",
            "-nodefaults",
            "-no-reboot",
            "-boot menu=on,strict=on,reboot-timeout=1000",
            "-machine type=pc",
            "-accel tcg",
            "-smp 1,sockets=1,cores=1,maxcpus=1",
            "-m 512",
            "-cpu max",
            "-device VGA,id=vga",
            "-chardev socket,id=qmp,path=/run/kiln/100/qmp.sock,server=on,wait=off",
            "-mon chardev=qmp,mode=control",
            "-pidfile /run/kiln/100/qemu.pid",
            "-chardev null,id=serial0,logfile=/run/kiln/100/serial0.log,logappend=on",
            "-device isa-serial,chardev=serial0",
            "-device virtio-balloon-pci,id=balloon0",
        ] {
            assert!(s.contains(frag), "missing {frag:?} in {s}");
        }
        assert!(!s.contains("qga"), "no agent unless configured");
    }

    #[test]
    fn packer_style_ubuntu_vm() {
        let a = args(&[
            ("name", "ubuntu-tpl"),
            ("cores", "2"),
            ("memory", "2048"),
            ("scsihw", "virtio-scsi-single"),
            (
                "scsi0",
                "local-lvm:vm-100-disk-0,cache=writeback,discard=on,iothread=1,ssd=1,size=8G",
            ),
            ("ide2", "local:iso/ubuntu.iso,media=cdrom,size=2G"),
            ("ide0", "local-lvm:vm-100-cloudinit,media=cdrom"),
            (
                "net0",
                "virtio=BC:24:11:5E:7A:01,bridge=vmbr0,firewall=0,tag=20",
            ),
            ("boot", "order=scsi0;ide2;net0"),
            ("agent", "enabled=1,type=virtio"),
            ("serial0", "socket"),
            ("vga", "serial0"),
        ]);
        let drives = values(&a, "-drive");
        assert!(drives.contains(&"file=/st/local-lvm/vm-100-disk-0.qcow2,if=none,id=drive-scsi0,format=qcow2,cache=writeback,discard=unmap,detect-zeroes=unmap"), "{drives:?}");
        assert!(drives.contains(&"file=/st/local/ubuntu.iso,if=none,id=drive-ide2,media=cdrom,format=raw,readonly=on"), "{drives:?}");
        assert!(drives.contains(&"file=/st/local-lvm/vm-100-cloudinit.qcow2,if=none,id=drive-ide0,media=cdrom,format=raw,readonly=on"), "{drives:?}");
        let devs = values(&a, "-device");
        for d in [
            "virtio-scsi-pci,id=virtioscsi0,iothread=iothread-virtioscsi0",
            "scsi-hd,bus=virtioscsi0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0,rotation_rate=1,bootindex=100",
            "ide-cd,bus=ide.1,unit=0,drive=drive-ide2,id=ide2,bootindex=101",
            "ide-cd,bus=ide.0,unit=0,drive=drive-ide0,id=ide0",
            "virtio-net-pci,netdev=net0,id=net0,mac=BC:24:11:5E:7A:01,bootindex=102",
            "virtio-serial,id=qga0",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "isa-serial,chardev=serial0",
        ] {
            assert!(devs.contains(&d), "missing {d:?} in {devs:?}");
        }
        assert_eq!(values(&a, "-object"), ["iothread,id=iothread-virtioscsi0"]);
        assert_eq!(
            values(&a, "-netdev"),
            ["tap,id=net0,ifname=tap100i0,script=no,downscript=no"]
        );
        let chardevs = values(&a, "-chardev");
        assert!(chardevs.contains(&"socket,id=serial0,path=/run/kiln/100/serial0.sock,server=on,wait=off,logfile=/run/kiln/100/serial0.log,logappend=on"));
        assert!(chardevs.contains(&"socket,path=/run/kiln/100/qga.sock,server=on,wait=off,id=qga0"));
        assert!(!values(&a, "-device").iter().any(|d| d.contains("id=vga")));
    }

    #[test]
    fn tpmstate_is_a_tis_device_on_the_swtpm_socket() {
        let s = spec(&[("tpmstate0", "local-lvm:vm-100-disk-1,size=4M,version=v2.0")]);
        let args = qemu_args(&s).unwrap().join(" ");
        let sock = s.paths().swtpm_socket;
        assert!(
            args.contains(&format!(
                "-chardev socket,id=tpmchar,path={} -tpmdev emulator,id=tpmdev,chardev=tpmchar -device tpm-tis,tpmdev=tpmdev",
                sock.display()
            )),
            "{args}"
        );
        let t = crate::tpm::tpm_state(&s).unwrap().unwrap();
        assert_eq!(t.version, crate::tpm::TpmVersion::V2_0);
        assert_eq!(t.volume, PathBuf::from("/st/local-lvm/vm-100-disk-1.qcow2"));
        let v12 = spec(&[("tpmstate0", "local-lvm:vm-100-disk-1")]);
        assert_eq!(
            crate::tpm::tpm_state(&v12).unwrap().unwrap().version,
            crate::tpm::TpmVersion::V1_2,
            "PVE's default version"
        );
        let bad = spec(&[("tpmstate0", "local-lvm:vm-100-disk-1,version=v3")]);
        assert!(qemu_args(&bad)
            .unwrap_err()
            .to_string()
            .contains("version 'v3'"));
    }

    #[test]
    fn long_run_dir_is_refused() {
        let mut s = spec(&[]);
        s.run_dir = PathBuf::from(format!("/{}", "x".repeat(100)));
        assert!(matches!(qemu_args(&s), Err(SpecError::RunDirTooLong(_))));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut s = spec(&[("ide2", "/iso/a,b.iso,media=cdrom")]);
        s.config
            .insert("ide2".into(), "/iso/ab.iso,media=cdrom".into());
        s.run_dir = PathBuf::from("/run/a,b");
        let a = qemu_args(&s).unwrap();
        assert!(values(&a, "-pidfile")[0] == "/run/a,b/qemu.pid");
        assert!(values(&a, "-chardev")
            .iter()
            .any(|c| c.contains("logfile=/run/a,,b/serial0.log")));
    }
}
