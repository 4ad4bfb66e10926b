//! `cd_files` / `cd_content` / `cd_label` → an ISO 9660 image (Joliet + Rock Ridge, so
//! `user-data` keeps its name), written in Rust with `hadris-iso` — no xorriso/mkisofs needed.
//! Files are staged in a temp directory first (globs, directories, `cd_content` overriding files
//! of the same path), then packed. The image is built in memory: fine for seed/driver CDs.

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
    let tree = tree_of(stage.path()).map_err(|e| format!("reading the staged files: {e}"))?;
    let bytes = iso_bytes(tree, label)?;
    std::fs::write(out, bytes).map_err(|e| format!("{}: {e}", out.display()))
}

fn tree_of(dir: &Path) -> std::io::Result<Vec<hadris_iso::write::File>> {
    use hadris_iso::write::File;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for e in entries {
        let name = std::sync::Arc::new(e.file_name().to_string_lossy().to_string());
        let p = e.path();
        if p.is_dir() {
            out.push(File::Directory {
                name,
                children: tree_of(&p)?,
            });
        } else {
            out.push(File::File {
                name,
                contents: std::fs::read(&p)?,
            });
        }
    }
    Ok(out)
}

fn iso_bytes(files: Vec<hadris_iso::write::File>, label: &str) -> Result<Vec<u8>, String> {
    use hadris_iso::joliet::JolietLevel;
    use hadris_iso::read::PathSeparator;
    use hadris_iso::rrip::RripOptions;
    use hadris_iso::write::options::{BaseIsoLevel, CreationFeatures, IsoFormatOptions};
    use hadris_iso::write::{InputFiles, IsoImageWriter};
    let files = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files,
    };
    let options = IsoFormatOptions {
        volume_name: label.to_string(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("kiln".into()),
        sector_size: 2048,
        features: CreationFeatures {
            filenames: BaseIsoLevel::Level3 {
                supports_lowercase: true,
                supports_rrip: true,
            },
            long_filenames: true,
            joliet: Some(JolietLevel::Level3),
            rock_ridge: Some(RripOptions::default()),
            el_torito: None,
            hybrid_boot: None,
        },
        path_separator: PathSeparator::ForwardSlash,
        strict_charset: false,
    };
    let cursor = std::io::Cursor::new(Vec::new());
    let out = IsoImageWriter::create(cursor, files, options).map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

pub(crate) fn glob_match(pat: &str, name: &str) -> bool {
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
    fn writes_a_readable_image() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("seed/sub")).ok();
        std::fs::write(dir.path().join("seed/user-data"), "#cloud-config\n").ok();
        std::fs::write(dir.path().join("seed/sub/x.txt"), "x").ok();
        let mut c = indexmap::IndexMap::new();
        c.insert("meta-data".to_string(), "instance-id: a\n".to_string());
        let out = dir.path().join("o.iso");
        write_iso(&out, &["seed".into()], &c, Some("cidata"), dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(&out).unwrap_or_default();
        assert!(bytes.len() >= 17 * 2048);
        // primary volume descriptor at sector 16: "CD001" and the label
        assert_eq!(&bytes[16 * 2048 + 1..16 * 2048 + 6], b"CD001");
        let pvd = String::from_utf8_lossy(&bytes[16 * 2048..17 * 2048]).to_string();
        assert!(pvd.to_lowercase().contains("cidata"), "label missing");
        let all = String::from_utf8_lossy(&bytes).to_string();
        assert!(all.contains("#cloud-config") && all.contains("instance-id: a"));
        // Rock Ridge keeps the lower-case, hyphenated name
        assert!(all.contains("user-data"));
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
