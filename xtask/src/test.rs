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

use anyhow::{Context, Result};
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
            // e2e tests are #[ignore]d unless asked for: ask for them, with the switch they check
            cmd.arg("--include-ignored");
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
