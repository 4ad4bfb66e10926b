//! `cargo xtask test-guest`: build (or reuse) the Ubuntu-like autoinstall test-guest ISO.
//!
//! The recipe lives in `xtask/test-guest/` (`build.sh` and the files it copies into the ISO).
//! The output is cached under `target/test-guest/<recipe-hash>/guest.iso`, where the hash covers
//! every recipe file (name, mode and content), and `target/test-guest/guest.iso` is a symlink to
//! the current one. `.deb` files are cached in `target/test-guest/cache/` so a rebuild after a
//! recipe change does not download again. Missing build tools are installed by the one package installer
//! (`packages.rs`: simulated first, never removes anything, binaries checked afterwards). The Debian
//! mirror is read from the host's apt sources, never hard-coded.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SUITE: &str = "bookworm";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rebuild even if the cached ISO for this recipe exists
    #[arg(long)]
    pub force: bool,
    /// Do not install missing build packages (fail instead)
    #[arg(long)]
    pub no_install: bool,
    /// Also install the ISO once onto a cached qcow2 (target/test-guest/<hash>/installed/, linked
    /// from target/test-guest/installed) for tests that boot an installed system; `--force`
    /// rebuilds it too
    #[arg(long)]
    pub installed_disk: bool,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    let iso = ensure(&root, args.force, !args.no_install)?;
    println!("test guest: {}", iso.display());
    if args.installed_disk {
        let dir = ensure_installed_disk(&root, args.force)?;
        println!("installed test-guest disk: {}", dir.display());
    }
    Ok(())
}

/// The installed disk for the current recipe (the ISO must exist: call [`ensure`] first).
pub fn ensure_installed_disk(root: &Path, force: bool) -> Result<PathBuf> {
    let hash = recipe_hash(&root.join("xtask/test-guest"))?;
    crate::installed_disk::ensure(&root.join("target/test-guest"), &hash, force)
}

/// Build the ISO if needed; returns the stable path `target/test-guest/guest.iso`.
pub fn ensure(root: &Path, force: bool, install: bool) -> Result<PathBuf> {
    let recipe = root.join("xtask/test-guest");
    let hash = recipe_hash(&recipe)?;
    let base = root.join("target/test-guest");
    let out = base.join(&hash);
    let iso = out.join("guest.iso");
    let link = base.join("guest.iso");
    if iso.is_file() && !force {
        point_link(&link, &iso)?;
        println!(
            "test guest: cached ({}, recipe {hash}, {})",
            iso.display(),
            size_mib(&iso)
        );
        return Ok(link);
    }
    if !crate::packages::is_root() {
        bail!("building the test guest needs root (debootstrap, chroot, mounts); run as root");
    }
    ensure_packages(install)?;
    let (mirror, security) = debian_mirrors()?;
    println!("test guest: building recipe {hash} from {mirror} (takes a few minutes) ...");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let cache = base.join("cache");
    let started = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(recipe.join("build.sh"))
        .env("RECIPE", &recipe)
        .env("OUT", &out)
        .env("CACHE", &cache)
        .env("MIRROR", &mirror)
        .env("SUITE", SUITE);
    if let Some(sec) = &security {
        cmd.env("SECURITY_MIRROR", sec);
    }
    let status = cmd.status().context("run xtask/test-guest/build.sh")?;
    if !status.success() {
        bail!(
            "test-guest build failed ({status}); logs in {} (debootstrap.log, apt.log, grub-mkrescue.log)",
            out.display()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    point_link(&link, &iso)?;
    remove_stale(&base, &hash);
    println!(
        "test guest: built {} in {secs:.1} s, size {} (stages in {})",
        iso.display(),
        size_mib(&iso),
        out.join("timings.txt").display()
    );
    Ok(link)
}

/// Remove the outputs of other recipe hashes (each holds a ~140 MiB ISO and maybe an installed disk).
fn remove_stale(base: &Path, current: &str) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let is_hash = name.len() == 16 && name.chars().all(|c| c.is_ascii_hexdigit());
        if is_hash && name != current && e.path().is_dir() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn size_mib(p: &Path) -> String {
    match std::fs::metadata(p) {
        Ok(m) => format!("{:.1} MiB", m.len() as f64 / 1048576.0),
        Err(_) => "?".into(),
    }
}

fn point_link(link: &Path, iso: &Path) -> Result<()> {
    let rel = iso
        .strip_prefix(link.parent().unwrap_or(Path::new("")))
        .unwrap_or(iso);
    if std::fs::symlink_metadata(link).is_ok() {
        std::fs::remove_file(link).with_context(|| format!("remove {}", link.display()))?;
    }
    std::os::unix::fs::symlink(rel, link).with_context(|| format!("symlink {}", link.display()))
}

/// sha256 over every recipe file (sorted relative path, executable bit, content); 16 hex chars.
pub fn recipe_hash(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    if files.is_empty() {
        bail!("no recipe files in {}", dir.display());
    }
    files.sort();
    let mut h = Sha256::new();
    h.update(SUITE.as_bytes());
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        let meta = std::fs::metadata(&f)?;
        let data = std::fs::read(&f).with_context(|| format!("read {}", f.display()))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0, u8::from(meta.permissions().mode() & 0o111 != 0)]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(&data);
    }
    Ok(hex::encode(h.finalize())[..16].to_string())
}

fn ensure_packages(install: bool) -> Result<()> {
    crate::packages::ensure(
        "test guest",
        crate::packages::GUEST_BUILD,
        crate::packages::Options { install },
    )
}

/// The host's Debian mirror for `SUITE` and its security mirror, from /etc/apt/sources.list(.d).
fn debian_mirrors() -> Result<(String, Option<String>)> {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, t));
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.to_string_lossy().to_string();
            let deb822 = name.ends_with(".sources");
            if deb822 || name.ends_with(".list") {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push((deb822, t));
                }
            }
        }
    }
    let entries: Vec<(String, Vec<String>)> = texts
        .iter()
        .flat_map(|(deb822, t)| {
            if *deb822 {
                parse_deb822(t)
            } else {
                parse_one_line(t)
            }
        })
        .collect();
    pick_mirrors(&entries, SUITE).context(
        "no Debian mirror for bookworm in /etc/apt/sources.list or /etc/apt/sources.list.d/*.{list,sources}",
    )
}

fn pick_mirrors(
    entries: &[(String, Vec<String>)],
    suite: &str,
) -> Option<(String, Option<String>)> {
    let find = |s: &str| {
        entries
            .iter()
            .find(|(_, suites)| suites.iter().any(|x| x == s))
            .map(|(u, _)| u.clone())
    };
    let main = find(suite)?;
    Some((main, find(&format!("{suite}-security"))))
}

/// `deb [opts] URI SUITE COMPONENTS...` lines → (uri, [suite]).
fn parse_one_line(text: &str) -> Vec<(String, Vec<String>)> {
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            v.push((uri.to_string(), vec![suite.to_string()]));
        }
    }
    v
}

/// deb822 stanzas → (first URI, suites), for enabled `Types: deb` stanzas.
fn parse_deb822(text: &str) -> Vec<(String, Vec<String>)> {
    let mut v = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut uri, mut suites, mut deb, mut enabled) = (None, Vec::new(), false, true);
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, val)) = line.split_once(':') else {
                continue;
            };
            let val = val.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => deb = val.split_whitespace().any(|t| t == "deb"),
                "uris" => uri = val.split_whitespace().next().map(str::to_string),
                "suites" => suites = val.split_whitespace().map(str::to_string).collect(),
                "enabled" => enabled = val != "no",
                _ => {}
            }
        }
        if let (true, true, Some(u)) = (deb, enabled, uri) {
            v.push((u, suites));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_and_one_line_sources() {
        let d = "Types: deb\n# comment\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n\
                 Components: main\n\nTypes: deb\nURIs: http://m.example/debian-security\n\
                 Suites: bookworm-security\nComponents: main\n";
        let e = parse_deb822(d);
        assert_eq!(
            pick_mirrors(&e, "bookworm"),
            Some((
                "http://m.example/debian".into(),
                Some("http://m.example/debian-security".into())
            ))
        );
        let l = "deb [signed-by=/k.gpg arch=amd64] http://x.example/debian bookworm main\n# deb http://no bookworm main\n";
        let e = parse_one_line(l);
        assert_eq!(
            pick_mirrors(&e, "bookworm"),
            Some(("http://x.example/debian".into(), None))
        );
        assert_eq!(pick_mirrors(&e, "trixie"), None);
    }

    #[test]
    fn recipe_hash_changes_with_content() {
        let dir = std::env::temp_dir().join(format!("kiln-xtask-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), "one").unwrap();
        let h1 = recipe_hash(&dir).unwrap();
        assert_eq!(h1, recipe_hash(&dir).unwrap());
        std::fs::write(dir.join("a"), "two").unwrap();
        let h2 = recipe_hash(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(h1, h2);
        assert_eq!(h1.len(), 16);
    }
}
