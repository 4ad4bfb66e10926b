//! Put the ISOs on PVE storage: `iso_file` as is; `iso_url` (local file or `file://`) verified
//! against `iso_checksum` while hashing, uploaded unless the storage already holds a file of the
//! same name and size; `iso_download_pve` (PVE fetches it, an existing file is reused);
//! `cd_files`/`cd_content` → a generated ISO, uploaded and deleted at the end.

use super::{pve_err, BuildState, StepError};
use crate::pipeline::{Outcome, Step, StepContext};
use async_trait::async_trait;
use kiln_config::model::IsoConfig;
use kiln_pve::{Checksum, DownloadUrlRequest, UploadContent, UploadRequest};
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

/// Relative ISO paths: the template directory when the file is there, else the working directory
/// (Packer resolves against the working directory; kiln also finds files next to the template).
pub fn base_dir(template_dir: &Path, urls: &[String]) -> PathBuf {
    let found = urls
        .iter()
        .any(|u| local_path(u, template_dir).is_some_and(|p| p.exists()));
    if found {
        template_dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| template_dir.to_path_buf())
    }
}

fn short_name(url: &str) -> String {
    url.rsplit('/')
        .next()
        .unwrap_or(url)
        .split('?')
        .next()
        .unwrap_or(url)
        .to_string()
}

/// The checksum PVE verifies for `iso_download_pve` (a `file:` checksum is resolved here).
async fn pve_checksum(
    iso: &IsoConfig,
    url: &str,
    template_dir: &Path,
    urls: &[String],
) -> Result<Option<Checksum>, StepError> {
    // the plan's value (parsed by the loader); the loader requires one with iso_url
    let spec = iso
        .iso_checksum
        .clone()
        .unwrap_or(kiln_iso::ChecksumSpec::None);
    let fetcher = kiln_iso::Fetcher::new(kiln_iso::Fetcher::default_cache_dir())
        .map_err(|e| StepError::failed(e.to_string()))?
        .with_base_dir(base_dir(template_dir, urls));
    let d = fetcher
        .resolve_digest(&spec, url)
        .await
        .map_err(|e| StepError::failed(e.to_string()))?;
    Ok(d.map(|d| Checksum {
        algorithm: d.algo.name().to_string(),
        value: d.hex,
    }))
}

impl StepIso {
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
            crate::leftovers::add(
                &format!("tmp:{}", dir.path().display()),
                format!(
                    "temp dir {}: `rm -rf {}`",
                    dir.path().display(),
                    dir.path().display()
                ),
            );
            self.temp.push(dir);
            let volid = format!("{pool}:iso/{name}");
            // record before uploading: cleanup deletes it even if the upload half-finished
            st.generated_isos
                .push((pool.clone(), volid.clone(), iso.unmount));
            crate::leftovers::add(
                &format!("iso:{node}:{volid}"),
                format!(
                    "generated ISO {volid}: {}",
                    volume_manual_command(&node, &pool, &volid)
                ),
            );
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
                let checksum = pve_checksum(iso, url, &st.template_dir, &urls).await?;
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
        // local file or download on the build host (kiln-iso: cache, resume, checksum while downloading)
        let fetcher = kiln_iso::Fetcher::new(kiln_iso::Fetcher::default_cache_dir())
            .map_err(|e| StepError::failed(format!("{what}: {e}")))?
            .with_base_dir(base_dir(&st.template_dir, &urls));
        let src = kiln_iso::IsoSource {
            urls: urls.clone(),
            checksum: iso
                .iso_checksum
                .clone()
                .unwrap_or(kiln_iso::ChecksumSpec::None),
        };
        cx.ui.say("Retrieving ISO");
        let bar: Mutex<Option<(String, crate::ui::Progress)>> = Mutex::new(None);
        let ui = cx.ui.clone();
        let on_progress = |p: &kiln_iso::Progress<'_>| {
            if let Ok(mut g) = bar.lock() {
                let label = match p.phase {
                    kiln_iso::Phase::Verifying => format!("verify {}", short_name(p.url)),
                    kiln_iso::Phase::Downloading => format!("download {}", short_name(p.url)),
                };
                if g.as_ref().map(|(l, _)| l != &label).unwrap_or(true) {
                    if let Some((_, old)) = g.take() {
                        old.finish();
                    }
                    *g = Some((label.clone(), ui.progress(&label, p.total.unwrap_or(0))));
                }
                if let Some((_, pr)) = g.as_mut() {
                    pr.set(p.done);
                }
            }
        };
        let got = fetcher
            .fetch(&src, &on_progress)
            .await
            .map_err(|e| StepError::failed(format!("{what}: {e}")))?;
        if let Ok(mut g) = bar.lock() {
            if let Some((_, pr)) = g.take() {
                pr.finish();
            }
        }
        if got.digest.is_none() {
            cx.ui
                .message("Warning: iso_checksum = \"none\": the ISO is not verified");
        }
        // name on storage: the URL's file name (readable), not the cache key
        let name = match got.action {
            kiln_iso::Action::Local => tokio::fs::canonicalize(&got.path)
                .await
                .unwrap_or(got.path.clone())
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("image.iso")
                .to_string(),
            _ => kiln_iso::Fetcher::file_name(&got.url),
        };
        let size = tokio::fs::metadata(&got.path)
            .await
            .map(|m| m.len())
            .map_err(|e| StepError::failed(format!("{}: {e}", got.path.display())))?;
        let volid = format!("{pool}:iso/{name}");
        match client.find_volume(&node, &pool, UploadContent::Iso, &name).await {
            Ok(Some(c)) if c.size == size => {
                cx.ui.message(&format!(
                    "{volid} already on storage with the same size, not uploading it again"
                ));
                return Ok(volid);
            }
            Ok(Some(_)) => {
                return Err(StepError::failed(format!(
                    "{what}: {volid} already exists on storage with a different size; delete it or rename the ISO"
                )))
            }
            _ => {}
        }
        self.upload(cx, &client, &node, &pool, &got.path, &name)
            .await?;
        cx.ui.message(&format!("Uploaded ISO to {volid}"));
        Ok(volid)
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
        for d in &self.temp {
            crate::leftovers::remove(&format!("tmp:{}", d.path().display()));
        }
        self.temp.clear();
        if outcome == Outcome::Aborted {
            return;
        }
        let Some(client) = st.client.clone() else {
            return;
        };
        let gens = std::mem::take(&mut st.generated_isos);
        for (pool, volid, unmount) in gens {
            let key = format!("iso:{}:{volid}", st.node);
            if outcome == Outcome::Success && !unmount {
                crate::leftovers::remove(&key);
                continue; // still attached to the template
            }
            let mut last = String::new();
            let mut done = false;
            // only "does not exist" means gone; anything else is retried, then reported
            for (attempt, wait) in [1u64, 2, 4, 0].into_iter().enumerate() {
                let r = match client.delete_volume(&st.node, &pool, &volid).await {
                    Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => {
                        cx.ui
                            .message(&format!("Deleted generated ISO from {volid}"));
                        done = true;
                    }
                    Err(e) if e.api().is_some_and(|a| a.is_not_found()) => done = true,
                    Err(e) => last = e.to_string(),
                }
                if done || wait == 0 {
                    break;
                }
                cx.ui.message(&format!(
                    "Could not delete generated ISO {volid} ({last}); retrying in {wait}s (attempt {}/4)",
                    attempt + 2
                ));
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            }
            if done {
                crate::leftovers::remove(&key);
            } else {
                cx.ui.error(&format!(
                    "Could not delete generated ISO {volid}: {last}\n  it may still exist — delete it by hand: {}",
                    volume_manual_command(&st.node, &pool, &volid)
                ));
            }
        }
    }
}

/// What to run by hand to delete a storage volume.
pub fn volume_manual_command(node: &str, pool: &str, volid: &str) -> String {
    format!(
        "on node {node}: `pvesm free {volid}`, or `pvesh delete /nodes/{node}/storage/{pool}/content/{volid}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            local_path("file:///a/b.iso", Path::new("/t")),
            Some(PathBuf::from("/a/b.iso"))
        );
        assert_eq!(
            local_path("b.iso", Path::new("/t")),
            Some(PathBuf::from("/t/b.iso"))
        );
        assert_eq!(local_path("https://x/b.iso", Path::new("/t")), None);
        assert_eq!(short_name("https://x/y/u.iso?x=1"), "u.iso");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("g.iso"), b"x").ok();
        assert_eq!(
            base_dir(dir.path(), &["g.iso".into()]),
            dir.path().to_path_buf()
        );
    }
}
