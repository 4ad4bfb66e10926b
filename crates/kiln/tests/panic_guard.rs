//! Issue 11: a panicking step leaked the VM and the build exited 0. With the test hook
//! `KILN_TEST_PANIC_IN_STEP`, the real binary must report a failed step with the panic's message,
//! run the cleanups and exit 1. Loopback only, no root, no QEMU (the fault matrix covers the
//! steps that need the sandbox).

use std::process::{Command, Stdio};

#[test]
fn a_panicking_step_fails_the_build_with_exit_1_and_cleanup_runs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let hcl = format!(
        r#"
source "proxmox-iso" "t" {{
  proxmox_url = "https://127.0.0.1:{port}/api2/json"
  username    = "root@pam"
  password    = "Panic-Test-Pw-57"
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
    std::fs::write(dir.path().join("t.pkr.hcl"), hcl).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg(dir.path())
        .env("KILN_TEST_PANIC_IN_STEP", "connect")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("kiln build: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("internal error: step \"connect\" panicked"),
        "{text}"
    );
    assert!(text.contains("injected panic (test hook)"), "{text}");
    // the failed step is in the step list with its cleanup time
    assert!(
        text.lines()
            .any(|l| l.contains("connect") && l.contains("FAILED") && l.contains("cleanup")),
        "{text}"
    );
    assert!(text.contains("errored"), "{text}");
    assert!(!text.contains("Panic-Test-Pw-57"), "password in output");
}
