//! `cargo xtask corpus`: snapshot the Packer template corpus into kiln-config's test data.
//!
//! Copies templates, variable files, seed files (user-data, meta-data, *.pkrtpl*, YAML config)
//! and each repository's SOURCE.md + licence text from `/work/shared/corpus` (or `--from`) into
//! `crates/kiln-config/tests/corpus/`. Provisioning scripts and Jinja templates are left out
//! (validation does not read them). Symlinks are kept as symlinks. Afterwards it refreshes the
//! golden `inspect` outputs by running the corpus test with `KILN_UPDATE_GOLDEN=1`.
//! The row manifest (`rows.json`: which directory, var-files and expected verdict) is
//! maintained by hand next to the snapshot.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Corpus to copy from
    #[arg(long, default_value = "/work/shared/corpus")]
    from: PathBuf,
    /// Only copy, do not refresh the golden files
    #[arg(long)]
    no_golden: bool,
}

/// Files the corpus templates read with file() that the build would create or that live in the
/// user's home directory.
const FIXTURES: &[(&str, &str)] = &[
    // written by the `file` builder of the `credentials` build before the proxmox build reads it
    ("lsampaioweb__packer-proxmox-ubuntu-22-04-iso/iso/autoinstall/tmp/.random-password", "fixture-password\n"),
    // trfore reads ~/.ssh/packer_id_ed25519.pub by default; the rows point the variables here
    ("fixtures/packer_id_ed25519.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFixtureFixtureFixtureFixtureFixtureFixtureFixt kiln-fixture\n"),
    ("fixtures/packer_id_ed25519", "not a real key: fixture for kiln's corpus tests\n"),
];

fn wanted(rel: &Path) -> bool {
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let lower = name.to_lowercase();
    if lower == "source.md" || lower.starts_with("license") || lower.starts_with("copying") {
        return true;
    }
    if ["user-data", "meta-data", "vendor-data", "network-config"].contains(&name.as_str()) {
        return true;
    }
    if lower.ends_with(".md")
        || lower.ends_with(".sh")
        || lower.ends_with(".ps1")
        || lower.ends_with(".j2")
        || lower.ends_with(".py")
    {
        return false;
    }
    [
        ".hcl",
        ".json",
        ".jsonc",
        ".example",
        ".template",
        ".tmpl",
        ".pkrtpl",
        ".yaml",
        ".yml",
        ".cfg",
    ]
    .iter()
    .any(|e| lower.ends_with(e))
        || lower.contains(".pkrtpl")
}

/// A file whose whole content is a relative path to an existing sibling file was a symlink.
fn symlink_target(p: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(p).ok()?;
    if meta.len() > 256 {
        return None;
    }
    let text = std::fs::read_to_string(p).ok()?;
    let t = text.trim_end_matches('\n');
    if t.is_empty() || t.contains('\n') || t.starts_with('/') || !t.starts_with("..") {
        return None;
    }
    let resolved = p.parent()?.join(t);
    resolved.is_file().then(|| PathBuf::from(t))
}

pub fn run(args: Args) -> Result<()> {
    if !args.from.is_dir() {
        bail!("{} is not a directory", args.from.display());
    }
    let root = crate::workspace_root();
    let dest = root.join("crates/kiln-config/tests/corpus");
    std::fs::create_dir_all(&dest)?;
    let mut copied = 0usize;
    let mut repos = 0usize;
    for repo in std::fs::read_dir(&args.from)? {
        let repo = repo?;
        if !repo.file_type()?.is_dir() {
            continue;
        }
        let name = repo.file_name();
        let out_repo = dest.join(&name);
        if out_repo.exists() {
            std::fs::remove_dir_all(&out_repo)
                .with_context(|| format!("removing {}", out_repo.display()))?;
        }
        repos += 1;
        for ent in walkdir::WalkDir::new(repo.path()).follow_links(false) {
            let ent = ent?;
            let rel = ent.path().strip_prefix(&args.from)?.to_path_buf();
            let out = dest.join(&rel);
            let ft = ent.file_type();
            if ft.is_dir() {
                continue;
            }
            let inner = ent.path().strip_prefix(repo.path())?;
            if ft.is_symlink() {
                let target = std::fs::read_link(ent.path())?;
                // keep links whose target is something we copy (file) or a directory
                let resolved = ent
                    .path()
                    .parent()
                    .map(|p| p.join(&target))
                    .unwrap_or_default();
                if resolved.is_dir() || wanted(&resolved) || wanted(inner) {
                    std::fs::create_dir_all(out.parent().unwrap_or(&dest))?;
                    std::os::unix::fs::symlink(&target, &out)?;
                    copied += 1;
                }
                continue;
            }
            if !wanted(inner) {
                continue;
            }
            std::fs::create_dir_all(out.parent().unwrap_or(&dest))?;
            // the corpus stores git symlinks as small files holding the target path: restore them
            if let Some(target) = symlink_target(ent.path()) {
                std::os::unix::fs::symlink(&target, &out)?;
            } else {
                std::fs::copy(ent.path(), &out)
                    .with_context(|| format!("copying {}", ent.path().display()))?;
                let mut perm = std::fs::metadata(&out)?.permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perm.set_readonly(false);
                std::fs::set_permissions(&out, perm)?;
            }
            copied += 1;
        }
    }
    // stand-ins for files the templates expect to exist at validation time
    for (rel, content) in FIXTURES {
        let p = dest.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(&dest))?;
        std::fs::write(&p, content)?;
    }
    for f in ["README.md", "FEATURES.md"] {
        let src = args.from.join(f);
        if src.exists() {
            std::fs::copy(&src, dest.join(format!("CORPUS-{f}")))?;
        }
    }
    println!(
        "copied {copied} files from {repos} repositories into {}",
        dest.display()
    );
    if !args.no_golden {
        let status = Command::new(env!("CARGO"))
            .args(["test", "-p", "kiln-config", "--test", "corpus"])
            .env("KILN_UPDATE_GOLDEN", "1")
            .current_dir(&root)
            .status()?;
        if !status.success() {
            bail!("the corpus test failed while refreshing golden files");
        }
    }
    Ok(())
}
