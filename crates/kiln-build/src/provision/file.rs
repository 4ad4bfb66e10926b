//! `provisioner "file"`: upload or download files and directories, with Packer's trailing-slash rules:
//! - a directory source ending in `/` copies its *contents* into `destination`; without the slash the
//!   directory itself is created inside `destination`;
//! - a file goes *into* `destination` when it ends in `/` (kiln also does so when `destination` is an
//!   existing directory, where Packer's scp would fail), otherwise it becomes `destination`.

use std::path::{Path, PathBuf};

use kiln_config::model::FileProvisioner;

use super::{ProvisionContext, ProvisionError};

/// The last path component of a local or remote path (`a/b/` → `b`).
fn base_name(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    t.rsplit('/').next().unwrap_or(t)
}

fn remote_join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Where a file or directory lands on the guest (pure: for tests and for the log line).
pub(crate) fn upload_target(src: &str, src_is_dir: bool, dst: &str, dst_is_dir: bool) -> String {
    if src_is_dir {
        if src.ends_with('/') {
            dst.to_string()
        } else {
            remote_join(dst, base_name(src))
        }
    } else if dst.ends_with('/') || dst_is_dir {
        remote_join(dst, base_name(src))
    } else {
        dst.to_string()
    }
}

/// Where a downloaded file or directory lands locally.
pub(crate) fn download_target(src: &str, src_is_dir: bool, dst: &Path, dst_raw: &str) -> PathBuf {
    if src_is_dir {
        if src.ends_with('/') {
            dst.to_path_buf()
        } else {
            dst.join(base_name(src))
        }
    } else if dst_raw.ends_with('/') || dst.is_dir() {
        dst.join(base_name(src))
    } else {
        dst.to_path_buf()
    }
}

pub(super) async fn run(
    f: &FileProvisioner,
    ctx: &ProvisionContext<'_>,
) -> Result<(), ProvisionError> {
    let comm = ctx.comm("file")?;
    let mut sources: Vec<String> = Vec::new();
    if let Some(s) = &f.source {
        sources.push(s.clone());
    }
    sources.extend(f.sources.iter().cloned());
    let dst = f.destination.as_str();
    match f.direction.as_str() {
        "" | "upload" => {
            if let Some(content) = &f.content {
                let target = if dst.ends_with('/') {
                    remote_join(dst, "pkr-file-content")
                } else {
                    dst.to_string()
                };
                ctx.ui.say(&format!("Uploading content => {target}"));
                comm.upload_bytes(content.as_bytes(), &target, Some(0o644))
                    .await?;
                return Ok(());
            }
            if sources.is_empty() {
                return Err(ProvisionError::Config(
                    "file provisioner: set source, sources or content".to_string(),
                ));
            }
            if sources.len() > 1 && !dst.ends_with('/') {
                return Err(ProvisionError::Config(format!(
                    "file provisioner: with several sources the destination must be a directory ending in `/` (got {dst:?})"
                )));
            }
            let dst_is_dir = !dst.ends_with('/') && comm.is_dir(dst).await?;
            for src in &sources {
                let local = ctx.resolve(src);
                let meta = std::fs::metadata(&local).map_err(|e| {
                    let hint = if f.generated {
                        " (generated = true, but it was not created before this provisioner ran)"
                    } else {
                        ""
                    };
                    ProvisionError::local(
                        format!("file provisioner: source {}{hint}", local.display()),
                        e,
                    )
                })?;
                let is_dir = meta.is_dir();
                let target = upload_target(src, is_dir, dst, dst_is_dir);
                ctx.ui
                    .say(&format!("Uploading {} => {target}", local.display()));
                if is_dir {
                    comm.upload_dir(&local, &target).await?;
                } else {
                    comm.upload_file(&local, &target, None).await?;
                }
            }
            Ok(())
        }
        "download" => {
            if sources.is_empty() {
                return Err(ProvisionError::Config(
                    "file provisioner: download needs source or sources".to_string(),
                ));
            }
            let local_dst = ctx.resolve(dst);
            for src in &sources {
                let is_dir = src.ends_with('/') || comm.is_dir(src).await?;
                let target = download_target(src, is_dir, &local_dst, dst);
                ctx.ui
                    .say(&format!("Downloading {src} => {}", target.display()));
                if is_dir {
                    comm.download_dir(src, &target).await?;
                } else {
                    if let Some(parent) = target.parent() {
                        if !parent.as_os_str().is_empty() {
                            std::fs::create_dir_all(parent).map_err(|e| {
                                ProvisionError::local(format!("creating {}", parent.display()), e)
                            })?;
                        }
                    }
                    comm.download(src, &target).await?;
                }
            }
            Ok(())
        }
        other => Err(ProvisionError::Config(format!(
            "file provisioner: direction must be \"upload\" or \"download\", not {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_slash_rules() {
        // directory with trailing slash: contents into destination
        assert_eq!(upload_target("files/", true, "/tmp/x", false), "/tmp/x");
        // directory without: the directory itself inside destination
        assert_eq!(
            upload_target("a/files", true, "/tmp/x", false),
            "/tmp/x/files"
        );
        assert_eq!(
            upload_target("a/files", true, "/tmp/x/", false),
            "/tmp/x/files"
        );
        // file into a directory destination
        assert_eq!(
            upload_target("a/f.txt", false, "/tmp/", false),
            "/tmp/f.txt"
        );
        assert_eq!(upload_target("a/f.txt", false, "/tmp", true), "/tmp/f.txt");
        // file to a file path
        assert_eq!(
            upload_target("a/f.txt", false, "/etc/g.conf", false),
            "/etc/g.conf"
        );
    }

    #[test]
    fn download_slash_rules() {
        let d = Path::new("/nonexistent-kiln/out");
        assert_eq!(download_target("/var/log/", true, d, "out"), d);
        assert_eq!(download_target("/var/log", true, d, "out"), d.join("log"));
        assert_eq!(
            download_target("/etc/hosts", false, d, "out/"),
            d.join("hosts")
        );
        assert_eq!(download_target("/etc/hosts", false, d, "out"), d);
    }
}
