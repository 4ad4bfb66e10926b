//! `cd_files` / `cd_content` / `cd_label` → an ISO 9660 image (Joliet + Rock Ridge, so
//! `user-data` keeps its name). Files are staged in a temp directory and packed with `xorriso`
//! (what Packer shells out to as well).
//! TODO: write the image in Rust with `hadris-iso` to drop the runtime dependency.

use indexmap_like::OrderedMap;
use std::path::Path;

mod indexmap_like {
    /// The config hands us an `IndexMap<String, String>`; accept anything iterable.
    pub trait OrderedMap {
        fn pairs(&self) -> Vec<(String, String)>;
    }
    impl OrderedMap for indexmap::IndexMap<String, String> {
        fn pairs(&self) -> Vec<(String, String)> {
            self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
    }
}

/// Build `out` from `files` (files, directories, globs with `*`) and `content` (path → text,
/// overriding files of the same path), relative paths resolved against `base`.
pub fn write_iso(
    out: &Path,
    files: &[String],
    content: &indexmap::IndexMap<String, String>,
    label: Option<&str>,
    base: &Path,
) -> Result<(), String> {
    let stage = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    for f in files {
        let p = if Path::new(f).is_absolute() {
            Path::new(f).to_path_buf()
        } else {
            base.join(f)
        };
        let matches: Vec<std::path::PathBuf> = if f.contains('*') {
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            let pat = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("*")
                .to_string();
            std::fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|x| {
                    x.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| glob_match(&pat, n))
                })
                .collect()
        } else {
            vec![p]
        };
        for m in matches {
            copy_into(&m, stage.path()).map_err(|e| format!("cd_files {}: {e}", m.display()))?;
        }
    }
    for (k, v) in content.pairs() {
        let rel = k.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            return Err(format!("cd_content path {k:?} must stay inside the image"));
        }
        let dst = stage.path().join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&dst, v).map_err(|e| format!("cd_content {k}: {e}"))?;
    }
    let label = label.filter(|l| !l.is_empty()).unwrap_or("cidata");
    let tool = ["xorriso", "genisoimage", "mkisofs"]
        .into_iter()
        .find(|t| which(t))
        .ok_or("cd_files/cd_content need xorriso (apt-get install xorriso), genisoimage or mkisofs on the build host")?;
    let mut cmd = std::process::Command::new(tool);
    if tool == "xorriso" {
        cmd.args(["-as", "mkisofs"]);
    }
    cmd.args(["-quiet", "-J", "-joliet-long", "-r", "-V", label, "-o"])
        .arg(out)
        .arg(stage.path());
    let o = cmd.output().map_err(|e| format!("{tool}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn glob_match(pat: &str, name: &str) -> bool {
    match pat.split_once('*') {
        None => pat == name,
        Some((pre, post)) => {
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        }
    }
}

fn copy_into(src: &Path, dst_dir: &Path) -> std::io::Result<()> {
    let name = src
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    if src.is_dir() {
        // a directory's contents go to the image root (Packer's behaviour for cd_files dirs)
        for e in std::fs::read_dir(src)? {
            let e = e?;
            let p = e.path();
            if p.is_dir() {
                let sub = dst_dir.join(e.file_name());
                std::fs::create_dir_all(&sub)?;
                copy_into_dir(&p, &sub)?;
            } else {
                std::fs::copy(&p, dst_dir.join(e.file_name()))?;
            }
        }
        Ok(())
    } else {
        std::fs::copy(src, dst_dir.join(name)).map(|_| ())
    }
}

fn copy_into_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            let sub = dst.join(e.file_name());
            std::fs::create_dir_all(&sub)?;
            copy_into_dir(&p, &sub)?;
        } else {
            std::fs::copy(&p, dst.join(e.file_name()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.yml", "a.yml"));
        assert!(!glob_match("*.yml", "a.yaml"));
        assert!(glob_match("user-data", "user-data"));
    }

    #[test]
    fn rejects_escaping_content_paths() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut c = indexmap::IndexMap::new();
        c.insert("/../x".to_string(), "y".to_string());
        let r = write_iso(&dir.path().join("o.iso"), &[], &c, None, dir.path());
        assert!(r.is_err_and(|e| e.contains("inside the image")));
    }
}
