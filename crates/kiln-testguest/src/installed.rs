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

    /// Write `path`, a raw *cloud image* made from the cached disk: the same installed, never
    /// booted system without the NoCloud seed the installer left for its first boot. That is
    /// what Ubuntu's cloud images are: the identity (user, SSH keys, hostname, instance-id,
    /// network) comes from the hypervisor's cloud-init drive, e.g. the one PVE makes from
    /// `ciuser`/`sshkeys`/`ipconfig0`. (With the seed left in, cloud-init would keep the seed's
    /// pinned instance-id and treat every clone as the same instance.)
    ///
    /// How: `qemu-img convert -O raw`, the root partition from `sfdisk --json`, and the seed
    /// removed from the ext4 file system in place with `debugfs -w` (e2fsprogs; no mount, no boot).
    pub fn cloud_image(&self, path: &Path) -> Result<()> {
        crate::run(
            Command::new("qemu-img")
                .args(["convert", "-q", "-O", "raw"])
                .arg(&self.disk)
                .arg(path),
        )?;
        let table = crate::run(Command::new("sfdisk").arg("--json").arg(path))?;
        let offset = root_partition_offset(&table).ok_or_else(|| Error::Command {
            cmd: format!("sfdisk --json {}", path.display()),
            detail: format!("no root partition in {table}"),
        })?;
        let fs = format!("{}?offset={offset}", path.display());
        let seed = "/var/lib/cloud/seed/nocloud";
        let script = path.with_extension("debugfs");
        std::fs::write(
            &script,
            format!("rm {seed}/user-data\nrm {seed}/meta-data\nrmdir {seed}\n"),
        )
        .map_err(io(format!("write {}", script.display())))?;
        crate::run(
            Command::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&script)
                .arg(&fs),
        )?;
        let _ = std::fs::remove_file(&script);
        let left = crate::run(
            Command::new("debugfs")
                .args(["-R", "ls /var/lib/cloud/seed"])
                .arg(&fs),
        )?;
        if left.contains("nocloud") {
            return Err(Error::Command {
                cmd: format!("debugfs -w {fs}"),
                detail: format!("the NoCloud seed is still there: {left}"),
            });
        }
        Ok(())
    }
}

/// The byte offset of the partition named `root` (else the largest) in `sfdisk --json` output.
fn root_partition_offset(json: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(json).ok()?;
    let t = &v["partitiontable"];
    let sector = t["sectorsize"].as_u64().unwrap_or(512);
    let parts = t["partitions"].as_array()?;
    let root = parts
        .iter()
        .find(|p| p["name"] == "root")
        .or_else(|| parts.iter().max_by_key(|p| p["size"].as_u64().unwrap_or(0)))?;
    Some(root["start"].as_u64()? * sector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_partition_is_found_by_name_or_size() {
        let gpt = r#"{"partitiontable":{"label":"gpt","sectorsize":512,"partitions":[
            {"node":"d1","start":2048,"size":2048,"name":"bios_grub"},
            {"node":"d2","start":4096,"size":16771072,"name":"root"}]}}"#;
        assert_eq!(root_partition_offset(gpt), Some(4096 * 512));
        let unnamed = r#"{"partitiontable":{"sectorsize":4096,"partitions":[
            {"start":10,"size":5},{"start":20,"size":500},{"start":600,"size":7}]}}"#;
        assert_eq!(root_partition_offset(unnamed), Some(20 * 4096));
        assert_eq!(root_partition_offset("{}"), None);
        assert_eq!(root_partition_offset("not json"), None);
    }

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
