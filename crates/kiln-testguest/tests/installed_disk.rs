//! The cached installed disk (`cargo xtask test-guest --installed-disk`) works: an overlay of it
//! boots, the guest agent and SSH answer with the disk's key, cloud-init's first boot completes
//! (hostname, user). Prints where the boot went (systemd-analyze, blame, critical chains) so the
//! boot-time table in docs/testing.md can be re-measured with `--nocapture`.
mod common;
use common::*;
use kiln_testguest::qemu::{Net, Qemu};
use kiln_testguest::qga::Qga;
use kiln_testguest::serial::SerialLog;
use std::time::{Duration, Instant};

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn overlay_of_installed_disk_boots_to_agent_ssh_and_cloud_init_done() {
    kiln_testguest::require_e2e();
    let disk = must(
        kiln_testguest::installed_disk(),
        "installed test-guest disk",
    );
    let tmp = workdir();
    let dir = tmp.path();
    let mut ph = Phases::new("installed-disk");
    let ssh_port = free_port();
    let spec = must(
        disk.spec(dir, Net::User { ssh_port }),
        "overlay of the installed disk",
    );
    // the cached disk is only read: the overlay is the one written
    let before = std::fs::metadata(&disk.disk).map(|m| m.modified().ok());
    ph.mark("overlay created");

    let serial = SerialLog::new(&spec.serial_log);
    let mut qemu = must(
        Qemu::spawn(&spec, None, &dir.join("qemu.log")),
        "start QEMU",
    );
    let t0 = Instant::now();
    let alive = Duration::from_secs(120);
    must(
        serial.wait_for("Linux version", 1, alive, || qemu.is_running()),
        "kernel banner on serial",
    );
    ph.mark("QEMU start -> kernel banner (BIOS + GRUB + kernel load)");

    let qga = Qga::new(&spec.qga_sock);
    let end = Instant::now() + Duration::from_secs(600);
    while qga.execute("guest-ping", None).is_err() {
        assert!(
            qemu.is_running(),
            "QEMU exited before the guest agent answered"
        );
        assert!(
            Instant::now() < end,
            "guest agent never answered\n{}",
            tail(&serial.text(), 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let to_agent = t0.elapsed().as_secs_f64();
    ph.mark("kernel -> guest agent answers guest-ping");

    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let ok = ssh_cmd(None, &disk.key, "127.0.0.1", ssh_port, &disk.user, "true")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(qemu.is_running(), "QEMU exited before SSH worked");
        assert!(
            Instant::now() < end,
            "SSH as {} with {} never worked\n{}",
            disk.user,
            disk.key.display(),
            tail(&serial.text(), 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let to_ssh = t0.elapsed().as_secs_f64();
    ph.mark("guest agent -> SSH login with the disk's key");

    let ssh = |cmd: &str| ssh_run(None, &disk.key, "127.0.0.1", ssh_port, &disk.user, cmd);
    let (rc, out) = ssh("cloud-init status --wait");
    assert!(
        rc == 0 && out.contains("status: done"),
        "cloud-init status --wait: rc {rc}, {out:?}"
    );
    let to_ci = t0.elapsed().as_secs_f64();
    ph.mark("cloud-init status --wait = done");
    let checks: &[(&str, &str)] = &[
        ("hostname", disk.hostname.as_str()),
        ("id -un", disk.user.as_str()),
        ("sudo -n true && echo sudo-ok", "sudo-ok"),
        ("python3 --version", "Python 3"),
        ("systemctl is-active qemu-guest-agent ssh", "active\nactive"),
        // first boot of this overlay: cloud-init ran its stages now, not at install time
        ("sudo cloud-init query v1.instance_id", "kiln-installed"),
        (
            "test -s /etc/ssh/ssh_host_ed25519_key.pub && echo host-key",
            "host-key",
        ),
    ];
    for (cmd, want) in checks {
        let (rc, out) = ssh(cmd);
        assert!(
            rc == 0 && out.contains(want),
            "`{cmd}`: rc {rc}, output {out:?}, wanted {want:?}"
        );
    }
    ph.mark("checks: hostname, user, sudo, python3, agent + sshd, cloud-init instance");

    // where the boot went (printed for docs/testing.md; not asserted)
    for cmd in [
        "systemd-analyze",
        "systemd-analyze blame | head -n 25",
        "systemd-analyze critical-chain qemu-guest-agent.service",
        "systemd-analyze critical-chain ssh.service",
        "sudo cloud-init analyze show | grep -E 'Finished|Total Time|Starting stage' | head -n 20",
    ] {
        let (_, out) = ssh(&format!("{cmd} 2>&1"));
        println!("[installed-disk] $ {cmd}\n{out}\n");
    }
    println!(
        "[installed-disk] QEMU start -> agent {to_agent:.1} s, -> SSH {to_ssh:.1} s, -> cloud-init done {to_ci:.1} s"
    );

    let _ = ssh("sudo poweroff");
    let st = qemu.wait_exit(Duration::from_secs(180));
    assert!(
        st.is_some(),
        "guest did not power off\n{}",
        tail(&serial.text(), 20)
    );
    ph.mark("poweroff -> QEMU exited");
    let after = std::fs::metadata(&disk.disk).map(|m| m.modified().ok());
    assert_eq!(
        before.ok().flatten(),
        after.ok().flatten(),
        "the cached disk {} was written; only overlays may be",
        disk.disk.display()
    );
    ph.print();
}
