//! kiln-testguest: the Ubuntu-like autoinstall test guest and small helpers to drive it in
//! end-to-end tests.
//!
//! * [`iso_path`]: where the ISO is (`KILN_TEST_GUEST_ISO`, else
//!   `<workspace>/target/test-guest/guest.iso`, built by `cargo xtask test-guest`).
//! * [`qmp::Qmp`]: a minimal QMP client (`send-key`, `query-status`, `system_powerdown`, `quit`)
//!   and [`keys`]: Packer-style boot_command → QMP qcodes.
//! * [`qga::Qga`]: a minimal guest-agent client (`guest-sync-delimited`, then commands).
//! * [`netns::NetNs`]: a network namespace with bridge + tap + dnsmasq DHCP, deleted on drop.
//! * [`http::SeedServer`]: a tiny HTTP server serving `user-data`/`meta-data`, logging requests.
//! * [`serial::SerialLog`]: wait for a marker in QEMU's serial log file.
//! * [`qemu::Qemu`]: a QEMU child process killed on drop (and when the test process dies).
//! * [`installed::installed_disk`]: the cached installed disk (`cargo xtask test-guest
//!   --installed-disk`), its SSH key and user; [`installed::InstalledDisk::spec`] boots an overlay.
//!
//! What the guest needs from QEMU is documented in `GUEST.md` next to this crate.
//! All helpers are blocking (std threads): call them from `spawn_blocking` in async tests.

pub mod http;
pub mod installed;
pub mod keys;
pub mod netns;
pub mod qemu;
pub mod qga;
pub mod qmp;
pub mod secrets;
pub mod serial;

use std::path::{Path, PathBuf};

/// Errors of the test-guest helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("test-guest ISO not found at {path}: run `cargo xtask test-guest` (or set KILN_TEST_GUEST_ISO)")]
    IsoMissing { path: PathBuf },
    #[error("installed test-guest disk not usable at {path} ({why}): run `cargo xtask test-guest --installed-disk` (or set KILN_TEST_GUEST_INSTALLED)")]
    InstalledDiskMissing { path: PathBuf, why: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP/QGA protocol: {0}")]
    Protocol(String),
    #[error("timed out after {secs:.0} s waiting for {what}")]
    Timeout { what: String, secs: f64 },
    #[error("command `{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    #[error("boot command: {0}")]
    BootCommand(String),
}

pub use installed::{installed_disk, InstalledDisk};

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// The test-guest ISO: env `KILN_TEST_GUEST_ISO`, else `<workspace>/target/test-guest/guest.iso`.
/// Errors with "run `cargo xtask test-guest`" when the file does not exist.
pub fn iso_path() -> Result<PathBuf> {
    let path = match std::env::var_os("KILN_TEST_GUEST_ISO") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/test-guest/guest.iso"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::IsoMissing { path })
    }
}

/// The `#[ignore]` reason every end-to-end test carries: without `KILN_E2E=1` the test runner reports
/// it as *ignored*, never as `ok`. `cargo xtask test` sets `KILN_E2E=1` and passes `--include-ignored`.
pub const E2E_IGNORE: &str = "e2e: needs KILN_E2E=1 (cargo xtask test)";

/// `true` when end-to-end tests are switched on (`KILN_E2E=1`; `KILN_E2E=0` or unset means off).
pub fn e2e_on() -> bool {
    std::env::var("KILN_E2E").is_ok_and(|v| v == "1")
}

/// The first line of every end-to-end test (which is also `#[ignore]`d, see [`E2E_IGNORE`]).
///
/// An e2e test only runs when asked for with `--include-ignored`/`--ignored`; if it is asked for while
/// `KILN_E2E` is not `1`, it fails with an explanation instead of passing without having tested anything.
#[track_caller]
pub fn require_e2e() {
    if !e2e_on() {
        panic!(
            "this is an end-to-end test (root, QEMU, the test guest): it runs only with KILN_E2E=1 \
             (`cargo xtask test` sets it and passes --include-ignored); KILN_E2E is {:?}",
            std::env::var("KILN_E2E").ok()
        );
    }
}

/// Run a command, returning stdout; a non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut std::process::Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(io(format!("spawn {shown}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            cmd: shown,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_path_honours_env_and_explains_missing() {
        // a path that does not exist: clear message with the xtask hint
        std::env::set_var("KILN_TEST_GUEST_ISO", "/nonexistent/kiln/guest.iso");
        let e = iso_path().unwrap_err().to_string();
        std::env::remove_var("KILN_TEST_GUEST_ISO");
        assert!(e.contains("/nonexistent/kiln/guest.iso"), "{e}");
        assert!(e.contains("cargo xtask test-guest"), "{e}");
    }
}
