//! Every `disk_size` written in the corpus (crates/kiln-config/tests/corpus/: literals and the
//! defaults of variables named like a disk size), plus edge cases, goes through both paths —
//! `kiln validate` (the loader) and the build's disk parameter (`params::disk_size_gib`, what
//! `create_vm` sends as `<pool>:<GiB>`) — with the same verdict.

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-config/tests/corpus")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.to_string_lossy().ends_with(".hcl") {
            out.push(p);
        }
    }
}

fn literals(text: &str, out: &mut Vec<String>) {
    let mut in_size_var = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("variable ") {
            in_size_var = l.contains("disk") && l.contains("size");
        }
        let key = l.starts_with("disk_size") || (in_size_var && l.starts_with("default"));
        if !key {
            continue;
        }
        let Some((_, rhs)) = l.split_once('=') else {
            continue;
        };
        if let Some(v) = rhs
            .trim()
            .strip_prefix('"')
            .and_then(|r| r.split('"').next())
        {
            if !v.contains("${") {
                out.push(v.to_string());
            }
        }
    }
}

/// The loader's verdict; when valid, the `disk_size` the plan carries (an empty value is unset:
/// the plugin's default).
fn validate_path(value: &str) -> Result<String, String> {
    let d = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"source "proxmox-iso" "t" {{
  proxmox_url  = "https://pve.example:8006/api2/json"
  username     = "root@pam"
  password     = "pw"
  node         = "pve"
  ssh_username = "u"
  boot_iso {{ iso_file = "local:iso/a.iso" }}
  disks {{
    storage_pool = "local-lvm"
    disk_size    = "{}"
  }}
}}
build {{ sources = ["source.proxmox-iso.t"] }}
"#,
        value.replace('\\', "\\\\").replace('"', "\\\"")
    );
    std::fs::write(d.path().join("t.pkr.hcl"), text).expect("write template");
    let opts = kiln_config::LoadOptions {
        cwd: Some(d.path().to_path_buf()),
        ..kiln_config::LoadOptions::isolated()
    };
    match kiln_config::load(d.path(), &opts) {
        Ok(l) => Ok(l.plan.runs[0].config.disks[0].disk_size.clone()),
        Err(e) => {
            let msgs: Vec<String> = e.errors.iter().map(|d| d.one_line()).collect();
            assert!(
                msgs.iter().all(|m| m.contains("disk_size")),
                "{value:?}: unrelated errors {msgs:?}"
            );
            Err(msgs.join("; "))
        }
    }
}

#[test]
fn every_corpus_disk_size_has_one_verdict() {
    let mut files = Vec::new();
    walk(&corpus(), &mut files);
    let mut values = Vec::new();
    for f in &files {
        literals(&std::fs::read_to_string(f).unwrap_or_default(), &mut values);
    }
    let from_corpus = values.len();
    assert!(from_corpus >= 20, "only {from_corpus} corpus values");
    for extra in [
        "20",
        "20GB",
        "0G",
        "1K",
        "1536M",
        "1T",
        "20g",
        " 20G",
        "",
        "99999999T",
    ] {
        values.push(extra.to_string());
    }
    values.sort();
    values.dedup();
    let (mut ok, mut bad) = (0, 0);
    for v in &values {
        let validate = validate_path(v);
        // the build reads the plan's value
        let planned = validate.clone().unwrap_or_else(|_| v.clone());
        let build = kiln_build::params::disk_size_gib(&planned);
        match (&validate, &build) {
            (Ok(_), Ok(_)) => ok += 1,
            (Err(_), Err(_)) => bad += 1,
            _ => panic!("{v:?}: validate {validate:?}, build {build:?}"),
        }
    }
    println!(
        "{} values ({from_corpus} from the corpus): {ok} accepted, {bad} rejected by both",
        values.len()
    );
    assert!(ok > 3 && bad > 3);
}
