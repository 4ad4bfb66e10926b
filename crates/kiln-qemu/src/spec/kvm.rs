//! The KVM probe: does `/dev/kvm` open, does `KVM_CREATE_VM` work, and does a real KVM guest
//! run? This is the only code of the spec module that uses `unsafe` (the ioctl) or starts a
//! process; the command-line builders stay pure.

use super::esc;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_probe_sector_is_a_boot_sector() {
        let s = kvm_probe_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        assert_eq!(&s[..3], &[0xBA, 0xF8, 0x03]);
    }
}
