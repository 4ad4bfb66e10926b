//! `cargo xtask test`: the project's one test command (README, `.ci/run`).
//!
//! 1. installs the Debian packages the tests need (only the missing ones),
//! 2. builds the test-guest ISO (cached by recipe hash; `cargo xtask test-guest`),
//! 3. checks formatting and clippy (`--all-targets -D warnings`),
//! 4. builds the `kiln` binary the end-to-end tests spawn,
//! 5. runs every test tier with `KILN_E2E=1`: unit tests, sandbox API tests and end-to-end tests with the
//!    real guest. End-to-end tests run one at a time: they start QEMU guests under TCG and the machine has
//!    two cores.
//!
//! `--quick` skips steps 1–2 and the end-to-end tier (they then print `skipped: …`).

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::Instant;

/// Debian packages the test tiers need. Each line says who needs it.
pub const PACKAGES: &[&str] = &[
    // QEMU guests (sandbox, test guest), UEFI firmware, disk images
    "qemu-system-x86",
    "qemu-utils",
    "ovmf",
    // building the test-guest ISO (the xtask also installs what it misses)
    "debootstrap",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "cpio",
    "busybox-static",
    "e2fsprogs",
    "dosfstools",
    "fdisk",
    "zstd",
    "bc",
    // sandbox network: namespaces, bridge, DHCP
    "iproute2",
    "dnsmasq-base",
    // communicator and provisioners
    "openssh-client",
    "openssh-server",
    "ansible",
    // the real Packer 1.6.6 the sandbox must satisfy
    "packer",
    // firewall backends
    "iptables",
    "nftables",
    "ufw",
    // misc tools used by tests
    "python3",
    "socat",
    "curl",
    "ca-certificates",
    "kmod",
];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only unit and API tests: no package install, no test guest, no end-to-end tier.
    #[arg(long)]
    quick: bool,
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Extra arguments passed to `cargo test` after `--` (e.g. a test name filter).
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    let started = Instant::now();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut phase = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        eprintln!("\n=== xtask test: {name}");
        let t = Instant::now();
        f()?;
        phases.push((name.to_string(), t.elapsed().as_secs_f64()));
        Ok(())
    };

    if !args.quick {
        phase("system packages", &mut || install_packages(PACKAGES))?;
        phase("test guest", &mut || {
            let exe = std::env::current_exe().context("locating the xtask binary")?;
            crate::run_cmd(Command::new(exe).arg("test-guest").current_dir(&root))
        })?;
    }
    if !args.no_lint {
        phase("cargo fmt --check", &mut || {
            crate::run_cmd(
                Command::new("cargo")
                    .args(["fmt", "--all", "--check"])
                    .current_dir(&root),
            )
        })?;
        phase("cargo clippy", &mut || {
            crate::run_cmd(
                Command::new("cargo")
                    .args([
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ])
                    .current_dir(&root),
            )
        })?;
    }
    phase("build kiln", &mut || {
        crate::run_cmd(
            Command::new("cargo")
                .args(["build", "--workspace", "--bins"])
                .current_dir(&root),
        )
    })?;
    phase("tests", &mut || {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--workspace", "--no-fail-fast"])
            .current_dir(&root);
        cmd.arg("--");
        if !args.quick {
            // end-to-end tests start QEMU guests: one at a time on a 2-core machine
            cmd.arg("--test-threads=1");
            cmd.env("KILN_E2E", "1");
            let iso = root.join("target/test-guest/guest.iso");
            cmd.env("KILN_TEST_GUEST_ISO", iso);
        } else {
            cmd.env_remove("KILN_E2E");
        }
        cmd.args(&args.test_args);
        cmd.env("KILN_BIN", root.join("target/debug/kiln"));
        crate::run_cmd(&mut cmd)
    })?;

    eprintln!(
        "\n=== xtask test: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (name, secs) in &phases {
        eprintln!("  {name:<20} {secs:>7.1} s");
    }
    Ok(())
}

/// Installs the packages of `wanted` that dpkg does not report as installed.
pub fn install_packages(wanted: &[&str]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("all {} packages present", wanted.len());
        return Ok(());
    }
    eprintln!("installing: {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing packages: {}\n  hint: run as root, or install them first: sudo apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    let install = |update_first: bool| -> Result<()> {
        if update_first {
            crate::run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        }
        crate::run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    // a fresh machine may have no package lists yet: update once and retry
    install(false).or_else(|_| install(true))
}

fn is_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
