//! `cargo xtask test-guest --installed-disk`: install the test-guest ISO once onto a qcow2 and
//! cache it per recipe hash, so tests that do not test the installer start from an installed system
//! (each on a throwaway overlay, see `kiln_testguest::installed`).
//!
//! How: `casper/vmlinuz` + `casper/initrd` are extracted from the ISO (xorriso -osirrox) and booted
//! with `-kernel/-initrd/-append "autoinstall ds=nocloud;s=/cidata/ console=ttyS0,115200 ---"` (no
//! typing at GRUB), the seed is a `cidata` CD with an identity and an SSH key generated for this disk,
//! the installer powers the VM off (`-no-reboot`). Output: `target/test-guest/<hash>/installed/`
//! (`installed.qcow2`, `id_ed25519{,.pub}`, `manifest.json` written last, the install's serial log),
//! `target/test-guest/installed` links to it. Stale hashes go with their ISO directory.

use anyhow::{bail, Context, Result};
use kiln_testguest::installed::{DISK_FILE, KEY_FILE, MANIFEST_FILE, STATE};
use kiln_testguest::qemu::{KernelBoot, Net, Qemu, Spec};
use kiln_testguest::serial::SerialLog;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The user and hostname cloud-init creates on the installed disk.
pub const USER: &str = "kiln";
pub const HOSTNAME: &str = "kiln-installed";
/// Virtual size of the installed disk (overlays can be grown with `qemu-img resize`).
const SIZE: &str = "8G";
/// The whole install under TCG takes a few minutes; this bounds a hung installer.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1200);

/// Build the installed disk for `hash` (whose ISO is `base/<hash>/guest.iso`) unless cached.
/// Returns the stable directory `target/test-guest/installed`.
pub fn ensure(base: &Path, hash: &str, force: bool) -> Result<PathBuf> {
    let out = base.join(hash);
    let dir = out.join("installed");
    let link = base.join("installed");
    if dir.join(MANIFEST_FILE).is_file() && dir.join(DISK_FILE).is_file() && !force {
        point_link_to(&link, hash)?;
        println!(
            "installed test-guest disk: cached ({}, recipe {hash})",
            dir.display()
        );
        return Ok(link);
    }
    let iso = out.join("guest.iso");
    if !iso.is_file() {
        bail!(
            "no test-guest ISO at {} (build it first: cargo xtask test-guest)",
            iso.display()
        );
    }
    let work = out.join("installed.tmp");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    println!(
        "installed test-guest disk: installing recipe {hash} under QEMU (TCG, a few minutes) ..."
    );
    let started = Instant::now();
    let install_secs = {
        // developers sharing a machine: take turns with other QEMU workloads (see xtask test)
        let _lock = crate::test::qemu_lock()?;
        install(&iso, &work)?
    };
    let manifest = serde_json::json!({
        "recipe": hash,
        "state": STATE,
        "user": USER,
        "hostname": HOSTNAME,
        "disk": DISK_FILE,
        "format": "qcow2",
        "virtual_size": SIZE,
        "key": KEY_FILE,
        "firmware": "seabios (bios_grub + ext4 root, GRUB i386-pc)",
        "build_seconds": round1(started.elapsed().as_secs_f64()),
        "install_seconds": round1(install_secs),
        "built_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "disk_bytes": std::fs::metadata(work.join(DISK_FILE)).map(|m| m.len()).unwrap_or(0),
    });
    std::fs::write(
        work.join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .context("write manifest.json")?;
    // the cached disk is only ever a backing file: make it read-only
    set_mode(&work.join(DISK_FILE), 0o444)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&work, &dir)
        .with_context(|| format!("rename {} → {}", work.display(), dir.display()))?;
    point_link_to(&link, hash)?;
    println!(
        "installed test-guest disk: built {} in {:.1} s (install {:.1} s), {:.1} MiB",
        dir.join(DISK_FILE).display(),
        started.elapsed().as_secs_f64(),
        install_secs,
        manifest["disk_bytes"].as_u64().unwrap_or(0) as f64 / 1048576.0
    );
    Ok(link)
}

/// `base/installed` → `<hash>/installed` (relative, like `guest.iso`).
fn point_link_to(link: &Path, hash: &str) -> Result<()> {
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).with_context(|| format!("remove {}", link.display()))?;
    }
    std::os::unix::fs::symlink(Path::new(hash).join("installed"), link)
        .with_context(|| format!("symlink {}", link.display()))
}

/// Install the ISO onto `work/installed.qcow2`; returns the seconds from QEMU start to power-off.
fn install(iso: &Path, work: &Path) -> Result<f64> {
    // 1. kernel + installer initramfs out of the ISO
    let (kernel, initrd) = (work.join("vmlinuz"), work.join("initrd"));
    run(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .arg("-extract")
        .arg("/casper/vmlinuz")
        .arg(&kernel)
        .arg("-extract")
        .arg("/casper/initrd")
        .arg(&initrd))
    .context("extract casper/vmlinuz and casper/initrd from the ISO (xorriso)")?;
    // 2. an SSH key for this disk, and the NoCloud seed on a `cidata` CD
    let key = work.join(KEY_FILE);
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "kiln-installed-test-guest",
            "-f",
        ])
        .arg(&key))
    .context("generate the disk's SSH key (ssh-keygen, package openssh-client)")?;
    let public = std::fs::read_to_string(work.join(format!("{KEY_FILE}.pub")))
        .context("read the public key")?;
    let seed = work.join("seed");
    std::fs::create_dir_all(&seed)?;
    std::fs::write(seed.join("user-data"), user_data(public.trim()))?;
    std::fs::write(seed.join("meta-data"), format!("instance-id: {HOSTNAME}\n"))?;
    let seed_iso = work.join("seed.iso");
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o"])
        .arg(&seed_iso)
        .arg(seed.join("user-data"))
        .arg(seed.join("meta-data")))
    .context("write the cidata seed ISO (xorriso)")?;
    // 3. the disk and the install run
    let disk = work.join(DISK_FILE);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg(SIZE))
    .context("qemu-img create (package qemu-utils)")?;
    // a NIC with DHCP (user-mode, nothing forwarded that matters) so the installer's DHCP step
    // does not wait for one
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("pick a free loopback port")?;
    let mut spec = Spec::new(work, iso, &disk, Net::User { ssh_port: port });
    spec.extra_cdroms.push(seed_iso.clone());
    spec.boot_menu = false;
    spec.no_reboot = true;
    spec.kernel = Some(KernelBoot {
        kernel: kernel.clone(),
        initrd: initrd.clone(),
        append: "autoinstall ds=nocloud;s=/cidata/ console=ttyS0,115200 ---".into(),
    });
    let serial = SerialLog::new(&spec.serial_log);
    let started = Instant::now();
    let mut qemu =
        Qemu::spawn(&spec, None, &work.join("qemu.log")).context("start qemu-system-x86_64")?;
    let status = qemu.wait_exit(INSTALL_TIMEOUT);
    let secs = started.elapsed().as_secs_f64();
    let text = serial.text();
    if status.is_none() {
        qemu.kill();
        bail!(
            "the installer did not power off within {} s; serial log {}:\n{}",
            INSTALL_TIMEOUT.as_secs(),
            spec.serial_log.display(),
            tail(&text, 30)
        );
    }
    drop(qemu);
    if !text.contains("TESTGUEST-INSTALL-COMPLETE") {
        bail!(
            "the install did not complete (QEMU exited: {status:?}); serial log {}:\n{}",
            spec.serial_log.display(),
            tail(&text, 30)
        );
    }
    for f in [&kernel, &initrd, &seed_iso] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(&seed);
    for s in [&spec.qmp_sock, &spec.qga_sock] {
        let _ = std::fs::remove_file(s);
    }
    let _ = std::fs::rename(&spec.serial_log, work.join("install-serial.log"));
    Ok(secs)
}

fn user_data(pubkey: &str) -> String {
    format!(
        "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    hostname: {HOSTNAME}\n    \
         username: {USER}\n  ssh:\n    install-server: true\n    allow-pw: false\n    \
         authorized-keys:\n      - {pubkey}\n"
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    kiln_testguest::run(cmd)
        .map(|_| ())
        .map_err(anyhow::Error::from)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_an_autoinstall_config_with_the_key() {
        let ud = user_data("ssh-ed25519 AAAA kiln");
        assert!(ud.starts_with("#cloud-config\nautoinstall:\n  version: 1\n"));
        assert!(ud.contains(&format!("username: {USER}")));
        assert!(ud.contains(&format!("hostname: {HOSTNAME}")));
        assert!(ud.contains("      - ssh-ed25519 AAAA kiln\n"));
    }
}
