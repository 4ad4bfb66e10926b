//! The sandbox network end to end: a network namespace made by the test, the bridge + dnsmasq of
//! `SandboxNetwork`, a tap device per NIC, and the test-guest ISO whose installer asks for a DHCP
//! lease. Run only with KILN_E2E=1; needs root, iproute2, dnsmasq-base, QEMU and the test guest
//! (`cargo xtask test-guest`).

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{short_tempdir, test_guest_iso};
use kiln_qemu::net::{NetError, NetOptions, Netns, SandboxNetwork};
use kiln_qemu::vm::{StopReason, VmEvent};
use kiln_qemu::{Accel, RunningVm, VmSpec};

const CHILD_ENV: &str = "KILN_QEMU_NETNS_CHILD";

/// Run test `name` of this binary again inside a fresh network namespace.
fn rerun_in_netns(name: &str) {
    let ns = Netns::create(&format!("kiln-qemu-{}", std::process::id())).expect("ip netns add");
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(exe)
        .args([
            "--exact",
            name,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("ip netns exec");
    eprintln!("--- child stdout\n{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("--- child stderr\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child test failed: {}", out.status);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child did not run the test"
    );
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn refuses_the_root_namespace() {
    kiln_testguest::require_e2e();
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = short_tempdir();
    let opts = NetOptions::new("kqtest0", "10.78.0.0/24".parse().unwrap(), dir.path());
    match SandboxNetwork::setup(opts) {
        Err(e @ NetError::RootNamespace) => assert!(e.to_string().contains("namespace")),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("set up a bridge in the host's root namespace"),
    }
    assert!(!Path::new("/sys/class/net/kqtest0").exists());
}

/// PVE key names for one character typed in GRUB.
fn key_for(c: char) -> String {
    match c {
        'a'..='z' | '0'..='9' => c.to_string(),
        ' ' => "spc".into(),
        '=' => "equal".into(),
        ';' => "semicolon".into(),
        ':' => "shift-semicolon".into(),
        '/' => "slash".into(),
        '\\' => "backslash".into(),
        '.' => "dot".into(),
        '-' => "minus".into(),
        _ => panic!("no key for {c:?}"),
    }
}

async fn wait_serial(log: &Path, needle: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn test_guest_gets_a_dhcp_lease_on_the_sandbox_bridge() {
    const NAME: &str = "test_guest_gets_a_dhcp_lease_on_the_sandbox_bridge";
    kiln_testguest::require_e2e();
    if std::env::var_os(CHILD_ENV).is_none() {
        assert!(
            test_guest_iso().is_some(),
            "test-guest ISO missing: run `cargo xtask test-guest` or set KILN_TEST_GUEST_ISO"
        );
        rerun_in_netns(NAME);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(in_netns());
}

async fn in_netns() {
    let iso = test_guest_iso().expect("test-guest ISO");
    let dir = short_tempdir();
    let subnet = "10.77.0.0/24".parse().unwrap();
    let mut net = SandboxNetwork::setup(NetOptions::new("vmbr0", subnet, &dir.path().join("net")))
        .expect("sandbox network");
    assert_eq!(net.gateway().to_string(), "10.77.0.1");
    let mac = "BC:24:11:4B:11:01";
    let spec = VmSpec {
        vmid: 9001,
        name: "netns-test".into(),
        config: [
            ("memory", "1024"),
            ("cores", "1"),
            ("ide2", &format!("{},media=cdrom", iso.display())),
            ("net0", &format!("virtio={mac},bridge=vmbr0,firewall=0")),
            ("boot", "order=ide2;net0"),
            ("serial0", "socket"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        volume_path: Box::new(|_| None),
        run_dir: dir.path().join("run"),
        accel: Accel::Tcg,
    };
    let t0 = Instant::now();
    let vm = RunningVm::start(spec).await.expect("start VM");
    let mut events = vm.subscribe();
    assert!(
        Path::new("/sys/class/net/tap9001i0/master").exists(),
        "tap on the bridge"
    );
    let log = vm.serial_log();
    assert!(
        wait_serial(
            &log,
            "will be executed automatically",
            Duration::from_secs(90)
        )
        .await,
        "GRUB menu never appeared on serial0"
    );
    eprintln!("GRUB menu after {:.1}s", t0.elapsed().as_secs_f64());
    // edit the menu entry like a Packer boot_command; the seed server answers every file with a
    // `#cloud-config` that has no `autoinstall:` key, so the installer takes its lease, fetches
    // the seed, rejects it and stays up with a shell on the serial console
    serve_seed("10.77.0.1:8099");
    let mut keys: Vec<String> = ["e", "down", "down", "down", "end"]
        .map(String::from)
        .to_vec();
    keys.extend(
        " autoinstall ds=nocloud-net\\;s=http://10.77.0.1:8099/"
            .chars()
            .map(key_for),
    );
    keys.push("f10".into());
    for k in &keys {
        vm.send_key(k).await.unwrap_or_else(|e| panic!("{k}: {e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    let lease = loop {
        if let Some(l) = net.lease_for(mac) {
            break l;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no DHCP lease; serial:\n{}",
            String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "lease {} after {:.1}s",
        lease.ip,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(lease.mac, mac.to_ascii_lowercase());
    let (lo, hi) = subnet_range(&net);
    assert!(lease.ip >= lo && lease.ip <= hi, "{lease:?}");

    // the installer rejects the seed and offers a shell on the serial console: `poweroff -f`
    // there must stop the VM (no restart)
    assert!(
        wait_serial(&log, "stays up", Duration::from_secs(90)).await,
        "installer did not fail as expected; serial:\n{}",
        serial_tail(&log)
    );
    let sock = vm.paths().serial_socket(0);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("serial0 socket");
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(b"\npoweroff -f\n").unwrap();
    assert!(
        vm.wait_stopped(Duration::from_secs(60)).await,
        "guest poweroff did not stop the VM"
    );
    let mut reason = None;
    while let Ok(e) = events.try_recv() {
        if let VmEvent::Stopped { reason: r } = e {
            reason = Some(r);
        }
    }
    assert_eq!(reason, Some(StopReason::GuestShutdown));
    eprintln!("guest powered off after {:.1}s", t0.elapsed().as_secs_f64());
    drop(vm);
    net.teardown().unwrap();
    assert!(!Path::new("/sys/class/net/vmbr0").exists());
    assert!(!Path::new("/sys/class/net/tap9001i0").exists());
}

fn subnet_range(net: &SandboxNetwork) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    net.subnet().dhcp_range()
}

fn serial_tail(log: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    let start = text.len().saturating_sub(3000);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// A tiny HTTP server answering every request with a `#cloud-config` without `autoinstall:`.
fn serve_seed(addr: &str) {
    use std::io::{BufRead, BufReader};
    let l = std::net::TcpListener::bind(addr).expect("bind seed server");
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(&c);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = "#cloud-config\nhostname: not-an-autoinstall\n";
            let _ = (&c).write_all(
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
}
