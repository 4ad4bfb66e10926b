//! Build a QEMU command line for the test guest the way Proxmox VE runs VMs, and own the
//! process (killed on drop and, through `PR_SET_PDEATHSIG`, when the test process dies).

use crate::{io, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Bus of the install disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// virtio-blk-pci (PVE `virtio0`)
    VirtioBlk,
    /// virtio-scsi-pci + scsi-hd (PVE `scsi0` with `scsihw: virtio-scsi-pci`)
    VirtioScsi,
    /// AHCI SATA (PVE `sata0`; on q35 the built-in controller, on pc an added `ahci`)
    Sata,
}

/// Networking of the guest NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// user-mode networking; guest port 22 forwarded to 127.0.0.1:`ssh_port`.
    User { ssh_port: u16 },
    /// a tap device (must exist in the namespace QEMU runs in).
    Tap { ifname: String },
}

/// What to run. Paths are created by the caller (a temp dir).
#[derive(Debug, Clone)]
pub struct Spec {
    /// "pc" (i440fx, PVE default) or "q35"
    pub machine: String,
    pub smp: u32,
    pub mem_mib: u32,
    pub disk: PathBuf,
    pub disk_bus: DiskBus,
    /// the installer ISO (an empty path: no installer CD-ROM, e.g. when booting an installed disk)
    /// and optional extra CD-ROMs (e.g. a `cidata` seed)
    pub iso: PathBuf,
    pub extra_cdroms: Vec<PathBuf>,
    pub net: Net,
    /// "virtio-net-pci" or "e1000" (Packer's default model)
    pub nic_model: String,
    pub serial_log: PathBuf,
    pub qmp_sock: PathBuf,
    pub qga_sock: PathBuf,
    /// PVE passes `-boot menu=on,strict=on,reboot-timeout=1000`
    pub boot_menu: bool,
    /// `-no-reboot`: a guest reboot makes QEMU exit (the harness restarts it)
    pub no_reboot: bool,
    /// UEFI: (OVMF code, writable copy of the OVMF vars) as pflash, like PVE's `bios: ovmf`
    pub ovmf: Option<(PathBuf, PathBuf)>,
    /// direct kernel boot (`-kernel/-initrd/-append`) instead of the firmware's boot order
    pub kernel: Option<KernelBoot>,
}

/// `-kernel KERNEL -initrd INITRD -append APPEND`: boot a kernel without a boot loader (e.g. the
/// ISO's `casper/vmlinuz` + `casper/initrd`, extracted), so nothing has to be typed at GRUB.
#[derive(Debug, Clone)]
pub struct KernelBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
}

/// OVMF firmware of Debian's `ovmf` package: (code, vars template).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl Spec {
    /// Boot with UEFI (OVMF): copies the vars template into `dir`.
    pub fn use_ovmf(&mut self, dir: &Path) -> Result<()> {
        let vars = dir.join("efivars.fd");
        std::fs::copy(OVMF_VARS, &vars).map_err(io(format!("copy {OVMF_VARS} (package ovmf)")))?;
        self.ovmf = Some((PathBuf::from(OVMF_CODE), vars));
        Ok(())
    }

    /// PVE-like defaults: i440fx, 2 vCPUs, 2 GiB, virtio-scsi disk, IDE CD-ROM, virtio NIC.
    pub fn new(dir: &Path, iso: &Path, disk: &Path, net: Net) -> Spec {
        Spec {
            machine: "pc".into(),
            smp: 2,
            mem_mib: 2048,
            disk: disk.to_path_buf(),
            disk_bus: DiskBus::VirtioScsi,
            iso: iso.to_path_buf(),
            extra_cdroms: Vec::new(),
            net,
            nic_model: "virtio-net-pci".into(),
            serial_log: dir.join("serial.log"),
            qmp_sock: dir.join("qmp.sock"),
            qga_sock: dir.join("qga.sock"),
            boot_menu: true,
            no_reboot: true,
            ovmf: None,
            kernel: None,
        }
    }

    /// The full argument list (without the program name). Disk is bootindex 0, ISO 1, as PVE's
    /// `boot: order=scsi0;ide2` produces.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let disk_fmt = if self.disk.extension().is_some_and(|e| e == "qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        push(&["-accel", "tcg", "-machine", &self.machine, "-cpu", "max"]);
        push(&[
            "-smp",
            &self.smp.to_string(),
            "-m",
            &self.mem_mib.to_string(),
        ]);
        push(&["-display", "none", "-vga", "std", "-nodefaults"]);
        if let Some((code, vars)) = &self.ovmf {
            push(&[
                "-drive",
                &format!(
                    "if=pflash,unit=0,format=raw,readonly=on,file={}",
                    code.display()
                ),
                "-drive",
                &format!("if=pflash,unit=1,format=raw,file={}", vars.display()),
            ]);
        }
        push(&[
            "-chardev",
            &format!("file,id=ser0,append=on,path={}", self.serial_log.display()),
            "-serial",
            "chardev:ser0",
        ]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", self.qmp_sock.display()),
        ]);
        push(&[
            "-drive",
            &format!(
                "if=none,id=d0,file={},format={disk_fmt},cache=unsafe",
                self.disk.display()
            ),
        ]);
        let q35 = self.machine.starts_with("q35");
        // -kernel takes boot index 0 itself (QEMU's linuxboot option ROM)
        let b = usize::from(self.kernel.is_some());
        match self.disk_bus {
            DiskBus::VirtioBlk => {
                push(&["-device", &format!("virtio-blk-pci,drive=d0,bootindex={b}")])
            }
            DiskBus::VirtioScsi => push(&[
                "-device",
                "virtio-scsi-pci,id=scsihw0",
                "-device",
                &format!("scsi-hd,bus=scsihw0.0,drive=d0,bootindex={b}"),
            ]),
            DiskBus::Sata => {
                if q35 {
                    push(&[
                        "-device",
                        &format!("ide-hd,bus=ide.0,drive=d0,bootindex={b}"),
                    ]);
                } else {
                    push(&[
                        "-device",
                        "ahci,id=ahci0",
                        "-device",
                        &format!("ide-hd,bus=ahci0.0,drive=d0,bootindex={b}"),
                    ]);
                }
            }
        }
        // CD-ROMs: on pc the PIIX IDE (ide.1 = PVE "ide2"), on q35 the ICH9 AHCI ports
        let mut cds: Vec<PathBuf> = Vec::new();
        if !self.iso.as_os_str().is_empty() {
            cds.push(self.iso.clone());
        }
        cds.extend(self.extra_cdroms.iter().cloned());
        for (i, cd) in cds.iter().enumerate() {
            let bus = if q35 {
                format!("ide.{}", i + 2)
            } else if i == 0 {
                "ide.1,unit=0".to_string()
            } else {
                format!("ide.{},unit={}", i - 1, (i - 1) % 2)
            };
            push(&[
                "-drive",
                &format!(
                    "if=none,id=cd{i},media=cdrom,readonly=on,file={}",
                    cd.display()
                ),
                "-device",
                &format!("ide-cd,bus={bus},drive=cd{i},bootindex={}", i + 1 + b),
            ]);
        }
        match &self.net {
            Net::User { ssh_port } => push(&[
                "-netdev",
                &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
            ]),
            Net::Tap { ifname } => push(&[
                "-netdev",
                &format!("tap,id=n0,ifname={ifname},script=no,downscript=no"),
            ]),
        }
        push(&["-device", &format!("{},netdev=n0", self.nic_model)]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=qga0,path={},server=on,wait=off",
                self.qga_sock.display()
            ),
            "-device",
            "virtio-serial",
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]);
        if let Some(k) = &self.kernel {
            push(&[
                "-kernel",
                &k.kernel.to_string_lossy(),
                "-initrd",
                &k.initrd.to_string_lossy(),
                "-append",
                &k.append,
            ]);
        }
        if self.boot_menu {
            push(&["-boot", "menu=on,strict=on,reboot-timeout=1000"]);
        }
        if self.no_reboot {
            push(&["-no-reboot"]);
        }
        a
    }
}

/// A running QEMU.
pub struct Qemu {
    child: Child,
    started: Instant,
}

impl Qemu {
    /// Start `qemu-system-x86_64 ARGS`, inside network namespace `netns` if given. Output goes
    /// to `log`. Stale QMP/QGA sockets are removed first.
    pub fn spawn(spec: &Spec, netns: Option<&str>, log: &Path) -> Result<Qemu> {
        for s in [&spec.qmp_sock, &spec.qga_sock] {
            let _ = std::fs::remove_file(s);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("open {}", log.display())))?;
        let err = out.try_clone().map_err(io("clone log"))?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args(spec.args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
        // parent; it makes the kernel kill QEMU if the test process dies without Drop running.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io("spawn qemu-system-x86_64"))?;
        Ok(Qemu {
            child,
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// `true` while QEMU runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `timeout` for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pve_like_command_line() {
        let d = Path::new("/tmp/x");
        let mut s = Spec::new(
            d,
            Path::new("/i/guest.iso"),
            &d.join("disk.qcow2"),
            Net::User { ssh_port: 2222 },
        );
        let a = s.args().join(" ");
        assert!(a.contains("-accel tcg -machine pc"));
        assert!(a.contains("scsi-hd,bus=scsihw0.0,drive=d0,bootindex=0"));
        assert!(a.contains("format=qcow2"));
        assert!(a.contains("ide-cd,bus=ide.1,unit=0,drive=cd0,bootindex=1"));
        assert!(a.contains("hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(a.contains("-boot menu=on"));
        assert!(a.contains("-no-reboot"));
        s.machine = "q35".into();
        s.disk_bus = DiskBus::Sata;
        s.extra_cdroms.push("/s/seed.iso".into());
        let a = s.args().join(" ");
        assert!(a.contains("ide-hd,bus=ide.0,drive=d0,bootindex=0"));
        assert!(a.contains("ide-cd,bus=ide.2,drive=cd0,bootindex=1"));
        assert!(a.contains("ide-cd,bus=ide.3,drive=cd1,bootindex=2"));
        assert!(!a.contains("-kernel"));
        // no installer CD (an installed disk), direct kernel boot
        s.iso = PathBuf::new();
        s.kernel = Some(KernelBoot {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            append: "autoinstall ds=nocloud;s=/cidata/ console=ttyS0,115200 ---".into(),
        });
        let v = s.args();
        let a = v.join(" ");
        assert!(
            a.contains("id=cd0,media=cdrom,readonly=on,file=/s/seed.iso"),
            "{a}"
        );
        assert!(!a.contains("/i/guest.iso"), "{a}");
        assert!(a.contains("-kernel /k/vmlinuz -initrd /k/initrd"));
        // the append string is one argument (spaces and ';' inside)
        assert!(v
            .iter()
            .any(|x| x == "autoinstall ds=nocloud;s=/cidata/ console=ttyS0,115200 ---"));
    }
}
