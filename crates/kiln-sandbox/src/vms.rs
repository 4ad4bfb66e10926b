//! VM config store (`STATE/qemu-server/<vmid>.conf`, PVE's `key: value` text) and config locks.

use indexmap::IndexMap;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A VM config: key → value as stored.
pub type Conf = IndexMap<String, String>;

pub struct VmStore {
    dir: PathBuf,
    vms: Mutex<BTreeMap<u32, Conf>>,
}

/// Serialise as PVE does: description as `#` comment lines first, then `key: value` sorted.
pub fn to_text(conf: &Conf) -> String {
    let mut out = String::new();
    if let Some(d) = conf.get("description") {
        for l in d.lines() {
            out.push('#');
            out.push_str(l);
            out.push('\n');
        }
    }
    let mut keys: Vec<&String> = conf.keys().filter(|k| *k != "description").collect();
    keys.sort();
    for k in keys {
        out.push_str(&format!("{k}: {}\n", conf[k]));
    }
    out
}

pub fn parse_text(text: &str) -> Conf {
    let mut c = Conf::new();
    let mut desc = Vec::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix('#') {
            desc.push(d.to_string());
        } else if line.starts_with('[') {
            break; // snapshots / pending sections are not kept
        } else if let Some((k, v)) = line.split_once(": ") {
            c.insert(k.to_string(), v.to_string());
        }
    }
    if !desc.is_empty() {
        c.insert("description".to_string(), desc.join("\n"));
    }
    c
}

pub fn digest(conf: &Conf) -> String {
    hex::encode(Sha1::digest(to_text(conf).as_bytes()))
}

impl VmStore {
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut vms = BTreeMap::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_suffix(".conf")
                .and_then(|n| n.parse::<u32>().ok())
            {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    vms.insert(id, parse_text(&t));
                }
            }
        }
        Ok(VmStore {
            dir: dir.to_path_buf(),
            vms: Mutex::new(vms),
        })
    }

    pub fn get(&self, vmid: u32) -> Option<Conf> {
        self.vms.lock().ok()?.get(&vmid).cloned()
    }

    pub fn exists(&self, vmid: u32) -> bool {
        self.vms
            .lock()
            .map(|m| m.contains_key(&vmid))
            .unwrap_or(false)
    }

    /// Insert only if absent (atomic create). False if the VM exists.
    pub fn create(&self, vmid: u32, conf: Conf) -> bool {
        let mut m = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(&vmid) {
            return false;
        }
        let _ = std::fs::write(self.dir.join(format!("{vmid}.conf")), to_text(&conf));
        m.insert(vmid, conf);
        true
    }

    pub fn put(&self, vmid: u32, conf: Conf) {
        let mut m = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        let _ = std::fs::write(self.dir.join(format!("{vmid}.conf")), to_text(&conf));
        m.insert(vmid, conf);
    }

    /// Apply `f` to the config under the store mutex.
    pub fn update<R>(&self, vmid: u32, f: impl FnOnce(&mut Conf) -> R) -> Option<R> {
        let mut m = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.get_mut(&vmid)?;
        let r = f(c);
        let _ = std::fs::write(self.dir.join(format!("{vmid}.conf")), to_text(c));
        Some(r)
    }

    pub fn remove(&self, vmid: u32) {
        let mut m = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&vmid);
        let _ = std::fs::remove_file(self.dir.join(format!("{vmid}.conf")));
    }

    pub fn ids(&self) -> Vec<u32> {
        self.vms
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// Per-VM config locks (`/var/lock/qemu-server/lock-<vmid>.conf` on PVE).
#[derive(Default)]
pub struct Locks {
    map: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

pub fn lock_timeout_msg(vmid: u32) -> String {
    format!("can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
}

impl Locks {
    pub async fn lock(
        &self,
        vmid: u32,
        timeout: Duration,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, String> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(vmid).or_default().clone()
        };
        tokio::time::timeout(timeout, m.lock_owned())
            .await
            .map_err(|_| lock_timeout_msg(vmid))
    }
}

/// Drive keys (disks and CD-ROMs).
pub fn is_drive_key(k: &str) -> bool {
    if k == "efidisk0" || k == "tpmstate0" {
        return true;
    }
    for (base, n) in [("ide", 4u32), ("sata", 6), ("scsi", 31), ("virtio", 16)] {
        if let Some(s) = k.strip_prefix(base) {
            if s.is_empty()
                || (s.len() > 1 && s.starts_with('0'))
                || !s.bytes().all(|b| b.is_ascii_digit())
            {
                return false;
            }
            return s.parse::<u32>().map(|i| i < n).unwrap_or(false);
        }
    }
    false
}

/// The `file` (volume) part of a drive value.
pub fn drive_file(value: &str) -> String {
    for part in value.split(',') {
        if let Some(v) = part
            .strip_prefix("file=")
            .or_else(|| part.strip_prefix("volume="))
        {
            return v.to_string();
        }
        if !part.contains('=') {
            return part.to_string();
        }
    }
    String::new()
}

/// Replace the file part of a drive value (keeps the other options, file first).
pub fn with_drive_file(value: &str, file: &str) -> String {
    let mut parts = vec![file.to_string()];
    let mut first_plain = true;
    for part in value.split(',') {
        if part.starts_with("file=") || part.starts_with("volume=") {
            continue;
        }
        if !part.contains('=') && first_plain {
            first_plain = false;
            continue;
        }
        if !part.is_empty() {
            parts.push(part.to_string());
        }
    }
    parts.join(",")
}

/// Set or replace one `key=value` option of a property string.
pub fn set_opt(value: &str, key: &str, v: &str) -> String {
    let mut parts: Vec<String> = value
        .split(',')
        .filter(|p| !p.starts_with(&format!("{key}=")) && !p.is_empty())
        .map(str::to_string)
        .collect();
    parts.push(format!("{key}={v}"));
    parts.join(",")
}

pub fn remove_opt(value: &str, key: &str) -> String {
    value
        .split(',')
        .filter(|p| !p.starts_with(&format!("{key}=")))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn get_opt(value: &str, key: &str) -> Option<String> {
    value
        .split(',')
        .find_map(|p| p.strip_prefix(&format!("{key}=")).map(str::to_string))
}

pub fn is_cdrom(value: &str) -> bool {
    get_opt(value, "media").as_deref() == Some("cdrom")
}

pub fn is_cloudinit(value: &str) -> bool {
    let f = drive_file(value);
    f.ends_with(":cloudinit") || f.contains("-cloudinit")
}

/// The `enabled` flag of the `agent` property.
pub fn agent_enabled(conf: &Conf) -> bool {
    let Some(a) = conf.get("agent") else {
        return false;
    };
    let first = a.split(',').next().unwrap_or("");
    let v = first.strip_prefix("enabled=").unwrap_or(first);
    matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true")
}

/// A random MAC with Proxmox's default OUI `BC:24:11`.
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
}

/// Memory in MiB (`memory` may be `2048` or `current=2048`).
pub fn memory_mib(conf: &Conf) -> u64 {
    conf.get("memory")
        .map(|m| {
            m.trim_start_matches("current=")
                .split(',')
                .next()
                .unwrap_or("512")
                .to_string()
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or(512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_roundtrip() {
        let mut c = Conf::new();
        c.insert("name".into(), "x".into());
        c.insert("description".into(), "line1\nline2".into());
        c.insert("cores".into(), "2".into());
        let t = to_text(&c);
        assert_eq!(t, "#line1\n#line2\ncores: 2\nname: x\n");
        let back = parse_text(&t);
        assert_eq!(digest(&back), digest(&c));
    }

    #[tokio::test]
    async fn lock_timeout_message() {
        let locks = Locks::default();
        let g = locks.lock(100, Duration::from_secs(1)).await.unwrap();
        let e = locks
            .lock(100, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
        );
        drop(g);
        assert!(locks.lock(100, Duration::from_millis(50)).await.is_ok());
        assert!(locks.lock(101, Duration::from_millis(50)).await.is_ok());
    }

    #[test]
    fn drive_helpers() {
        assert!(is_drive_key("scsi0") && is_drive_key("ide2") && is_drive_key("efidisk0"));
        assert!(!is_drive_key("scsi31") && !is_drive_key("net0") && !is_drive_key("scsihw"));
        assert_eq!(
            drive_file("media=disk,size=8G,file=local-lvm:vm-1-disk-0"),
            "local-lvm:vm-1-disk-0"
        );
        assert_eq!(drive_file("local-lvm:32,discard=on"), "local-lvm:32");
        assert_eq!(
            with_drive_file("local-lvm:32,discard=on", "local-lvm:vm-1-disk-0"),
            "local-lvm:vm-1-disk-0,discard=on"
        );
        assert_eq!(
            with_drive_file("media=disk,file=a:b,size=8G", "c:d"),
            "c:d,media=disk,size=8G"
        );
        assert_eq!(set_opt("a:b,size=1G", "size", "2G"), "a:b,size=2G");
        assert!(agent_enabled(
            &[("agent".to_string(), "enabled=1,type=virtio".to_string())]
                .into_iter()
                .collect()
        ));
        assert!(is_cloudinit("local-lvm:vm-100-cloudinit,media=cdrom"));
    }
}
