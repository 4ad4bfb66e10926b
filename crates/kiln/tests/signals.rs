//! Issue 11: SIGTERM and SIGHUP behave as SIGINT — `kiln build` cleans up and exits 130, and
//! `kiln sandbox serve` stops cleanly. Loopback only, no root, no QEMU.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn kiln() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
    assert!(st.map(|s| s.success()).unwrap_or(false), "kill {sig}");
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A template whose PVE never answers: the build hangs in `connect` until a signal arrives.
fn hanging_template(dir: &std::path::Path, port: u16) {
    let hcl = format!(
        r#"
source "proxmox-iso" "t" {{
  proxmox_url = "https://127.0.0.1:{port}/api2/json"
  username    = "root@pam"
  password    = "Sig-Test-Pw-91"
  node        = "pve"
  boot_iso {{
    iso_file = "local:iso/x.iso"
  }}
  ssh_username = "root"
}}
build {{
  sources = ["source.proxmox-iso.t"]
}}
"#
    );
    std::fs::write(dir.join("t.pkr.hcl"), hcl).unwrap_or_else(|e| panic!("{e}"));
}

fn build_interrupted_by(sig: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // accepts TCP and never answers the TLS handshake
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    hanging_template(dir.path(), port);
    let mut child = Command::new(kiln())
        .args(["build"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kiln build: {e}"));
    // wait for the connection attempt: the build is inside `connect`
    let (_conn, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, sig);
    let code = wait(&mut child, Duration::from_secs(20));
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    assert_eq!(code, Some(130), "{sig}: exit code; output:\n{out}");
    assert!(
        out.contains("Cancelling build after receiving interrupt"),
        "{sig}: {out}"
    );
    assert!(out.contains("Step timings"), "{sig}: cleanup ran: {out}");
    assert!(!out.contains("Sig-Test-Pw-91"), "{sig}: password in output");
}

#[test]
fn sigterm_cancels_the_build_like_ctrl_c() {
    build_interrupted_by("-TERM");
}

#[test]
fn sighup_cancels_the_build_like_ctrl_c() {
    build_interrupted_by("-HUP");
}

#[test]
fn sigint_cancels_the_build() {
    build_interrupted_by("-INT");
}

/// `kiln sandbox serve` had no cleanup on SIGHUP.
#[test]
fn sighup_stops_the_sandbox_with_its_cleanup() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().join("state");
    let mut child = Command::new(kiln())
        .args([
            "sandbox",
            "serve",
            "--network",
            "off",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--state")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kiln sandbox serve: {e}"));
    let mut line = String::new();
    if let Some(o) = child.stdout.take() {
        let _ = BufReader::new(o).read_line(&mut line);
    }
    assert!(line.contains("\"url\""), "ready line: {line}");
    // the generated password is random (OS RNG), never all zeros
    let cred = std::fs::read_to_string(state.join("credentials.json")).unwrap_or_default();
    assert!(cred.contains("\"password\""), "{cred}");
    assert!(!cred.contains(&"0".repeat(32)), "all-zero password: {cred}");
    signal(&child, "-HUP");
    assert_eq!(wait(&mut child, Duration::from_secs(20)), Some(130));
    let events = std::fs::read_to_string(state.join("events.jsonl")).unwrap_or_default();
    assert!(
        events
            .lines()
            .last()
            .unwrap_or_default()
            .contains("\"stop\""),
        "the sandbox did not run its shutdown: {events}"
    );
}
