//! Put the ISOs on PVE storage: `iso_file` as is; `iso_url` (local file or `file://`) verified
//! against `iso_checksum` while hashing, uploaded unless the storage already holds a file of the
//! same name and size; `iso_download_pve` (PVE fetches it, an existing file is reused);
//! `cd_files`/`cd_content` → a generated ISO, uploaded and deleted at the end.

use super::{pve_err, BuildState, StepError};
use crate::pipeline::{Outcome, Step, StepContext};
use async_trait::async_trait;
use kiln_config::model::IsoConfig;
use kiln_pve::{Checksum, DownloadUrlRequest, UploadContent, UploadRequest};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct StepIso {
    /// Local temp files of generated ISOs.
    temp: Vec<tempfile::TempDir>,
}

impl StepIso {
    pub fn new() -> Self {
        StepIso { temp: Vec::new() }
    }
}

impl Default for StepIso {
    fn default() -> Self {
        Self::new()
    }
}

/// A parsed `iso_checksum`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsoChecksum {
    None,
    Hex { algo: String, hex: String },
    File { algo: Option<String>, url: String },
}

pub fn parse_checksum(s: Option<&str>) -> Result<IsoChecksum, String> {
    let s = match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => return Ok(IsoChecksum::None),
        Some(s) => s,
    };
    if s == "none" {
        return Ok(IsoChecksum::None);
    }
    if let Some(rest) = s.strip_prefix("file:") {
        return Ok(IsoChecksum::File {
            algo: None,
            url: rest.to_string(),
        });
    }
    let (algo, hex) = match s.split_once(':') {
        Some((a, h)) => {
            if let Some(url) = h.strip_prefix("file:") {
                return Ok(IsoChecksum::File {
                    algo: Some(a.to_lowercase()),
                    url: url.to_string(),
                });
            }
            if h.starts_with("//") || a == "http" || a == "https" {
                return Ok(IsoChecksum::File {
                    algo: None,
                    url: s.to_string(),
                });
            }
            (a.to_lowercase(), h.to_lowercase())
        }
        None => {
            let algo = match s.len() {
                32 => "md5",
                40 => "sha1",
                64 => "sha256",
                128 => "sha512",
                _ => {
                    return Err(format!(
                        "iso_checksum {s:?}: cannot tell the algorithm from its length"
                    ))
                }
            };
            (algo.to_string(), s.to_lowercase())
        }
    };
    if !["md5", "sha1", "sha256", "sha512"].contains(&algo.as_str()) {
        return Err(format!(
            "iso_checksum: unsupported algorithm {algo:?} (md5, sha1, sha256, sha512)"
        ));
    }
    Ok(IsoChecksum::Hex { algo, hex })
}

/// Find the checksum of `file_name` in a checksum file (`<hex>  name`, `<hex> *name`, BSD style
/// `SHA256 (name) = hex`).
pub fn checksum_from_file(text: &str, file_name: &str) -> Option<String> {
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.split_once(" (").map(|(_, r)| r) {
            if let Some((n, h)) = rest.split_once(") = ") {
                if n.trim_start_matches("./") == file_name {
                    return Some(h.trim().to_lowercase());
                }
            }
        }
        let mut parts = l.split_whitespace();
        if let (Some(h), Some(n)) = (parts.next(), parts.next()) {
            let n = n.trim_start_matches('*').trim_start_matches("./");
            if n == file_name && h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Some(h.to_lowercase());
            }
        }
    }
    // a file with a single bare hash
    let only: Vec<&str> = text.split_whitespace().collect();
    (only.len() == 1 && only[0].chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| only[0].to_lowercase())
}

fn algo_for_len(n: usize) -> Option<&'static str> {
    match n {
        32 => Some("md5"),
        40 => Some("sha1"),
        64 => Some("sha256"),
        128 => Some("sha512"),
        _ => None,
    }
}

/// A local path from `iso_url` (`file:///x`, `file:x`, or a plain path), relative to `base`.
pub fn local_path(url: &str, base: &Path) -> Option<PathBuf> {
    let p = if let Some(rest) = url.strip_prefix("file://") {
        PathBuf::from(rest)
    } else if let Some(rest) = url.strip_prefix("file:") {
        PathBuf::from(rest)
    } else if url.contains("://") {
        return None;
    } else {
        PathBuf::from(url)
    };
    Some(if p.is_absolute() { p } else { base.join(p) })
}

fn hash_file(path: &Path, algo: &str, mut progress: impl FnMut(u64)) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    macro_rules! run {
        ($h:expr) => {{
            let mut h = $h;
            let mut done = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                done += n as u64;
                progress(done);
            }
            hex::encode(h.finalize())
        }};
    }
    Ok(match algo {
        "md5" => run!(md5::Md5::new()),
        "sha1" => run!(sha1::Sha1::new()),
        "sha512" => run!(sha2::Sha512::new()),
        _ => run!(sha2::Sha256::new()),
    })
}

impl StepIso {
    async fn resolve_checksum(
        &self,
        iso: &IsoConfig,
        file_name: &str,
        base: &Path,
    ) -> Result<Option<(String, String)>, StepError> {
        match parse_checksum(iso.iso_checksum.as_deref()).map_err(StepError::Failed)? {
            IsoChecksum::None => Ok(None),
            IsoChecksum::Hex { algo, hex } => Ok(Some((algo, hex))),
            IsoChecksum::File { algo, url } => {
                let Some(p) = local_path(&url, base) else {
                    return Err(StepError::failed(format!(
                        "iso_checksum file:{url}: only local checksum files are supported here; download it next to the template and use file:./SHA256SUMS"
                    )));
                };
                let text = tokio::fs::read_to_string(&p).await.map_err(|e| {
                    StepError::failed(format!("iso_checksum: cannot read {}: {e}", p.display()))
                })?;
                let hex = checksum_from_file(&text, file_name).ok_or_else(|| {
                    StepError::failed(format!(
                        "iso_checksum: {} has no line for {file_name}",
                        p.display()
                    ))
                })?;
                let algo = algo
                    .or_else(|| algo_for_len(hex.len()).map(String::from))
                    .unwrap_or_else(|| "sha256".into());
                Ok(Some((algo, hex)))
            }
        }
    }

    /// One ISO config → its volume id on PVE.
    async fn place(
        &mut self,
        cx: &StepContext,
        st: &mut BuildState,
        iso: &IsoConfig,
        what: &str,
    ) -> Result<String, StepError> {
        if let Some(f) = iso.iso_file.as_deref().filter(|f| !f.is_empty()) {
            if !f.contains(":iso/") {
                return Err(StepError::failed(format!(
                    "{what}: iso_file {f:?} must look like <storage>:iso/<file>"
                )));
            }
            cx.ui.message(&format!("Using existing ISO {f}"));
            return Ok(f.to_string());
        }
        let client = st.client()?;
        let node = st.node.clone();
        let pool = iso
            .iso_storage_pool
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                StepError::failed(format!(
                    "{what}: iso_storage_pool must be set to upload or download the ISO"
                ))
            })?;
        if !iso.cd_files.is_empty() || !iso.cd_content.is_empty() {
            let dir =
                tempfile::tempdir().map_err(|e| StepError::failed(format!("temp dir: {e}")))?;
            let name = format!("kiln-{}.iso", uuid_short());
            let out = dir.path().join(&name);
            cx.ui.say("Creating CD disk...");
            crate::cdiso::write_iso(
                &out,
                &iso.cd_files,
                &iso.cd_content,
                iso.cd_label.as_deref(),
                &st.template_dir,
            )
            .map_err(|e| StepError::failed(format!("{what}: cannot build the CD image: {e}")))?;
            self.temp.push(dir);
            let volid = format!("{pool}:iso/{name}");
            // record before uploading: cleanup deletes it even if the upload half-finished
            st.generated_isos
                .push((pool.clone(), volid.clone(), iso.unmount));
            self.upload(cx, &client, &node, &pool, &out, &name).await?;
            return Ok(volid);
        }
        let urls: Vec<String> = iso
            .iso_url
            .iter()
            .cloned()
            .chain(iso.iso_urls.iter().cloned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(StepError::failed(format!(
                "{what}: one of iso_file, iso_url(s) or cd_files/cd_content must be set"
            )));
        }
        if iso.iso_download_pve {
            let mut last = String::new();
            for url in &urls {
                let name = url
                    .rsplit('/')
                    .next()
                    .unwrap_or("image.iso")
                    .split('?')
                    .next()
                    .unwrap_or("image.iso")
                    .to_string();
                let volid = format!("{pool}:iso/{name}");
                if let Ok(Some(_)) = client
                    .find_volume(&node, &pool, UploadContent::Iso, &name)
                    .await
                {
                    cx.ui.message(&format!(
                        "{volid} already on storage, not downloading it again"
                    ));
                    return Ok(volid);
                }
                let checksum = self
                    .resolve_checksum(iso, &name, &st.template_dir)
                    .await?
                    .map(|(algorithm, value)| Checksum { algorithm, value });
                cx.ui.say(&format!("Asking Proxmox VE to download {url}"));
                let req = DownloadUrlRequest {
                    url: url.clone(),
                    filename: name.clone(),
                    content: UploadContent::Iso,
                    checksum,
                    verify_certificates: None,
                };
                let r = match client.download_url(&node, &pool, &req).await {
                    Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => return Ok(volid),
                    Err(e) => last = format!("{url}: {e}"),
                }
            }
            return Err(StepError::failed(format!(
                "{what}: failed to download ISO with all the provided URLs; last: {last}"
            )));
        }
        // local file
        let mut last = String::new();
        for url in &urls {
            let Some(path) = local_path(url, &st.template_dir) else {
                last = format!("{url}: downloading http(s) ISOs on the build host is not supported yet; set iso_download_pve = true or download it and use a local path");
                continue;
            };
            let meta = match tokio::fs::metadata(&path).await {
                Ok(m) => m,
                Err(e) => {
                    last = format!("{}: {e}", path.display());
                    continue;
                }
            };
            let real = tokio::fs::canonicalize(&path).await.unwrap_or(path.clone());
            let name = real
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("image.iso")
                .to_string();
            let volid = format!("{pool}:iso/{name}");
            if let Some((algo, want)) = self.resolve_checksum(iso, &name, &st.template_dir).await? {
                cx.ui
                    .message(&format!("Verifying {algo} checksum of {}", real.display()));
                let p2 = real.clone();
                let algo2 = algo.clone();
                let prog = Arc::new(Mutex::new(
                    cx.ui.progress(&format!("checksum {name}"), meta.len()),
                ));
                let prog2 = prog.clone();
                let got = tokio::task::spawn_blocking(move || {
                    hash_file(&p2, &algo2, |d| {
                        if let Ok(mut p) = prog2.lock() {
                            p.set(d);
                        }
                    })
                })
                .await
                .map_err(|e| StepError::failed(format!("checksum task: {e}")))?
                .map_err(|e| StepError::failed(format!("reading {}: {e}", real.display())))?;
                if let Ok(m) = Arc::try_unwrap(prog) {
                    if let Ok(p) = m.into_inner() {
                        p.finish();
                    }
                }
                if got != want {
                    return Err(StepError::failed(format!(
                        "{what}: checksum mismatch for {}: {algo} is {got}, iso_checksum says {want}",
                        real.display()
                    )));
                }
            }
            match client.find_volume(&node, &pool, UploadContent::Iso, &name).await {
                Ok(Some(c)) if c.size == meta.len() => {
                    cx.ui.message(&format!("{volid} already on storage with the same size, not uploading it again"));
                    return Ok(volid);
                }
                Ok(Some(_)) => {
                    return Err(StepError::failed(format!(
                        "{what}: {volid} already exists on storage with a different size; delete it or rename the local file"
                    )))
                }
                _ => {}
            }
            self.upload(cx, &client, &node, &pool, &real, &name).await?;
            cx.ui.message(&format!("Uploaded ISO to {volid}"));
            return Ok(volid);
        }
        Err(StepError::failed(format!(
            "{what}: no usable iso_url: {last}"
        )))
    }

    async fn upload(
        &self,
        cx: &StepContext,
        client: &kiln_pve::Client,
        node: &str,
        pool: &str,
        path: &Path,
        name: &str,
    ) -> Result<(), StepError> {
        let size = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        cx.ui.say(&format!(
            "Uploading {name} to {pool} ({:.1} MiB)",
            size as f64 / 1048576.0
        ));
        let prog = Arc::new(Mutex::new(cx.ui.progress(&format!("upload {name}"), size)));
        let p2 = prog.clone();
        let cb: kiln_pve::UploadProgress = Arc::new(move |done, _total| {
            if let Ok(mut p) = p2.lock() {
                p.set(done);
            }
        });
        let req = UploadRequest {
            path: path.to_path_buf(),
            filename: name.to_string(),
            content: UploadContent::Iso,
            checksum: None,
        };
        let upid = client
            .upload(node, pool, &req, Some(cb))
            .await
            .map_err(|e| pve_err("uploading the ISO", e))?;
        let wait = kiln_pve::WaitOptions {
            timeout: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        client
            .wait_task(&upid, &wait, None)
            .await
            .map_err(|e| pve_err("moving the uploaded ISO into place", e))?;
        if let Ok(m) = Arc::try_unwrap(prog) {
            if let Ok(p) = m.into_inner() {
                p.finish();
            }
        }
        Ok(())
    }
}

fn uuid_short() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[async_trait]
impl Step<BuildState> for StepIso {
    fn name(&self) -> &str {
        "iso"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let boot = st.run.config.boot_iso.clone();
        let v = self.place(cx, st, &boot, "boot_iso").await?;
        st.boot_iso = Some(v);
        let extra = st.run.config.additional_iso_files.clone();
        for (i, iso) in extra.iter().enumerate() {
            let v = self
                .place(cx, st, iso, &format!("additional_iso_files[{i}]"))
                .await?;
            st.additional_isos.push(v);
        }
        Ok(())
    }

    async fn cleanup(&mut self, cx: &StepContext, st: &mut BuildState, outcome: Outcome) {
        self.temp.clear();
        if outcome == Outcome::Aborted {
            return;
        }
        let Some(client) = st.client.clone() else {
            return;
        };
        let gens = std::mem::take(&mut st.generated_isos);
        for (pool, volid, unmount) in gens {
            if outcome == Outcome::Success && !unmount {
                continue; // still attached to the template
            }
            let r = match client.delete_volume(&st.node, &pool, &volid).await {
                Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => cx
                    .ui
                    .message(&format!("Deleted generated ISO from {volid}")),
                Err(e) if e.status() == Some(404) || e.to_string().contains("does not exist") => {}
                Err(e) => cx.ui.error(&format!(
                    "Could not delete generated ISO {volid}: {e} — delete it by hand"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_forms() {
        assert_eq!(parse_checksum(Some("none")), Ok(IsoChecksum::None));
        assert_eq!(parse_checksum(None), Ok(IsoChecksum::None));
        assert_eq!(
            parse_checksum(Some("sha256:ABCD")),
            Ok(IsoChecksum::Hex {
                algo: "sha256".into(),
                hex: "abcd".into()
            })
        );
        assert_eq!(
            parse_checksum(Some("file:./SHA256SUMS")),
            Ok(IsoChecksum::File {
                algo: None,
                url: "./SHA256SUMS".into()
            })
        );
        assert_eq!(
            parse_checksum(Some("sha256:file:https://x/SHA256SUMS")),
            Ok(IsoChecksum::File {
                algo: Some("sha256".into()),
                url: "https://x/SHA256SUMS".into()
            })
        );
        assert!(
            matches!(parse_checksum(Some(&"a".repeat(64))), Ok(IsoChecksum::Hex { algo, .. }) if algo == "sha256")
        );
        assert!(parse_checksum(Some("crc:1")).is_err());
    }

    #[test]
    fn checksum_files() {
        let gnu = "aaaa  other.iso\nbbbb *ubuntu.iso\n";
        assert_eq!(checksum_from_file(gnu, "ubuntu.iso"), Some("bbbb".into()));
        let bsd = "SHA256 (ubuntu.iso) = CCCC\n";
        assert_eq!(checksum_from_file(bsd, "ubuntu.iso"), Some("cccc".into()));
        assert_eq!(checksum_from_file("dddd\n", "x.iso"), Some("dddd".into()));
        assert_eq!(checksum_from_file(gnu, "nope.iso"), None);
    }

    #[test]
    fn hashing_and_paths() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("x.iso");
        std::fs::write(&f, b"abc").ok();
        assert_eq!(
            hash_file(&f, "sha256", |_| {}).ok(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into())
        );
        assert_eq!(
            hash_file(&f, "md5", |_| {}).ok(),
            Some("900150983cd24fb0d6963f7d28e17f72".into())
        );
        assert_eq!(
            local_path("file:///a/b.iso", Path::new("/t")),
            Some(PathBuf::from("/a/b.iso"))
        );
        assert_eq!(
            local_path("b.iso", Path::new("/t")),
            Some(PathBuf::from("/t/b.iso"))
        );
        assert_eq!(local_path("https://x/b.iso", Path::new("/t")), None);
    }
}
