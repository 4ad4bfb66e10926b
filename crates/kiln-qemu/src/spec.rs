//! PVE VM config → QEMU command line.
//!
//! [`qemu_args`] is pure (it reads no files except, for a disk whose format is neither given nor
//! evident from its file name, the image header; and it calls [`VmSpec::volume_path`]). It mirrors
//! what `qemu-server` generates where the guest can see it (devices, buses, MACs, bootindex, SMBIOS
//! UUID, `-boot menu=on`) and substitutes what cannot run here (KVM-only CPU models under TCG, VNC).
//! Keys it cannot emulate faithfully are refused with [`SpecError::Unsupported`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Accelerator choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    Kvm,
    Tcg,
    /// KVM only if [`kvm_usable`] says it works, else TCG.
    #[default]
    Auto,
}

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
    pub volume_path: Box<dyn Fn(&str) -> Option<PathBuf> + Send + Sync>,
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

/// Does KVM work here? True only if `/dev/kvm` opens and `KVM_CREATE_VM` succeeds, and the
/// environment does not force TCG (`KILN_QEMU_ACCEL=tcg`). Cached.
pub fn kvm_usable() -> bool {
    todo!()
}

/// Name of the tap device PVE uses for `net{n}` of VM `vmid`: `tap{vmid}i{n}`.
pub fn tap_name(vmid: u32, n: u32) -> String {
    format!("tap{vmid}i{n}")
}

/// True if a drive value is a PVE cloud-init drive (`local-lvm:vm-100-cloudinit`,
/// `local:100/vm-100-cloudinit.qcow2`, `local-lvm:cloudinit` at creation).
pub fn is_cloudinit_drive(value: &str) -> bool {
    todo!("{value}")
}

/// The EFI vars template PVE copies into an `efidisk0` for this config (`efitype`,
/// `pre-enrolled-keys`), e.g. `/usr/share/OVMF/OVMF_VARS_4M.fd`.
pub fn efivars_template(config: &BTreeMap<String, String>) -> Result<PathBuf, SpecError> {
    todo!("{config:?}")
}

/// Build the `qemu-system-x86_64` arguments (without the program name) for a spec.
pub fn qemu_args(spec: &VmSpec) -> Result<Vec<String>, SpecError> {
    todo!("{spec:?}")
}
