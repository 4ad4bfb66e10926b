//! `cargo xtask test`: the project's one test command (README, `.ci/run`).
//!
//! 1. installs the Debian packages the tests need (only the missing ones),
//! 2. builds the test-guest ISO and its installed disk in the background (cached by recipe hash;
//!    `cargo xtask test-guest --installed-disk`),
//! 3. checks formatting and clippy (`--all-targets -D warnings`),
//! 4. builds every test binary and the `kiln` binary the end-to-end tests spawn, in one `cargo test --no-run`,
//! 5. packages that binary as a `.deb` and smoke-tests it (`xtask dist --binary target/debug/kiln --smoke`),
//! 6. runs the unit and API tests in parallel, then the end-to-end tests (`#[ignore]`d unless asked for,
//!    see `kiln_testguest::require_e2e`) one at a time with `KILN_E2E=1`: they start QEMU guests under TCG
//!    and the machine has two cores,
//! 7. prints the time of each phase (the table in `docs/testing.md`).
//!
//! `--quick` skips steps 1–2, 5 and the end-to-end tier (the e2e tests then show as ignored).

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

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
        phase("system packages", &mut || {
            crate::packages::ensure(
                "xtask test",
                &crate::packages::for_tests(),
                crate::packages::Options { install: true },
            )
        })?;
    }
    // The test-guest ISO (a few minutes cold, mostly downloads, dpkg and compression) and its cached
    // installed disk (one unattended install under QEMU) build in the background while the workspace
    // compiles and the unit tests run; only the e2e tier waits for them.
    let guest = if args.quick {
        None
    } else {
        Some(BackgroundGuest::start(&root)?)
    };
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
    // One compile for everything that runs: `cargo test --no-run` builds every test binary and the
    // `kiln` binary the e2e tests spawn (target/debug/kiln) with the feature set the test build
    // unifies. A separate `cargo build` (or `-p kiln`) unifies features differently and rebuilt
    // crates twice more.
    phase("build (tests and kiln)", &mut || {
        crate::run_cmd(
            Command::new("cargo")
                .args(["test", "--workspace", "--no-run"])
                .current_dir(&root),
        )
    })?;
    if !args.quick {
        phase("dist (.deb smoke)", &mut || {
            // packages the dev binary just built (a release build would cost CI minutes), installs the
            // .deb, checks --version, man page and completions from the installed files, purges it.
            // In-process: the build may just have replaced this very xtask binary.
            crate::dist::run(crate::dist::Args {
                profile: "dev".into(),
                smoke: true,
                binary: Some(root.join("target/debug/kiln")),
            })
        })?;
    }
    // Two runs: everything that is not end-to-end in parallel (unit and API tests), then the
    // end-to-end tests one at a time (they start QEMU guests under TCG, and the machine has two cores).
    // A failure in the first run does not hide the second's results: both run, then both are reported.
    let mut failures: Vec<String> = Vec::new();
    let test_cmd = |e2e: bool| -> Command {
        let mut cmd = if e2e {
            qemu_locked("cargo")
        } else {
            Command::new("cargo")
        };
        cmd.args(["test", "--workspace", "--no-fail-fast"])
            .current_dir(&root)
            .env("KILN_BIN", root.join("target/debug/kiln"));
        cmd.arg("--");
        if e2e {
            // the #[ignore]d e2e tests only, with the switch they check
            cmd.args(["--ignored", "--test-threads=1"]);
            // Shared builds instead of one more install: the guest-only full flow (GRUB editor boot
            // command, virtio-scsi, autoinstall from an HTTP URL, ACPI power-off) is what
            // `e2e_kiln_build_on_sandbox` goes through with kiln in front of it. Run it by hand with
            // `KILN_E2E=1 cargo test -p kiln-testguest --test full_flow -- --ignored`.
            for t in SKIPPED_IN_CI {
                cmd.args(["--skip", t]);
            }
            cmd.env("KILN_E2E", "1");
            cmd.env(
                "KILN_TEST_GUEST_ISO",
                root.join("target/test-guest/guest.iso"),
            );
        } else {
            cmd.env_remove("KILN_E2E");
        }
        cmd.args(&args.test_args);
        cmd
    };
    phase("unit + API tests", &mut || {
        if let Err(e) = crate::run_cmd(&mut test_cmd(false)) {
            failures.push(format!("unit + API tests: {e:#}"));
        }
        Ok(())
    })?;
    if let Some(guest) = guest {
        let mut guest = Some(guest);
        phase("wait for test guest", &mut || match guest.take() {
            Some(g) => {
                let secs = g.wait()?;
                eprintln!("test guest: ready ({secs:.0} s in the background)");
                Ok(())
            }
            None => Ok(()),
        })?;
    }
    if !args.quick {
        phase("e2e tests (serial)", &mut || {
            if let Err(e) = crate::run_cmd(&mut test_cmd(true)) {
                failures.push(format!("e2e tests: {e:#}"));
            }
            Ok(())
        })?;
    }

    eprintln!(
        "\n=== xtask test: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    eprintln!("  {:<22} {:>8}", "phase", "seconds");
    for (name, secs) in &phases {
        eprintln!("  {name:<22} {secs:>8.1}");
    }
    eprintln!("  {:<22} {:>8.1}", "total", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// The e2e tests the suite leaves out (they show as filtered out) because a shared build covers them:
/// - the guest-only full flow: `e2e_kiln_build_on_sandbox` goes through the same with kiln in front;
/// - the installed disk booting with its own seed: `e2e_proxmox_clone_of_a_cloud_image_template`
///   boots that disk (as a cloud image, through the sandbox and PVE's cloud-init drive). Run it by
///   hand with `KILN_E2E=1 cargo test -p kiln-testguest --test installed_disk -- --ignored --nocapture`
///   (it also prints where the boot goes).
const SKIPPED_IN_CI: &[&str] = &[
    "full_flow_user_net_edit_style_virtio_scsi_acpi_poweroff",
    "overlay_of_installed_disk_boots_to_agent_ssh_and_cloud_init_done",
];

/// `xtask test-guest` running as a child process, its output in `target/test-guest-build.log`.
/// Dropped without [`BackgroundGuest::wait`] (an earlier phase failed), it is killed.
struct BackgroundGuest {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
    started: Instant,
}

impl BackgroundGuest {
    fn start(root: &std::path::Path) -> Result<BackgroundGuest> {
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let dir = root.join("target");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let log = dir.join("test-guest-build.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone().context("log file handle")?;
        eprintln!(
            "\n=== xtask test: test guest builds in the background (log: {})",
            log.display()
        );
        // the ISO, then the installed disk that e2e scenarios which do not test the installer start from
        // (the installed-disk step takes KILN_QEMU_LOCK itself, around its QEMU run only)
        let child = Command::new(exe)
            .args(["test-guest", "--installed-disk"])
            .current_dir(root)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            // its own process group, so a kill reaches build.sh, debootstrap and chroot too
            .process_group(0)
            .spawn()
            .context("starting `xtask test-guest`")?;
        Ok(BackgroundGuest {
            child: Some(child),
            log,
            started: Instant::now(),
        })
    }

    /// Waits for the build; its seconds from start, or an error with the end of its log.
    fn wait(mut self) -> Result<f64> {
        let status = match self.child.take() {
            Some(mut c) => c.wait().context("waiting for `xtask test-guest`")?,
            None => anyhow::bail!("test guest build was not started"),
        };
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        if !status.success() {
            anyhow::bail!(
                "the test-guest build failed ({status}); last lines of {}:\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        if let Some(last) = tail.last() {
            eprintln!("{last}");
        }
        Ok(self.started.elapsed().as_secs_f64())
    }
}

impl Drop for BackgroundGuest {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `program` as a command; when `KILN_QEMU_LOCK` names a lock file (developers sharing one machine set it),
/// run under `flock` on it so that at most one QEMU workload runs at a time. CI does not set it.
fn qemu_locked(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match std::env::var_os("KILN_QEMU_LOCK") {
        Some(lock) if !lock.is_empty() => {
            let mut cmd = Command::new("flock");
            cmd.arg("--verbose").arg(lock).arg(program);
            cmd
        }
        _ => Command::new(program),
    }
}

/// Holds `KILN_QEMU_LOCK` (if set) until dropped; `None` when the variable is unset.
pub fn qemu_lock() -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let Some(path) = std::env::var_os("KILN_QEMU_LOCK").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", std::path::Path::new(&path).display()))?;
    let t = Instant::now();
    let lock =
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            anyhow::anyhow!("flock {}: {e}", std::path::Path::new(&path).display())
        })?;
    eprintln!(
        "KILN_QEMU_LOCK: waited {:.0} s for {}",
        t.elapsed().as_secs_f64(),
        std::path::Path::new(&path).display()
    );
    Ok(Some(lock))
}
