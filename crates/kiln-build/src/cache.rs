//! Cached install layers (`kiln build --cache-install`): the key over everything that determines
//! the installed-but-unprovisioned system, the hidden base template that holds it on PVE
//! (`kiln-cache-<12 hex>`, tag `kiln-cache`, the full key and a readable summary in its
//! description), and listing/pruning those bases (`kiln cache ls|prune`).
//!
//! The key covers: the boot ISO's identity (its checksum; without one, the sha256 of a local file,
//! or `iso_file`'s volume id and size), every additional ISO (generated ones by their `cd_files`
//! bytes and `cd_content`), the HTTP content (`http_directory` files' bytes, `http_content`), the
//! boot command as written (not rendered: `{{ .HTTPIP }}`/port change per build), `boot_wait`, every
//! hardware setting sent at create (without name, vmid, description, tags and pool), the
//! cloud-init drive settings, the communicator user and kiln's version. Provisioners are not in it.

use crate::params::{create_params, IsoAttach};
use kiln_config::model::{IsoConfig, SourceRun};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name prefix of a base template (`kiln-cache-` + the first 12 hex digits of the key).
pub const NAME_PREFIX: &str = "kiln-cache-";
/// The PVE tag every base carries (PVE tag syntax: lowercase letters, digits, `-`, `_`, `+`, `.`).
pub const TAG: &str = "kiln-cache";
/// First line of a base's description (how `kiln cache ls` recognises one).
pub const DESCRIPTION_HEAD: &str =
    "kiln install cache: a hidden base template (kiln build --cache-install); list and prune with `kiln cache ls|prune`";
/// Version of the canonical serialisation (part of the hashed text).
const FORMAT: &str = "kiln-install-cache v1";

/// The inputs of the key, in a fixed order: (name, canonical value, readable summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInputs {
    pub inputs: Vec<(String, String, String)>,
}

/// A computed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// 64 hex digits.
    pub hex: String,
    pub inputs: KeyInputs,
}

impl CacheKey {
    /// `kiln-cache-<first 12 hex>`.
    pub fn base_name(&self) -> String {
        format!("{NAME_PREFIX}{}", &self.hex[..12])
    }

    /// `sha256:<hex>`.
    pub fn display(&self) -> String {
        format!("sha256:{}", self.hex)
    }

    /// The base template's description: the head line, the full key, where it came from, the
    /// input summary.
    pub fn description(&self, build: &str, template_dir: &Path, created: u64) -> String {
        let mut s = format!(
            "{DESCRIPTION_HEAD}\nkey: {}\nbuild: {build}\ntemplate: {}\ncreated: {created}\ninputs:\n",
            self.display(),
            template_dir.display()
        );
        for (name, _, summary) in &self.inputs.inputs {
            s.push_str(&format!("  {name}: {summary}\n"));
        }
        s
    }
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn short(h: &str) -> String {
    format!("sha256:{}", &h[..h.len().min(16)])
}

/// Files under `dir` (recursively, symlinks followed), as (relative path with `/`, absolute path),
/// sorted by relative path.
fn tree_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
        let rd = std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let p = e.path();
            let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if meta.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, p));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// sha256 of a file, streamed.
pub fn file_sha256(p: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Digest of named byte strings: `name\0sha256(bytes)\n` for each, in the given order.
fn digest_of(entries: &[(String, String)]) -> String {
    let mut text = String::new();
    for (n, h) in entries {
        text.push_str(n);
        text.push('\0');
        text.push_str(h);
        text.push('\n');
    }
    sha_hex(text.as_bytes())
}

/// A directory tree's files (relative path and content digest).
fn tree_digest(dir: &Path) -> Result<(String, usize), String> {
    let files = tree_files(dir)?;
    let mut entries = Vec::new();
    for (rel, p) in &files {
        entries.push((rel.clone(), file_sha256(p)?));
    }
    Ok((digest_of(&entries), files.len()))
}

/// `cd_files` (files, directories, `*` globs in the file name, as the CD builder resolves them)
/// and `cd_content`.
fn cd_digest(iso: &IsoConfig, base: &Path) -> Result<(String, usize), String> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for f in &iso.cd_files {
        let p = if Path::new(f).is_absolute() {
            PathBuf::from(f)
        } else {
            base.join(f)
        };
        let matches: Vec<PathBuf> = if f.contains('*') {
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            let pat = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("*")
                .to_string();
            let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| format!("cd_files {}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|x| {
                    x.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| crate::cdiso::glob_match(&pat, n))
                })
                .collect();
            v.sort();
            v
        } else {
            vec![p]
        };
        for m in matches {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if m.is_dir() {
                for (rel, p) in tree_files(&m)? {
                    entries.push((format!("files/{name}/{rel}"), file_sha256(&p)?));
                }
            } else {
                entries.push((
                    format!("files/{name}"),
                    file_sha256(&m).map_err(|e| format!("cd_files {e}"))?,
                ));
            }
        }
    }
    for (k, v) in &iso.cd_content {
        entries.push((format!("content/{k}"), sha_hex(v.as_bytes())));
    }
    entries.push((
        "label".into(),
        sha_hex(iso.cd_label.clone().unwrap_or_default().as_bytes()),
    ));
    Ok((digest_of(&entries), entries.len() - 1))
}

/// How the ISO's identity is known (canonical value, summary).
fn iso_identity(
    iso: &IsoConfig,
    template_dir: &Path,
    iso_file_size: &dyn Fn(&str) -> Option<u64>,
) -> Result<(String, String), String> {
    if !iso.cd_files.is_empty() || !iso.cd_content.is_empty() {
        let (d, n) = cd_digest(iso, template_dir)?;
        return Ok((
            format!("cd:{d}"),
            format!("generated CD, {n} file(s), {}", short(&d)),
        ));
    }
    if let Some(f) = iso.iso_file.as_deref().filter(|f| !f.is_empty()) {
        let size = iso_file_size(f).ok_or_else(|| {
            format!("iso_file {f}: its size is read from Proxmox VE at build time")
        })?;
        return Ok((
            format!("iso_file:{f}:size={size}"),
            format!("iso_file {f} ({size} bytes)"),
        ));
    }
    let urls: Vec<String> = iso
        .iso_url
        .iter()
        .chain(iso.iso_urls.iter())
        .filter(|u| !u.is_empty())
        .cloned()
        .collect();
    // a digest identifies the ISO exactly (the plan holds it parsed, in its canonical `algo:hex` form)
    if let Some(kiln_config::model::checksum::ChecksumSpec::Digest(d)) = &iso.iso_checksum {
        return Ok((format!("checksum:{d}"), format!("iso_checksum {d}")));
    }
    let checksum = iso
        .iso_checksum
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    // no usable checksum: hash the local file itself
    let base = crate::steps::iso::base_dir(template_dir, &urls);
    for u in &urls {
        if let Some(p) = crate::steps::iso::local_path(u, &base).filter(|p| p.is_file()) {
            let d = file_sha256(&p)?;
            return Ok((
                format!("content:sha256:{d}"),
                format!("sha256 of {} (no iso_checksum)", p.display()),
            ));
        }
    }
    Ok((
        format!("url:{}|checksum:{checksum}", urls.join(" ")),
        format!(
            "the URL(s) {} and iso_checksum {checksum:?} (no content digest: set iso_checksum for an exact key)",
            urls.join(" ")
        ),
    ))
}

/// The hardware settings sent at create, without name, vmid, description, tags and pool (ISO
/// slots are in it, their volumes are not: those are in the ISO identities).
pub fn hardware_params(run: &SourceRun) -> Result<Vec<(String, String)>, String> {
    let cfg = &run.config;
    let mut isos = vec![IsoAttach::boot(&cfg.boot_iso, "ISO".into())];
    for a in &cfg.additional_iso_files {
        isos.push(IsoAttach::additional(a, "ISO".into()));
    }
    Ok(create_params(cfg, 0, "", &isos)?
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "name" | "description" | "tags" | "pool"))
        .collect())
}

/// The inputs of a `proxmox-iso` run's key. `iso_file_size` answers the size of an `iso_file`
/// volume (from PVE at build time; `None` offline).
pub fn key_inputs(
    run: &SourceRun,
    template_dir: &Path,
    iso_file_size: &dyn Fn(&str) -> Option<u64>,
) -> Result<KeyInputs, String> {
    let cfg = &run.config;
    let mut v: Vec<(String, String, String)> = Vec::new();
    let version = env!("CARGO_PKG_VERSION");
    v.push(("kiln".into(), version.into(), version.into()));
    let (c, s) = iso_identity(&cfg.boot_iso, template_dir, iso_file_size)?;
    v.push(("boot_iso".into(), c, s));
    for (i, a) in cfg.additional_iso_files.iter().enumerate() {
        let (c, s) = iso_identity(a, template_dir, iso_file_size)
            .map_err(|e| format!("additional_iso_files #{}: {e}", i + 1))?;
        v.push((format!("additional_iso_files.{i}"), c, s));
    }
    // the HTTP content as the server serves it
    let dir = cfg
        .http_directory
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|d| {
            let p = Path::new(d);
            if p.is_absolute() || !template_dir.join(p).is_dir() {
                p.to_path_buf()
            } else {
                template_dir.join(p)
            }
        });
    match dir {
        Some(d) => {
            let (h, n) = tree_digest(&d).map_err(|e| format!("http_directory: {e}"))?;
            v.push((
                "http_directory".into(),
                h.clone(),
                format!("{}: {n} file(s), {}", d.display(), short(&h)),
            ));
        }
        None => v.push(("http_directory".into(), "none".into(), "none".into())),
    }
    let sorted: BTreeMap<&String, &String> = cfg.http_content.iter().collect();
    let entries: Vec<(String, String)> = sorted
        .iter()
        .map(|(k, c)| ((*k).clone(), sha_hex(c.as_bytes())))
        .collect();
    let h = digest_of(&entries);
    let paths: Vec<&str> = sorted.keys().map(|k| k.as_str()).collect();
    v.push((
        "http_content".into(),
        h.clone(),
        format!("[{}], {}", paths.join(", "), short(&h)),
    ));
    let bc = serde_json::to_string(&cfg.boot_command).unwrap_or_default();
    v.push((
        "boot_command".into(),
        bc.clone(),
        format!(
            "{} line(s) as written, {}",
            cfg.boot_command.len(),
            short(&sha_hex(bc.as_bytes()))
        ),
    ));
    let bw = cfg.boot_wait.as_millis().to_string();
    v.push(("boot_wait".into(), bw.clone(), format!("{bw} ms")));
    let hw = hardware_params(run)?
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let hw_summary = hardware_params(run)?
        .into_iter()
        .filter(|(k, _)| matches!(k.as_str(), "memory" | "cores" | "cpu" | "ostype" | "bios"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    v.push((
        "hardware".into(),
        hw.clone(),
        format!("{hw_summary} …, {}", short(&sha_hex(hw.as_bytes()))),
    ));
    let ci = format!(
        "cloud_init={} storage_pool={} disk_type={} disable_upgrade_packages={}",
        cfg.cloud_init,
        cfg.cloud_init_storage_pool.clone().unwrap_or_default(),
        cfg.cloud_init_disk_type,
        cfg.cloud_init_disable_upgrade_packages
    );
    v.push(("cloud_init".into(), ci.clone(), ci));
    let user = cfg.communicator.ssh_username.clone().unwrap_or_default();
    v.push(("ssh_username".into(), user.clone(), user));
    Ok(KeyInputs { inputs: v })
}

impl KeyInputs {
    /// The canonical text that is hashed: a format line, then `name=<JSON string>` per input.
    pub fn canonical(&self) -> String {
        let mut s = format!("{FORMAT}\n");
        for (n, c, _) in &self.inputs {
            s.push_str(n);
            s.push('=');
            s.push_str(&serde_json::to_string(c).unwrap_or_default());
            s.push('\n');
        }
        s
    }

    pub fn key(self) -> CacheKey {
        CacheKey {
            hex: sha_hex(self.canonical().as_bytes()),
            inputs: self,
        }
    }
}

/// The key of a run (see [`key_inputs`]).
pub fn compute_key(
    run: &SourceRun,
    template_dir: &Path,
    iso_file_size: &dyn Fn(&str) -> Option<u64>,
) -> Result<CacheKey, String> {
    Ok(key_inputs(run, template_dir, iso_file_size)?.key())
}

/// What a base's description says (`key:`, `build:`, `template:`, `created:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseInfo {
    pub key: Option<String>,
    pub build: Option<String>,
    pub template: Option<String>,
    pub created: Option<u64>,
}

/// Parse a base's description; `None` when it is not one.
pub fn parse_description(d: &str) -> Option<BaseInfo> {
    let mut lines = d.lines();
    if lines.next()?.trim() != DESCRIPTION_HEAD {
        return None;
    }
    let mut info = BaseInfo::default();
    for l in lines {
        if let Some(v) = l.strip_prefix("key: sha256:") {
            info.key = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("build: ") {
            info.build = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("template: ") {
            info.template = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("created: ") {
            info.created = v.trim().parse().ok();
        }
    }
    Some(info)
}

/// One base template on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    /// False for a VM with a base's name that is not (yet) a template: an interrupted layer.
    pub template: bool,
    pub info: BaseInfo,
    /// Sum of the disk sizes in its config (bytes).
    pub disk_bytes: u64,
}

/// Size of a drive value's `size=` option, in bytes.
fn drive_size(v: &str) -> u64 {
    let Some(s) = v.split(',').find_map(|o| o.strip_prefix("size=")) else {
        return 0;
    };
    kiln_config::model::size::ByteSize::parse(s)
        .map(|b| b.bytes())
        .unwrap_or(0)
}

/// Is this config key a disk drive (not a CD-ROM, not the cloud-init drive)?
pub fn is_disk(k: &str, v: &str) -> bool {
    let bus: String = k.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let idx = &k[bus.len()..];
    let drive = (["ide", "sata", "scsi", "virtio"].contains(&bus.as_str())
        && !idx.is_empty()
        && idx.chars().all(|c| c.is_ascii_digit()))
        || k == "efidisk0"
        || k == "tpmstate0";
    drive && !v.contains("media=cdrom") && !v.contains("cloudinit")
}

/// Every base on the cluster (VMs named `kiln-cache-…`), newest first.
pub async fn list_bases(client: &kiln_pve::Client) -> Result<Vec<Base>, kiln_pve::Error> {
    let all = client
        .cluster_resources(Some(kiln_pve::ResourceType::Vm))
        .await?;
    let mut out = Vec::new();
    for r in all.into_iter().filter(|r| r.kind == "qemu") {
        let (Some(vmid), Some(name), Some(node)) = (r.vmid, r.name.clone(), r.node.clone()) else {
            continue;
        };
        if !name.starts_with(NAME_PREFIX) {
            continue;
        }
        let conf = client.qemu_config(&node, vmid, false).await?;
        let info = conf
            .get("description")
            .and_then(parse_description)
            .unwrap_or_default();
        let disk_bytes = conf
            .0
            .iter()
            .filter(|(k, v)| is_disk(k, v))
            .map(|(_, v)| drive_size(v))
            .sum();
        out.push(Base {
            vmid,
            name,
            node,
            template: r.template || conf.get("template") == Some("1"),
            info,
            disk_bytes,
        });
    }
    out.sort_by(|a, b| {
        b.info
            .created
            .cmp(&a.info.created)
            .then(b.vmid.cmp(&a.vmid))
    });
    Ok(out)
}

/// What `kiln cache prune` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    All,
    /// Created longer ago than this many seconds.
    OlderThan(u64),
    /// Keep the newest N of each build (template dir + build name).
    Keep(usize),
}

/// The bases `rule` selects, from `bases` (newest first), at time `now` (Unix seconds). Incomplete
/// ones (not templates) are always selected: they are layers that were interrupted.
pub fn select_prune(bases: &[Base], rule: Prune, now: u64) -> Vec<Base> {
    let mut seen: BTreeMap<(Option<String>, Option<String>), usize> = BTreeMap::new();
    bases
        .iter()
        .filter(|b| {
            if !b.template {
                return true;
            }
            match rule {
                Prune::All => true,
                Prune::OlderThan(s) => b.info.created.is_none_or(|c| now.saturating_sub(c) > s),
                Prune::Keep(n) => {
                    let k = (b.info.template.clone(), b.info.build.clone());
                    let c = seen.entry(k).or_insert(0);
                    *c += 1;
                    *c > n
                }
            }
        })
        .cloned()
        .collect()
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_config::model::{NetworkAdapter, ProxmoxIsoConfig};
    use std::time::Duration;

    struct Fixture {
        dir: tempfile::TempDir,
        run: SourceRun,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("http/sub")).unwrap();
        std::fs::write(dir.path().join("http/user-data"), "#cloud-config\n").unwrap();
        std::fs::write(dir.path().join("http/sub/x"), "x").unwrap();
        std::fs::write(dir.path().join("extra.txt"), "extra").unwrap();
        std::fs::write(dir.path().join("os.iso"), b"iso bytes").unwrap();
        let mut cfg = ProxmoxIsoConfig {
            memory: 1024,
            cores: 2,
            boot_command: vec!["e<down> ds=http://{{ .HTTPIP }}:{{ .HTTPPort }}/<f10>".into()],
            boot_wait: Duration::from_secs(8),
            http_directory: Some("http".into()),
            cloud_init: true,
            cloud_init_storage_pool: Some("local-lvm".into()),
            vm_name: Some("a".into()),
            vm_id: Some(100),
            tags: Some("t1".into()),
            template_description: Some("d".into()),
            network_adapters: vec![NetworkAdapter {
                bridge: "vmbr0".into(),
                model: kiln_config::model::NicModel::Virtio,
                mac_address: None,
                vlan_tag: None,
                firewall: false,
                mtu: None,
                packet_queues: None,
            }],
            ..ProxmoxIsoConfig::default()
        };
        cfg.boot_iso.iso_url = Some("os.iso".into());
        cfg.boot_iso.iso_checksum = Some(kiln_config::model::checksum::ChecksumSpec::None);
        cfg.boot_iso.iso_storage_pool = Some("local".into());
        cfg.http_content
            .insert("/meta-data".into(), "instance-id: a\n".into());
        cfg.communicator.ssh_username = Some("packer".into());
        let mut cd_content = indexmap::IndexMap::new();
        cd_content.insert("a.txt".to_string(), "A".to_string());
        cfg.additional_iso_files.push(IsoConfig {
            cd_files: vec!["extra.txt".into()],
            cd_content,
            ..IsoConfig::default()
        });
        let run = SourceRun {
            build_name: None,
            source_type: "proxmox-iso".into(),
            source_name: "t".into(),
            config: cfg,
            provisioners: vec![],
            post_processors: vec![],
            location: None,
        };
        Fixture { dir, run }
    }

    fn key(f: &Fixture) -> String {
        compute_key(&f.run, f.dir.path(), &|_| Some(1000))
            .unwrap_or_else(|e| panic!("{e}"))
            .hex
    }

    #[test]
    fn the_key_is_stable_and_every_input_changes_it() {
        let mut f = fixture();
        let k0 = key(&f);
        assert_eq!(k0.len(), 64);
        assert_eq!(k0, key(&f), "the same inputs give the same key");
        type Change = Box<dyn Fn(&mut Fixture)>;
        let changes: Vec<(&str, Change)> = vec![
            (
                "boot ISO bytes",
                Box::new(|f| std::fs::write(f.dir.path().join("os.iso"), b"other").unwrap()),
            ),
            (
                "iso_checksum",
                Box::new(|f| {
                    f.run.config.boot_iso.iso_checksum =
                        kiln_config::model::checksum::ChecksumSpec::parse(&format!(
                            "sha256:{}",
                            "ab".repeat(32)
                        ))
                        .ok()
                }),
            ),
            (
                "http_directory file",
                Box::new(|f| {
                    std::fs::write(f.dir.path().join("http/user-data"), "#cloud-config\nx: 1\n")
                        .unwrap()
                }),
            ),
            (
                "http_directory new file",
                Box::new(|f| std::fs::write(f.dir.path().join("http/sub/y"), "").unwrap()),
            ),
            (
                "http_content",
                Box::new(|f| {
                    f.run
                        .config
                        .http_content
                        .insert("/meta-data".into(), "instance-id: b\n".into());
                }),
            ),
            (
                "cd_files bytes",
                Box::new(|f| std::fs::write(f.dir.path().join("extra.txt"), "changed").unwrap()),
            ),
            (
                "cd_content",
                Box::new(|f| {
                    f.run.config.additional_iso_files[0]
                        .cd_content
                        .insert("a.txt".into(), "B".into());
                }),
            ),
            (
                "boot_command",
                Box::new(|f| f.run.config.boot_command[0].push_str("<enter>")),
            ),
            (
                "boot_wait",
                Box::new(|f| f.run.config.boot_wait = Duration::from_secs(9)),
            ),
            ("memory", Box::new(|f| f.run.config.memory = 2048)),
            ("cores", Box::new(|f| f.run.config.cores = 4)),
            (
                "network",
                Box::new(|f| {
                    f.run.config.network_adapters[0].model = kiln_config::model::NicModel::E1000
                }),
            ),
            (
                "disk",
                Box::new(|f| {
                    f.run.config.disks.push(kiln_config::model::Disk {
                        r#type: kiln_config::model::Bus::Scsi,
                        storage_pool: "local-lvm".into(),
                        storage_pool_type: None,
                        disk_size: "8G".into(),
                        format: kiln_config::model::DiskFormat::Raw,
                        cache_mode: kiln_config::model::CacheMode::None,
                        io_thread: false,
                        asyncio: None,
                        discard: false,
                        ssd: false,
                        exclude_from_backup: false,
                    })
                }),
            ),
            (
                "cloud_init drive",
                Box::new(|f| f.run.config.cloud_init_storage_pool = Some("other".into())),
            ),
            (
                "communicator user",
                Box::new(|f| f.run.config.communicator.ssh_username = Some("ubuntu".into())),
            ),
        ];
        let mut seen = vec![k0.clone()];
        for (what, change) in changes {
            change(&mut f);
            let k = key(&f);
            assert!(!seen.contains(&k), "changing {what} did not change the key");
            seen.push(k);
        }
    }

    #[test]
    fn iso_file_is_identified_by_volume_and_size() {
        let mut f = fixture();
        f.run.config.boot_iso.iso_url = None;
        f.run.config.boot_iso.iso_file = Some("local:iso/os.iso".into());
        let a = compute_key(&f.run, f.dir.path(), &|_| Some(1)).unwrap();
        let b = compute_key(&f.run, f.dir.path(), &|_| Some(2)).unwrap();
        assert_ne!(a.hex, b.hex);
        let offline = compute_key(&f.run, f.dir.path(), &|_| None).unwrap_err();
        assert!(
            offline.contains("read from Proxmox VE at build time"),
            "{offline}"
        );
    }

    #[test]
    fn provisioners_names_and_per_build_settings_do_not_change_the_key() {
        let mut f = fixture();
        let k0 = key(&f);
        let playbook = f.dir.path().join("deploy.yml");
        std::fs::write(&playbook, "- hosts: all\n").unwrap();
        f.run.provisioners.push(kiln_config::model::Provisioner {
            name: Some("deploy".into()),
            pause_before: Duration::ZERO,
            max_retries: 0,
            timeout: None,
            kind: kiln_config::model::ProvisionerKind::Breakpoint(Default::default()),
            location: None,
        });
        std::fs::write(&playbook, "- hosts: all\n  tasks: []\n").unwrap();
        f.run.config.vm_name = Some("other".into());
        f.run.config.vm_id = Some(200);
        f.run.config.tags = Some("x;y".into());
        f.run.config.template_description = Some("other".into());
        f.run.config.template_name = Some("tpl2".into());
        f.run.config.pool = Some("p".into());
        assert_eq!(key(&f), k0);
    }

    #[test]
    fn the_base_name_and_description_round_trip() {
        let f = fixture();
        let k = compute_key(&f.run, f.dir.path(), &|_| None).unwrap();
        assert!(k.base_name().starts_with("kiln-cache-"));
        assert_eq!(k.base_name().len(), "kiln-cache-".len() + 12);
        let d = k.description("proxmox-iso.t", Path::new("/tpl"), 1700000000);
        let info = parse_description(&d).unwrap();
        assert_eq!(info.key.as_deref(), Some(k.hex.as_str()));
        assert_eq!(info.build.as_deref(), Some("proxmox-iso.t"));
        assert_eq!(info.template.as_deref(), Some("/tpl"));
        assert_eq!(info.created, Some(1700000000));
        assert!(d.contains("  boot_command: 1 line(s) as written"), "{d}");
        assert_eq!(parse_description("kiln ephemeral build VM"), None);
        // the PVE tag syntax
        assert!(TAG
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_+.".contains(c)));
    }

    fn base(vmid: u32, created: u64, template: bool, build: &str) -> Base {
        Base {
            vmid,
            name: format!("kiln-cache-{vmid}"),
            node: "pve".into(),
            template,
            info: BaseInfo {
                key: Some("k".into()),
                build: Some(build.into()),
                template: Some("/t".into()),
                created: Some(created),
            },
            disk_bytes: 0,
        }
    }

    #[test]
    fn prune_selects_by_rule() {
        let bases = vec![
            base(103, 400, true, "a"),
            base(102, 300, true, "b"),
            base(101, 200, true, "a"),
            base(100, 100, false, "a"),
        ];
        let ids = |v: Vec<Base>| v.into_iter().map(|b| b.vmid).collect::<Vec<_>>();
        assert_eq!(
            ids(select_prune(&bases, Prune::All, 500)),
            [103, 102, 101, 100]
        );
        assert_eq!(
            ids(select_prune(&bases, Prune::OlderThan(250), 500)),
            [101, 100]
        );
        assert_eq!(ids(select_prune(&bases, Prune::Keep(1), 500)), [101, 100]);
        assert_eq!(
            ids(select_prune(&bases, Prune::Keep(0), 500)),
            [103, 102, 101, 100]
        );
    }

    #[test]
    fn disks_are_told_from_cdroms() {
        assert!(is_disk("scsi0", "local-lvm:base-9-disk-0,size=8G"));
        assert!(!is_disk("ide2", "none,media=cdrom"));
        assert!(!is_disk("ide0", "local-lvm:vm-9-cloudinit,media=cdrom"));
        assert!(!is_disk("net0", "virtio,bridge=vmbr0"));
        assert_eq!(drive_size("local-lvm:x,size=8G"), 8 << 30);
    }
}
