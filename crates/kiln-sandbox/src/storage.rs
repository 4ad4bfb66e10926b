//! The two storages of the sandbox node, as files under `STATE/storage/`:
//! * `local` (type `dir`; content iso, vztmpl, snippets, import) — `local/template/iso/…`,
//!   `local/template/cache/…`, `local/snippets/…`, `local/import/…`;
//! * `local-lvm` (type `lvmthin`; content images, rootdir) — one qcow2 file per volume:
//!   `local-lvm/vm-100-disk-0.qcow2`, `base-100-disk-0.qcow2`, `vm-100-cloudinit.qcow2`.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokio::process::Command;

pub const LOCAL: &str = "local";
pub const LVM: &str = "local-lvm";

pub struct Storage {
    pub root: PathBuf,
}

/// The content types of a storage.
pub fn contents(storage: &str) -> Option<&'static [&'static str]> {
    match storage {
        LOCAL => Some(&["iso", "vztmpl", "snippets", "import"]),
        LVM => Some(&["images", "rootdir"]),
        _ => None,
    }
}

pub fn storage_type(storage: &str) -> &'static str {
    if storage == LVM {
        "lvmthin"
    } else {
        "dir"
    }
}

/// Which subdirectory of `local` holds a content type.
fn local_subdir(content: &str) -> Option<&'static str> {
    match content {
        "iso" => Some("template/iso"),
        "vztmpl" => Some("template/cache"),
        "snippets" => Some("snippets"),
        "import" => Some("import"),
        _ => None,
    }
}

/// Does `filename` carry the extension PVE requires for `content`?
pub fn extension_ok(content: &str, filename: &str) -> bool {
    let f = filename.to_ascii_lowercase();
    match content {
        "iso" => f.ends_with(".iso") || f.ends_with(".img"),
        "vztmpl" => [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2", ".tgz"]
            .iter()
            .any(|e| f.ends_with(e)),
        "import" => [".ova", ".ovf", ".qcow2", ".raw", ".vmdk", ".img"]
            .iter()
            .any(|e| f.ends_with(e)),
        "snippets" => true,
        _ => false,
    }
}

/// Split a volume id `storage:name`.
pub fn split_volid(volid: &str) -> Option<(&str, &str)> {
    let (s, n) = volid.split_once(':')?;
    if s.is_empty() || n.is_empty() {
        return None;
    }
    Some((s, n))
}

/// The VM a disk volume belongs to (`vm-100-disk-0`, `base-100-disk-1`, `vm-100-cloudinit`).
pub fn volume_owner(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("vm-")
        .or_else(|| name.strip_prefix("base-"))?;
    rest.split('-').next()?.parse().ok()
}

pub async fn qemu_img(args: &[&str]) -> Result<String, String> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .map_err(|e| {
            format!("cannot run qemu-img (install the Debian package 'qemu-utils'): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Virtual size of an image in bytes.
pub async fn virtual_size(path: &Path) -> Option<u64> {
    let p = path.to_str()?;
    let out = qemu_img(&["info", "--output=json", "-U", p]).await.ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v["virtual-size"].as_u64()
}

/// PVE's size notation for config values (`32G`, `528K`, `4M`).
pub fn size_str(bytes: u64) -> String {
    const K: u64 = 1024;
    for (unit, div) in [
        ("T", K * K * K * K),
        ("G", K * K * K),
        ("M", K * K),
        ("K", K),
    ] {
        if bytes >= div && bytes % div == 0 {
            return format!("{}{unit}", bytes / div);
        }
    }
    bytes.to_string()
}

/// Parse `32`, `32G`, `512M`, `10.5G`, `+1G` (relative marker stripped by the caller) → bytes.
pub fn parse_size(s: &str, default_unit: u64) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = &s[i..];
            let m: u64 = match unit.trim_end_matches("iB").trim_end_matches('B') {
                "K" | "k" => 1 << 10,
                "M" | "m" => 1 << 20,
                "G" | "g" => 1 << 30,
                "T" | "t" => 1 << 40,
                _ => return None,
            };
            (&s[..i], m)
        }
        None => (s, default_unit),
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult as f64) as u64)
}

impl Storage {
    pub fn new(state_dir: &Path) -> std::io::Result<Self> {
        let root = state_dir.join("storage");
        for d in [
            "local/template/iso",
            "local/template/cache",
            "local/snippets",
            "local/import",
            "local-lvm",
        ] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(Storage { root })
    }

    pub fn exists(&self, storage: &str) -> bool {
        contents(storage).is_some()
    }

    /// Directory where `content` of `storage` lives.
    pub fn content_dir(&self, storage: &str, content: &str) -> Option<PathBuf> {
        match storage {
            LOCAL => Some(self.root.join(LOCAL).join(local_subdir(content)?)),
            LVM if content == "images" || content == "rootdir" => Some(self.root.join(LVM)),
            _ => None,
        }
    }

    /// Volume id → file path (whether it exists or not).
    pub fn path_of(&self, volid: &str) -> Option<PathBuf> {
        let (storage, name) = split_volid(volid)?;
        if name.contains("..") {
            return None;
        }
        match storage {
            LOCAL => {
                let (content, file) = name.split_once('/')?;
                if file.contains('/') {
                    return None;
                }
                Some(
                    self.root
                        .join(LOCAL)
                        .join(local_subdir(content)?)
                        .join(file),
                )
            }
            LVM => {
                if name.contains('/') {
                    return None;
                }
                Some(self.root.join(LVM).join(format!("{name}.qcow2")))
            }
            _ => None,
        }
    }

    /// Existing volume → path.
    pub fn resolve(&self, volid: &str) -> Option<PathBuf> {
        self.path_of(volid).filter(|p| p.exists())
    }

    /// Normalise a `{volume}` path parameter: full volid or relative to `storage`.
    pub fn full_volid(storage: &str, volume: &str) -> String {
        if volume.contains(':') {
            volume.to_string()
        } else {
            format!("{storage}:{volume}")
        }
    }

    /// First free `vm-<vmid>-disk-<n>` name on local-lvm.
    pub fn free_disk_name(&self, vmid: u32) -> String {
        for n in 0.. {
            let vm = format!("vm-{vmid}-disk-{n}");
            let base = format!("base-{vmid}-disk-{n}");
            if !self.root.join(LVM).join(format!("{vm}.qcow2")).exists()
                && !self.root.join(LVM).join(format!("{base}.qcow2")).exists()
            {
                return vm;
            }
        }
        unreachable!("infinite range")
    }

    /// Allocate a new qcow2 volume on `storage` (must hold images). Returns the volid.
    pub async fn alloc(
        &self,
        storage: &str,
        vmid: u32,
        name: Option<&str>,
        bytes: u64,
    ) -> Result<String, String> {
        if !self.exists(storage) {
            return Err(format!("storage '{storage}' does not exist"));
        }
        if storage != LVM {
            return Err(format!(
                "storage '{storage}' does not support content-type 'images'"
            ));
        }
        let name = match name {
            Some(n) => {
                if self.root.join(LVM).join(format!("{n}.qcow2")).exists() {
                    return Err(format!("volume '{storage}:{n}' already exists"));
                }
                n.to_string()
            }
            None => self.free_disk_name(vmid),
        };
        let volid = format!("{storage}:{name}");
        let path = self
            .path_of(&volid)
            .ok_or_else(|| format!("illegal name '{name}'"))?;
        let p = path.to_string_lossy().into_owned();
        qemu_img(&["create", "-q", "-f", "qcow2", &p, &bytes.to_string()]).await?;
        Ok(volid)
    }

    /// Full copy of a volume to a new volume of `vmid` (clone). Returns the new volid.
    pub async fn copy_volume(
        &self,
        src: &str,
        storage: &str,
        vmid: u32,
        name: Option<&str>,
    ) -> Result<String, String> {
        let from = self
            .resolve(src)
            .ok_or_else(|| format!("volume '{src}' does not exist"))?;
        if storage != LVM {
            return Err(format!(
                "storage '{storage}' does not support content-type 'images'"
            ));
        }
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| self.free_disk_name(vmid));
        let volid = format!("{storage}:{name}");
        let to = self
            .path_of(&volid)
            .ok_or_else(|| format!("illegal name '{name}'"))?;
        let (f, t) = (
            from.to_string_lossy().into_owned(),
            to.to_string_lossy().into_owned(),
        );
        qemu_img(&["convert", "-q", "-O", "qcow2", &f, &t]).await?;
        Ok(volid)
    }

    /// Rename a volume (`vm-100-disk-0` → `base-100-disk-0`). Returns the new volid.
    pub fn rename(&self, volid: &str, new_name: &str) -> Result<String, String> {
        let (storage, _) =
            split_volid(volid).ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
        let from = self
            .resolve(volid)
            .ok_or_else(|| format!("volume '{volid}' does not exist"))?;
        let new = format!("{storage}:{new_name}");
        let to = self
            .path_of(&new)
            .ok_or_else(|| format!("illegal name '{new_name}'"))?;
        std::fs::rename(&from, &to).map_err(|e| format!("rename volume '{volid}' failed: {e}"))?;
        Ok(new)
    }

    pub fn delete(&self, volid: &str) -> Result<(), String> {
        let path = self
            .resolve(volid)
            .ok_or_else(|| format!("volume '{volid}' does not exist"))?;
        std::fs::remove_file(&path).map_err(|e| format!("removing {volid} failed: {e}"))
    }

    /// Content listing of one storage.
    pub async fn list(
        &self,
        storage: &str,
        content: Option<&str>,
        vmid: Option<u32>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let Some(kinds) = contents(storage) else {
            return out;
        };
        for kind in kinds {
            if content.is_some_and(|c| c != *kind) {
                continue;
            }
            let Some(dir) = self.content_dir(storage, kind) else {
                continue;
            };
            if storage == LVM && *kind == "rootdir" {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let fname = e.file_name().to_string_lossy().into_owned();
                if fname.starts_with('.') {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let ctime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                if storage == LVM {
                    let Some(name) = fname.strip_suffix(".qcow2") else {
                        continue;
                    };
                    let owner = volume_owner(name);
                    if vmid.is_some() && owner != vmid {
                        continue;
                    }
                    let size = virtual_size(&e.path()).await.unwrap_or(meta.len());
                    let mut v = json!({
                        "volid": format!("{storage}:{name}"),
                        "content": "images",
                        "format": "raw",
                        "size": size,
                        "used": meta.len(),
                        "ctime": ctime,
                    });
                    if let Some(o) = owner {
                        v["vmid"] = json!(o);
                    }
                    out.push(v);
                } else {
                    if vmid.is_some() {
                        continue;
                    }
                    let format = match *kind {
                        "iso" => "iso".to_string(),
                        "vztmpl" => "tzst".to_string(),
                        _ => fname.rsplit('.').next().unwrap_or("raw").to_string(),
                    };
                    out.push(json!({
                        "volid": format!("{storage}:{kind}/{fname}"),
                        "content": kind,
                        "format": format,
                        "size": meta.len(),
                        "ctime": ctime,
                    }));
                }
            }
        }
        out
    }

    /// `statvfs` of the state directory: (total, avail) bytes.
    pub fn space(&self) -> (u64, u64) {
        let Ok(c) = std::ffi::CString::new(self.root.to_string_lossy().as_bytes()) else {
            return (0, 0);
        };
        let mut s: libc::statvfs = unsafe_zeroed_statvfs();
        #[allow(unsafe_code)]
        // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
        if rc != 0 {
            return (0, 0);
        }
        let bs = s.f_frsize;
        (s.f_blocks * bs, s.f_bavail * bs)
    }

    pub fn status_json(&self, storage: &str) -> Value {
        let (total, avail) = self.space();
        json!({
            "storage": storage,
            "type": storage_type(storage),
            "content": contents(storage).map(|c| c.join(",")).unwrap_or_default(),
            "active": 1,
            "enabled": 1,
            "shared": 0,
            "total": total,
            "avail": avail,
            "used": total.saturating_sub(avail),
            "used_fraction": if total > 0 { (total - avail) as f64 / total as f64 } else { 0.0 },
        })
    }
}

fn unsafe_zeroed_statvfs() -> libc::statvfs {
    #[allow(unsafe_code)]
    // SAFETY: statvfs is a plain-old-data C struct; all-zero is a valid value.
    unsafe {
        std::mem::zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_str(32 << 30), "32G");
        assert_eq!(size_str(528 << 10), "528K");
        assert_eq!(parse_size("32", 1 << 30), Some(32 << 30));
        assert_eq!(parse_size("10G", 1), Some(10 << 30));
        assert_eq!(parse_size("512M", 1), Some(512 << 20));
        assert_eq!(parse_size("0.5", 1 << 30), Some(512 << 20));
    }

    #[test]
    fn paths() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::new(dir.path()).unwrap();
        assert!(s
            .path_of("local:iso/x.iso")
            .unwrap()
            .ends_with("local/template/iso/x.iso"));
        assert!(s
            .path_of("local-lvm:vm-100-disk-0")
            .unwrap()
            .ends_with("local-lvm/vm-100-disk-0.qcow2"));
        assert!(s.path_of("local:iso/../../etc").is_none());
        assert!(s.path_of("nfs:iso/x.iso").is_none());
        assert_eq!(volume_owner("base-9000-disk-1"), Some(9000));
        assert!(extension_ok("iso", "a.ISO"));
        assert!(!extension_ok("iso", "a.txt"));
    }
}
