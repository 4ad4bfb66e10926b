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

/// OVMF firmware directory of Debian's `ovmf` package.
pub const OVMF_DIR: &str = "/usr/share/OVMF";

/// Does KVM work here? `KILN_QEMU_ACCEL=tcg|kvm` forces the answer. Otherwise `/dev/kvm` must
/// open read-write, `KVM_CREATE_VM` must succeed, and a real KVM guest must run: a 512-byte boot
/// sector that writes `KVMOK` to the serial port is booted with `-accel kvm -cpu host` and has 5 s
/// to do so (on some hosts /dev/kvm exists but QEMU aborts with "failed to set MSR" or the guest
/// never runs). The answer is cached for the process; the first call may block for up to ~5 s.
pub fn kvm_usable() -> bool {
    static CACHE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CACHE.get_or_init(|| match std::env::var("KILN_QEMU_ACCEL").as_deref() {
        Ok("tcg") => false,
        Ok("kvm") => true,
        _ => {
            let ok = probe_kvm_device() && boot_probe("kvm", "host");
            tracing::info!(kvm = ok, "KVM probe");
            ok
        }
    })
}

fn probe_kvm_device() -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return false;
    };
    const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
    // SAFETY: KVM_CREATE_VM takes an integer machine type (0) and returns a new fd or -1; the
    // fd we pass is owned by `f` and valid for the call.
    #[allow(unsafe_code)]
    let vm = unsafe { libc::ioctl(f.as_raw_fd(), KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return false;
    }
    // SAFETY: `vm` is a file descriptor we just received and own exclusively.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(vm)
    };
    true
}

/// Boot sector: `mov dx,0x3f8` then `mov al,c; out dx,al` for each byte of "KVMOK", `cli; hlt`.
fn kvm_probe_sector() -> Vec<u8> {
    let mut code = vec![0xBA, 0xF8, 0x03];
    for c in b"KVMOK\n" {
        code.extend([0xB0, *c, 0xEE]);
    }
    code.extend([0xFA, 0xF4, 0xEB, 0xFD]);
    code.resize(510, 0);
    code.extend([0x55, 0xAA]);
    code
}

/// Boot the probe sector with `-accel <accel> -cpu <cpu>`; true if it printed its marker on the
/// serial port within 5 s. (Public for the e2e test that checks the probe itself under TCG.)
#[doc(hidden)]
pub fn boot_probe(accel: &str, cpu: &str) -> bool {
    let Ok(dir) = std::env::temp_dir()
        .canonicalize()
        .map(|d| d.join(format!("kiln-kvm-probe-{}", std::process::id())))
    else {
        return false;
    };
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let disk = dir.join("boot.img");
    let log = dir.join("serial.log");
    let ok = (|| {
        std::fs::write(&disk, kvm_probe_sector()).ok()?;
        let mut child = std::process::Command::new(crate::vm::qemu_binary())
            .args([
                "-accel",
                accel,
                "-cpu",
                cpu,
                "-machine",
                "pc",
                "-nodefaults",
            ])
            .args(["-display", "none", "-m", "16", "-no-user-config"])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=ide", esc(&disk)))
            .arg("-chardev")
            .arg(format!("file,id=s,path={}", esc(&log)))
            .args(["-device", "isa-serial,chardev=s"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let start = std::time::Instant::now();
        let mut ok = false;
        while start.elapsed() < std::time::Duration::from_secs(5) {
            if std::fs::read(&log).is_ok_and(|b| b.windows(5).any(|w| w == b"KVMOK")) {
                ok = true;
                break;
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Some(ok)
    })()
    .unwrap_or(false);
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// Name of the tap device PVE uses for `net{n}` of VM `vmid`: `tap{vmid}i{n}`.
pub fn tap_name(vmid: u32, n: u32) -> String {
    format!("tap{vmid}i{n}")
}

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

/// The EFI vars template PVE copies into an `efidisk0` for this config (`efitype`,
/// `pre-enrolled-keys`), e.g. `/usr/share/OVMF/OVMF_VARS_4M.fd`.
pub fn efivars_template(config: &BTreeMap<String, String>) -> Result<PathBuf, SpecError> {
    let (_, vars) = ovmf_files(config)?;
    Ok(vars)
}

/// (code, vars template) for the config.
fn ovmf_files(config: &BTreeMap<String, String>) -> Result<(PathBuf, PathBuf), SpecError> {
    let efi = match config.get("efidisk0") {
        Some(v) => PropString::parse("efidisk0", v, Some("file"))?,
        None => PropString::default(),
    };
    let efitype = efi.get("efitype").unwrap_or("2m");
    let enrolled = efi
        .get("pre-enrolled-keys")
        .map(|v| parse_bool("efidisk0", v))
        .transpose()?
        .unwrap_or(false);
    let q35 = machine_type(config)?.0 == "q35";
    let dir = Path::new(OVMF_DIR);
    let (code, vars) = match (efitype, enrolled) {
        ("4m", true) if q35 => ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
        ("4m", true) => {
            return Err(SpecError::Unsupported {
                key: "efidisk0".into(),
                msg: "pre-enrolled-keys=1 (Secure Boot) needs machine q35 (SMM)".into(),
            })
        }
        ("4m", false) => ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("2m", true) => ("OVMF_CODE.secboot.fd", "OVMF_VARS.ms.fd"),
        ("2m", false) => ("OVMF_CODE.fd", "OVMF_VARS.fd"),
        (other, _) => {
            return Err(SpecError::Invalid {
                key: "efidisk0".into(),
                msg: format!("efitype '{other}' (expected 2m or 4m)"),
            })
        }
    };
    Ok((dir.join(code), dir.join(vars)))
}

// ---------------------------------------------------------------------------------------------
// property strings

/// A parsed PVE property string (`key=value,…`, the default key may be omitted).
#[derive(Debug, Default, Clone)]
struct PropString {
    parts: Vec<(String, String)>,
}

impl PropString {
    fn parse(key: &str, value: &str, default_key: Option<&str>) -> Result<Self, SpecError> {
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

    fn get(&self, k: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    }

    fn bool(&self, key: &str, k: &str) -> Result<Option<bool>, SpecError> {
        self.get(k).map(|v| parse_bool(key, v)).transpose()
    }
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
// machine / cpu

/// QEMU 7.2 (Debian bookworm) is the newest versioned machine type we can rely on.
const NEWEST_MACHINE_VERSION: (u32, u32) = (7, 2);

/// (base type `pc`|`q35`, QEMU machine name)
fn machine_type(config: &BTreeMap<String, String>) -> Result<(&'static str, String), SpecError> {
    let Some(v) = config.get("machine") else {
        return Ok(("pc", "pc".into()));
    };
    let p = PropString::parse("machine", v, Some("type"))?;
    for (k, _) in &p.parts {
        match k.as_str() {
            "type" | "enable-s3" | "enable-s4" => {}
            "viommu" | "aw-bits" => {
                return Err(unsupported("machine", format!("'{k}' (virtual IOMMU)")))
            }
            _ => {
                return Err(SpecError::Invalid {
                    key: "machine".into(),
                    msg: format!("invalid key in comma-separated list property: {k}"),
                })
            }
        }
    }
    let t = p.get("type").unwrap_or("pc");
    // strip +pveN and .pxe
    let t = t.split('+').next().unwrap_or(t);
    let t = t.strip_suffix(".pxe").unwrap_or(t);
    let (base, version) = if t == "pc" || t == "q35" {
        (if t == "pc" { "pc" } else { "q35" }, None)
    } else if let Some(ver) = t
        .strip_prefix("pc-i440fx-")
        .or_else(|| t.strip_prefix("pc-").filter(|r| !r.starts_with("q35")))
    {
        ("pc", Some(ver))
    } else if let Some(ver) = t.strip_prefix("pc-q35-") {
        ("q35", Some(ver))
    } else if t.starts_with("virt") {
        return Err(unsupported(
            "machine",
            format!("'{t}' is an ARM machine type"),
        ));
    } else {
        return Err(SpecError::Invalid {
            key: "machine".into(),
            msg: format!("unknown machine type '{t}'"),
        });
    };
    let name = match version {
        None => base.to_string(),
        Some(ver) => {
            let mut it = ver.split('.').map(|x| x.parse::<u32>());
            let (Some(Ok(ma)), Some(Ok(mi))) = (it.next(), it.next()) else {
                return Err(SpecError::Invalid {
                    key: "machine".into(),
                    msg: format!("bad machine version in '{t}'"),
                });
            };
            if (ma, mi) > NEWEST_MACHINE_VERSION {
                // the host QEMU is older than the PVE machine version: use its newest one
                base.to_string()
            } else if base == "pc" {
                format!("pc-i440fx-{ma}.{mi}")
            } else {
                format!("pc-q35-{ma}.{mi}")
            }
        }
    };
    Ok((base, name))
}

/// PVE's own x86-64 ABI models: QEMU base model + flags.
fn pve_cpu_model(name: &str) -> Option<(&'static str, &'static str)> {
    const V2: &str = "+cx16,+lahf_lm,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3";
    Some(match name {
        "x86-64-v2" => ("qemu64", V2),
        "x86-64-v2-AES" => ("qemu64", "+aes,+cx16,+lahf_lm,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3"),
        "x86-64-v3" => ("qemu64", "+aes,+avx,+avx2,+bmi1,+bmi2,+cx16,+f16c,+fma,+lahf_lm,+abm,+movbe,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3,+xsave"),
        "x86-64-v4" => ("qemu64", "+aes,+avx,+avx2,+avx512bw,+avx512cd,+avx512dq,+avx512f,+avx512vl,+bmi1,+bmi2,+cx16,+f16c,+fma,+lahf_lm,+abm,+movbe,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3,+xsave"),
        _ => return None,
    })
}

/// `-cpu` value for the config.
fn cpu_arg(config: &BTreeMap<String, String>, kvm: bool) -> Result<String, SpecError> {
    let p = match config.get("cpu") {
        Some(v) => PropString::parse("cpu", v, Some("cputype"))?,
        None => PropString::default(),
    };
    for (k, _) in &p.parts {
        match k.as_str() {
            "cputype" | "flags" | "hidden" | "hv-vendor-id" | "phys-bits" | "guest-phys-bits"
            | "reported-model" | "level" => {}
            _ => {
                return Err(SpecError::Invalid {
                    key: "cpu".into(),
                    msg: format!("invalid key in comma-separated list property: {k}"),
                })
            }
        }
    }
    // PVE 8+ default
    let model = p.get("cputype").unwrap_or("x86-64-v2-AES");
    if model.starts_with("custom-") {
        return Err(unsupported(
            "cpu",
            format!("custom CPU model '{model}' (cpu-models.conf)"),
        ));
    }
    let mut out = match (model, kvm) {
        ("host", true) => "host".to_string(),
        // `host` needs KVM; `max` is TCG's everything-it-can-emulate equivalent
        ("host", false) | ("max", _) => "max".to_string(),
        _ => match pve_cpu_model(model) {
            Some((base, flags)) if kvm => format!("{base},{flags}"),
            // under TCG the ABI models map to `max` (a superset; TCG cannot emulate every
            // v3/v4 extension individually without warnings)
            Some(_) => "max".to_string(),
            None => model.to_string(),
        },
    };
    if kvm && matches!(model, "kvm64" | "kvm32" | "qemu64" | "qemu32") {
        out.push_str(",+lahf_lm,+sep");
    }
    if let Some(flags) = p.get("flags") {
        for f in flags.split(';').filter(|f| !f.is_empty()) {
            if !(f.starts_with('+') || f.starts_with('-')) {
                return Err(SpecError::Invalid {
                    key: "cpu".into(),
                    msg: format!("flag '{f}' must start with + or -"),
                });
            }
            out.push(',');
            out.push_str(f);
        }
    }
    if let Some(bits) = p.get("phys-bits") {
        if bits == "host" {
            out.push_str(",host-phys-bits=true");
        } else {
            out.push_str(&format!(",phys-bits={}", parse_uint("cpu", bits)?));
        }
    }
    if p.bool("cpu", "hidden")?.unwrap_or(false) {
        out.push_str(",kvm=off");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// drives

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
struct Drive {
    key: String,
    bus: Bus,
    index: u32,
    cdrom: bool,
    /// host file, None = empty drive
    path: Option<PathBuf>,
    format: Option<String>,
    opts: PropString,
}

fn image_format(path: &Path, explicit: Option<&str>) -> String {
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

fn collect_drives(spec: &VmSpec) -> Result<Vec<Drive>, SpecError> {
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

// ---------------------------------------------------------------------------------------------
// boot order

/// device key → bootindex
fn boot_indexes(
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

// ---------------------------------------------------------------------------------------------
// the command line

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
        let what = if k == "tpmstate0" {
            "TPM state (needs swtpm)"
        } else if k.starts_with("hostpci") {
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

    let kvm_allowed = c
        .get("kvm")
        .map(|v| parse_bool("kvm", v))
        .transpose()?
        .unwrap_or(true);
    let kvm = kvm_allowed
        && match spec.accel {
            Accel::Kvm => true,
            Accel::Tcg => false,
            Accel::Auto => kvm_usable(),
        };

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

    // machine + accelerator
    let (base, machine) = machine_type(c)?;
    let q35 = base == "q35";
    let mut machine_arg = format!("type={machine}");
    if c.get("acpi").map(|v| parse_bool("acpi", v)).transpose()? == Some(false) {
        machine_arg.push_str(",acpi=off");
    }
    push(&mut a, &["-machine", &machine_arg]);
    push(&mut a, &["-accel", if kvm { "kvm" } else { "tcg" }]);

    // firmware
    let bios = c.get("bios").map(String::as_str).unwrap_or("seabios");
    match bios {
        "seabios" => {
            if c.contains_key("efidisk0") {
                tracing::debug!("efidisk0 ignored with bios=seabios");
            }
        }
        "ovmf" => {
            let (code, _) = ovmf_files(c)?;
            if !code.exists() {
                return Err(SpecError::MissingFile {
                    what: "OVMF firmware".into(),
                    path: code,
                    package: "ovmf".into(),
                });
            }
            push(
                &mut a,
                &[
                    "-drive",
                    &format!(
                        "if=pflash,unit=0,format=raw,readonly=on,file={}",
                        code.display()
                    ),
                ],
            );
            let (vars, fmt) = match c.get("efidisk0") {
                Some(v) => {
                    let p = PropString::parse("efidisk0", v, Some("file"))?;
                    let file = p.get("file").unwrap_or("");
                    let path = if file.starts_with('/') {
                        PathBuf::from(file)
                    } else {
                        (spec.volume_path)(file).ok_or_else(|| SpecError::MissingVolume {
                            key: "efidisk0".into(),
                            volume: file.into(),
                        })?
                    };
                    let fmt = image_format(&path, p.get("format"));
                    (path, fmt)
                }
                None => (paths.efivars.clone(), "raw".to_string()),
            };
            push(
                &mut a,
                &[
                    "-drive",
                    &format!(
                        "if=pflash,unit=1,id=drive-efidisk0,format={fmt},file={}",
                        esc(&vars)
                    ),
                ],
            );
        }
        other => {
            return Err(SpecError::Invalid {
                key: "bios".into(),
                msg: format!("'{other}' (expected seabios or ovmf)"),
            })
        }
    }

    // smbios / uuid
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

    // cpu, smp, memory
    let sockets = c
        .get("sockets")
        .map(|v| parse_uint("sockets", v))
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let cores = c
        .get("cores")
        .map(|v| parse_uint("cores", v))
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let maxcpus = sockets * cores;
    let vcpus = c
        .get("vcpus")
        .map(|v| parse_uint("vcpus", v))
        .transpose()?
        .filter(|v| *v > 0)
        .unwrap_or(maxcpus)
        .min(maxcpus);
    push(
        &mut a,
        &[
            "-smp",
            &format!("{vcpus},sockets={sockets},cores={cores},maxcpus={maxcpus}"),
        ],
    );
    push(&mut a, &["-cpu", &cpu_arg(c, kvm)?]);
    let memory = match c.get("memory") {
        Some(v) => {
            let p = PropString::parse("memory", v, Some("current"))?;
            parse_uint("memory", p.get("current").unwrap_or("512"))?
        }
        None => 512,
    };
    push(&mut a, &["-m", &memory.to_string()]);

    // RTC
    let localtime = c
        .get("localtime")
        .map(|v| parse_bool("localtime", v))
        .transpose()?
        .unwrap_or(false);
    match c.get("startdate").map(String::as_str) {
        None | Some("now") => {
            if localtime {
                push(&mut a, &["-rtc", "base=localtime"]);
            }
        }
        Some(d) => push(&mut a, &["-rtc", &format!("base={d}")]),
    }
    if c.get("freeze")
        .map(|v| parse_bool("freeze", v))
        .transpose()?
        .unwrap_or(false)
    {
        push(&mut a, &["-S"]);
    }

    // PVE: SeaBIOS boot menu (eats keys in the first ~2.5 s, like on real PVE)
    push(&mut a, &["-boot", "menu=on,strict=on,reboot-timeout=1000"]);

    // VGA
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

    // serial ports; serial0 is always present and logged so tests can read the console
    let mut serial0_done = false;
    for n in 0..=3u32 {
        let key = format!("serial{n}");
        let Some(v) = c.get(&key) else { continue };
        if v != "socket" {
            return Err(unsupported(&key, format!("host serial device '{v}'")));
        }
        let log = if n == 0 {
            serial0_done = true;
            format!(",logfile={},logappend=on", esc(&paths.serial_log))
        } else {
            String::new()
        };
        push(
            &mut a,
            &[
                "-chardev",
                &format!(
                    "socket,id={key},path={},server=on,wait=off{log}",
                    esc(&paths.serial_socket(n))
                ),
                "-device",
                &format!("isa-serial,chardev={key}"),
            ],
        );
    }
    if !serial0_done {
        push(
            &mut a,
            &[
                "-chardev",
                &format!(
                    "null,id=serial0,logfile={},logappend=on",
                    esc(&paths.serial_log)
                ),
                "-device",
                "isa-serial,chardev=serial0",
            ],
        );
    }

    // guest agent
    if let Some(v) = c.get("agent") {
        let p = PropString::parse("agent", v, Some("enabled"))?;
        for (k, _) in &p.parts {
            if ![
                "enabled",
                "fstrim_cloned_disks",
                "type",
                "freeze-fs-on-backup",
                "freeze-fs",
            ]
            .contains(&k.as_str())
            {
                return Err(SpecError::Invalid {
                    key: "agent".into(),
                    msg: format!("invalid key in comma-separated list property: {k}"),
                });
            }
        }
        if p.bool("agent", "enabled")?.unwrap_or(false) {
            push(
                &mut a,
                &[
                    "-chardev",
                    &format!("socket,path={},server=on,wait=off,id=qga0", esc(&paths.qga)),
                ],
            );
            match p.get("type").unwrap_or("virtio") {
                "virtio" => push(
                    &mut a,
                    &[
                        "-device",
                        "virtio-serial,id=qga0",
                        "-device",
                        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                    ],
                ),
                "isa" => push(&mut a, &["-device", "isa-serial,chardev=qga0"]),
                t => {
                    return Err(SpecError::Invalid {
                        key: "agent".into(),
                        msg: format!("type '{t}' (expected virtio or isa)"),
                    })
                }
            }
        }
    }

    // balloon
    let balloon = c
        .get("balloon")
        .map(|v| parse_uint("balloon", v))
        .transpose()?;
    if balloon != Some(0) {
        push(&mut a, &["-device", "virtio-balloon-pci,id=balloon0"]);
    }

    // watchdog, rng
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

    // networks
    let mut nets: Vec<u32> = c.keys().filter_map(|k| is_indexed(k, "net", 31)).collect();
    nets.sort_unstable();
    let drives = collect_drives(spec)?;
    let bootidx = boot_indexes(c, &drives, &nets)?;

    // disks and CD-ROMs
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
    for d in &drives {
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

    for n in &nets {
        let key = format!("net{n}");
        let v = &c[&key];
        let p = PropString::parse(&key, v, None)
            .or_else(|_| PropString::parse(&key, v, Some("model")))?;
        let mut model: Option<String> = None;
        let mut mac: Option<String> = None;
        let mut bridge: Option<&str> = None;
        let mut link_down = false;
        let mut mtu: Option<u64> = None;
        for (k, val) in &p.parts {
            match k.as_str() {
                "model" => model = Some(val.clone()),
                "macaddr" => mac = Some(val.clone()),
                "bridge" => bridge = Some(val),
                "link_down" => link_down = parse_bool(&key, val)?,
                "mtu" => mtu = Some(parse_uint(&key, val)?),
                // host-side only: firewall bridge, VLAN tagging on the bridge, rate limit,
                // queues (multi-queue needs a multi-queue tap; the guest just sees one queue)
                "firewall" | "tag" | "trunks" | "rate" | "queues" => {}
                m if net_device(m).is_some() => {
                    model = Some(m.to_string());
                    mac = Some(val.clone());
                }
                _ => {
                    return Err(SpecError::Invalid {
                        key: key.clone(),
                        msg: format!("invalid key in comma-separated list property: {k}"),
                    })
                }
            }
        }
        let model = model.ok_or_else(|| SpecError::Invalid {
            key: key.clone(),
            msg: "no model".into(),
        })?;
        let dev = net_device(&model).ok_or_else(|| SpecError::Invalid {
            key: key.clone(),
            msg: format!("unknown model '{model}'"),
        })?;
        let netdev = match bridge {
            Some(_) => format!(
                "tap,id={key},ifname={},script=no,downscript=no",
                tap_name(spec.vmid, *n)
            ),
            None => format!("user,id={key}"),
        };
        let mut d = format!("{dev},netdev={key},id={key}");
        if let Some(m) = &mac {
            d.push_str(&format!(",mac={m}"));
        }
        if let (Some(m), "virtio-net-pci") = (mtu, dev) {
            if m > 1 {
                d.push_str(&format!(",host_mtu={m}"));
            }
        }
        if link_down {
            // no command-line switch for the carrier: the VM runtime sends QMP set_link
            tracing::debug!(%key, "link_down=1: link set down after start");
        }
        if let Some(b) = bootidx.get(&key) {
            d.push_str(&format!(",bootindex={b}"));
        }
        push(&mut a, &["-netdev", &netdev, "-device", &d]);
    }

    Ok(a)
}

fn push(a: &mut Vec<String>, args: &[&str]) {
    a.extend(args.iter().map(|s| s.to_string()));
}

/// QEMU device for a PVE NIC model.
fn net_device(model: &str) -> Option<&'static str> {
    Some(match model {
        "virtio" => "virtio-net-pci",
        "e1000" => "e1000",
        "e1000e" => "e1000e",
        "e1000-82540em" => "e1000-82540em",
        "e1000-82544gc" => "e1000-82544gc",
        "e1000-82545em" => "e1000-82545em",
        "rtl8139" => "rtl8139",
        "vmxnet3" => "vmxnet3",
        "i82551" => "i82551",
        "i82557b" => "i82557b",
        "i82559er" => "i82559er",
        "ne2k_pci" => "ne2k_pci",
        "ne2k_isa" => "ne2k_isa",
        "pcnet" => "pcnet",
        _ => return None,
    })
}

/// Which NICs have `link_down=1` (the runtime sets them down through QMP after start).
pub fn links_down(config: &BTreeMap<String, String>) -> Vec<String> {
    config
        .iter()
        .filter(|(k, _)| is_indexed(k, "net", 31).is_some())
        .filter(|(_, v)| {
            v.split(',').any(|p| {
                p.split_once('=')
                    .is_some_and(|(k, v)| k == "link_down" && parse_bool("net", v).unwrap_or(false))
            })
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The `netN` keys with a `bridge=` and their bridge, e.g. `[(0, "vmbr0")]`.
pub fn bridged_nets(config: &BTreeMap<String, String>) -> Vec<(u32, String)> {
    config
        .iter()
        .filter_map(|(k, v)| {
            let n = is_indexed(k, "net", 31)?;
            let b = v
                .split(',')
                .find_map(|p| p.strip_prefix("bridge="))?
                .to_string();
            Some((n, b))
        })
        .collect()
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

/// Escape a path for a QEMU option value (`,` → `,,`).
fn esc(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pairs: &[(&str, &str)]) -> VmSpec {
        VmSpec {
            vmid: 100,
            name: "test".into(),
            config: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            volume_path: Box::new(|vol: &str| {
                let (store, name) = vol.split_once(':')?;
                if name.contains("missing") {
                    return None;
                }
                let name = name.rsplit('/').next().unwrap_or(name);
                let name = if store == "local-lvm" && !name.contains('.') {
                    format!("{name}.qcow2")
                } else {
                    name.to_string()
                };
                Some(PathBuf::from(format!("/st/{store}/{name}")))
            }),
            run_dir: PathBuf::from("/run/kiln/100"),
            accel: Accel::Tcg,
        }
    }

    fn args(pairs: &[(&str, &str)]) -> Vec<String> {
        qemu_args(&spec(pairs)).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
    }

    fn joined(pairs: &[(&str, &str)]) -> String {
        args(pairs).join(" ")
    }

    /// value following `opt` for every occurrence
    fn values<'a>(a: &'a [String], opt: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == opt)
            .map(|w| w[1].as_str())
            .collect()
    }

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
    fn cpu_memory_machine_table() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (&[("cores", "2"), ("sockets", "2")], "-smp 4,sockets=2,cores=2,maxcpus=4"),
            (&[("cores", "2"), ("vcpus", "1")], "-smp 1,sockets=1,cores=2,maxcpus=2"),
            (&[("memory", "2048")], "-m 2048"),
            (&[("memory", "current=1024")], "-m 1024"),
            (&[("cpu", "host")], "-cpu max"),
            (&[("cpu", "x86-64-v2-AES")], "-cpu max"),
            (&[("cpu", "kvm64")], "-cpu kvm64"),
            (&[("cpu", "qemu64,flags=+aes;-pcid")], "-cpu qemu64,+aes,-pcid"),
            (&[("cpu", "cputype=max")], "-cpu max"),
            (&[("cpu", "Haswell")], "-cpu Haswell"),
            (&[("machine", "q35")], "-machine type=q35"),
            (&[("machine", "pc-i440fx-6.2")], "-machine type=pc-i440fx-6.2"),
            (&[("machine", "pc-i440fx-9.2+pve1")], "-machine type=pc "),
            (&[("machine", "pc-q35-7.1")], "-machine type=pc-q35-7.1"),
            (&[("machine", "type=q35,enable-s3=1")], "-machine type=q35"),
            (&[("acpi", "0")], "-machine type=pc,acpi=off"),
            (&[("kvm", "0")], "-accel tcg"),
            (&[("freeze", "1")], " -S "),
            (&[("startdate", "2020-01-01")], "-rtc base=2020-01-01"),
            (&[("localtime", "1")], "-rtc base=localtime"),
            (
                &[("smbios1", "uuid=5b0b1a2c-1111-2222-3333-444455556666")],
                "-uuid 5b0b1a2c-1111-2222-3333-444455556666 -smbios type=1,uuid=5b0b1a2c-1111-2222-3333-444455556666",
            ),
            (
                &[("smbios1", "base64=1,manufacturer=a2lsbg==,uuid=5b0b1a2c-1111-2222-3333-444455556666")],
                ",manufacturer=kiln",
            ),
            (&[("vga", "serial0"), ("serial0", "socket")], "isa-serial,chardev=serial0"),
            (&[("vga", "qxl")], "-device qxl-vga,id=vga"),
            (&[("vga", "virtio")], "-device virtio-vga,id=vga"),
            (&[("vga", "std,memory=32")], "-device VGA,id=vga,vgamem_mb=32"),
            (&[("balloon", "0"), ("watchdog", "model=i6300esb,action=reset")], "-device i6300esb -watchdog-action reset"),
            (&[("rng0", "source=/dev/urandom")], "-object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0,id=rng0"),
        ];
        for (cfg, frag) in table {
            let s = format!("{} ", joined(cfg));
            assert!(s.contains(frag), "{cfg:?}: missing {frag:?} in {s}");
        }
        // extras: vga none has no display device, balloon 0 has no balloon
        assert!(!joined(&[("vga", "none")]).contains("id=vga"));
        assert!(!joined(&[("balloon", "0")]).contains("balloon"));
        assert!(!joined(&[("vga", "serial0")]).contains("id=vga"));
    }

    #[test]
    fn kvm_keeps_host_and_pve_models() {
        let mut s = spec(&[("cpu", "host")]);
        s.accel = Accel::Kvm;
        let a = qemu_args(&s).unwrap();
        assert_eq!(values(&a, "-cpu"), ["host"]);
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        let mut s = spec(&[("cpu", "x86-64-v2-AES")]);
        s.accel = Accel::Kvm;
        assert_eq!(
            values(&qemu_args(&s).unwrap(), "-cpu"),
            ["qemu64,+aes,+cx16,+lahf_lm,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3"]
        );
        // kvm: 0 wins over Accel::Kvm
        let mut s = spec(&[("kvm", "0")]);
        s.accel = Accel::Kvm;
        assert_eq!(values(&qemu_args(&s).unwrap(), "-accel"), ["tcg"]);
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

    #[test]
    fn nics() {
        let a = args(&[
            (
                "net0",
                "model=e1000,macaddr=BC:24:11:00:00:02,bridge=vmbr1,mtu=1400",
            ),
            ("net1", "rtl8139=BC:24:11:00:00:03"),
            ("net2", "vmxnet3,bridge=vmbr0,link_down=1"),
            ("net3", "virtio=BC:24:11:00:00:04,bridge=vmbr0,mtu=1400"),
        ]);
        assert_eq!(
            values(&a, "-netdev"),
            [
                "tap,id=net0,ifname=tap100i0,script=no,downscript=no",
                "user,id=net1",
                "tap,id=net2,ifname=tap100i2,script=no,downscript=no",
                "tap,id=net3,ifname=tap100i3,script=no,downscript=no"
            ]
        );
        let devs = values(&a, "-device");
        assert!(
            devs.contains(&"e1000,netdev=net0,id=net0,mac=BC:24:11:00:00:02,bootindex=300"),
            "{devs:?}"
        );
        assert!(devs.contains(&"rtl8139,netdev=net1,id=net1,mac=BC:24:11:00:00:03,bootindex=301"));
        assert!(devs.contains(&"vmxnet3,netdev=net2,id=net2,bootindex=302"));
        assert!(devs.contains(
            &"virtio-net-pci,netdev=net3,id=net3,mac=BC:24:11:00:00:04,host_mtu=1400,bootindex=303"
        ));
        let cfg: BTreeMap<String, String> = [(
            "net2".to_string(),
            "vmxnet3,bridge=vmbr0,link_down=1".to_string(),
        )]
        .into();
        assert_eq!(links_down(&cfg), ["net2"]);
        assert_eq!(bridged_nets(&cfg), [(2, "vmbr0".to_string())]);
        assert!(qemu_args(&spec(&[("net0", "foo=AA:BB:CC:DD:EE:FF")])).is_err());
    }

    #[test]
    fn agent_variants() {
        assert!(joined(&[("agent", "1")])
            .contains("virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"));
        assert!(joined(&[("agent", "enabled=1,fstrim_cloned_disks=1")])
            .contains("org.qemu.guest_agent.0"));
        assert!(!joined(&[("agent", "0")]).contains("qga0"));
        assert!(!joined(&[("agent", "enabled=0,type=virtio")]).contains("qga0"));
        assert!(joined(&[("agent", "1,type=isa")]).contains("isa-serial,chardev=qga0"));
    }

    #[test]
    fn ovmf_and_efidisk() {
        if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() {
            // qemu_args checks the firmware exists; without the package the error must say so
            let e = qemu_args(&spec(&[
                ("bios", "ovmf"),
                ("efidisk0", "local-lvm:vm-100-disk-1,efitype=4m"),
            ]))
            .unwrap_err();
            assert!(e.to_string().contains("ovmf"), "{e}");
            return;
        }
        let a = args(&[
            ("bios", "ovmf"),
            (
                "efidisk0",
                "local-lvm:vm-100-disk-1,efitype=4m,pre-enrolled-keys=0,size=4M",
            ),
        ]);
        assert_eq!(
            values(&a, "-drive"),
            [
                "if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,unit=1,id=drive-efidisk0,format=qcow2,file=/st/local-lvm/vm-100-disk-1.qcow2"
            ]
        );
        let a = args(&[("bios", "ovmf")]);
        assert_eq!(
            values(&a, "-drive")[1],
            "if=pflash,unit=1,id=drive-efidisk0,format=raw,file=/run/kiln/100/efivars.fd"
        );
        let cfg: BTreeMap<String, String> = [
            ("machine".to_string(), "q35".to_string()),
            (
                "efidisk0".to_string(),
                "local-lvm:1,efitype=4m,pre-enrolled-keys=1".to_string(),
            ),
        ]
        .into();
        assert_eq!(
            efivars_template(&cfg).unwrap(),
            PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        );
        assert!(matches!(
            qemu_args(&spec(&[
                ("bios", "ovmf"),
                ("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=1")
            ])),
            Err(SpecError::Unsupported { .. })
        ));
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

    #[test]
    fn refusals_are_clear() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("tpmstate0", "local-lvm:vm-100-disk-1,version=v2.0")],
                "TPM",
            ),
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

    #[test]
    fn kvm_probe_sector_is_a_boot_sector() {
        let s = kvm_probe_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        assert_eq!(&s[..3], &[0xBA, 0xF8, 0x03]);
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
