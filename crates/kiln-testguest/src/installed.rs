//! The cached *installed* test-guest disk: the ISO installed once onto a qcow2 by
//! `cargo xtask test-guest --installed-disk`, kept per recipe hash in
//! `target/test-guest/<hash>/installed/` (`target/test-guest/installed` links to it).
//!
//! Tests that do not test the installer boot a throwaway qcow2 *overlay* of it
//! ([`InstalledDisk::overlay`], [`InstalledDisk::spec`]): the cached disk is never written.
//!
//! The directory holds `installed.qcow2`, the SSH key pair generated for this disk (`id_ed25519`,
//! `id_ed25519.pub`) and `manifest.json` (written last: a directory without it is not a disk).

use crate::qemu::{Net, Spec};
use crate::{io, Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// File names inside the installed-disk directory (shared with `cargo xtask test-guest`).
pub const DISK_FILE: &str = "installed.qcow2";
pub const KEY_FILE: &str = "id_ed25519";
pub const MANIFEST_FILE: &str = "manifest.json";

/// The state the cached disk is in (also written into the manifest).
pub const STATE: &str = "installed, first boot pending: cloud-init (NoCloud seed written by the \
     installer) runs its normal stages on the first boot of each overlay (user, SSH host keys, hostname)";

/// A cached installed disk and how to log in to it.
#[derive(Debug, Clone)]
pub struct InstalledDisk {
    /// the directory (canonical, so overlays keep pointing at this recipe's disk)
    pub dir: PathBuf,
    /// the qcow2 to use as a backing file
    pub disk: PathBuf,
    /// the private key whose public half is in the user's authorized_keys
    pub key: PathBuf,
    /// the user created by cloud-init (passwordless sudo)
    pub user: String,
    /// the hostname cloud-init sets
    pub hostname: String,
    /// the recipe hash the disk was installed from
    pub recipe: String,
    /// the whole manifest
    pub manifest: Value,
}

/// The installed-disk directory: env `KILN_TEST_GUEST_INSTALLED`, else
/// `<workspace>/target/test-guest/installed`.
pub fn installed_dir() -> PathBuf {
    match std::env::var_os("KILN_TEST_GUEST_INSTALLED") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::workspace_root().join("target/test-guest/installed"),
    }
}

/// The cached installed disk, or [`Error::InstalledDiskMissing`] saying how to build it.
pub fn installed_disk() -> Result<InstalledDisk> {
    load(&installed_dir())
}

/// Read an installed-disk directory (see the module docs).
pub fn load(dir: &Path) -> Result<InstalledDisk> {
    let missing = |why: String| Error::InstalledDiskMissing {
        path: dir.to_path_buf(),
        why,
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| missing(format!("{}: {e}", manifest_path.display())))?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| missing(format!("{} is not JSON: {e}", manifest_path.display())))?;
    let field = |k: &str| -> Result<String> {
        manifest[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| missing(format!("{} has no string {k:?}", manifest_path.display())))
    };
    let (user, hostname, recipe) = (field("user")?, field("hostname")?, field("recipe")?);
    let dir = std::fs::canonicalize(dir).map_err(io(format!("resolve {}", dir.display())))?;
    let disk = dir.join(DISK_FILE);
    let key = dir.join(KEY_FILE);
    for f in [&disk, &key] {
        if !f.is_file() {
            return Err(missing(format!("{} is missing", f.display())));
        }
    }
    Ok(InstalledDisk {
        dir,
        disk,
        key,
        user,
        hostname,
        recipe,
        manifest,
    })
}

impl InstalledDisk {
    /// Create `path`, a qcow2 overlay backed by the cached disk (`qemu-img create -b … -F qcow2`):
    /// everything the guest writes lands in the overlay.
    pub fn overlay(&self, path: &Path) -> Result<()> {
        crate::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(&self.disk)
                .arg(path),
        )
        .map(|_| ())
    }

    /// A PVE-like QEMU spec (see [`Spec::new`]) booting a fresh overlay `dir/overlay.qcow2` of
    /// the cached disk, no installer CD, guest reboots allowed. Start it with
    /// [`crate::qemu::Qemu::spawn`]; the guest agent answers on `spec.qga_sock`.
    pub fn spec(&self, dir: &Path, net: Net) -> Result<Spec> {
        let overlay = dir.join("overlay.qcow2");
        self.overlay(&overlay)?;
        let mut spec = Spec::new(dir, Path::new(""), &overlay, net);
        spec.no_reboot = false;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_incomplete_dirs_say_how_to_build() {
        let tmp = std::env::temp_dir().join(format!("kiln-tg-installed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let e = load(&tmp).unwrap_err().to_string();
        assert!(e.contains("cargo xtask test-guest --installed-disk"), "{e}");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(
            tmp.join(MANIFEST_FILE),
            r#"{"user":"kiln","hostname":"h","recipe":"0123456789abcdef"}"#,
        )
        .unwrap();
        // manifest but no disk: still missing, naming the file
        let e = load(&tmp).unwrap_err().to_string();
        assert!(e.contains(DISK_FILE), "{e}");
        std::fs::write(tmp.join(DISK_FILE), b"").unwrap();
        std::fs::write(tmp.join(KEY_FILE), b"").unwrap();
        let d = load(&tmp).unwrap();
        assert_eq!((d.user.as_str(), d.hostname.as_str()), ("kiln", "h"));
        assert!(d.disk.is_absolute() && d.disk.ends_with(DISK_FILE));
        std::fs::write(tmp.join(MANIFEST_FILE), r#"{"user":1}"#).unwrap();
        let e = load(&tmp).unwrap_err().to_string();
        assert!(e.contains("\"user\""), "{e}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
