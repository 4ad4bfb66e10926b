//! Every `iso_checksum` written in the corpus (crates/kiln-config/tests/corpus/), plus Packer's
//! documented forms, goes through both paths — `kiln validate` (the loader) and the ISO fetcher's
//! plan (what `kiln init` and the build run) — with the same verdict and the same message.

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

/// The literal `iso_checksum = "…"` values of a file (no interpolation: those are values of
/// variables, collected from `default = "…"` only when the variable's name says checksum).
fn literals(text: &str, out: &mut Vec<String>) {
    let mut in_checksum_var = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("variable ") {
            in_checksum_var = l.contains("checksum");
        }
        let key = if l.starts_with("iso_checksum") {
            true
        } else {
            in_checksum_var && l.starts_with("default")
        };
        if !key {
            continue;
        }
        let Some((_, rhs)) = l.split_once('=') else {
            continue;
        };
        let rhs = rhs.trim();
        if let Some(v) = rhs.strip_prefix('"').and_then(|r| r.split('"').next()) {
            if !v.contains("${") {
                out.push(v.to_string());
            }
        }
    }
}

const H256: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

fn documented_forms() -> Vec<String> {
    vec![
        "none".into(),
        "NONE".into(),
        format!("sha256:{H256}"),
        format!("SHA256:{}", H256.to_uppercase()),
        H256.into(),
        format!("md5:{}", "a".repeat(32)),
        "a".repeat(40),
        format!("sha512:{}", "b".repeat(128)),
        "file:https://releases.ubuntu.com/24.04/SHA256SUMS".into(),
        "file:./SHA256SUMS".into(),
        "sha256:file:https://releases.ubuntu.com/24.04/SHA256SUMS".into(),
        // wrong ones
        "sha256:abc".into(),
        format!("md5:{H256}"),
        "crc32:1234".into(),
        "xyz".into(),
        "https://releases.ubuntu.com/noble/SHA256SUMS".into(),
        "sha256:your-iso-checksum".into(),
    ]
}

/// `kiln validate`'s verdict: the loader's message about iso_checksum, if any.
fn validate_path(value: &str) -> Option<String> {
    let d = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"source "proxmox-iso" "t" {{
  proxmox_url  = "https://pve.example:8006/api2/json"
  username     = "root@pam"
  password     = "pw"
  node         = "pve"
  ssh_username = "u"
  boot_iso {{
    iso_url          = "https://example.com/a.iso"
    iso_checksum     = "{}"
    iso_storage_pool = "local"
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
        Ok(_) => None,
        Err(e) => {
            let msgs: Vec<String> = e
                .errors
                .iter()
                .map(|d| d.message.clone())
                .filter(|m| m.contains("iso_checksum"))
                .collect();
            assert!(
                msgs.len() == e.errors.len(),
                "{value:?}: unrelated errors {:?}",
                e.errors.iter().map(|d| d.one_line()).collect::<Vec<_>>()
            );
            msgs.into_iter().next()
        }
    }
}

/// The fetcher's verdict (`kiln init` and the build's ISO step call `plan`/`fetch`, which parse
/// the checksum first).
fn consumer_path(value: &str, cache: &Path) -> Option<String> {
    let f = kiln_iso::Fetcher::new(cache.to_path_buf()).expect("fetcher");
    let src = kiln_iso::IsoSource {
        urls: vec!["https://example.com/a.iso".into()],
        checksum: value.to_string(),
    };
    match f.plan(&src) {
        Ok(_) => None,
        Err(kiln_iso::IsoError::BadChecksum { msg, .. }) => Some(msg),
        Err(e) => panic!("{value:?}: unexpected fetcher error {e}"),
    }
}

#[test]
fn every_corpus_checksum_has_one_verdict() {
    let mut files = Vec::new();
    walk(&corpus(), &mut files);
    assert!(files.len() > 20, "corpus not found at {:?}", corpus());
    let mut values = Vec::new();
    for f in &files {
        literals(&std::fs::read_to_string(f).unwrap_or_default(), &mut values);
    }
    let from_corpus = values.len();
    assert!(from_corpus >= 20, "only {from_corpus} corpus values");
    values.extend(documented_forms());
    values.sort();
    values.dedup();
    let cache = tempfile::tempdir().expect("cache dir");
    let (mut ok, mut bad) = (0, 0);
    for v in &values {
        let validate = validate_path(v);
        let consumer = consumer_path(v, cache.path());
        match (&validate, &consumer) {
            (None, None) => ok += 1,
            (Some(m), Some(c)) => {
                // an empty value is "not set" to the loader (required with iso_url)
                assert!(
                    m.contains(c.as_str()) || (v.is_empty() && m.contains("is required")),
                    "{v:?}: validate says {m:?}, the fetcher {c:?}"
                );
                bad += 1;
            }
            _ => panic!("{v:?}: validate {validate:?}, fetcher {consumer:?}"),
        }
    }
    println!(
        "{} values ({from_corpus} from the corpus): {ok} accepted, {bad} rejected by both",
        values.len()
    );
    assert!(ok > 5 && bad > 3);
}
