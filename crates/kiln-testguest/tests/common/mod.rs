//! Shared end-to-end flow for the test-guest tests: boot the ISO under QEMU (TCG) like PVE
//! would, type the boot command over QMP, serve the seed over HTTP, and follow the install.
#![allow(dead_code)]

use kiln_testguest::http::SeedServer;
use kiln_testguest::netns::NetNs;
use kiln_testguest::qemu::{DiskBus, Net, Qemu, Spec};
use kiln_testguest::qga::Qga;
use kiln_testguest::qmp::{Qmp, KEY_INTERVAL};
use kiln_testguest::serial::SerialLog;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// "packer", hashed with `openssl passwd -6 -salt kilntestsalt packer`.
pub const PASSWORD_HASH: &str =
    "$6$kilntestsalt$X/WzK8sWB0DR2TE60aKAjJDzTFdfy/AqS1FVyWmUG7NYygw.U/FpvbHimW49HC7u6oWwEzF96YrAsZHcPnCM50";

/// The GRUB menu is drawn and reads keys (GRUB's countdown line on the VGA screen).
pub const GRUB_READY: &str = "will be executed automatically";

pub fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Phase timer: prints each phase as it ends and a table at the end.
pub struct Phases {
    start: Instant,
    last: Instant,
    rows: Vec<(String, f64, f64)>,
    name: String,
}

impl Phases {
    pub fn new(name: &str) -> Phases {
        let now = Instant::now();
        Phases {
            start: now,
            last: now,
            rows: Vec::new(),
            name: name.to_string(),
        }
    }
    pub fn mark(&mut self, what: &str) {
        let now = Instant::now();
        let d = (now - self.last).as_secs_f64();
        let t = (now - self.start).as_secs_f64();
        println!("[{}] {t:7.1} s  (+{d:5.1} s)  {what}", self.name);
        self.rows.push((what.to_string(), d, t));
        self.last = now;
    }
    pub fn print(&self) {
        println!("\n[{}] phase timings under TCG:", self.name);
        println!("| phase | duration s | at s |\n|---|---|---|");
        for (w, d, t) in &self.rows {
            println!("| {w} | {d:.1} | {t:.1} |");
        }
    }
}

pub fn ssh_keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    must(
        kiln_testguest::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
                .arg(&key),
        ),
        "ssh-keygen (openssh-client)",
    );
    let public = must(
        std::fs::read_to_string(dir.join("id_ed25519.pub")),
        "read public key",
    );
    (key, public.trim().to_string())
}

/// A good autoinstall user-data: identity, ssh, late-commands (one via curtin in-target) and a
/// user-data section for the installed system's cloud-init.
pub fn good_user_data(pubkey: &str, hostname: &str) -> String {
    format!(
        r#"#cloud-config
autoinstall:
  version: 1
  locale: en_US.UTF-8
  keyboard:
    layout: us
  identity:
    hostname: {hostname}
    username: ubuntu
    password: '{PASSWORD_HASH}'
  ssh:
    install-server: true
    allow-pw: true
    authorized-keys:
      - {pubkey}
  storage:
    layout:
      name: direct
  late-commands:
    - echo 'late-commands ran' > /target/root/late-commands.txt
    - curtin in-target --target=/target -- sh -c 'echo in-target > /root/in-target.txt'
  user-data:
    users:
      - name: packer
        passwd: '{PASSWORD_HASH}'
        lock_passwd: false
        shell: /bin/bash
        sudo: ALL=(ALL) NOPASSWD:ALL
        ssh_authorized_keys:
          - {pubkey}
    write_files:
      - path: /etc/kiln-from-user-data
        content: "written by cloud-init from autoinstall.user-data\n"
"#
    )
}

pub fn seed_files(user_data: &str) -> HashMap<String, Vec<u8>> {
    let mut f = HashMap::new();
    f.insert("user-data".to_string(), user_data.as_bytes().to_vec());
    f.insert(
        "meta-data".to_string(),
        b"instance-id: kiln-test-1\n".to_vec(),
    );
    f
}

pub fn free_port() -> u16 {
    must(
        std::net::TcpListener::bind("127.0.0.1:0"),
        "bind a free port",
    )
    .local_addr()
    .map(|a| a.port())
    .unwrap_or(2222)
}

pub fn create_disk(path: &Path, size: &str) {
    if path.extension().is_some_and(|e| e == "qcow2") {
        must(
            kiln_testguest::run(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2"])
                    .arg(path)
                    .arg(size),
            ),
            "qemu-img create (qemu-utils)",
        );
    } else {
        must(
            kiln_testguest::run(Command::new("truncate").args(["-s", size]).arg(path)),
            "truncate",
        );
    }
}

/// Boot command of the Ubuntu 22.04/24.04 corpus templates, GRUB editor style.
pub fn edit_style(ds: &str) -> String {
    format!("e<down><down><down><end> autoinstall {ds}<f10>")
}

/// GRUB console style (`c`, then linux/initrd/boot). GRUB reads no keys while `linux` and `initrd` load
/// their files (slow over AHCI under TCG), so each is followed by `<wait5>`, as templates for slow hosts do.
pub fn console_style(ds: &str) -> String {
    format!(
        "c<wait>linux /casper/vmlinuz --- autoinstall {ds}<enter><wait5>initrd /casper/initrd<enter><wait5>boot<enter>"
    )
}

/// Start QEMU, wait for the GRUB menu on the VGA screen, type `boot_command` at Packer's pace.
pub fn boot_and_type(
    spec: &Spec,
    netns: Option<&str>,
    dir: &Path,
    boot_command: &str,
    ph: &mut Phases,
) -> (Qemu, SerialLog) {
    let serial = SerialLog::new(&spec.serial_log);
    let qemu = must(
        Qemu::spawn(spec, netns, &dir.join("qemu.log")),
        "start QEMU",
    );
    let mut qmp = must(
        Qmp::connect(&spec.qmp_sock, Duration::from_secs(30)),
        "QMP connect",
    );
    let scratch = dir.join("vga.bin");
    must(
        qmp.wait_screen(GRUB_READY, &scratch, Duration::from_secs(60)),
        "GRUB menu on the VGA screen",
    );
    ph.mark("QEMU start -> GRUB menu on the VGA screen");
    // Packer's pace (5 ms): the guest must keep up like a real Ubuntu GRUB on PVE
    let n = must(
        qmp.type_boot_command(boot_command, KEY_INTERVAL),
        "type boot command",
    );
    ph.mark(&format!(
        "typed boot command ({n} keys, {KEY_INTERVAL:?} apart)"
    ));
    (qemu, serial)
}

pub fn ssh_cmd(
    netns: Option<&NetNs>,
    key: &Path,
    host: &str,
    port: u16,
    user: &str,
    remote: &str,
) -> Command {
    let mut c = match netns {
        Some(ns) => ns.command("ssh"),
        None => Command::new("ssh"),
    };
    c.args([
        "-q",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "BatchMode=yes",
        "-i",
    ])
    .arg(key)
    .args(["-p", &port.to_string(), &format!("{user}@{host}"), remote]);
    c
}

/// Run over SSH, retrying connection failures (rc 255: cloud-init restarts sshd right after it
/// first answers). Returns (rc, stdout).
pub fn ssh_run(
    netns: Option<&NetNs>,
    key: &Path,
    host: &str,
    port: u16,
    user: &str,
    remote: &str,
) -> (i32, String) {
    let mut last = (255, String::new());
    for _ in 0..8 {
        let out = must(
            ssh_cmd(netns, key, host, port, user, remote).output(),
            "run ssh (openssh-client)",
        );
        last = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        );
        if last.0 != 255 {
            return last;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    last
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// QMP `system_powerdown` (ACPI power button, what PVE's "shutdown" does without agent)
    AcpiButton,
    /// `sudo shutdown -P now` over SSH (Packer's shutdown_command)
    ShutdownCommand,
}

pub struct FullFlow {
    pub name: &'static str,
    pub machine: &'static str,
    pub disk_bus: DiskBus,
    pub nic_model: &'static str,
    pub use_netns: bool,
    pub console_style: bool,
    /// `{url}` is replaced by the seed URL
    pub ds: &'static str,
    pub poweroff: PowerOff,
    /// boot with UEFI (OVMF) instead of SeaBIOS
    pub uefi: bool,
}

/// The whole flow: ISO boot -> boot command -> seed fetched -> install -> restart on the disk ->
/// QGA -> SSH -> cloud-init done -> checks -> power off.
pub fn full_flow(f: &FullFlow) {
    let iso = must(kiln_testguest::iso_path(), "test-guest ISO");
    let tmp = workdir();
    let dir = tmp.path();
    let mut ph = Phases::new(f.name);
    let (key, pubkey) = ssh_keypair(dir);
    let hostname = "kiln-guest";
    let ns = if f.use_netns {
        Some(must(NetNs::create("tg"), "create network namespace"))
    } else {
        None
    };
    let (bind, guest_host): (SocketAddr, String) = match &ns {
        Some(_) => (
            SocketAddr::from((NetNs::GATEWAY, 0)),
            NetNs::GATEWAY.to_string(),
        ),
        None => (SocketAddr::from(([127, 0, 0, 1], 0)), "10.0.2.2".into()),
    };
    let server = must(
        SeedServer::start(
            bind,
            seed_files(&good_user_data(&pubkey, hostname)),
            ns.as_ref().map(|n| n.name()),
        ),
        "seed HTTP server",
    );
    let url = format!("http://{guest_host}:{}/", server.addr().port());
    let ds = f.ds.replace("{url}", &url);
    let disk = dir.join("disk.qcow2");
    create_disk(&disk, "8G");
    let ssh_port = free_port();
    let net = match &ns {
        Some(_) => Net::Tap {
            ifname: NetNs::TAP.into(),
        },
        None => Net::User { ssh_port },
    };
    let mut spec = Spec::new(dir, &iso, &disk, net);
    spec.machine = f.machine.into();
    spec.disk_bus = f.disk_bus;
    spec.nic_model = f.nic_model.into();
    if f.uefi {
        must(spec.use_ovmf(dir), "OVMF");
    }
    ph.mark("prepared (key, seed server, disk)");

    let cmd = if f.console_style {
        console_style(&ds)
    } else {
        edit_style(&ds)
    };
    let nsname = ns.as_ref().map(|n| n.name().to_string());
    let (mut qemu, serial) = boot_and_type(&spec, nsname.as_deref(), dir, &cmd, &mut ph);
    let alive_timeout = Duration::from_secs(120);
    must(
        serial.wait_for("TESTGUEST-INSTALLER-START", 1, alive_timeout, || {
            qemu.is_running()
        }),
        "installer start",
    );
    ph.mark("boot command -> installer /init");
    must(
        serial.wait_for("] cmdline: ", 1, alive_timeout, || qemu.is_running()),
        "installer logs its command line",
    );
    let cmdline = serial.line_with("] cmdline: ").unwrap_or_default();
    let want = ds.replace("\\;", ";").replace(['"', '\''], "");
    assert!(
        cmdline.replace(['"', '\''], "").contains(&want),
        "kernel command line {cmdline:?} lacks {want:?}"
    );
    must(
        serial.wait_until(
            "seed fetched",
            alive_timeout,
            || qemu.is_running(),
            |_| server.served("/user-data") && server.served("/meta-data"),
        ),
        "user-data fetched",
    );
    ph.mark("user-data + meta-data fetched over HTTP");
    let done = serial.wait_until(
        "install complete",
        Duration::from_secs(600),
        || qemu.is_running(),
        |t| t.contains("TESTGUEST-INSTALL-COMPLETE") || t.contains("TESTGUEST-INSTALL-FAILED"),
    );
    if done.is_err() || serial.text().contains("TESTGUEST-INSTALL-FAILED") {
        panic!(
            "install did not complete: {:?}\nserial tail:\n{}",
            done.err(),
            tail(&serial.text(), 40)
        );
    }
    ph.mark("install (partition, unpack, grub, seed, late-commands)");
    // -no-reboot: the guest's reboot ends QEMU; start it again on the same disk (recipe §4a)
    let st = qemu.wait_exit(Duration::from_secs(60));
    assert!(st.is_some(), "QEMU did not exit on the installer's reboot");
    drop(qemu);
    spec.no_reboot = false;
    let banners = serial.count("Linux version");
    let mut qemu = must(
        Qemu::spawn(&spec, nsname.as_deref(), &dir.join("qemu.log")),
        "restart QEMU",
    );
    must(
        serial.wait_for("Linux version", banners + 1, alive_timeout, || {
            qemu.is_running()
        }),
        "installed kernel",
    );
    ph.mark("restart -> installed kernel boots from disk (ISO attached)");

    // QGA: answers, and (tap) tells the guest's address, as Packer's proxmox builder learns it
    let qga = Qga::new(&spec.qga_sock);
    let end = Instant::now() + Duration::from_secs(600);
    let guest_ip = loop {
        if let Ok(ifs) = qga.ipv4_addresses() {
            let ip = ifs
                .iter()
                .filter(|(n, _)| n != "lo")
                .flat_map(|(_, ips)| ips.iter().cloned())
                .next();
            if !f.use_netns || ip.is_some() {
                println!("[{}] QGA interfaces: {ifs:?}", f.name);
                break ip;
            }
        }
        assert!(qemu.is_running(), "QEMU exited before QGA answered");
        assert!(
            Instant::now() < end,
            "QGA never answered guest-network-get-interfaces\n{}",
            tail(&serial.text(), 30)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    ph.mark("QGA answers guest-network-get-interfaces");

    let (host, port) = match &ns {
        Some(_) => (guest_ip.clone().unwrap_or_default(), 22),
        None => ("127.0.0.1".to_string(), ssh_port),
    };
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let ok = ssh_cmd(ns.as_ref(), &key, &host, port, "packer", "true")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(qemu.is_running(), "QEMU exited before SSH worked");
        assert!(
            Instant::now() < end,
            "SSH to {host}:{port} never worked\n{}",
            tail(&serial.text(), 30)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    ph.mark("SSH login with the generated key (user from autoinstall.user-data)");
    let (rc, out) = ssh_run(
        ns.as_ref(),
        &key,
        &host,
        port,
        "packer",
        "cloud-init status --wait",
    );
    assert!(
        rc == 0 && out.contains("status: done"),
        "cloud-init status --wait: rc {rc}, {out:?}"
    );
    ph.mark("cloud-init status --wait = done");
    let checks: &[(&str, &str, &str)] = &[
        ("packer", "python3 --version", "Python 3"),
        ("packer", "sudo -n true && echo sudo-ok", "sudo-ok"),
        ("ubuntu", "id -un", "ubuntu"), // autoinstall.identity user + ssh.authorized-keys
        ("packer", "hostname", hostname),
        (
            "packer",
            "cat /etc/kiln-from-user-data",
            "written by cloud-init",
        ),
        (
            "packer",
            "sudo cat /root/late-commands.txt",
            "late-commands ran",
        ),
        ("packer", "sudo cat /root/in-target.txt", "in-target"),
        (
            "packer",
            "systemctl is-active qemu-guest-agent ssh",
            "active\nactive",
        ),
        ("packer", "findmnt -n -o SOURCE /", "/dev/"),
    ];
    for (user, cmd, want) in checks {
        let (rc, out) = ssh_run(ns.as_ref(), &key, &host, port, user, cmd);
        assert!(
            rc == 0 && out.contains(want),
            "`{cmd}` as {user}: rc {rc}, output {out:?}, wanted {want:?}"
        );
    }
    ph.mark("checks: python3, sudo, identity user, hostname, write_files, late-commands");

    match f.poweroff {
        PowerOff::AcpiButton => {
            let mut qmp = must(
                Qmp::connect(&spec.qmp_sock, Duration::from_secs(10)),
                "QMP connect",
            );
            must(qmp.system_powerdown(), "system_powerdown");
        }
        PowerOff::ShutdownCommand => {
            let _ = ssh_run(
                ns.as_ref(),
                &key,
                &host,
                port,
                "packer",
                "sudo shutdown -P now",
            );
        }
    }
    let st = qemu.wait_exit(Duration::from_secs(180));
    assert!(
        st.is_some(),
        "guest did not power off after {:?}\n{}",
        f.poweroff,
        tail(&serial.text(), 20)
    );
    ph.mark(&format!("{:?} -> QEMU exited", f.poweroff));
    if let Some(ns) = &ns {
        assert!(
            ns.leases().contains("192.168.77."),
            "no dnsmasq lease: {}",
            ns.dnsmasq_log()
        );
    }
    ph.print();
}

/// A temp work dir; kept (and printed) when `KILN_TESTGUEST_KEEP=1`, for debugging.
pub fn workdir() -> tempfile::TempDir {
    let mut t = must(tempfile::tempdir(), "tempdir");
    if std::env::var("KILN_TESTGUEST_KEEP").is_ok_and(|v| v == "1") {
        t.disable_cleanup(true);
        println!("work dir kept: {}", t.path().display());
    }
    t
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
